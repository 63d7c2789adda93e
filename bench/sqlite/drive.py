"""The client side of bench/sqlite_bench.py, run in each framework's own environment.

    python drive.py ours throughput N     # enqueue N tasks (64 concurrent submitters),
                                          # then await every receipt
    python drive.py ours enqueue N        # one submit_many of N tasks (no worker runs)
    python drive.py huey throughput N     # N job() calls (8 threads), then every result
    python drive.py huey enqueue N        # N job() calls in one thread (no consumer runs)

The broker is named by `$BENCH_SQLITE_URL` (ours) or `$BENCH_SQLITE_PATH` (Huey). Every
throughput run first does an untimed warm-up of `$BENCH_WARMUP` tasks, and checks that the
results sum up (each task's own result came back). The last line of stdout is one JSON
object with the figures (or {"error": ...}).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any

#: Concurrent submitters of ours (trio tasks) and Huey (threads; its client blocks).
OURS_SUBMITTERS = 64
HUEY_SUBMITTERS = 8
DEADLINE = float(os.environ.get("BENCH_DEADLINE", "300"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "500"))


def ours(mode: str, n: int) -> dict[str, Any]:
    import trio
    from ours_tasks import job

    from queueing import Receipt, connect

    url = os.environ["BENCH_SQLITE_URL"]

    async def go() -> dict[str, Any]:
        async with connect(url, job) as system:
            if mode == "enqueue":
                t0 = time.perf_counter()
                receipts = await system.submit_many("job", range(n))
                t1 = time.perf_counter()
                assert len(receipts) == n
                return {"n": n, "rate": n / (t1 - t0)}
            warm = await system.submit_many("job", range(WARMUP))
            assert sum([await r for r in warm]) == WARMUP * (WARMUP - 1) // 2
            receipts: list[Receipt[Any] | None] = [None] * n

            async def submit_every(first: int) -> None:
                for i in range(first, n, OURS_SUBMITTERS):
                    receipts[i] = await system.submit("job", i)

            t0 = time.perf_counter()
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    for first in range(min(OURS_SUBMITTERS, n)):
                        nursery.start_soon(submit_every, first)
                t_enq = time.perf_counter()
                total = 0
                for receipt in receipts:
                    assert receipt is not None
                    total += await receipt
            t1 = time.perf_counter()
            assert total == n * (n - 1) // 2, "the results do not add up"
            return {"n": n, "rate": n / (t1 - t0), "enqueue_rate": n / (t_enq - t0)}

    return trio.run(go)


#: Huey's client polls the storage for a result, from 50 ms between looks up to its
#: `max_delay` (1 s by default): capped here, so that Huey's figure is not its polling.
HUEY_MAX_DELAY = 0.005


def _result(result: Any) -> Any:
    return result.get(blocking=True, timeout=DEADLINE, max_delay=HUEY_MAX_DELAY)


def huey(mode: str, n: int) -> dict[str, Any]:
    import huey_tasks

    if mode == "enqueue":
        t0 = time.perf_counter()
        for i in range(n):
            huey_tasks.job(i)
        return {"n": n, "rate": n / (time.perf_counter() - t0)}
    warm = [huey_tasks.job(i) for i in range(WARMUP)]
    assert sum(_result(r) for r in warm) == WARMUP * (WARMUP - 1) // 2
    results: list[Any] = [None] * n

    def submit_every(first: int) -> None:
        for i in range(first, n, HUEY_SUBMITTERS):
            results[i] = huey_tasks.job(i)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=submit_every, args=(f,)) for f in range(HUEY_SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    t_enq = time.perf_counter()
    total = sum(_result(r) for r in results)
    t1 = time.perf_counter()
    assert total == n * (n - 1) // 2, "the results do not add up"
    return {"n": n, "rate": n / (t1 - t0), "enqueue_rate": n / (t_enq - t0)}


if __name__ == "__main__":
    try:
        framework, mode, count = sys.argv[1:4]
        out = (ours if framework == "ours" else huey)(mode, int(count))
    except BaseException as exc:  # reported to the bench, which prints it
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)

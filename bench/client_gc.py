"""What the client's garbage collector does per task over Redis (issue #15's p99).

A closed loop: `--callers` callers, each submitting a task and then waiting for its
result (`receipt.result(timeout=30)`, or `await receipt` with `--no-timeout`), in turn,
`-n` tasks in all after a warm-up of 2,000; one worker process (`queueing worker
ours_tasks:job --concurrency 8`) and a private redis-server, as bench/client_cost.py runs
them. With a fixed number of callers the tasks in flight do not follow the machine's
pace, so the figures below are set by what the client holds, not by the load:

- collections per generation per 10,000 tasks (`gc.get_stats()`);
- objects moved on per task: into the middle generation by young collections, into the
  oldest by collections of the middle one (the objects a collection looked at, less
  those it freed, counted in `gc.callbacks`). A full collection follows once those
  moved into the oldest generation come to a quarter of what it held;
- full collections during the run, and how long each took.

    python bench/client_gc.py --runs 2 -n 30000
    python bench/client_gc.py --runs 2 -n 30000 --no-timeout --root /path/to/another/checkout
    python bench/client_gc.py --callgrind -n 1000

`--callgrind`: the same loop's client under callgrind, for N and 3N tasks (the warm-up in
both): its instructions per task (their difference over 2N), tracked allocations and
collections, as `bench/client_cost.py --callgrind` counts them. Sixteen callers make
submit batches of about eight tasks (two round trips in flight), nearer the paced
client's two or three than the throughput run's sixty-four.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WARMUP = 2000


def loop(callers: int, n: int, timeout: bool) -> dict[str, Any]:
    """The client: runs in its own process (`--client`)."""
    import trio

    from queueing import connect

    pauses: list[tuple[int, float]] = []
    moved = [0, 0]
    started = [0.0, 0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            started[0] = time.perf_counter()
            if generation < 2:
                started[1] = sum(len(gc.get_objects(g)) for g in range(generation + 1))
            return
        pauses.append((generation, time.perf_counter() - started[0]))
        if generation < 2:
            moved[generation] += int(started[1]) - info["collected"]

    async def go() -> dict[str, Any]:
        async with connect(os.environ["BENCH_REDIS_URL"]) as system:

            async def caller(first: int, last: int) -> None:
                for i in range(first, last, callers):
                    receipt = await system.submit("job", i)
                    result = await (receipt.result(timeout=30) if timeout else receipt)
                    assert result == i

            async with trio.open_nursery() as nursery:
                for first in range(callers):
                    nursery.start_soon(caller, first, WARMUP)
            before = gc.get_stats()
            gc.callbacks.append(watch)
            cpu = time.process_time()
            async with trio.open_nursery() as nursery:
                for first in range(callers):
                    nursery.start_soon(caller, first, n)
            cpu = time.process_time() - cpu
            gc.callbacks.remove(watch)
            after = gc.get_stats()
            return {
                "collections_per_10k": [
                    (b["collections"] - a["collections"]) * 10_000 / n
                    for a, b in zip(before, after, strict=True)
                ],
                "moved_per_task": [m / n for m in moved],
                "full_ms": [d * 1000 for g, d in pauses if g == 2],
                "cpu_us": cpu / n * 1e6,
                "tracked": len(gc.get_objects()),
            }

    return trio.run(go)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=30_000, help="tasks per run")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-timeout", action="store_true", help="await receipt")
    parser.add_argument("--root", type=Path, default=HERE.parent, help="the tree to import")
    parser.add_argument("--callgrind", action="store_true", help="instructions per task")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(loop(args.callers, args.n, not args.no_timeout)), flush=True)
        return
    from client_cost import COUNTED, Setup, instructions

    setup = Setup(args.root.resolve())

    def client_of(n: int) -> list[str]:
        client = [sys.executable, str(HERE / "client_gc.py"), "--client", "-n", str(n)]
        return (
            client
            + ["--callers", str(args.callers)]
            + (["--no-timeout"] if args.no_timeout else [])
        )

    client = client_of(args.n)
    try:
        if args.callgrind:
            small, few = instructions(setup, args.n, client=client)
            large, many = instructions(setup, 3 * args.n, client=client_of(3 * args.n))
            print(f"callgrind: I({args.n})={small:,}  I({3 * args.n})={large:,}")
            print(f"client instructions per task: {(large - small) / (2 * args.n):,.0f}")
            for name, what in COUNTED.items():
                per_task = (many[name] - few[name]) / (2 * args.n)
                print(f"client {what} per task: {per_task:.2f} ({few[name]:,}, {many[name]:,})")
            return
        for _ in range(args.runs):
            figures, _cpu = setup.run([], args.n, client=client)
            young, middle, full = figures["collections_per_10k"]
            into_middle, into_oldest = figures["moved_per_task"]
            print(
                f"collections per 10k tasks: young {young:.1f}, middle {middle:.1f}, "
                f"full {full:.1f}; moved per task into the middle generation "
                f"{into_middle:.3f}, into the oldest {into_oldest:.3f}; full collections "
                f"{[round(ms, 1) for ms in figures['full_ms']]} ms; "
                f"client CPU {figures['cpu_us']:.0f} us/task; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        setup.close()


if __name__ == "__main__":
    main()

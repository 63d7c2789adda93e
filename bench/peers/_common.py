"""Helpers shared by the peer task modules (stdlib only: every bench environment has it).

The task modules in this folder are imported twice: by worker processes (the framework's
own command line, or its documented programmatic runner) and by `drive.py`, the client
that enqueues and measures. Both find the private Redis in `BENCH_REDIS_URL`.

Every module defines one task, `job(x) -> x`. Its body is `BENCH_BODY`: `noop` (return
the argument) or `incr` (first one `INCR` of `COUNTER` on the same Redis, with the
framework's natural client, then return the argument). A throughput run checks the sum of
the results (every task's own result came back) and, with `incr`, that the counter rose by
exactly the number of tasks (every task ran once: none lost, none run twice).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
#: Tasks each worker process runs at once, for every framework.
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
#: Seconds a wait for completion may take before the run is given up.
DEADLINE = float(os.environ.get("BENCH_DEADLINE", "240"))
#: Concurrent enqueuers for frameworks without a batch API.
ENQUEUERS = int(os.environ.get("BENCH_ENQUEUERS", "64"))
#: Seconds between two looks at a completion counter.
POLL = 0.002
#: What a task does besides returning its argument: "noop" (nothing) or "incr".
BODY = os.environ.get("BENCH_BODY", "noop")
BODIES = ("noop", "incr")
if BODY not in BODIES:
    raise SystemExit(f"BENCH_BODY={BODY!r}: expected one of {', '.join(BODIES)}")
INCR = BODY == "incr"
#: The key every task INCRs when BODY is "incr".
COUNTER = "bench:incr"


class Incomplete(RuntimeError):
    """The tasks did not all complete before the deadline."""


def expect_sum(total: int, n: int) -> None:
    if total != n * (n - 1) // 2:
        raise AssertionError(f"wrong results: sum {total} for {n} tasks")


def expect_runs(before: int | bytes | str | None, after: int | bytes | str | None, n: int) -> None:
    """With the `incr` body, `COUNTER` went from `before` to `after` while `n` tasks ran:
    each task ran exactly once. (A GET of the missing key, None, counts as 0.)"""
    if INCR and int(after or 0) - int(before or 0) != n:
        raise AssertionError(
            f"{COUNTER} rose by {int(after or 0) - int(before or 0)} for {n} tasks: "
            "some task ran twice or not at all"
        )


async def poll_until(done: Callable[[], Awaitable[bool]], what: str) -> float:
    """Await `done()` every POLL seconds until it is true; returns the time it was."""
    deadline = time.perf_counter() + DEADLINE
    while not await done():
        if time.perf_counter() > deadline:
            raise Incomplete(f"{what} not reached within {DEADLINE:g}s")
        await asyncio.sleep(POLL)
    return time.perf_counter()


def poll_until_sync(done: Callable[[], bool], what: str) -> float:
    deadline = time.perf_counter() + DEADLINE
    while not done():
        if time.perf_counter() > deadline:
            raise Incomplete(f"{what} not reached within {DEADLINE:g}s")
        time.sleep(POLL)
    return time.perf_counter()


WARMUP = 20
"""Calls made before a latency run, untimed (connections, per-thread clients)."""


async def paced_async(rate: float, seconds: float, one: Callable[[int], Awaitable[None]]) -> dict:
    """Start `one(i)` (submit a task, await its result) `rate` times a second for
    `seconds`. A latency is measured from the moment the call was due, not from when it
    started: a client that falls behind shows it (no coordinated omission)."""
    for i in range(WARMUP):
        await one(-1 - i)
    n = int(rate * seconds)
    latencies: list[float] = []
    start = time.perf_counter()

    async def timed(i: int, due: float) -> None:
        await one(i)
        latencies.append(time.perf_counter() - due)

    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i, due)))
    started = time.perf_counter() - start
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE)
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return {
        "latencies": latencies,
        "started_rate": n / started if started > 0 else float("inf"),
        "errors": errors[:5],
        "error_count": len(errors),
    }


def paced_threads(
    rate: float, seconds: float, one: Callable[[int], None], threads: int = 8
) -> dict:
    """`paced_async` for blocking clients: each call runs in one of `threads` threads."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def timed(i: int, due: float) -> None:
        try:
            one(i)
        except Exception as exc:
            with lock:
                errors.append(repr(exc))
            return
        with lock:
            latencies.append(time.perf_counter() - due)

    with ThreadPoolExecutor(threads) as pool:
        # Warm every thread (a client per thread connects on its first call).
        list(pool.map(one, range(-1, -1 - max(WARMUP, 2 * threads), -1)))
        start = time.perf_counter()
        futures = []
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(timed, i, due))
        started = time.perf_counter() - start
        for future in futures:
            future.result(timeout=DEADLINE)
    return {
        "latencies": latencies,
        "started_rate": n / started if started > 0 else float("inf"),
        "errors": errors[:5],
        "error_count": len(errors),
    }

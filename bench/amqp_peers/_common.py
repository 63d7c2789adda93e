"""Helpers shared by the task modules of bench/amqp_bench.py (stdlib only: every bench
environment has it).

The task modules here are imported twice: by worker processes (the framework's own
command line) and by `drive.py`, the client that enqueues and measures. Both find the
RabbitMQ in `BENCH_AMQP_URL`, the Redis that keeps results in `BENCH_REDIS_URL`, and the
queue name of this run (a fresh one per run, so no run sees another's messages) in
`BENCH_QUEUE`.

Every module defines one task, `job(x) -> x`, with its result stored in Redis. A
throughput run checks the sum of the results (every task's own result came back).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
#: Tasks each worker process runs at once, for every framework.
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
#: Seconds a wait for completion may take before the run is given up.
DEADLINE = float(os.environ.get("BENCH_DEADLINE", "240"))
#: Concurrent enqueuers for ours (trio tasks) and threads for the blocking peers.
ENQUEUERS = int(os.environ.get("BENCH_ENQUEUERS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
#: Seconds between two looks at the completion state, and keys looked at per look.
POLL = 0.002
POLL_CHUNK = 1000


class Incomplete(RuntimeError):
    """The tasks did not all complete before the deadline."""


def expect_sum(total: int, n: int) -> None:
    if total != n * (n - 1) // 2:
        raise AssertionError(f"wrong results: sum {total} for {n} tasks")


def wait_all_stored(keys: list[str], exists: Callable[[list[str]], list[bool]]) -> float:
    """Poll until every result key exists (`exists` answers for a chunk of keys in one
    round trip); returns the time the last one was seen. Results mostly arrive in order,
    so each look starts at the first key not seen yet."""
    deadline = time.perf_counter() + DEADLINE
    first = 0
    while first < len(keys):
        chunk = keys[first : first + POLL_CHUNK]
        seen = exists(chunk)
        missing = next((i for i, found in enumerate(seen) if not found), None)
        if missing is None:
            first += len(chunk)
            continue
        first += missing
        if time.perf_counter() > deadline:
            raise Incomplete(f"{len(keys) - first} results missing after {DEADLINE:g}s")
        time.sleep(POLL)
    return time.perf_counter()

"""arq: `python arq_tasks.py` (arq's `run_worker(WorkerSettings)` with logging at WARNING:
the `arq` command logs two lines per job at INFO). max_jobs=8; poll_delay=0.01 s (the
default 0.5 s sleeps between reads of the queue and caps a worker at ~200 jobs/s). The
task body's Redis client is arq's own, `ctx["redis"]` (a redis.asyncio client)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from _common import (
    CONCURRENCY,
    COUNTER,
    ENQUEUERS,
    INCR,
    URL,
    expect_runs,
    expect_sum,
    paced_async,
    poll_until,
)
from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name
from arq.worker import run_worker

POLL_DELAY = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.01"))
SETTINGS = RedisSettings.from_dsn(URL)


async def job(ctx: dict[str, Any], x: int) -> int:
    if INCR:
        await ctx["redis"].incr(COUNTER)
    return x


async def startup(ctx: dict[str, Any]) -> None:
    # Startup hook: tells the bench this worker process is up.
    await ctx["redis"].sadd("bench:ready", os.getpid())


class WorkerSettings:
    functions = (job,)
    redis_settings = SETTINGS
    max_jobs = CONCURRENCY
    poll_delay = POLL_DELAY
    on_startup = startup


def run_ready(procs: int) -> bool:
    async def probe() -> bool:
        redis = await create_pool(SETTINGS)
        try:
            return int(await redis.scard("bench:ready")) >= procs
        finally:
            await redis.aclose()

    return asyncio.run(probe())


def run_throughput(n: int) -> dict:
    async def go() -> dict:
        redis = await create_pool(SETTINGS)
        try:
            jobs: list = [None] * n
            before = await redis.get(COUNTER)
            enqueuers = min(ENQUEUERS, n)

            async def enqueue_every(first: int) -> None:
                for i in range(first, n, enqueuers):
                    jobs[i] = await redis.enqueue_job("job", i)

            t0 = time.perf_counter()
            await asyncio.gather(*(enqueue_every(f) for f in range(enqueuers)))
            t_enq = time.perf_counter()

            async def done() -> bool:
                # arq takes a job out of its queue (a sorted set) when it has finished
                # and its result is stored, in one transaction.
                return int(await redis.zcard(default_queue_name)) == 0

            t1 = await poll_until(done, f"{n} arq jobs")
            total = 0
            for handle in jobs:
                total += await handle.result(timeout=5)
            expect_sum(total, n)
            expect_runs(before, await redis.get(COUNTER), n)
            return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}
        finally:
            await redis.aclose()

    return asyncio.run(go())


def run_latency(rate: float, seconds: float) -> dict:
    async def go() -> dict:
        redis = await create_pool(SETTINGS)
        try:

            async def one(i: int) -> None:
                handle = await redis.enqueue_job("job", i)
                # arq's results are polled: every 2 ms instead of the default 0.5 s.
                assert await handle.result(timeout=30, poll_delay=0.002) == i

            return await paced_async(rate, seconds, one)
        finally:
            await redis.aclose()

    return asyncio.run(go())


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]

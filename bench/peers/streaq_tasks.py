"""streaq: `python -m streaq run streaq_tasks:worker` (Worker(concurrency=8), asyncio).
The task body's Redis client (redis.asyncio) comes from the worker's lifespan, streaq's
way of giving tasks their dependencies (`worker.context`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from _common import (
    CONCURRENCY,
    COUNTER,
    INCR,
    URL,
    expect_runs,
    expect_sum,
    paced_async,
    poll_until,
)
from redis.asyncio import Redis
from streaq import Worker


@asynccontextmanager
async def lifespan() -> AsyncIterator[Redis]:
    # Startup hook: tells the bench this worker process is up.
    await worker.redis.sadd("bench:ready", [str(os.getpid())])
    async with Redis.from_url(URL) as client:
        yield client


worker = Worker(redis_url=URL, concurrency=CONCURRENCY, queue_name="bench", lifespan=lifespan)


# silent: no log line per task (the other frameworks are run without one too).
@worker.task(silent=True)
async def job(x: int) -> int:
    if INCR:
        await worker.context.incr(COUNTER)
    return x


def run_ready(procs: int) -> bool:
    async def probe() -> bool:
        async with worker:
            return await worker.redis.scard("bench:ready") >= procs

    return asyncio.run(probe())


def run_throughput(n: int, chunk: int = 1000) -> dict:
    async def go() -> dict:
        async with worker:
            redis = worker.redis
            base = await redis.zcard(worker._results_set)
            before = await redis.get(COUNTER)
            t0 = time.perf_counter()
            ids = []
            for first in range(0, n, chunk):
                tasks = [job.enqueue(i) for i in range(first, min(n, first + chunk))]
                ids.extend(task.id for task in tasks)
                await worker.enqueue_many(tasks)
            t_enq = time.perf_counter()

            async def done() -> bool:
                return await redis.zcard(worker._results_set) >= base + n

            t1 = await poll_until(done, f"{n} streaq results")
            # Check the results (outside the timing): every task ran and returned its arg.
            total = 0
            for first in range(0, n, 1000):
                raws = await redis.mget([worker.results_key + i for i in ids[first : first + 1000]])
                for raw in raws:
                    total += (await worker.deserialize(raw))["r"]
            expect_sum(total, n)
            expect_runs(before, await redis.get(COUNTER), n)
            return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}

    return asyncio.run(go())


def run_latency(rate: float, seconds: float) -> dict:
    async def go() -> dict:
        async with worker:

            async def one(i: int) -> None:
                task = await job.enqueue(i)
                result = await task.result(timeout=30)
                assert result.result == i

            return await paced_async(rate, seconds, one)

    return asyncio.run(go())

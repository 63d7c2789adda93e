"""taskiq + taskiq-redis: `python -m taskiq worker taskiq_tasks:broker --workers 1
--max-async-tasks 8` (RedisStreamBroker: consumer group, ack after the result is saved;
RedisAsyncResultBackend for results). The task body's Redis client is a module-level
redis.asyncio one (connected on first use, in the worker's event loop)."""

from __future__ import annotations

import asyncio
import os
import time

from _common import (
    COUNTER,
    ENQUEUERS,
    INCR,
    URL,
    expect_runs,
    expect_sum,
    paced_async,
    poll_until,
)
from redis.asyncio import Redis
from taskiq import TaskiqEvents, TaskiqState
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

STREAM = "bench"
GROUP = "taskiq"
broker = RedisStreamBroker(URL, queue_name=STREAM, consumer_group_name=GROUP).with_result_backend(
    RedisAsyncResultBackend(URL)
)
client = Redis.from_url(URL)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def announce(state: TaskiqState) -> None:
    # Startup hook: tells the bench this worker process is up.
    async with Redis.from_url(URL) as redis:
        await redis.sadd("bench:ready", os.getpid())


@broker.task
async def job(x: int) -> int:
    if INCR:
        await client.incr(COUNTER)
    return x


def run_ready(procs: int) -> bool:
    async def probe() -> bool:
        async with Redis.from_url(URL) as redis:
            return int(await redis.scard("bench:ready")) >= procs

    return asyncio.run(probe())


async def _group(redis: Redis) -> dict:
    for group in await redis.xinfo_groups(STREAM):
        if group["name"] in (GROUP, GROUP.encode()):
            return group
    raise RuntimeError(f"no consumer group {GROUP!r} on stream {STREAM!r}")


def run_throughput(n: int) -> dict:
    async def go() -> dict:
        await broker.startup()
        try:
            async with Redis.from_url(URL) as redis:
                base = int((await _group(redis))["entries-read"] or 0)
                before = await redis.get(COUNTER)
                handles: list = [None] * n
                enqueuers = min(ENQUEUERS, n)

                async def kick_every(first: int) -> None:
                    for i in range(first, n, enqueuers):
                        handles[i] = await job.kiq(i)

                t0 = time.perf_counter()
                await asyncio.gather(*(kick_every(f) for f in range(enqueuers)))
                t_enq = time.perf_counter()

                async def done() -> bool:
                    # Every entry delivered to the group, and every delivery acked (taskiq
                    # acks after the result is saved).
                    group = await _group(redis)
                    return (
                        int(group["entries-read"] or 0) >= base + n
                        and int(group["pending"]) == 0
                        and int(group["lag"] or 0) == 0
                    )

                t1 = await poll_until(done, f"{n} taskiq acks")
                total = 0
                for handle in handles:
                    total += (await handle.get_result()).return_value
                expect_sum(total, n)
                expect_runs(before, await redis.get(COUNTER), n)
                return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}
        finally:
            await broker.shutdown()

    return asyncio.run(go())


def run_latency(rate: float, seconds: float) -> dict:
    async def go() -> dict:
        await broker.startup()
        try:

            async def one(i: int) -> None:
                task = await job.kiq(i)
                # taskiq's results are polled: every 2 ms instead of the default 0.2 s.
                result = await task.wait_result(check_interval=0.002, timeout=30)
                assert result.return_value == i

            return await paced_async(rate, seconds, one)
        finally:
            await broker.shutdown()

    return asyncio.run(go())

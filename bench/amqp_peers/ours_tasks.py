"""Ours: a `job` queue served by `queueing worker ours_tasks:job --concurrency 8` on the
RabbitMQ broker (quorum queues; records and results in the bench's Redis). The queue's
RabbitMQ prefix is the run's `BENCH_QUEUE`."""

from __future__ import annotations

import os
import time

# coredis and the RabbitMQ broker are imported here, before the client's clock starts, as
# the peers' task modules import their clients at import time (`connect` would import them
# on first use: ~0.4 s of the timed run's client CPU, ~40 us a task at 10,000 tasks).
import coredis  # noqa: F401
import trio
from _common import (
    AMQP_URL,
    CONCURRENCY,
    DEADLINE,
    ENQUEUERS,
    QUEUE,
    REDIS_URL,
    Incomplete,
    expect_sum,
)

import queueing.brokers.amqp._broker  # noqa: F401
from queueing import Queue, Receipt, Worker, connect

if os.environ.get("BENCH_AMQP_TRACE"):  # round trips and turns per task: trace_stages.py
    import trace_stages

    trace_stages.install(os.environ["BENCH_AMQP_TRACE"])

#: Seconds to reach Redis and RabbitMQ (more under callgrind: bench/amqp_cost.py).
CONNECT_TIMEOUT = float(os.environ.get("BENCH_CONNECT_TIMEOUT", "5"))
URL = f"{AMQP_URL}{'&' if '?' in AMQP_URL else '?'}results={REDIS_URL}&prefix={QUEUE}"


class Job(Worker):
    async def handle(self, payload: int) -> int:
        return payload


# maxsize above the bench's task count: the peers have no such limit, and waiting for
# room (our backpressure) is not what is measured here.
job = Queue("job", Job, workers=CONCURRENCY, maxsize=1_000_000)


def run_ready(procs: int) -> bool:
    async def probe() -> bool:
        async with connect(URL) as system:
            info = await system._broker.status()  # type: ignore[attr-defined]
            return len(info["workers"]) >= procs

    return trio.run(probe)


def run_throughput(n: int) -> dict:
    async def go() -> dict:
        async with connect(URL, connect_timeout=CONNECT_TIMEOUT) as system:
            receipts: list[Receipt | None] = [None] * n
            enqueuers = min(ENQUEUERS, n)

            async def submit_every(first: int) -> None:
                for i in range(first, n, enqueuers):
                    receipts[i] = await system.submit("job", i)

            t0 = time.perf_counter()
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    for first in range(enqueuers):
                        nursery.start_soon(submit_every, first)
                t_enq = time.perf_counter()
                total = 0
                for receipt in receipts:
                    assert receipt is not None
                    total += await receipt
            t1 = time.perf_counter()
            expect_sum(total, n)
            return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}

    try:
        return trio.run(go)
    except trio.TooSlowError:
        raise Incomplete(f"{n} tasks not done within {DEADLINE:g}s") from None

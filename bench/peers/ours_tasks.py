"""Ours: a `job` queue served by `queueing worker ours_tasks:job --concurrency 8`. With
the `incr` body each worker opens its own coredis client in `on_start` (a worker handles
one task at a time, so one connection each) and closes it in `on_stop`."""

from __future__ import annotations

import gc
import os
import time
from contextlib import AsyncExitStack, suppress

import coredis
import trio
from _common import (
    CONCURRENCY,
    COUNTER,
    DEADLINE,
    ENQUEUERS,
    INCR,
    URL,
    WARMUP,
    Incomplete,
    expect_runs,
    expect_sum,
)

from queueing import Queue, Receipt, Worker, connect

#: `BENCH_TRACE`: a file per-stage timestamps go to (bench/latency_trace.py; see
#: ours_trace.py). Nothing is traced without it.
TRACE = os.environ.get("BENCH_TRACE", "")
if TRACE:
    import ours_trace

    ours_trace.install()

#: `BENCH_GC_FREEZE=1`: the latency client freezes what it made up to its first submit
#: (`gc.collect(); gc.freeze()`, as docs/how-to/latency.md advises a client that cares
#: about its p99); off by default, as the peers' clients do nothing of the kind.
GC_FREEZE = os.environ.get("BENCH_GC_FREEZE", "") == "1"

#: Set by the bench for `run_first`'s worker: a file its first worker writes when it
#: started (wall clock; a file, not Redis: no round trip on the worker's way).
MARK_START = os.environ.get("BENCH_MARK_START", "")
#: Receipts `run_first` watches: the first each enqueuer got.
FIRST_WATCHED = 64

#: `Queue(shards=)` of the bench's queue (`redis_bench.py --shards`, or 2 per master with
#: `--cluster`).
SHARDS = int(os.environ.get("BENCH_SHARDS", "1"))


def _mark_start() -> None:
    """The first worker's start, for `run_first` (wall clock): a few microseconds of file
    writing, where a write to Redis would add a round trip on the worker's way."""
    with suppress(FileExistsError), open(MARK_START, "x") as mark:
        mark.write(repr(time.time()))


class Job(Worker):
    _redis: coredis.Redis[bytes] | None = None

    async def on_start(self) -> None:
        self._resources = AsyncExitStack()
        if INCR:
            self._redis = await self._resources.enter_async_context(coredis.Redis.from_url(URL))
        if MARK_START:
            _mark_start()
        if TRACE:
            ours_trace.instrument()

    async def on_stop(self) -> None:
        await self._resources.aclose()
        if TRACE:
            ours_trace.dump()

    async def handle(self, payload: int) -> int:
        if TRACE:
            ours_trace.mark(self.task_id or "", "started")
        if self._redis is not None:
            await self._redis.incr(COUNTER)
        if TRACE:
            ours_trace.mark(self.task_id or "", "ended")
        return payload


# maxsize above the bench's task count: the peers have no such limit, and waiting for
# room (our backpressure) is not what is measured here.
job = Queue("job", Job, workers=CONCURRENCY, maxsize=1_000_000, shards=SHARDS)


async def _counter() -> bytes | None:
    if not INCR:
        return None
    async with coredis.Redis.from_url(URL) as client:
        return await client.get(COUNTER)


def run_ready(procs: int) -> bool:
    """Every worker process has declared itself (its first heartbeat)."""

    async def probe() -> bool:
        async with connect(URL) as system:
            info = await system._broker.status()  # type: ignore[attr-defined]
            return len(info["workers"]) >= procs

    return trio.run(probe)


def run_throughput(n: int) -> dict:
    async def go() -> dict:
        async with connect(URL) as system:
            receipts: list[Receipt | None] = [None] * n
            enqueuers = min(ENQUEUERS, n)
            before = await _counter()

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
            expect_runs(before, await _counter(), n)
            return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}

    try:
        return trio.run(go)
    except trio.TooSlowError:
        raise Incomplete(f"{n} tasks not done within {DEADLINE:g}s") from None


def run_enqueue(n: int) -> dict:
    """One `submit_many` of `n` tasks with no worker running (a warm-up one of `WARMUP`
    tasks first, untimed): the rate at which Redis accepts them."""

    async def go() -> dict:
        async with connect(URL, job) as system:
            assert len(await system.submit_many("job", range(WARMUP))) == WARMUP
            t0 = time.perf_counter()
            receipts = await system.submit_many("job", range(n))
            t1 = time.perf_counter()
            assert len(receipts) == n
            return {"n": n, "enqueue_s": t1 - t0, "rate": n / (t1 - t0)}

    return trio.run(go)


def run_latency(rate: float, seconds: float) -> dict:
    """As `_common.paced_async`, on trio: latency from the moment a submit was due to the
    moment its result arrived."""

    async def go() -> dict:
        async with connect(URL) as system:
            latencies: list[float] = []
            errors: list[str] = []
            count = int(rate * seconds)

            async def one(i: int) -> None:
                receipt = await system.submit("job", i)
                assert await receipt.result(timeout=30) == i

            async def traced(i: int, due: float) -> None:
                call = time.perf_counter()
                receipt = await system.submit("job", i)
                submitted = time.perf_counter()
                assert await receipt.result(timeout=30) == i
                mark = ours_trace.mark
                task_id = receipt.id
                mark(task_id, "due", due)
                mark(task_id, "call", call)
                mark(task_id, "submitted", submitted)
                mark(task_id, "resolved")

            async def timed(i: int, due: float) -> None:
                try:
                    await (traced(i, due) if TRACE else one(i))
                except Exception as exc:
                    errors.append(repr(exc))
                    return
                latencies.append(time.perf_counter() - due)

            for i in range(WARMUP):
                await one(-1 - i)
            if GC_FREEZE:
                gc.collect()
                gc.freeze()
            if TRACE:
                ours_trace.instrument()
            cpu = time.process_time()
            start = time.perf_counter()
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    for i in range(count):
                        due = start + i / rate
                        # Late: started at once, as `_common.paced_async` does (no
                        # checkpoint: a sleep(0) per task let one start per turn of the
                        # scheduler, so a client behind could not catch up).
                        delay = due - time.perf_counter()
                        if delay > 0:
                            await trio.sleep(delay)
                        nursery.start_soon(timed, i, due)
                    started = time.perf_counter() - start
            cpu = time.process_time() - cpu
            if TRACE:
                ours_trace.dump()
            return {
                "client_cpu_us": cpu / max(1, count) * 1e6,
                "latencies": latencies,
                "started_rate": count / started,
                "errors": errors[:5],
                "error_count": len(errors),
            }

    return trio.run(go)


def run_first(seconds: float) -> dict:
    """Submit without a pause (as `run_throughput`'s enqueuers) while the bench starts a
    worker process: when (wall clock) the first result arrived here. Prints "submitting"
    once the enqueuers run (the bench starts the worker then). Stops at the first result
    (or after `seconds`)."""

    async def go() -> dict:
        async with connect(URL, job) as system:
            first: list[float] = []
            got = trio.Event()
            submitted = 0
            enqueuers = ENQUEUERS

            async def watch(receipt: Receipt) -> None:
                await receipt
                if not first:
                    first.append(time.time())
                    got.set()

            async def submit_every(index: int, nursery: trio.Nursery) -> None:
                nonlocal submitted
                i = index
                while not got.is_set():
                    receipt = await system.submit("job", i)
                    submitted += 1
                    if submitted == enqueuers:
                        print("submitting", flush=True)
                    if i < FIRST_WATCHED:
                        nursery.start_soon(watch, receipt)
                    i += enqueuers

            with trio.move_on_after(seconds):
                async with trio.open_nursery() as nursery:
                    for index in range(enqueuers):
                        nursery.start_soon(submit_every, index, nursery)
                    await got.wait()
                    nursery.cancel_scope.cancel()
            if not first:
                return {"error": f"no result within {seconds:g}s", "submitted": submitted}
            return {"first_at": first[0], "submitted": submitted}

    return trio.run(go)

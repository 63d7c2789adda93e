"""Randomized runs of everything at once, in virtual time: every receipt resolves exactly
once, the counts in `stats()` add up, and nothing is left behind.

Each seed mixes submitters that are cancelled or time out, `Full.REJECT` and waits for
room with a deadline, delays and deadlines, `submit_many`, receipts cancelled at random,
transient and permanent failures, worker crashes (fatal errors), per-task timeouts, sync
handlers in threads, fan-out pipelines whose stages fail, small `max_results`, and
shutdowns in the middle of it all. A few seeds run with the default tests; `nox -s slow`
runs many more.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
import tenacity
import trio
import trio.testing

from queueing import (
    FanOut,
    Full,
    Pipeline,
    Queue,
    QueueingError,
    Receipt,
    RetryPolicy,
    TaskFailed,
    Transient,
    Worker,
    open_system,
)


class Broken(Exception):
    """The worker's own resource broke: a fatal error, the worker restarts."""


class Flaky(Worker):
    fatal = (Broken,)

    async def handle(self, x: int) -> int:
        draw = random.Random(x * 31 + self.attempt)
        await trio.sleep(draw.choice([0, 0, 0.01, 0.2]))
        roll = draw.random()
        if roll < 0.08:
            raise Transient("try again")
        if roll < 0.10:
            raise Broken()
        if roll < 0.12:
            raise ValueError("permanent")
        return x


class Fan(Worker):
    async def handle(self, x: int) -> FanOut:
        await trio.sleep(0.01 * (x % 3))
        if x % 23 == 0:
            raise ValueError("fan fails")
        return FanOut([x, x + 1])


class Last(Worker):
    async def handle(self, x: int) -> int:
        await trio.sleep(0.05 * (x % 4))
        if x % 13 == 0:
            raise ValueError("last fails")
        return -x


def queues(seed: int) -> tuple[Queue, Pipeline]:
    draw = random.Random(seed)
    retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.3))
    flaky = Queue(
        "flaky",
        Flaky,
        workers=draw.choice([1, 3, 8]),
        maxsize=draw.choice([1, 2, 20]),
        retry=retry,
        max_deliveries=2,
        when_full=draw.choice([Full.WAIT, Full.WAIT, Full.REJECT]),
        full_timeout=draw.choice([None, 0.5]),
        timeout=draw.choice([None, 0.1]),
        result_ttl=draw.choice([1.0, 50.0]),
        max_restarts=100_000,
        within=1.0,
    )
    fan = Queue("fan", Fan, workers=2, maxsize=draw.choice([1, 4]))
    last = Queue("last", Last, workers=draw.choice([1, 3]), maxsize=draw.choice([1, 3]))
    return flaky, Pipeline("pipe", [fan, last])


async def play(seed: int, broker: str | None = None) -> None:
    """One randomized run; `broker` a Redis URL to run it over Redis (real time) instead of
    in memory (whose stats are exact at once, and which cancels what shutdown leaves)."""
    draw = random.Random(seed)
    flaky, pipe = queues(seed)
    receipts: list[Receipt] = []
    stop_early = draw.random() < 0.3
    system_options: dict[str, Any] = {
        "max_results": draw.choice([5, 100_000]),
        "shutdown_timeout": draw.choice([0.05, 5.0]),
    }
    if broker is not None:
        system_options = {"broker": broker, "shutdown_timeout": 5.0}

    async with open_system(flaky, pipe, **system_options) as system:

        async def submitter(index: int) -> None:
            draw = random.Random(seed * 100 + index)
            for j in range(40):
                x = index * 1000 + j
                roll = draw.random()
                try:
                    with trio.move_on_after(draw.choice([0.05, 100.0])):
                        if roll < 0.3:
                            delay, expires = draw.choice([None, 0.2]), draw.choice([None, 0.3])
                            receipts.append(
                                await system.submit("flaky", x, delay=delay, expires=expires)
                            )
                        elif roll < 0.5:
                            expires = draw.choice([None, 0.3])
                            receipts.extend(
                                await system.submit_many("flaky", [x, x + 500], expires=expires)
                            )
                        elif roll < 0.7:
                            receipts.append(await system.submit("flaky", x + 300))
                        elif roll < 0.85:
                            receipts.append(await system.submit("pipe", x))
                        else:
                            receipts.extend(await system.submit_many("flaky", [x + 600, x + 800]))
                except QueueingError as exc:
                    receipts.extend(getattr(exc, "accepted", []))
                if draw.random() < 0.1 and receipts:
                    await receipts[draw.randrange(len(receipts))].cancel()
                if draw.random() < 0.2:
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for index in range(6):
                nursery.start_soon(submitter, index)
            if stop_early:
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()  # submitters cancelled mid-call

        if not stop_early:
            with trio.fail_after(10_000 if broker is None else 120):  # a stall fails
                for receipt in receipts:
                    with contextlib.suppress(TaskFailed):
                        await receipt
                await system.drain()
            if broker is not None:
                return  # Redis's figures are read from a cache refreshed now and then
            stats = system.stats()
            for name, figures in stats.items():
                outcomes = (
                    figures.succeeded
                    + figures.failed
                    + figures.dead_lettered
                    + figures.cancelled
                    + figures.expired
                )
                assert figures.outstanding == 0, (name, figures)
                assert figures.in_flight == 0, (name, figures)
                assert outcomes == figures.submitted, (name, figures)
    assert len({receipt.id for receipt in receipts}) == len(receipts)
    if broker is None:
        # After shutdown (early or not) every receipt has its outcome (over Redis, the
        # tasks left are durable: they wait for the next worker).
        assert all(receipt.done() for receipt in receipts)


@pytest.mark.parametrize("seed", range(60))
def test_chaos(seed: int) -> None:
    trio.run(play, seed, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(60, 2000))
def test_chaos_many_seeds(seed: int) -> None:
    trio.run(play, seed, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("seed", range(6))
async def test_chaos_over_redis(seed: int, redis_url: str) -> None:
    await play(seed, redis_url)

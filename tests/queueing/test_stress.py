"""Stress: many tasks with transient failures, worker crashes, permanent failures, cancels
and deadlines; every receipt resolves exactly once and the figures add up.

On the mock clock, so backoffs and restart delays cost no real time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_exponential

from queueing import (
    Queue,
    RetryPolicy,
    TaskFailed,
    TaskState,
    Transient,
    Worker,
    open_system,
)


class WorkerCrash(Exception):
    """Declared fatal: the worker crashes and its task is delivered again."""


# What each task does, by its number (the sets do not overlap):
TRANSIENT = 3  # n % 10 == 3: one transient failure, then success (10%)
CRASH = 7  # n % 100 == 7: crashes its worker on the first delivery, then succeeds (1%)
FAIL = 999  # n % 1000 == 999: a non-retryable error, FAILED at once
DEAD = 998  # n % 1000 == 998: transient every time: DEAD_LETTERED after 3 attempts
CANCEL = 500  # n % 1000 == 500: cancelled through its receipt right after submit
EXPIRE = 501  # n % 1000 == 501: must start within a microsecond, else EXPIRED
EXPECTED_FAILURE = {
    FAIL: TaskState.FAILED,
    DEAD: TaskState.DEAD_LETTERED,
    CANCEL: TaskState.CANCELLED,
    EXPIRE: TaskState.EXPIRED,
}


class Chaos(Worker):
    fatal = (WorkerCrash,)

    def __init__(self, successes: bytearray) -> None:
        self.successes = successes

    async def handle(self, n: int) -> int:
        if n % 7 == 0:
            await trio.sleep(0.001)  # some tasks take (mock) time, so others overtake them
        if n % 1000 == FAIL:
            raise ValueError(f"task {n} cannot be done")
        if n % 1000 == DEAD:
            raise Transient(f"task {n} never works")
        if n % 10 == TRANSIENT and self.attempt == 1:
            raise Transient(f"task {n} failed once")
        if n % 100 == CRASH and self.attempt == 1:
            raise WorkerCrash(f"task {n} crashed its worker")
        self.successes[n] += 1
        return n


async def stress(count: int) -> None:
    successes = bytearray(count)
    queue = Queue(
        "chaos",
        Chaos,
        workers=8,
        maxsize=1_000,
        retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_exponential(0.01, max=1)),
        max_restarts=1_000_000,
        within=1.0,
        worker_kwargs={"successes": successes},
    )
    living_before = trio.lowlevel.current_statistics().tasks_living
    receipts = []
    cancelled_by_us = 0
    async with open_system(queue, max_results=2 * count) as system:
        for n in range(count):
            expires = 1e-6 if n % 1000 == EXPIRE else None
            receipt = await system.submit("chaos", n, expires=expires)
            receipts.append(receipt)
            if n % 1000 == CANCEL and await receipt.cancel():
                cancelled_by_us += 1
        await system.drain()

        outcomes: Counter[TaskState] = Counter()
        for n, receipt in enumerate(receipts):
            assert receipt.done()
            result = await outcome_of(receipt)
            if isinstance(result, TaskFailed):
                outcomes[result.outcome] += 1
                assert result.outcome is EXPECTED_FAILURE[n % 1000]
            else:
                outcomes[TaskState.SUCCEEDED] += 1
                assert result == n
                assert successes[n] == 1  # a result is recorded once, by one handler run
        assert sum(outcomes.values()) == count
        assert len({receipt.id for receipt in receipts}) == count

        await trio.sleep(60)  # let the last restarts happen (their backoff is up to 5 s)
        stats = system.stats()["chaos"]
        assert stats.submitted == count
        assert stats.finished == count
        assert (
            stats.succeeded + stats.failed + stats.dead_lettered + stats.cancelled + stats.expired
            == stats.submitted
        )
        assert (stats.in_flight, stats.depth, stats.outstanding, stats.scheduled) == (0, 0, 0, 0)
        assert stats.succeeded == outcomes[TaskState.SUCCEEDED]
        assert stats.failed == outcomes[TaskState.FAILED] == count // 1000
        assert stats.dead_lettered == outcomes[TaskState.DEAD_LETTERED] == count // 1000
        assert stats.cancelled == outcomes[TaskState.CANCELLED] == cancelled_by_us
        assert stats.expired == outcomes[TaskState.EXPIRED]
        assert stats.retried == count // 10 + 2 * (count // 1000)
        assert stats.restarts == count // 100
        assert sum(successes) == stats.succeeded
        assert len(await system.dead_letters("chaos", limit=count)) == 2 * (count // 1000)
    assert system.unfinished == 0
    # Nothing the system started is left running.
    assert trio.lowlevel.current_statistics().tasks_living == living_before


# The default run stresses 10,000 tasks (every kind of outcome, ten times over); the
# hundred thousand run with the slow tests (`nox -s slow`), as the other soaks do.
@pytest.mark.parametrize(
    "count",
    [pytest.param(10_000, id="10k"), pytest.param(100_000, id="100k", marks=pytest.mark.slow)],
)
async def test_many_tasks_with_failures_and_crashes_all_resolve(
    autojump_clock: Any, count: int
) -> None:
    await stress(count)

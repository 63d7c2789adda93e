"""`queueing.testing`: queues under test run in memory, on the test's clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from tenacity import stop_after_attempt, wait_fixed

from queueing import Queue, RetryPolicy, Transient, Worker
from queueing.testing import open_queues


class Flaky(Worker):
    """Fails the first two attempts of every task."""

    async def handle(self, n: int) -> int:
        if self.attempt < 3:
            raise Transient(f"attempt {self.attempt} of {n}")
        return 2 * n


flaky = Queue("flaky", Flaky, retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(600)))


async def test_two_600_second_backoffs_pass_on_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_queues(flaky) as system:
        receipt = await system.submit("flaky", 21)
        assert await receipt == 42
        status = await receipt.status()
    assert status.attempts == 3
    assert 1200 <= trio.current_time() < 1300  # two backoffs of mock time, nothing more


async def test_open_queues_runs_in_memory_whatever_queueing_broker_says(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("QUEUEING_BROKER", "redis://127.0.0.1:1/0")  # nothing listens there
    async with open_queues(flaky) as system:
        receipt = await system.submit("flaky", 2)
        assert system.receipt(receipt.id) == receipt  # in memory: found at once, no I/O
        assert await receipt == 4

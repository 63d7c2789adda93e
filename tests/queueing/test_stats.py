"""`system.stats()` figures per queue, and `system.drain()`."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    Queue,
    QueueStats,
    RetryPolicy,
    Transient,
    Worker,
    open_system,
)


class Job(Worker):
    """payload: {"takes": seconds, "fail": transient failures, "error": fail for good}."""

    async def handle(self, payload: dict[str, Any]) -> int:
        await trio.sleep(payload.get("takes", 0))
        if payload.get("error"):
            raise ValueError("broken")
        if self.attempt <= payload.get("fail", 0):
            raise Transient("again")
        return self.attempt


def jobs(name: str = "jobs", **options: Any) -> Queue:
    options.setdefault("retry", RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1)))
    return Queue(name, Job, **options)


async def test_stats_has_one_entry_per_queue() -> None:
    async with open_system(jobs("a"), jobs("b", workers=3, maxsize=7)) as system:
        stats = system.stats()
    assert sorted(stats) == ["a", "b"]
    b = stats["b"]
    assert isinstance(b, QueueStats)
    assert (b.name, b.workers, b.maxsize) == ("b", 3, 7)
    assert (b.depth, b.in_flight, b.outstanding, b.submitted) == (0, 0, 0, 0)
    assert (b.p50, b.p99) == (None, None)


async def test_depth_and_in_flight_while_the_workers_are_busy(autojump_clock: Any) -> None:
    async with open_system(jobs(workers=2)) as system:
        for _ in range(5):
            await system.submit("jobs", {"takes": 10})
        await trio.sleep(1)
        stats = system.stats()["jobs"]
        assert (stats.depth, stats.in_flight, stats.outstanding) == (3, 2, 5)
        await trio.sleep(10)
        stats = system.stats()["jobs"]
        assert (stats.depth, stats.in_flight, stats.outstanding) == (1, 2, 3)


async def test_depth_counts_tasks_waiting_for_a_retry(autojump_clock: Any) -> None:
    async with open_system(jobs(retry=RetryPolicy(wait=wait_fixed(10)))) as system:
        await system.submit("jobs", {"fail": 1})
        await trio.sleep(1)
        stats = system.stats()["jobs"]
        assert (stats.depth, stats.scheduled, stats.in_flight) == (1, 1, 0)


async def test_every_outcome_is_counted(autojump_clock: Any) -> None:
    async with open_system(jobs(workers=1)) as system:
        ok = await system.submit("jobs", {"fail": 1})
        failed = await system.submit("jobs", {"error": True})
        dead = await system.submit("jobs", {"fail": 9})
        busy = await system.submit("jobs", {"takes": 100})
        expired = await system.submit("jobs", {}, expires=1)
        cancelled = await system.submit("jobs", {})
        await cancelled.cancel()
        for receipt in (ok, failed, dead, busy, expired):
            await outcome_of(receipt)
        stats = system.stats()["jobs"]
    assert stats.submitted == 6
    assert (stats.succeeded, stats.failed, stats.dead_lettered) == (2, 1, 1)
    assert (stats.cancelled, stats.expired) == (1, 1)
    assert stats.retried == 1 + 2
    assert stats.finished == 6


async def test_latency_percentiles_measure_submit_to_success(autojump_clock: Any) -> None:
    async with open_system(jobs(workers=100)) as system:
        receipts = [await system.submit("jobs", {"takes": s}) for s in range(1, 101)]
        for receipt in receipts:
            await receipt
        stats = system.stats()["jobs"]
    assert stats.p50 is not None
    assert stats.p99 is not None
    assert 50 <= stats.p50 <= 51
    assert 99 <= stats.p99 <= 100


async def test_latency_includes_the_time_spent_waiting(autojump_clock: Any) -> None:
    async with open_system(jobs(workers=1)) as system:
        receipts = [await system.submit("jobs", {"takes": 1}) for _ in range(3)]
        for receipt in receipts:
            await receipt
        stats = system.stats()["jobs"]
    assert stats.p99 == pytest.approx(3.0)


async def test_drain_waits_until_every_queue_is_empty_and_idle(autojump_clock: Any) -> None:
    async with open_system(jobs("a", workers=2), jobs("b")) as system:
        receipts = [await system.submit("a", {"takes": 5}) for _ in range(4)]
        receipts.append(await system.submit("b", {"takes": 1, "fail": 2}))
        await system.drain()
        assert trio.current_time() == pytest.approx(10.0)
        assert all(receipt.done() for receipt in receipts)
        for stats in system.stats().values():
            assert (stats.depth, stats.in_flight, stats.outstanding) == (0, 0, 0)


async def test_drain_returns_at_once_when_idle(autojump_clock: Any) -> None:
    async with open_system(jobs()) as system:
        await system.drain()
        await system.drain(timeout=1)
        assert trio.current_time() == 0.0


async def test_drain_with_a_timeout_raises_naming_the_busy_queues(autojump_clock: Any) -> None:
    async with open_system(jobs("a"), jobs("b")) as system:
        await system.submit("a", {"takes": 100})
        with pytest.raises(TimeoutError, match="a=1"):
            await system.drain(timeout=5)
        assert trio.current_time() == pytest.approx(5.0)

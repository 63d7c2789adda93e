"""Cancelling a task through its receipt: pending, waiting for a retry, or running."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    Queue,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskState,
    Transient,
    Worker,
    open_system,
)


class Job(Worker):
    """Sleeps `payload["takes"]` seconds, failing transiently on the first `fail` attempts.

    Logs ("start" | "end" | "cancelled", payload name, time).
    """

    def __init__(self, log: list[tuple[str, str, float]]) -> None:
        self.log = log

    async def handle(self, payload: dict[str, Any]) -> str:
        name = payload["name"]
        self.log.append(("start", name, trio.current_time()))
        try:
            await trio.sleep(payload.get("takes", 0))
        except trio.Cancelled:
            self.log.append(("cancelled", name, trio.current_time()))
            raise
        if self.attempt <= payload.get("fail", 0):
            raise Transient("not yet")
        self.log.append(("end", name, trio.current_time()))
        return name


def jobs(log: list[tuple[str, str, float]], **options: Any) -> Queue:
    return Queue("jobs", Job, worker_kwargs={"log": log}, **options)


async def test_a_cancelled_pending_task_never_runs(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log, workers=1)) as system:
        busy = await system.submit("jobs", {"name": "busy", "takes": 10})
        pending = await system.submit("jobs", {"name": "pending"})
        assert await pending.cancel() is True
        with pytest.raises(TaskCancelled) as info:
            await pending
        assert info.value.outcome is TaskState.CANCELLED
        assert await busy == "busy"
        await system.drain()
    assert [name for _, name, _ in log] == ["busy", "busy"]


async def test_a_cancelled_pending_task_resolves_at_once(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log, workers=1)) as system:
        await system.submit("jobs", {"name": "busy", "takes": 10})
        pending = await system.submit("jobs", {"name": "pending"})
        await pending.cancel()
        assert pending.done()
        assert (await pending.status()).state is TaskState.CANCELLED
        assert trio.current_time() == 0.0


async def test_cancelling_a_running_task_cancels_its_handler(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log)) as system:
        running = await system.submit("jobs", {"name": "long", "takes": 100})
        await trio.sleep(3)
        assert (await running.status()).state is TaskState.RUNNING
        assert await running.cancel() is True
        with pytest.raises(TaskCancelled):
            await running
        await system.drain()
        assert system.stats()["jobs"].in_flight == 0
    assert log == [("start", "long", 0.0), ("cancelled", "long", 3.0)]


async def test_the_worker_takes_the_next_task_after_its_task_is_cancelled(
    autojump_clock: Any,
) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log, workers=1)) as system:
        running = await system.submit("jobs", {"name": "long", "takes": 100})
        after = await system.submit("jobs", {"name": "after", "takes": 1})
        await trio.sleep(3)
        await running.cancel()
        assert await after == "after"
        assert trio.current_time() == pytest.approx(4.0)


async def test_cancel_returns_false_once_the_task_has_an_outcome(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log)) as system:
        done = await system.submit("jobs", {"name": "done"})
        assert await done == "done"
        assert await done.cancel() is False
        assert await done == "done"
        cancelled = await system.submit("jobs", {"name": "c", "takes": 10})
        assert await cancelled.cancel() is True
        assert await cancelled.cancel() is False


async def test_a_task_cancelled_during_its_backoff_is_not_retried(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    policy = RetryPolicy(stop=stop_after_attempt(5), wait=wait_fixed(10))
    async with open_system(jobs(log, retry=policy)) as system:
        receipt = await system.submit("jobs", {"name": "a", "fail": 3})
        await trio.sleep(5)
        assert (await receipt.status()).state is TaskState.SCHEDULED
        assert await receipt.cancel() is True
        with pytest.raises(TaskCancelled):
            await receipt
        await trio.sleep(100)
        stats = system.stats()["jobs"]
        assert (stats.scheduled, stats.outstanding, stats.cancelled) == (0, 0, 1)
    assert [event for event, _, _ in log] == ["start"]


async def test_a_cancelled_delayed_task_never_runs(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log)) as system:
        receipt = await system.submit("jobs", {"name": "later"}, delay=10)
        assert await receipt.cancel() is True
        await trio.sleep(20)
    assert log == []


async def test_cancelling_frees_room_for_a_waiting_submit(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log, workers=1, maxsize=1)) as system:
        first = await system.submit("jobs", {"name": "first", "takes": 100})
        async with trio.open_nursery() as nursery:

            async def cancel_later() -> None:
                await trio.sleep(7)
                await first.cancel()

            nursery.start_soon(cancel_later)
            second = await system.submit("jobs", {"name": "second"})
            assert trio.current_time() == pytest.approx(7.0)
        assert await second == "second"


async def test_a_task_can_be_cancelled_through_a_receipt_found_by_id(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log, workers=1)) as system:
        await system.submit("jobs", {"name": "busy", "takes": 10})
        pending = await system.submit("jobs", {"name": "pending"})
        assert await system.receipt(pending.id).cancel() is True
        with pytest.raises(TaskCancelled):
            await pending


async def test_cancelled_tasks_are_counted_and_not_dead_lettered(autojump_clock: Any) -> None:
    log: list[tuple[str, str, float]] = []
    async with open_system(jobs(log)) as system:
        receipts = [await system.submit("jobs", {"name": str(i), "takes": 5}) for i in range(3)]
        for receipt in receipts:
            await receipt.cancel()
        stats = system.stats()["jobs"]
        assert (stats.cancelled, stats.failed, stats.dead_lettered) == (3, 0, 0)
        assert await system.dead_letters("jobs") == []


async def test_task_cancelled_is_a_task_failed() -> None:
    assert issubclass(TaskCancelled, TaskFailed)

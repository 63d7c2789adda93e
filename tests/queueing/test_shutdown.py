"""Graceful shutdown: no new tasks, in-flight tasks finish in time, the rest are reported."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from tenacity import stop_after_attempt, wait_fixed

import actors
from queueing import (
    Queue,
    Receipt,
    RetryPolicy,
    SystemStopping,
    TaskCancelled,
    TaskState,
    Transient,
    Worker,
    open_system,
    run_system,
)


class Sleep(Worker):
    """Sleeps `payload` seconds; logs ("end" | "cancelled", payload)."""

    def __init__(self, log: list[tuple[str, float]]) -> None:
        self.log = log

    async def handle(self, seconds: float) -> float:
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.log.append(("cancelled", seconds))
            raise
        if seconds < 0.5 and self.attempt == 1:
            raise Transient("short ones fail once")
        self.log.append(("end", seconds))
        return seconds


def sleepy(log: list[tuple[str, float]], **options: Any) -> Queue:
    options.setdefault("retry", RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(50)))
    return Queue("sleep", Sleep, worker_kwargs={"log": log}, **options)


async def test_an_in_flight_task_finishes_within_the_shutdown_timeout(autojump_clock: Any) -> None:
    log: list[tuple[str, float]] = []
    async with open_system(sleepy(log), shutdown_timeout=30) as system:
        receipt = await system.submit("sleep", 10.0)
        await trio.sleep(1)
    assert trio.current_time() == pytest.approx(10.0)
    assert system.unfinished == 0
    assert await receipt == 10.0
    assert log == [("end", 10.0)]


async def test_a_task_still_running_at_the_shutdown_deadline_is_cancelled(
    autojump_clock: Any,
) -> None:
    log: list[tuple[str, float]] = []
    async with open_system(sleepy(log), shutdown_timeout=5) as system:
        receipt = await system.submit("sleep", 100.0)
        await trio.sleep(1)
    assert trio.current_time() == pytest.approx(6.0)
    assert system.unfinished == 1
    with pytest.raises(TaskCancelled) as info:
        await receipt
    assert info.value.error_type == "SystemStopping"
    assert log == [("cancelled", 100.0)]


async def test_queued_tasks_are_not_started_after_shutdown_begins(autojump_clock: Any) -> None:
    log: list[tuple[str, float]] = []
    async with open_system(sleepy(log, workers=1), shutdown_timeout=30) as system:
        running = await system.submit("sleep", 5.0)
        queued = [await system.submit("sleep", 1.0) for _ in range(3)]
        await trio.sleep(1)
    assert await running == 5.0
    assert system.unfinished == 3
    for receipt in queued:
        assert (await receipt.status()).state is TaskState.CANCELLED
        with pytest.raises(TaskCancelled):
            await receipt
    assert log == [("end", 5.0)]


async def test_tasks_waiting_for_a_retry_are_reported_unfinished(autojump_clock: Any) -> None:
    log: list[tuple[str, float]] = []
    async with open_system(sleepy(log), shutdown_timeout=30) as system:
        receipt = await system.submit("sleep", 0.1)  # fails once, retries in 50 s
        await trio.sleep(1)
        assert (await receipt.status()).state is TaskState.SCHEDULED
    assert trio.current_time() == pytest.approx(1.0)
    assert system.unfinished == 1
    with pytest.raises(TaskCancelled):
        await receipt


async def test_submit_during_shutdown_raises_system_stopping(autojump_clock: Any) -> None:
    log: list[tuple[str, float]] = []
    refused: list[SystemStopping] = []
    async with (
        trio.open_nursery() as nursery,
        open_system(sleepy(log), shutdown_timeout=30) as system,
    ):
        await system.submit("sleep", 10.0)

        async def submit_late() -> None:
            await trio.sleep(2)  # the block has exited; the in-flight task still runs
            try:
                await system.submit("sleep", 1.0)
            except SystemStopping as exc:
                refused.append(exc)

        nursery.start_soon(submit_late)
        await trio.sleep(1)
    assert len(refused) == 1
    assert "shutting down" in str(refused[0])
    assert system.stats()["sleep"].submitted == 1


async def test_submit_after_shutdown_raises_system_stopping() -> None:
    log: list[tuple[str, float]] = []
    async with open_system(sleepy(log)) as system:
        pass
    with pytest.raises(SystemStopping):
        await system.submit("sleep", 1.0)


async def test_no_worker_is_left_after_the_system_stops(autojump_clock: Any) -> None:
    log: list[tuple[str, float]] = []
    async with open_system(sleepy(log, workers=3), shutdown_timeout=5) as system:
        await system.submit("sleep", 100.0)
        await system.submit("sleep", 1.0)
        await trio.sleep(1)
        names = [name for name in system.actors.names if name.startswith("sleep.")]
        assert len(names) == 4  # the pool and its three workers
    for name in names:
        with pytest.raises(actors.ActorNotFound):
            system.actors.lookup(name)
    for stats in system.stats().values():
        assert (stats.outstanding, stats.in_flight) == (0, 0)


def test_run_system_runs_main_and_returns_its_value() -> None:
    log: list[tuple[str, float]] = []

    async def main(system: Any) -> float:
        receipt: Receipt = await system.submit("sleep", 3.0)
        return float(await receipt)

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert run_system(sleepy(log), main=main, clock=clock) == 3.0
    assert log == [("end", 3.0)]


def test_run_system_shuts_down_after_main_returns() -> None:
    log: list[tuple[str, float]] = []
    receipts: list[Receipt] = []

    async def main(system: Any) -> None:
        receipts.append(await system.submit("sleep", 100.0))

    clock = trio.testing.MockClock(autojump_threshold=0)
    run_system(sleepy(log), main=main, clock=clock, shutdown_timeout=1)
    (receipt,) = receipts
    assert receipt.done()
    assert log == [("cancelled", 100.0)]


async def test_a_submit_waiting_for_room_at_shutdown_is_refused(autojump_clock: Any) -> None:
    # Nothing accepted may be left without an outcome: the waiting submit must not slip
    # in after the system has stopped.
    log: list[tuple[str, float]] = []
    outcome: list[Any] = []
    async with (
        trio.open_nursery() as nursery,
        open_system(sleepy(log, maxsize=1), shutdown_timeout=5) as system,
    ):
        await system.submit("sleep", 100.0)

        async def submit_waiting() -> None:
            try:
                outcome.append(await system.submit("sleep", 1.0))
            except SystemStopping as exc:
                outcome.append(exc)

        nursery.start_soon(submit_waiting)
        await trio.sleep(1)
        assert outcome == []  # it waits for room
    (result,) = outcome
    assert isinstance(result, SystemStopping)
    assert system.stats()["sleep"].submitted == 1

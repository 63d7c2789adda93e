"""Time limits on tasks: per-attempt timeouts, start deadlines (expires) and delays."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    InvalidQueue,
    Queue,
    RetryPolicy,
    TaskExpired,
    TaskFailed,
    TaskState,
    TaskTimeout,
    Transient,
    Worker,
    open_system,
)


class Sleep(Worker):
    """Sleeps `payload[attempt - 1]` seconds (the last entry for later attempts)."""

    def __init__(self, log: list[tuple[int, float]]) -> None:
        self.log = log

    async def handle(self, seconds: list[float]) -> float:
        self.log.append((self.attempt, trio.current_time()))
        took = seconds[min(self.attempt, len(seconds)) - 1]
        await trio.sleep(took)
        return took


def sleepy(log: list[tuple[int, float]], **options: Any) -> Queue:
    return Queue("sleep", Sleep, worker_kwargs={"log": log}, **options)


async def test_an_attempt_past_the_timeout_fails_with_task_timeout(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, timeout=5, retry=RetryPolicy.never())) as system:
        error = await outcome_of(await system.submit("sleep", [100]))
        assert trio.current_time() == pytest.approx(5.0)
    assert isinstance(error, TaskFailed)
    assert error.error_type == "queueing.TaskTimeout"
    assert "timeout of 5s" in error.error
    assert error.attempts == 1


def test_task_timeout_is_transient_and_a_timeout_error() -> None:
    assert issubclass(TaskTimeout, Transient)
    assert issubclass(TaskTimeout, TimeoutError)


async def test_a_timed_out_attempt_is_retried_by_default(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, timeout=5)) as system:
        receipt = await system.submit("sleep", [100, 1])
        assert await receipt == 1
        assert (await receipt.status()).attempts == 2
    (_, first), (_, second) = log
    assert first == 0.0
    assert 5.1 <= second <= 5.2 + 1e-9  # the default backoff: 0.1 s plus up to 0.1 jitter


async def test_the_timeout_applies_to_each_attempt(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    policy = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1))
    async with open_system(sleepy(log, timeout=5, retry=policy)) as system:
        error = await outcome_of(await system.submit("sleep", [100]))
        assert trio.current_time() == pytest.approx(17.0)
    assert isinstance(error, TaskFailed)
    assert error.outcome is TaskState.DEAD_LETTERED
    assert [t for _, t in log] == pytest.approx([0.0, 6.0, 12.0])


async def test_a_task_within_its_timeout_is_not_affected(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, timeout=5)) as system:
        assert await (await system.submit("sleep", [4.9])) == 4.9


async def test_each_task_gets_its_own_timeout_on_the_same_worker(autojump_clock: Any) -> None:
    # Two 4 s tasks back to back on one worker with a 5 s timeout: neither times out.
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, workers=1, timeout=5)) as system:
        receipts = [await system.submit("sleep", [4]) for _ in range(3)]
        assert [await r for r in receipts] == [4, 4, 4]
        assert trio.current_time() == pytest.approx(12.0)


async def test_a_worker_goes_on_with_the_next_task_after_a_timeout(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    queue = sleepy(log, workers=1, timeout=5, retry=RetryPolicy.never())
    async with open_system(queue) as system:
        slow = await system.submit("sleep", [100])
        fast = await system.submit("sleep", [1])
        assert await fast == 1
        assert trio.current_time() == pytest.approx(6.0)
        assert isinstance(await outcome_of(slow), TaskFailed)


async def test_a_task_not_started_before_it_expires_is_expired(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, workers=1)) as system:
        busy = await system.submit("sleep", [10])
        late = await system.submit("sleep", [1], expires=5)
        with pytest.raises(TaskExpired) as info:
            await late
        assert await busy == 10
        stats = system.stats()["sleep"]
        status = await late.status()
    assert info.value.outcome is TaskState.EXPIRED
    assert isinstance(info.value, TaskFailed)
    assert status.state is TaskState.EXPIRED
    assert status.attempts == 0
    assert stats.expired == 1
    assert len(log) == 1  # the expired task never ran


async def test_a_task_started_before_it_expires_runs_to_the_end(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, workers=1)) as system:
        receipt = await system.submit("sleep", [20], expires=5)
        assert await receipt == 20


async def test_a_delayed_task_does_not_start_before_its_delay(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log)) as system:
        receipt = await system.submit("sleep", [1], delay=30)
        await trio.sleep(29)
        assert (await receipt.status()).state is TaskState.SCHEDULED
        assert system.stats()["sleep"].scheduled == 1
        assert await receipt == 1
    assert log == [(1, pytest.approx(30.0))]


async def test_a_delayed_task_holds_no_worker(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, workers=1)) as system:
        later = await system.submit("sleep", [1], delay=30)
        now = await system.submit("sleep", [1])
        assert await now == 1
        assert trio.current_time() == pytest.approx(1.0)
        assert await later == 1


async def test_delayed_tasks_start_in_order_of_their_due_time(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log, workers=3)) as system:
        receipts = [await system.submit("sleep", [d], delay=d) for d in (30, 10, 20)]
        for r in receipts:
            await r
    assert [t for _, t in log] == pytest.approx([10.0, 20.0, 30.0])


async def test_a_delay_past_the_deadline_expires_the_task(autojump_clock: Any) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log)) as system:
        with pytest.raises(TaskExpired):
            await (await system.submit("sleep", [1], delay=10, expires=5))
    assert log == []


@pytest.mark.parametrize("option", ["delay", "expires", "timeout"])
async def test_negative_times_are_refused(option: str) -> None:
    log: list[tuple[int, float]] = []
    async with open_system(sleepy(log)) as system:
        with pytest.raises(InvalidQueue, match=option):
            await system.submit("sleep", [1], **{option: -1})
        assert system.stats()["sleep"].submitted == 0

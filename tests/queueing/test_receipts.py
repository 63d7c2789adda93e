"""Receipts: results, status over time, lookup by id, and how long outcomes are kept."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import trio

from queueing import (
    InvalidQueue,
    Queue,
    ResultTimeout,
    RetryPolicy,
    TaskFailed,
    TaskState,
    UnknownTask,
    Worker,
    open_system,
)


class Sleep(Worker):
    async def handle(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("negative")
        await trio.sleep(seconds)
        return seconds


def sleepy(**options: Any) -> Queue:
    return Queue(options.pop("name", "sleep"), Sleep, **options)


async def test_awaiting_a_receipt_returns_the_result(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 2.0)
        assert not receipt.done()
        assert await receipt == 2.0
        assert receipt.done()
        assert trio.current_time() == pytest.approx(2.0)


async def test_a_receipt_can_be_awaited_again(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 2.0)
        assert await receipt == 2.0
        assert await receipt == 2.0
        assert await receipt.result(timeout=0) == 2.0


async def test_many_waiters_get_the_same_result(autojump_clock: Any) -> None:
    results: list[float] = []
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 2.0)

        async def wait() -> None:
            results.append(await receipt)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(wait)
    assert results == [2.0] * 5


async def test_waiters_that_give_up_leave_the_others_waiting(autojump_clock: Any) -> None:
    """Callers of one receipt come and go (timeouts, cancellation): whoever still waits
    when the outcome comes gets it, whether it came first or later."""
    got: dict[str, object] = {}
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 2.0)

        async def wait(name: str, start: float, timeout: float | None) -> None:
            await trio.sleep(start)
            try:
                got[name] = await receipt.result(timeout=timeout)
            except ResultTimeout:
                got[name] = "timed out"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "first, gives up", 0.0, 1.0)
            nursery.start_soon(wait, "second, gives up", 0.1, 1.5)
            nursery.start_soon(wait, "third", 0.2, None)
            nursery.start_soon(wait, "after the first gave up", 1.2, None)
            await trio.sleep(0.3)
            with trio.move_on_after(0.3):
                await receipt  # cancelled while it waits: no trace left
    assert got == {
        "first, gives up": "timed out",
        "second, gives up": "timed out",
        "third": 2.0,
        "after the first gave up": 2.0,
    }


async def test_result_timeout_raises_when_the_result_is_not_ready(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 10.0)
        with pytest.raises(ResultTimeout) as info:
            await receipt.result(timeout=4)
        assert trio.current_time() == pytest.approx(4.0)
        assert info.value.task_id == receipt.id
        assert "after 4s" in str(info.value)
        assert isinstance(info.value, TimeoutError)


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(math.nan, ValueError), (-1.0, ValueError), (-1, ValueError), ("1", TypeError)],
    ids=repr,
)
async def test_a_wait_of_no_number_of_seconds_is_refused_naming_it(
    autojump_clock: Any, timeout: Any, error: type[Exception]
) -> None:
    # Before: InvalidQueue (a ValueError named for a queue's settings); first, trio's
    # "`seconds` must not be NaN" (not naming the argument), and nothing at all for a
    # receipt already done. Now a plain ValueError, as trio's own waits raise.
    async with open_system(sleepy()) as system:
        running = await system.submit("sleep", 5.0)
        done = await system.submit("sleep", 0.0)
        assert await done == 0.0
        for receipt in (running, done):
            with pytest.raises(error, match="timeout must be a number of seconds >= 0") as info:
                await receipt.result(timeout=timeout)
            assert not isinstance(info.value, InvalidQueue)
        with pytest.raises(error, match="timeout must be a number of seconds >= 0") as info:
            await system.drain(timeout=timeout)
        assert not isinstance(info.value, InvalidQueue)
        assert await running == 5.0


async def test_a_timeout_of_zero_looks_once(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 5.0)
        with pytest.raises(ResultTimeout, match="after 0s"):
            await receipt.result(timeout=0)
        assert trio.current_time() == 0.0
        assert await receipt.result(timeout=10) == 5.0


async def test_timed_waits_end_each_at_its_own_deadline(autojump_clock: Any) -> None:
    """Waits with deadlines in any order, some cancelled, some woken by the outcome: each
    that times out does so at exactly its own deadline, the others get the result."""
    ended: dict[str, tuple[object, float]] = {}
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 7.0)

        async def wait(name: str, start: float, timeout: float) -> None:
            await trio.sleep(start)
            try:
                got: object = await receipt.result(timeout=timeout)
            except ResultTimeout:
                got = "timed out"
            ended[name] = (got, trio.current_time())

        async def cancelled(at: float) -> None:
            with trio.move_on_after(at):
                await receipt.result(timeout=100)
            ended[f"cancelled at {at:g}"] = ("cancelled", trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "30 s", 0.0, 30.0)
            nursery.start_soon(wait, "5 s", 0.0, 5.0)
            nursery.start_soon(wait, "2 s from 1", 1.0, 2.0)  # earlier than the first two
            nursery.start_soon(wait, "3 s from 1", 1.0, 3.0)
            nursery.start_soon(cancelled, 0.5)
            nursery.start_soon(wait, "10 s from 6", 6.0, 10.0)
    assert ended == {
        "cancelled at 0.5": ("cancelled", 0.5),
        "2 s from 1": ("timed out", 3.0),
        "3 s from 1": ("timed out", 4.0),
        "5 s": ("timed out", 5.0),
        "30 s": (7.0, 7.0),
        "10 s from 6": (7.0, 7.0),
    }


async def test_a_timed_wait_cancelled_from_outside_is_cancelled(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 5.0)
        with trio.CancelScope() as scope:
            scope.deadline = 1.0
            await receipt.result(timeout=3.0)
            raise AssertionError("not cancelled")  # pragma: no cover
        assert scope.cancelled_caught
        assert trio.current_time() == 1.0
        # Its deadline left with it: the next wait ends only at the outcome.
        assert await receipt.result(timeout=60) == 5.0
        assert trio.current_time() == 5.0


async def test_the_task_completes_after_a_result_timeout(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 10.0)
        with pytest.raises(ResultTimeout):
            await receipt.result(timeout=4)
        assert (await receipt.status()).state is TaskState.RUNNING
        assert await receipt.result(timeout=100) == 10.0
        assert trio.current_time() == pytest.approx(10.0)


async def test_status_reports_the_states_over_time(autojump_clock: Any) -> None:
    async with open_system(sleepy(workers=1)) as system:
        before = time.time()
        busy = await system.submit("sleep", 5.0)
        receipt = await system.submit("sleep", 5.0)
        pending = await receipt.status()
        await trio.sleep(6)
        running = await receipt.status()
        await busy
        await receipt
        finished = await receipt.status()
    assert (pending.state, pending.attempts, pending.finished_at) == (TaskState.PENDING, 0, None)
    assert (running.state, running.attempts, running.deliveries) == (TaskState.RUNNING, 1, 1)
    assert finished.state is TaskState.SUCCEEDED
    assert finished.error is None
    assert (finished.id, finished.queue) == (receipt.id, "sleep")
    assert finished.finished_at is not None
    assert before <= finished.submitted_at <= finished.finished_at <= time.time()


async def test_a_failed_receipt_raises_task_failed_with_the_details(autojump_clock: Any) -> None:
    async with open_system(sleepy(retry=RetryPolicy.never())) as system:
        receipt = await system.submit("sleep", -1.0)
        with pytest.raises(TaskFailed) as info:
            await receipt
        status = await receipt.status()
    error = info.value
    assert (error.task_id, error.queue, error.outcome) == (receipt.id, "sleep", TaskState.FAILED)
    assert (error.error_type, error.error, error.attempts) == ("ValueError", "negative", 1)
    assert error.stage is None
    assert status.error is not None
    assert (status.error.type, status.error.message) == ("ValueError", "negative")


async def test_a_receipt_is_found_again_by_its_id(autojump_clock: Any) -> None:
    async with open_system(sleepy()) as system:
        receipt = await system.submit("sleep", 3.0)
        again = system.receipt(receipt.id)
        assert again == receipt
        assert hash(again) == hash(receipt)
        assert again.queue == "sleep"
        assert await again == 3.0
        assert await system.receipt(receipt.id) == 3.0


async def test_a_bogus_id_raises_unknown_task_at_the_first_await() -> None:
    async with open_system(sleepy()) as system:
        found = system.receipt("no-such-task")  # as with every broker: no lookup yet
        assert repr(found) == "<Receipt no-such-task (not looked up yet)>"
        with pytest.raises(UnknownTask) as info:
            await found
    assert info.value.task_id == "no-such-task"
    assert "'no-such-task'" in str(info.value)
    assert "names no queue" in str(info.value)
    assert info.value.expired is False  # in process, a bogus id is told from an expired one
    assert isinstance(info.value, LookupError)


async def test_an_outcome_is_kept_for_the_result_ttl(autojump_clock: Any) -> None:
    async with open_system(sleepy(result_ttl=60)) as system:
        receipt = await system.submit("sleep", 1.0)
        await receipt
        await trio.sleep(55)
        assert await system.receipt(receipt.id) == 1.0


async def test_an_outcome_is_forgotten_after_the_result_ttl(autojump_clock: Any) -> None:
    async with open_system(sleepy(result_ttl=60)) as system:
        receipt = await system.submit("sleep", 1.0)
        await receipt
        await trio.sleep(61)
        with pytest.raises(UnknownTask):
            await system.receipt(receipt.id).status()


async def test_each_queue_keeps_outcomes_for_its_own_result_ttl(autojump_clock: Any) -> None:
    queues = sleepy(name="long", result_ttl=3600), sleepy(name="short", result_ttl=10)
    async with open_system(*queues) as system:
        long = await system.submit("long", 1.0)
        short = await system.submit("short", 2.0)
        await long
        await short
        await trio.sleep(20)
        assert await system.receipt(long.id) == 1.0
        with pytest.raises(UnknownTask):
            await system.receipt(short.id)


async def test_a_receipt_held_by_its_client_still_resolves_after_the_ttl(
    autojump_clock: Any,
) -> None:
    async with open_system(sleepy(result_ttl=10)) as system:
        receipt = await system.submit("sleep", 1.0)
        await trio.sleep(100)
        await (await system.submit("sleep", 1.0))  # gives the store a chance to evict
        assert await receipt == 1.0


async def test_the_store_keeps_at_most_max_results_outcomes(autojump_clock: Any) -> None:
    async with open_system(sleepy(workers=1), max_results=5) as system:
        receipts = [await system.submit("sleep", 1.0) for _ in range(20)]
        known_counts = []
        for receipt in receipts:
            await receipt
            known = 0
            for other in receipts:
                try:
                    await system.receipt(other.id).status()
                except UnknownTask:
                    continue
                if other.done():
                    known += 1
            known_counts.append(known)
        assert max(known_counts) == 5
        # The newest outcomes are the ones kept.
        for receipt in receipts[-5:]:
            assert await system.receipt(receipt.id) == 1.0
        for receipt in receipts[:-5]:
            with pytest.raises(UnknownTask):
                await system.receipt(receipt.id)


async def test_tasks_without_an_outcome_are_never_forgotten(autojump_clock: Any) -> None:
    async with open_system(sleepy(workers=1), max_results=2) as system:
        receipts = [await system.submit("sleep", 10.0) for _ in range(6)]
        await receipts[2]
        for receipt in receipts[3:]:
            assert system.receipt(receipt.id) == receipt

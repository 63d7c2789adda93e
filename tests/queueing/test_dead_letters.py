"""Dead letters: tasks that failed for good are kept, listed, re-queued and purged."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    Full,
    InvalidQueue,
    Queue,
    QueueFull,
    RetryPolicy,
    TaskFailed,
    TaskState,
    Transient,
    UnknownQueue,
    Worker,
    open_system,
)


class Service(Worker):
    """Fails while `fault["on"]`: a `Transient` error for odd payloads, ValueError else."""

    def __init__(self, fault: dict[str, bool]) -> None:
        self.fault = fault

    async def handle(self, n: int) -> int:
        if self.fault["on"]:
            raise Transient("service down") if n % 2 else ValueError(f"bad input {n}")
        return n * 10


def service(fault: dict[str, bool], **options: Any) -> Queue:
    options.setdefault("retry", RetryPolicy(stop=stop_after_attempt(2), wait=wait_fixed(1)))
    return Queue("svc", Service, worker_kwargs={"fault": fault}, **options)


async def fail_all(system: Any, payloads: list[int]) -> list[Any]:
    receipts = [await system.submit("svc", n) for n in payloads]
    for receipt in receipts:
        assert isinstance(await outcome_of(receipt), TaskFailed)
    return receipts


async def test_failed_and_dead_lettered_tasks_are_listed_oldest_first(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        receipts = await fail_all(system, [2, 1, 4])
        letters = await system.dead_letters("svc")
    # 1 was retried, so it failed for good after 2 and 4.
    assert [letter.id for letter in letters] == [receipts[0].id, receipts[2].id, receipts[1].id]
    assert [letter.payload for letter in letters] == [2, 4, 1]
    assert [letter.state for letter in letters] == [
        TaskState.FAILED,
        TaskState.FAILED,
        TaskState.DEAD_LETTERED,
    ]
    assert [letter.attempts for letter in letters] == [1, 1, 2]
    assert all(letter.queue == "svc" for letter in letters)


async def test_dead_letters_limit_returns_the_newest(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        await fail_all(system, [0, 2, 4, 6])
        letters = await system.dead_letters("svc", limit=2)
    assert [letter.payload for letter in letters] == [4, 6]


async def test_dead_letters_of_an_unknown_queue_raise_unknown_queue() -> None:
    async with open_system(service({"on": False})) as system:
        with pytest.raises(UnknownQueue, match="known: svc"):
            await system.dead_letters("nope")
        with pytest.raises(UnknownQueue):
            await system.requeue("nope")
        with pytest.raises(UnknownQueue):
            await system.purge_dead_letters("nope")


async def test_requeued_dead_letters_succeed_once_the_fault_is_gone(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        old = await fail_all(system, [1, 2, 3])
        fault["on"] = False
        new = await system.requeue("svc")
        assert sorted([await r for r in new]) == [10, 20, 30]
        assert {r.id for r in new}.isdisjoint({r.id for r in old})
        assert await system.dead_letters("svc") == []


async def test_a_requeued_task_keeps_its_old_outcome_under_its_old_id(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        (old,) = await fail_all(system, [2])
        fault["on"] = False
        (new,) = await system.requeue("svc")
        assert await new == 20
        again = system.receipt(old.id)
        assert (await again.status()).state is TaskState.FAILED
        with pytest.raises(TaskFailed):
            await again


async def test_requeue_takes_only_the_dead_letters_named(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        receipts = await fail_all(system, [2, 4, 6])
        fault["on"] = False
        new = await system.requeue("svc", [receipts[1].id])
        assert [await r for r in new] == [40]
        left = await system.dead_letters("svc")
    assert [letter.id for letter in left] == [receipts[0].id, receipts[2].id]


async def test_requeue_of_a_task_that_fails_again_dead_letters_it_again(
    autojump_clock: Any,
) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        await fail_all(system, [2])
        (new,) = await system.requeue("svc")
        assert isinstance(await outcome_of(new), TaskFailed)
        letters = await system.dead_letters("svc")
    assert [letter.id for letter in letters] == [new.id]


async def test_purge_deletes_the_dead_letters_and_says_how_many(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        await fail_all(system, [2, 4, 6])
        assert await system.purge_dead_letters("svc") == 3
        assert await system.dead_letters("svc") == []
        assert await system.purge_dead_letters("svc") == 0


async def test_dead_letters_are_kept_per_queue(autojump_clock: Any) -> None:
    fault = {"on": True}
    other = Queue("other", Service, worker_kwargs={"fault": fault})
    async with open_system(service(fault), other) as system:
        await fail_all(system, [2])
        assert await system.dead_letters("other") == []
        assert len(await system.dead_letters("svc")) == 1


async def test_the_dead_letter_store_is_bounded_dropping_the_oldest(autojump_clock: Any) -> None:
    fault = {"on": True}
    async with open_system(service(fault), max_dead_letters=3) as system:
        await fail_all(system, [0, 2, 4, 6, 8])
        letters = await system.dead_letters("svc")
    assert [letter.payload for letter in letters] == [4, 6, 8]


async def test_requeue_into_a_full_queue_keeps_the_letters_it_could_not_submit(
    autojump_clock: Any,
) -> None:
    fault = {"on": True}
    gate = trio.Event()

    class Blocked(Service):
        async def handle(self, n: int) -> int:
            if not self.fault["on"]:
                await gate.wait()
            return await super().handle(n)

    queue = Queue(
        "svc",
        Blocked,
        worker_kwargs={"fault": fault},
        maxsize=2,
        when_full=Full.REJECT,
        retry=RetryPolicy.never(),
    )
    async with open_system(queue) as system:
        await fail_all(system, [0, 2])
        await fail_all(system, [4, 6])
        fault["on"] = False
        with pytest.raises(QueueFull):
            await system.requeue("svc")
        # Two went back to the queue; the other two are still dead letters, not lost.
        letters = await system.dead_letters("svc")
        assert sorted(letter.payload for letter in letters) == [4, 6]
        assert system.stats()["svc"].outstanding == 2
        gate.set()


@pytest.mark.parametrize("limit", [0, -1, 1.5, True], ids=repr)
async def test_a_dead_letters_limit_that_is_no_count_is_refused(
    autojump_clock: Any, limit: Any
) -> None:
    # Before: [] (as if there were none), while tenants() refused the same limit.
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        await fail_all(system, [2])
        with pytest.raises(InvalidQueue, match="limit must be an int >= 1"):
            await system.dead_letters("svc", limit=limit)
        assert len(await system.dead_letters("svc", limit=1)) == 1


async def test_requeue_refuses_one_id_given_as_a_str(autojump_clock: Any) -> None:
    # Before: the str was read as a set of characters, so nothing was requeued and [] came
    # back as if that id had no letter.
    fault = {"on": True}
    async with open_system(service(fault)) as system:
        [receipt] = await fail_all(system, [2])
        with pytest.raises(InvalidQueue, match=r"list of task ids.*pass \["):
            await system.requeue("svc", receipt.id)  # type: ignore[arg-type]
        fault["on"] = False
        [again] = await system.requeue("svc", [receipt.id])
        assert await again == 20

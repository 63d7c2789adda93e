"""Failures: retries, FAILED and DEAD_LETTERED outcomes, poison tasks, and the
dead-letter store (list, requeue, purge)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
from contract_workers import (
    WAIT,
    Fatal,
    Probe,
    Troubled,
    failure_of,
    outcome_of,
    serve,
)
from tenacity import stop_after_attempt, wait_fixed

from queueing import DeadLetter, Queue, RetryPolicy, TaskState, UnknownTask, Worker

BACKOFF = 0.05  # seconds between attempts
ATTEMPTS = 3  # stop_after_attempt(ATTEMPTS)
MAX_DELIVERIES = 2


def troubled(probe: Probe, **options: Any) -> Queue:
    policy = RetryPolicy(stop=stop_after_attempt(ATTEMPTS), wait=wait_fixed(BACKOFF))
    return Queue("troubled", Troubled, retry=policy, worker_kwargs={"probe": probe}, **options)


def fatal(probe: Probe, **options: Any) -> Queue:
    return Queue(
        "fatal",
        Fatal,
        max_deliveries=MAX_DELIVERIES,
        worker_kwargs={"probe": probe},
        **options,
    )


async def test_a_transient_error_is_retried_until_the_handler_succeeds(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        receipt = await system.submit("troubled", {"name": "flaky", "transient": 2})
        assert await outcome_of(receipt) == "FLAKY"
        status = await receipt.status()
    assert (status.state, status.attempts) == (TaskState.SUCCEEDED, 3)
    assert probe.started == [("flaky", 1), ("flaky", 2), ("flaky", 3)]


async def test_a_non_retryable_error_fails_the_task_at_once(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        receipt = await system.submit("troubled", {"name": "bad", "broken": True})
        failure = await failure_of(receipt)
        letters = await system.dead_letters("troubled")
    assert failure.outcome is TaskState.FAILED
    assert failure.attempts == 1
    assert failure.error_type == "ValueError"
    assert "cannot handle bad" in failure.error
    assert [(d.id, d.state) for d in letters] == [(receipt.id, TaskState.FAILED)]
    assert probe.started == [("bad", 1)]


async def test_a_task_whose_retries_run_out_is_dead_lettered(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        receipt = await system.submit("troubled", {"name": "down", "transient": 99})
        failure = await failure_of(receipt)
        letters = await system.dead_letters("troubled")
    assert failure.outcome is TaskState.DEAD_LETTERED
    assert failure.attempts == ATTEMPTS
    assert failure.error_type == "queueing.Transient"
    assert [(d.id, d.state, d.attempts) for d in letters] == [
        (receipt.id, TaskState.DEAD_LETTERED, ATTEMPTS)
    ]


@pytest.mark.parametrize("backoff", [math.inf, 1e308], ids=["inf", "1e308"])
async def test_a_backoff_past_any_clock_leaves_the_task_scheduled_and_the_worker_serving(
    broker: str, clock: trio.abc.Clock | None, backoff: float
) -> None:
    # A wait strategy may answer anything a float holds; the retry is scheduled (capped)
    # instead of crashing the worker that schedules it, over and over.
    probe = Probe()
    policy = RetryPolicy(stop=stop_after_attempt(ATTEMPTS), wait=wait_fixed(backoff))
    queue = Queue("troubled", Troubled, retry=policy, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        later = await system.submit("troubled", {"name": "later", "transient": 1})
        await probe.wait_for(probe.started)
        # One worker: it takes "now" once it has scheduled the retry of "later".
        now = await system.submit("troubled", {"name": "now"})
        assert await outcome_of(now) == "NOW"
        status = await later.status()
        stats = system.stats()["troubled"]
    assert (status.state, status.attempts) == (TaskState.SCHEDULED, 1)
    assert stats.restarts == 0


async def test_a_poison_task_is_dead_lettered_after_max_deliveries(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, fatal(probe)) as system:
        receipt = await system.submit("fatal", "poison")
        failure = await failure_of(receipt)
        letters = await system.dead_letters("fatal")
    assert failure.outcome is TaskState.DEAD_LETTERED
    assert failure.error_type == "Poison"
    assert probe.started == ["poison"] * MAX_DELIVERIES  # it crashed its worker every time
    assert [(d.id, d.state) for d in letters] == [(receipt.id, TaskState.DEAD_LETTERED)]


async def test_the_pool_goes_on_serving_after_a_poison_task(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, fatal(probe, workers=2)) as system:
        poison = await system.submit("fatal", "poison")
        healthy = [await system.submit("fatal", f"ok-{n}") for n in range(4)]
        assert [await outcome_of(r) for r in healthy] == [f"ok-{n}" for n in range(4)]
        assert (await failure_of(poison)).error_type == "Poison"
        after = await system.submit("fatal", "after")
        assert await outcome_of(after) == "after"


async def test_dead_letters_list_the_task_and_its_cause(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    payload = {"name": "bad", "broken": True}
    async with serve(broker, troubled(probe)) as system:
        receipt = await system.submit("troubled", payload)
        await failure_of(receipt)
        [letter] = await system.dead_letters("troubled")
    assert isinstance(letter, DeadLetter)
    assert (letter.id, letter.queue, letter.payload) == (receipt.id, "troubled", payload)
    assert (letter.state, letter.attempts) == (TaskState.FAILED, 1)
    assert letter.error is not None
    assert letter.error.type == "ValueError"
    assert letter.error.message == "cannot handle bad"


async def test_requeued_dead_letters_run_again_as_new_tasks_once_fixed(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        first = [await system.submit("troubled", {"name": name, "broken": True}) for name in "ab"]
        for receipt in first:
            await failure_of(receipt)
        probe.fixed = True
        again = await system.requeue("troubled", [r.id for r in first])
        assert sorted([await outcome_of(r) for r in again]) == ["A", "B"]
        assert {r.id for r in again}.isdisjoint({r.id for r in first})
        assert await system.dead_letters("troubled") == []
        for receipt in first:  # the old ids keep their outcome
            assert (await failure_of(system.receipt(receipt.id))).outcome is TaskState.FAILED


async def test_requeue_by_id_leaves_the_other_letters(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        keep = await system.submit("troubled", {"name": "keep", "broken": True})
        retry = await system.submit("troubled", {"name": "retry", "broken": True})
        await failure_of(keep)
        await failure_of(retry)
        probe.fixed = True
        [again] = await system.requeue("troubled", [retry.id])
        assert await outcome_of(again) == "RETRY"
        assert [d.id for d in await system.dead_letters("troubled")] == [keep.id]


async def test_requeue_of_an_id_that_is_no_dead_letter_raises_and_requeues_nothing(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        letter = await system.submit("troubled", {"name": "letter", "broken": True})
        await failure_of(letter)
        probe.fixed = True
        with pytest.raises(UnknownTask) as refused:
            await system.requeue("troubled", [letter.id, "no-such-id", "nor-this"])
        assert refused.value.task_id == "no-such-id"
        assert "'no-such-id' is known" in str(refused.value)
        assert "(nor are 'nor-this')" in str(refused.value)
        assert "nothing was requeued" in str(refused.value)
        assert [d.id for d in await system.dead_letters("troubled")] == [letter.id]
        [again] = await system.requeue("troubled", [letter.id])
        assert await outcome_of(again) == "LETTER"
        with pytest.raises(UnknownTask, match="not among the dead letters of 'troubled'"):
            await system.requeue("troubled", [letter.id])  # requeued already
        assert await system.requeue("troubled", []) == []


async def test_purge_removes_the_dead_letters_and_counts_them(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, troubled(probe)) as system:
        for name in ("x", "y", "z"):
            await failure_of(await system.submit("troubled", {"name": name, "broken": True}))
        assert len(await system.dead_letters("troubled")) == 3
        assert await system.purge_dead_letters("troubled") == 3
        assert await system.dead_letters("troubled") == []
        assert await system.purge_dead_letters("troubled") == 0
        await system.drain(timeout=WAIT)


class Unprintable(Exception):
    """An exception whose message cannot be read."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


class RaisesUnprintable(Worker):
    async def handle(self, word: str) -> str:
        if word == "unprintable":
            raise Unprintable
        return word


async def test_an_exception_whose_str_raises_fails_its_task(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Before: reading its message crashed the worker after the handler had returned, and
    # the task was neither handed back nor settled: no outcome until shutdown.
    async with serve(broker, Queue("unprintable", RaisesUnprintable)) as system:
        bad = await system.submit("unprintable", "unprintable")
        good = await system.submit("unprintable", "fine")
        failure = await failure_of(bad)
        assert await outcome_of(good) == "fine"
        stats = system.stats()["unprintable"]
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type.endswith("Unprintable")
    assert "str() of the" in failure.error
    assert "RuntimeError('no message')" in failure.error
    assert stats.restarts == 0


class RaisesSurrogate(Worker):
    async def handle(self, word: str) -> str:
        if word == "surrogate":
            raise ValueError("cannot read caf\udce9 (bytes decoded with surrogateescape)")
        return word


async def test_an_error_message_utf8_cannot_hold_fails_its_task_and_no_other(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Before: writing the outcome failed (SQLite: 'settle failed'; Redis: the dispatcher
    # crashed with the outcomes batched with it): the task stayed RUNNING.
    async with serve(broker, Queue("surrogate", RaisesSurrogate, workers=4)) as system:
        words = ["fine"] * 5 + ["surrogate"] + ["fine"] * 5
        receipts = [await system.submit("surrogate", word) for word in words]
        failure = await failure_of(receipts.pop(5))
        assert [await outcome_of(receipt) for receipt in receipts] == ["fine"] * 10
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type == "ValueError"
    assert failure.error == "cannot read caf\\udce9 (bytes decoded with surrogateescape)"

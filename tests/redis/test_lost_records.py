"""Redis loses data (FLUSHALL, a restart without persistence, a record deleted): every
receipt still resolves, those whose records were lost with `TaskLost`, in bounded time;
the loss is logged once per event, and workers holding such tasks drop them quietly."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from broker_helpers import JOBS, claim_until, new_run, new_task, opened, running
from redis_helpers import key, outcome_of, raw_client, task_key, wait_for

from queueing import Queue, Receipt, TaskLost, Worker, connect, open_system
from queueing._task import TaskState
from queueing.brokers._contract import Admission, QueueInfo
from queueing.brokers.redis import _losses, _receipts
from queueing.brokers.redis._calls import Calls
from queueing.brokers.redis._keys import Keys

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

#: Seconds within which every receipt resolves after the loss (the epoch is read every
#: second, a record found gone is read again 2 s later; the rest is a loaded machine).
RESOLVED_WITHIN = 20.0
TASKS = 200


class Slow(Worker):
    async def handle(self, number: int) -> int:
        await trio.sleep(0.02)
        return number


def loss_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Redis lost data" in r.getMessage()]


def warnings_naming(caplog: pytest.LogCaptureFixture, receipts: list[Receipt[Any]]) -> list[str]:
    """Warnings that name one of the receipts' tasks (a loss must not be logged per task)."""
    ids = {receipt.id for receipt in receipts}
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and any(i in r.getMessage() for i in ids)
    ]


async def succeeded(url: str, queue: str) -> int:
    async with raw_client(url) as client:
        return int(await client.hget(key(url, queue, "stats"), "succeeded") or 0)


async def outcomes_of(receipts: list[Receipt[Any]]) -> list[Any]:
    with trio.fail_after(RESOLVED_WITHIN):
        return [await outcome_of(receipt, timeout=RESOLVED_WITHIN) for receipt in receipts]


def check_outcomes(outcomes: list[Any]) -> int:
    """Every outcome is the task's own result or TaskLost, with some of each; returns how
    many were lost."""
    lost = [o for o in outcomes if isinstance(o, TaskLost)]
    assert lost, "nothing was lost: the loss came too late to test anything"
    assert len(lost) < len(outcomes), "nothing finished before the loss"
    for number, outcome in enumerate(outcomes):
        if not isinstance(outcome, TaskLost):
            assert outcome == number
    return len(lost)


@pytest.mark.parametrize("apart", [False, True], ids=["one process", "client apart"])
async def test_a_flushall_mid_run_ends_the_lost_tasks_with_task_lost(
    make_redis_server: Callable[..., Any], caplog: pytest.LogCaptureFixture, apart: bool
) -> None:
    caplog.set_level(logging.WARNING)
    url = make_redis_server().url_with(prefix="flushed")
    queue = Queue("slow", Slow, workers=4)
    async with contextlib.AsyncExitStack() as stack:
        served = await stack.enter_async_context(open_system(queue, broker=url))
        system = await stack.enter_async_context(connect(url, queue)) if apart else served
        receipts = await system.submit_many("slow", range(TASKS))

        async def some_done() -> bool:
            return await succeeded(url, "slow") >= TASKS // 10

        await wait_for(some_done)
        async with raw_client(url) as raw:
            await raw.flushall()
        outcomes = await outcomes_of(receipts)
        # Work submitted after the loss runs as ever.
        after = await system.submit_many("slow", range(5))
        assert [await r.result(timeout=10) for r in after] == list(range(5))
    check_outcomes(outcomes)
    assert len(loss_warnings(caplog)) == (2 if apart else 1)  # once per process
    assert warnings_naming(caplog, receipts) == []


async def test_a_restart_without_persistence_ends_the_lost_tasks_with_task_lost(
    make_redis_server: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server = make_redis_server()  # no persistence: a restart loses every key
    url = server.url_with(prefix="amnesia")
    queue = Queue("slow", Slow, workers=4)
    async with open_system(queue, broker=url) as system:
        receipts = await system.submit_many("slow", range(TASKS))

        async def some_done() -> bool:
            return await succeeded(url, "slow") >= TASKS // 10

        await wait_for(some_done)
        server.stop()
        server.start()
        outcomes = await outcomes_of(receipts)
        after = await system.submit_many("slow", range(5))
        assert [await r.result(timeout=10) for r in after] == list(range(5))
    check_outcomes(outcomes)
    assert len(loss_warnings(caplog)) == 1
    assert warnings_naming(caplog, receipts) == []


async def test_a_record_gone_is_lost_only_when_still_gone_on_a_second_look(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_receipts, "SWEEP_EVERY", 0.1)
    monkeypatch.setattr(_receipts, "LOST_CONFIRM", 0.5)
    async with opened(redis_url, serve=False) as client, raw_client(redis_url) as raw:
        kept, dropped = new_task(payload=1), new_task(payload=2)
        assert await client.accept_many(JOBS, [kept, dropped]) == 2
        ids = [kept.id, dropped.id]
        assert await client.wait_settled(ids, 0.3) == []  # both seen, without an outcome
        assert await raw.delete([task_key(redis_url, dropped.id)]) == 1
        deleted = trio.current_time()
        with trio.fail_after(10):
            (lost,) = await client.wait_settled(ids, 5.0)
        # Found gone by a sweep, and still gone when read again LOST_CONFIRM later.
        assert trio.current_time() - deleted >= 0.5
        assert (lost.id, lost.state) == (dropped.id, TaskState.LOST)
        assert lost.error is not None
        assert lost.error.type == "TaskLost"
        assert await client.wait_settled([kept.id], 1.0) == []  # the other one waits on


async def test_an_id_never_seen_is_not_taken_for_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose first task waits for room has no record (start removed it): its receipt
    # waits, as one for an id another client is still submitting does.
    monkeypatch.setattr(_receipts, "LOST_CONFIRM", 0.2)
    monkeypatch.setattr(_receipts, "SWEEP_EVERY", 0.2)
    full = QueueInfo("full", maxsize=1, max_payload=4096, result_ttl=60.0)
    async with opened(redis_url, full, serve=False) as client:
        assert await client.accept(full, new_task("full")) is Admission.ACCEPTED
        run, first = new_run("ingest", "full")
        assert await client.runs.start(run, full, first, due=None) is Admission.FULL
        unknown = new_task("full").id  # never submitted
        assert await client.wait_settled([run.id, unknown], 1.5) == []


async def test_a_worker_drops_held_tasks_whose_records_are_gone(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running(redis_url) as handle, raw_client(redis_url) as raw:
        worker = handle.broker
        tasks = [new_task(payload=n) for n in range(3)]
        assert await worker.accept_many(JOBS, tasks) == 3
        claimed = await claim_until(worker, n=3)
        assert len(claimed) == 3
        gone, kept = claimed[:2], claimed[2]
        await raw.delete([task_key(redis_url, task.id) for task in gone])
        dropped = await worker.renew(JOBS, claimed)
        assert sorted(t.id for t in dropped) == sorted(t.id for t in gone)
        assert all(t.state is TaskState.LOST for t in dropped)
        assert kept.state is TaskState.PENDING
        # Settling a dropped task records nothing and raises nothing.
        assert not await worker.settle(JOBS, gone[0], TaskState.SUCCEEDED, 1)
        assert await worker.settle(JOBS, kept, TaskState.SUCCEEDED, 2)
        await worker.flush()
    assert len(loss_warnings(caplog)) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if any(t.id in m for t in claimed)]


def test_a_loss_is_logged_once_per_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    losses = _losses.Losses(Calls("redis://unused", connect_timeout=1, block=1), Keys("p"))

    async def main() -> None:
        losses.note("first sign")
        await trio.sleep(_losses.EVENT_GAP / 2)
        losses.note("second sign, same event")
        await trio.sleep(_losses.EVENT_GAP * 2)
        losses.note("a new event")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [m.split(": ")[1].split(".")[0] for m in loss_warnings(caplog)] == [
        "first sign",
        "a new event",
    ]

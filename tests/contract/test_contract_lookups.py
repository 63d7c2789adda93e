"""Receipts found by id, `drain()` and `stats()`, the same on every broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from contract_workers import (
    LONG,
    WAIT,
    Double,
    Probe,
    Sleeper,
    Troubled,
    failure_of,
    outcome_of,
    serve,
)

from queueing import (
    Queue,
    QueueingError,
    Receipt,
    SystemStopping,
    TaskCancelled,
    TaskState,
    UnknownTask,
)


async def test_a_receipt_found_by_id_gives_the_same_result_and_status(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("double", Double)) as system:
        receipt = await system.submit("double", 21)
        assert await outcome_of(receipt) == 42
        found = system.receipt(receipt.id)
        assert found == receipt
        assert found.id == receipt.id
        assert await outcome_of(found) == 42
        status, again = await receipt.status(), await found.status()
    assert (again.state, again.attempts) == (status.state, status.attempts)
    assert (again.state, again.attempts) == (TaskState.SUCCEEDED, 1)


async def test_a_failed_task_found_by_id_gives_the_same_failure(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("troubled", Troubled, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        receipt = await system.submit("troubled", {"name": "bad", "broken": True})
        failure = await failure_of(receipt)
        found = await failure_of(system.receipt(receipt.id))
    assert (found.task_id, found.outcome, found.error_type, found.attempts) == (
        failure.task_id,
        failure.outcome,
        failure.error_type,
        failure.attempts,
    )


def _status(receipt: Receipt) -> Awaitable[Any]:
    return receipt.status()


def _result(receipt: Receipt) -> Awaitable[Any]:
    return receipt.result(timeout=WAIT)


@pytest.mark.parametrize("first_await", [_status, _result], ids=["status", "result"])
async def test_an_unknown_id_raises_unknown_task_at_the_first_await(
    broker: str,
    clock: trio.abc.Clock | None,
    first_await: Callable[[Receipt], Awaitable[Any]],
) -> None:
    async with serve(broker, Queue("double", Double)) as system:
        found = system.receipt("no-such-task")  # never raises: the same on every broker
        with pytest.raises(UnknownTask, match="no-such-task") as info:
            await first_await(found)
    assert info.value.task_id == "no-such-task"


@pytest.mark.parametrize(
    "task_id",
    ["double:half \ud800", "\udcff", "double:" + "x" * 100_000],
    ids=["lone-surrogate", "only-a-surrogate", "100k-characters"],
)
async def test_an_id_no_task_can_have_raises_unknown_task_and_the_system_goes_on(
    broker: str, clock: trio.abc.Clock | None, task_id: str
) -> None:
    # Before, on Redis: the lookup's command could not be encoded, which killed the
    # connection's writer, so the broker crashed and restarted, failing the submits in
    # flight; on SQLite: a bare UnicodeEncodeError.
    async with serve(broker, Queue("double", Double)) as system:
        found = system.receipt(task_id)
        with pytest.raises(UnknownTask) as info:
            await found.status()
        with pytest.raises(UnknownTask):
            await found.cancel()
        assert await outcome_of(await system.submit("double", 4)) == 8
    assert info.value.task_id == task_id
    assert len(str(info.value)) < 400  # the id is shortened in the message


async def test_drain_returns_once_every_task_finished(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("sleeper", Sleeper, workers=2)) as system:
        receipts = [await system.submit("sleeper", [0.01 * n]) for n in range(6)]
        await system.drain(timeout=WAIT)
        assert [r.done() for r in receipts] == [True] * 6
        assert [await outcome_of(r) for r in receipts] == [1] * 6


async def test_drain_with_nothing_submitted_returns(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("double", Double)) as system:
        await system.drain(timeout=WAIT)


async def test_stats_count_the_outcomes_after_drain(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("troubled", Troubled, workers=2, worker_kwargs={"probe": probe})
    good, bad = ["a", "b", "c"], ["x", "y"]
    async with serve(broker, queue) as system:
        for name in good:
            await system.submit("troubled", {"name": name})
        for name in bad:
            await system.submit("troubled", {"name": name, "broken": True})
        await system.drain(timeout=WAIT)
        stats = system.stats()["troubled"]
    assert (stats.submitted, stats.succeeded, stats.failed) == (5, 3, 2)
    assert (stats.dead_lettered, stats.cancelled, stats.expired) == (0, 0, 0)
    assert stats.finished == 5
    # The gauges as drain() left them, not as last read before (every few seconds).
    assert (stats.outstanding, stats.depth, stats.in_flight, stats.scheduled) == (0, 0, 0, 0)


async def test_the_gauges_are_zero_after_drain_even_after_cancelled_submits(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Before: over Redis, stats() right after drain() still showed the outstanding and
    # in-flight tasks of the last read (tens of them), until the next refresh.
    async with serve(broker, Queue("sleeper", Sleeper, workers=2)) as system:
        for n in range(40):
            with trio.move_on_after(0 if n % 3 == 0 else 1):  # every third cancelled
                await system.submit("sleeper", [0.01])
        await system.drain(timeout=WAIT)
        stats = system.stats()["sleeper"]
    assert (stats.outstanding, stats.depth, stats.in_flight, stats.scheduled) == (0, 0, 0, 0)
    assert stats.succeeded == stats.submitted >= 26


async def test_a_connected_client_sees_the_figures_of_every_process(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    from contract_workers import SETTLE

    from queueing import InvalidQueue, connect

    if broker == "memory://":  # nothing to connect to: the queues live in one process
        with pytest.raises(InvalidQueue, match="needs a shared broker"):
            async with connect(broker):
                pass
        return
    async with serve(broker, Queue("double", Double, workers=2)) as system:
        receipts = await system.submit_many("double", range(5))
        for receipt in receipts:
            await outcome_of(receipt)
        async with connect(broker) as client:
            found = client.receipt(receipts[0].id)
            assert repr(found) == f"<Receipt {receipts[0].id} (not looked up yet)>"
            assert await outcome_of(found) == 0
            assert repr(found) == f"<Receipt {receipts[0].id} succeeded>"
            assert found.queue == "double"
            # It submitted nothing: what it shows comes from the broker (refreshed now
            # and then, as `queueing status` reads it).
            with trio.fail_after(WAIT):
                while client.stats()["double"].succeeded < 5:  # noqa: ASYNC110 (a poll)
                    await trio.sleep(SETTLE)
            stats = client.stats()["double"]
    assert (stats.submitted, stats.succeeded, stats.failed, stats.outstanding) == (5, 5, 0, 0)
    assert stats.workers == 0  # the client runs none (the serving process runs two)


async def test_a_clients_first_stats_already_show_the_brokers_figures(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    from queueing import connect

    async with serve(broker, Queue("double", Double)) as system:
        for receipt in await system.submit_many("double", range(3)):
            await outcome_of(receipt)
        if broker == "memory://":  # no client of an in-process system: its own figures
            stats = system.stats()["double"]
        else:
            async with connect(broker) as client:
                stats = client.stats()["double"]  # at once: no wait for a refresh
    assert (stats.submitted, stats.succeeded, stats.outstanding) == (3, 3, 0)


async def test_a_receipt_awaited_once_its_system_closed_ends_at_once(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # In memory the unfinished task was cancelled at shutdown; over a shared broker it
    # stays there, and the closed system says it cannot ask. Before: over SQLite and Redis,
    # `await receipt` waited forever (and status() raised a RuntimeError on SQLite).
    async with serve(broker, Queue("sleeper", Sleeper)) as system:
        receipt = await system.submit("sleeper", [LONG])
    with trio.fail_after(WAIT), pytest.raises((SystemStopping, TaskCancelled)):
        await receipt
    with trio.fail_after(WAIT):
        try:
            status = await receipt.status()
        except SystemStopping:
            pass
        else:
            assert status.state is TaskState.CANCELLED


async def test_after_close_a_receipt_answers_what_this_process_holds(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("troubled", Troubled, worker_kwargs={"probe": probe})
    async with serve(broker, Queue("double", Double), queue) as system:
        done = await system.submit("double", 21)
        assert await outcome_of(done) == 42
        failed = await system.submit("troubled", {"name": "bad", "broken": True})
        await failure_of(failed)
        asked = await done.status()
        unseen = f"double:{'0' * 10}-1"
    # What this process holds answers on every broker: the outcomes that came here.
    assert await done == 42
    status = await done.status()
    assert (status.state, status.attempts, status.finished_at) == (
        TaskState.SUCCEEDED,
        1,
        asked.finished_at,
    )
    assert (await failed.status()).state is (await failure_of(failed)).outcome
    # Anything that would ask the broker raises, on every broker alike, saying why.
    for call in (
        lambda: system.receipt(unseen).status(),
        lambda: system.dead_letters("troubled"),
        lambda: system.requeue("troubled"),
        lambda: system.drain(),
    ):
        with pytest.raises(SystemStopping, match="the system is closed"):
            await call()
    with pytest.raises(SystemStopping):
        await system.submit("double", 1)


async def test_a_receipt_awaited_while_its_system_closes_ends_then(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    ended: list[BaseException] = []

    async def wait(receipt: Receipt) -> None:
        try:
            await receipt
        except QueueingError as exc:
            ended.append(exc)

    with trio.fail_after(WAIT + LONG / 2):
        async with (
            trio.open_nursery() as outside,
            serve(broker, Queue("sleeper", Sleeper)) as system,
        ):
            receipt = await system.submit("sleeper", [LONG])
            outside.start_soon(wait, receipt)
            await trio.sleep(0.1)
    [exc] = ended
    assert isinstance(exc, SystemStopping | TaskCancelled)

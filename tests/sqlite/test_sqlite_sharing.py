"""Several systems on one file (each with its own connection and writer thread, as
separate processes would have): what one stores, the others see; leases, cancels and
maxsize hold across them. Real time: waits are short, and outcomes are asserted, never
durations."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from sqlite_helpers import query

from queueing import (
    BrokerError,
    ErrorInfo,
    Full,
    Queue,
    QueueFull,
    TaskLost,
    TaskState,
    Worker,
    connect,
    open_system,
)
from queueing.brokers import Admission, QueueInfo, SqliteBroker, Task
from queueing.brokers.sqlite import _broker as sqlite_broker

WAIT = 10.0
LEASE = 0.3


class Double(Worker):
    async def handle(self, number: int) -> int:
        return 2 * number


double = Queue("double", Double, workers=2)
INFO = QueueInfo("double", 100, 1 << 20, 3600.0)


def task(number: int) -> Task:
    return Task(f"double:t{number}", "double", number, time.time())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/q.db"


async def test_tasks_submitted_with_no_worker_running_run_when_one_starts(url: str) -> None:
    async with connect(url, double) as client:
        ids = [r.id for r in await client.submit_many("double", range(20))]
    async with open_system(double, broker=url) as system:
        with trio.fail_after(WAIT):
            results = [await system.receipt(task_id) for task_id in ids]
    assert results == [2 * n for n in range(20)]


async def test_an_outcome_is_read_by_id_from_another_system(url: str) -> None:
    async with open_system(double, broker=url) as system:
        receipt = await system.submit("double", 21)
        with trio.fail_after(WAIT):
            assert await receipt == 42
        async with connect(url) as other:
            found = other.receipt(receipt.id)
            with trio.fail_after(WAIT):
                assert await found == 42
            status = await found.status()
    assert (status.state, status.attempts) == (TaskState.SUCCEEDED, 1)


async def test_a_client_gets_results_from_workers_of_another_system(url: str) -> None:
    # The client's writer learns of the other connection's commits by `data_version`.
    async with open_system(double, broker=url), connect(url) as client:
        receipts = await client.submit_many("double", range(100))
        with trio.fail_after(WAIT):
            assert [await r for r in receipts] == [2 * n for n in range(100)]


async def test_maxsize_holds_across_systems_submitting_at_once(url: str) -> None:
    small = Queue("double", Double, maxsize=5, when_full=Full.REJECT)
    accepted: list[str] = []
    refused = 0

    async def submit_all(system: Any) -> None:
        nonlocal refused
        for number in range(10):
            try:
                accepted.append((await system.submit("double", number)).id)
            except QueueFull:
                refused += 1

    async with (
        connect(url, small) as one,
        connect(url, small) as two,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(submit_all, one)
        nursery.start_soon(submit_all, two)
    assert (len(accepted), refused) == (5, 15)
    path = url.removeprefix("sqlite:///")
    assert query(Path(path), "SELECT count(*) FROM tasks WHERE queue = 'double'") == [(5,)]


async def test_a_lease_that_runs_out_is_claimed_again_with_its_delivery_count(url: str) -> None:
    first, second = SqliteBroker(f"{url}?lease={LEASE}"), SqliteBroker(f"{url}?lease={LEASE}")
    async with (
        first.connect({"double": INFO}, serve=True),
        second.connect({"double": INFO}, serve=True),
    ):
        assert await first.accept(INFO, task(1)) is Admission.ACCEPTED
        [held] = await first.claim(INFO, 4, wait=0)
        assert await second.claim(INFO, 4, wait=0) == []  # leased to `first`
        # `first` never renews: it is as good as dead.
        with trio.fail_after(WAIT):
            [again] = await second.claim(INFO, 4, wait=WAIT)
        assert (again.id, again.deliveries, again.attempts) == (held.id, 1, 1)
        lost = await first.renew(INFO, [held])
        assert lost == [held]
        assert not held.state.final  # not settled: taken over by `second`


async def test_renew_reports_a_task_cancelled_by_another_system(url: str) -> None:
    worker, client = SqliteBroker(url), SqliteBroker(url)
    async with worker.connect({"double": INFO}, serve=True), client.connect({}, serve=False):
        await client.accept(INFO, task(2))
        [held] = await worker.claim(INFO, 1, wait=0)
        cancelled = await client.cancel(held.id, ErrorInfo("Cancelled", "by the client"))
        assert cancelled is not None
        assert cancelled.state is TaskState.CANCELLED
        assert await worker.renew(INFO, [held]) == [held]
        assert held.state is TaskState.CANCELLED
        assert held.error == ErrorInfo("Cancelled", "by the client")
        assert not await worker.settle(INFO, held, TaskState.SUCCEEDED, 4)


async def test_released_tasks_are_first_in_line_for_the_next_claim(url: str) -> None:
    broker = SqliteBroker(url)
    async with broker.connect({"double": INFO}, serve=True):
        for number in range(3):
            await broker.accept(INFO, task(number))
        first = await broker.claim(INFO, 1, wait=0)
        await broker.release(INFO, first)
        again = await broker.claim(INFO, 3, wait=0)
    assert [t.id for t in again] == ["double:t0", "double:t1", "double:t2"]
    assert [t.deliveries for t in again] == [0, 0, 0]  # never started: no delivery counted


async def test_dead_letters_keep_the_newest_of_a_queue(url: str) -> None:
    broker = SqliteBroker(url, max_dead_letters=2)
    async with broker.connect({"double": INFO}, serve=True):
        for number in range(4):
            await broker.accept(INFO, task(number))
        for held in await broker.claim(INFO, 4, wait=0):
            error = ErrorInfo("ValueError", f"bad {held.payload}")
            assert await broker.dead_letter(INFO, held, TaskState.FAILED, error)
        letters = await broker.dead_letters("double", 10)
        assert [d.id for d in letters] == ["double:t2", "double:t3"]
        assert [d.error.message for d in letters if d.error] == ["bad 2", "bad 3"]
        assert await broker.outstanding("double") == 0


async def test_outcomes_past_their_ttl_are_deleted_from_the_file(url: str) -> None:
    brief = Queue("double", Double, result_ttl=0.1)
    path = Path(url.removeprefix("sqlite:///"))
    async with open_system(brief, broker=url) as system:
        with trio.fail_after(WAIT):
            assert await (await system.submit("double", 1)) == 2
        assert query(path, "SELECT count(*) FROM tasks") == [(1,)]
        with trio.fail_after(WAIT):
            while query(path, "SELECT count(*) FROM tasks") != [(0,)]:  # noqa: ASYNC110
                await trio.sleep(0.1)  # the writer deletes them about every second


def _hold_lock(path: str, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


async def test_a_write_waits_while_another_program_holds_the_lock(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    async with open_system(double, broker=url) as system:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_lock, args=(path, 0.5, locked))
        holder.start()
        await trio.to_thread.run_sync(locked.wait)
        try:
            with trio.fail_after(WAIT):
                assert await (await system.submit("double", 3)) == 6  # no SQLITE_BUSY
        finally:
            await trio.to_thread.run_sync(holder.join)


async def test_a_lock_held_past_busy_timeout_is_a_broker_error(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    async with open_system(double, broker=f"{url}?busy_timeout=0.2") as system:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_lock, args=(path, 1.5, locked))
        holder.start()
        await trio.to_thread.run_sync(locked.wait)
        try:
            with pytest.raises(BrokerError, match=r"locked .* for 0\.2s \(busy_timeout\)"):
                await system.submit("double", 3)
        finally:
            await trio.to_thread.run_sync(holder.join)
        with trio.fail_after(WAIT):  # the broker works again once the lock is released
            assert await (await system.submit("double", 4)) == 8


async def test_status_counts_tasks_by_state_and_lists_serving_processes(url: str) -> None:
    broker = SqliteBroker(url)
    async with open_system(double, broker=broker) as system:
        with trio.fail_after(WAIT):
            assert await (await system.submit("double", 1)) == 2
        await system.drain(timeout=WAIT)
        info = await broker.status()
    queue = info["queues"]["double"]
    assert (queue["submitted"], queue["succeeded"], queue["outstanding"]) == (1, 1, 0)
    [process] = info["workers"].values()
    assert process["queues"] == ["double"]
    assert process["workers"] == double.workers


async def test_an_outcome_kept_forever_stays_readable(url: str) -> None:
    forever = Queue("double", Double, result_ttl=math.inf)
    async with open_system(forever, broker=url) as system:
        with trio.fail_after(WAIT):
            receipt = await system.submit("double", 5)
            assert await receipt == 10
    async with connect(url, forever) as client:
        with trio.fail_after(WAIT):
            assert await client.receipt(receipt.id) == 10
        assert (await client.receipt(receipt.id).status()).state is TaskState.SUCCEEDED


async def test_a_task_whose_record_is_gone_from_the_file_resolves_as_lost(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its record vanishes as if the file had been restored from an older copy.
    monkeypatch.setattr(sqlite_broker, "SWEEP_EVERY", 0.2)
    path = url.removeprefix("sqlite:///")
    async with connect(url, double) as client:  # nobody serves the queue: it stays open
        receipt = await client.submit("double", 1)
        kept = await client.submit("double", 2)
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM tasks WHERE id = ?", (receipt.id,))
        with trio.fail_after(WAIT), pytest.raises(TaskLost) as info:
            await receipt
        assert info.value.outcome is TaskState.LOST
        assert not kept.done()


def test_the_broker_runs_under_asyncio_too(url: str) -> None:
    # Only anyio underneath: a client on asyncio can use the same file later.
    async def main() -> tuple[Admission, list[int], list[Any]]:
        broker = SqliteBroker(url)
        async with broker.connect({"double": INFO}, serve=True):
            admission = await broker.accept(INFO, task(7))
            claimed = await broker.claim(INFO, 1, wait=1.0)
            for held in claimed:
                await broker.settle(INFO, held, TaskState.SUCCEEDED, 2 * held.payload)
            done = await broker.wait_settled({"double:t7"}, timeout=WAIT)
            return admission, [t.payload for t in claimed], [(t.state, t.result) for t in done]

    admission, payloads, outcomes = anyio.run(main, backend="asyncio")
    assert (admission, payloads, outcomes) == (
        Admission.ACCEPTED,
        [7],
        [(TaskState.SUCCEEDED, 14)],
    )

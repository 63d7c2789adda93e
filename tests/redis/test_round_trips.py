"""Round trips of the hot paths (what the Redis bench's throughput rests on): a claim of
ready tasks is one round trip, with the outcomes waiting written in it; a client's own
tasks resolve from their notices, without a read of their records; a batch's outcomes
wake the client once."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from broker_helpers import JOBS, claim_until, new_task, opened, settled_all
from redis_helpers import key, raw_client

from queueing import Queue, Worker, open_system
from queueing._task import Task, TaskState
from queueing.brokers._contract import Admission, QueueInfo
from queueing.brokers.redis import _calls, _keys

pytestmark = pytest.mark.redis


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Round trips to Redis by what they are for (`Calls.retrying`'s `what`)."""
    calls: collections.Counter[str] = collections.Counter()
    attempt = _calls.Calls._attempt

    async def counting(self: _calls.Calls, what: str, *args: Any, **kwargs: Any) -> Any:
        calls[what] += 1
        return await attempt(self, what, *args, **kwargs)

    monkeypatch.setattr(_calls.Calls, "_attempt", counting)
    yield calls


async def test_a_claim_of_ready_tasks_is_one_round_trip_with_the_outcomes_waiting(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(redis_url) as broker:
        assert await broker.claim(JOBS, 1, wait=0) == []  # with the first reclaim: done
        tasks = [new_task(payload=n) for n in range(8)]
        assert await broker.accept_many(JOBS, tasks) == 8
        with counted(monkeypatch) as calls:
            first = await broker.claim(JOBS, 4, wait=0)
        assert len(first) == 4
        assert dict(calls) == {"claim": 1}
        for task in first:
            await broker.settle(JOBS, task, TaskState.SUCCEEDED, task.payload)
        with counted(monkeypatch) as calls:
            second = await broker.claim(JOBS, 4, wait=0)
        assert len(second) == 4
        assert dict(calls) == {"write outcomes and claim": 1}
        for task in first:  # written in that round trip
            record = await broker.lookup(task.id)
            assert record is not None
            assert (record.state, record.result) == (TaskState.SUCCEEDED, task.payload)


async def test_a_clients_own_tasks_resolve_from_their_notices(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(redis_url) as worker, opened(redis_url, serve=False) as client:
        tasks = [new_task(payload=n) for n in range(8)]
        assert await client.accept_many(JOBS, tasks) == 8
        ids = [task.id for task in tasks]
        assert await client.wait_settled(ids, 0.2) == []  # seen (the reader's first sweep)
        for task in await worker.claim(JOBS, 8, wait=0):
            await worker.settle(JOBS, task, TaskState.SUCCEEDED, {"n": task.payload})
        with counted(monkeypatch) as calls:
            await worker.flush()
            found = await settled_all(client, ids)
        assert [found[i].result for i in ids] == [{"n": n} for n in range(8)]
        assert "read outcomes" not in calls  # no record read: the notices carried them
        assert calls["write outcomes"] == 1  # one call for the batch's eight outcomes


async def test_the_outcomes_of_several_clients_in_one_call_each_reach_their_client(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One finish.lua call for tasks of two clients, in runs (a, a, b, b, a): a run's
    # replies stream is passed once, each client's notice carries all of its outcomes.
    async with (
        opened(redis_url) as worker,
        opened(redis_url, serve=False) as a,
        opened(redis_url, serve=False) as b,
    ):
        mine = {
            a: [new_task(payload=n) for n in (0, 1, 4)],
            b: [new_task(payload=n) for n in (2, 3)],
        }
        assert await a.accept_many(JOBS, mine[a][:2]) == 2
        assert await b.accept_many(JOBS, mine[b]) == 2
        assert await a.accept_many(JOBS, mine[a][2:]) == 1
        for client, tasks in mine.items():  # seen (the readers' first sweeps)
            assert await client.wait_settled([task.id for task in tasks], 0.2) == []
        claimed = await worker.claim(JOBS, 5, wait=0)
        assert [task.payload for task in claimed] == [0, 1, 2, 3, 4]
        for task in claimed:
            await worker.settle(JOBS, task, TaskState.SUCCEEDED, {"n": task.payload})
        with counted(monkeypatch) as calls:
            await worker.flush()
            for client, tasks in mine.items():
                found = await settled_all(client, [task.id for task in tasks])
                assert [found[t.id].result for t in tasks] == [{"n": t.payload} for t in tasks]
        assert "read outcomes" not in calls  # no record read: the notices carried them
        assert calls["write outcomes"] == 1


async def test_a_notices_outcome_goes_straight_to_whoever_waits_for_it(
    redis_url: str,
) -> None:
    """`on_outcome`: the reader hands each outcome a notice carries to the receipts' side
    as it reads it, with no `wait_settled` call under way; an id nobody waits for is kept
    for `wait_settled`."""
    async with opened(redis_url) as worker, opened(redis_url, serve=False) as client:
        tasks = [new_task(payload=n) for n in range(4)]
        waited = {task.id for task in tasks[:3]}
        got: list[Task] = []
        all_got = trio.Event()

        def deliver(record: Task) -> bool:
            if record.id not in waited:
                return False
            got.append(record)
            if len(got) == len(waited):
                all_got.set()
            return True

        client.on_outcome(deliver)
        assert await client.accept_many(JOBS, tasks) == 4
        ids = [task.id for task in tasks]
        assert await client.wait_settled(ids, 0.2) == []  # seen: the reader reads on
        for task in await worker.claim(JOBS, 4, wait=0):
            await worker.settle(JOBS, task, TaskState.SUCCEEDED, task.payload * 10)
        await worker.flush()
        with trio.fail_after(10):
            await all_got.wait()
        assert sorted((r.id, r.state, r.result) for r in got) == sorted(
            (t.id, TaskState.SUCCEEDED, t.payload * 10) for t in tasks[:3]
        )
        found = await settled_all(client, [tasks[3].id])
        assert found[tasks[3].id].result == 30


async def test_a_long_outcome_is_read_from_its_record(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(redis_url) as worker, opened(redis_url, serve=False) as client:
        task = new_task()
        await client.accept(JOBS, task)
        assert await client.wait_settled([task.id], 0.2) == []
        (claimed,) = await worker.claim(JOBS, 1, wait=0)
        long = "x" * 10_000  # over NOTICE_OUTCOME_MAX: the notice carries the id only
        await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, long)
        with counted(monkeypatch) as calls, trio.fail_after(10):
            await worker.flush()
            (done,) = await client.wait_settled([task.id], 5.0)
        assert done.result == long
        assert calls["read outcomes"] == 1


async def test_a_claim_of_a_sharded_queue_asks_the_other_shards_at_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = 8
    hot = QueueInfo("hot", maxsize=1000, max_payload=4096, result_ttl=60.0, shards=shards)
    async with opened(redis_url, hot) as broker:
        for _ in range(shards):  # every shard's first claim (and reclaim): done
            assert await broker.claim(hot, 1, wait=0) == []
        with counted(monkeypatch) as calls:
            assert await broker.claim(hot, 1, wait=0) == []
        # The shard whose turn it was, then every other one at once.
        assert dict(calls) == {"claim": 1, "probe shards": 1}
        # Tasks in one shard only: each claim finds one, whichever shard's turn it is.
        tasks: list[Task] = []
        while len(tasks) < shards:
            task = new_task("hot")
            if _keys.shard_of(task.id, shards) == shards - 1:
                tasks.append(task)
        assert await broker.accept_many(hot, tasks) == shards
        claimed = []
        for _ in range(shards):
            with counted(monkeypatch) as calls:
                claimed += await broker.claim(hot, 1, wait=0)
            # One round trip if it was that shard's turn, else three.
            assert dict(calls) in ({"claim": 1}, {"claim": 2, "probe shards": 1}), calls
        assert sorted(task.id for task in claimed) == sorted(task.id for task in tasks)


async def test_a_fair_queues_first_outcomes_are_sent_again_with_its_fair_keys(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker's outcome writes pass only two of a queue's fair keys until it sees the
    # queue with tenants: that first call writes nothing and goes again, in full.
    async with opened(redis_url) as broker:
        tasks = [new_task(payload=n) for n in range(4)]
        for task in tasks:
            task.tenant = "A"
        assert await broker.accept_many(JOBS, tasks) == 4
        claimed: list[Task] = []
        with trio.fail_after(10):
            while len(claimed) < 4:
                claimed += await broker.claim(JOBS, 4 - len(claimed), wait=0.2)
        assert (await broker.tenant_figures("jobs", 10))[0].running == 4
        for task in claimed[:2]:
            await broker.settle(JOBS, task, TaskState.SUCCEEDED, task.payload)
        with counted(monkeypatch) as calls:
            await broker.flush()
        assert calls["write outcomes"] == 2  # the short call, then in full
        assert (await broker.tenant_figures("jobs", 10))[0].running == 2
        for task in claimed[2:]:
            await broker.settle(JOBS, task, TaskState.SUCCEEDED, task.payload)
        with counted(monkeypatch) as calls:
            await broker.flush()
        assert calls["write outcomes"] == 1  # in full at once from now on
        assert await broker.tenant_figures("jobs", 10) == []  # none waiting or running
        for task in claimed:
            record = await broker.lookup(task.id)
            assert record is not None
            assert (record.state, record.result) == (TaskState.SUCCEEDED, task.payload)


async def test_an_outcome_read_before_its_submit_returns_reaches_its_receipt_at_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notice read before the submit's caller has its answer (the caller is slow to
    resume, or the worker quick): the caller watches the id as it resumes, and the receipts'
    loop hands the outcome over then, not at the next notice read or sweep (with no other
    task under way, seconds away)."""
    async with opened(redis_url) as worker, opened(redis_url, serve=False) as client:
        waiting = new_task(payload=0)  # waited for throughout: the loop stays in its wait
        assert await client.accept(JOBS, waiting) == Admission.ACCEPTED
        assert [t.id for t in await claim_until(worker, n=1)] == [waiting.id]  # runs on
        watched: dict[str, None] = {waiting.id: None}  # the live set, as the engine's
        found: dict[str, Task] = {}
        arrived = trio.Event()

        async def receipts_loop() -> None:  # as `Results.run`
            while True:
                for record in await client.wait_settled(watched.keys(), 60.0):
                    found[record.id] = record
                    watched.pop(record.id, None)
                    if len(found) == 1:
                        arrived.set()

        task = new_task(payload=7)
        notices = client._receipts._notices
        noticed = trio.Event()

        def read(entries: Any) -> None:
            notices(entries)
            if any(task.id in (entry.field_values or {}) for entry in entries):
                noticed.set()

        pipelined = client._calls.pipelined

        async def answered_late(what: str, *args: Any, **kwargs: Any) -> Any:
            answers = await pipelined(what, *args, **kwargs)
            if what == "submit":
                await noticed.wait()  # the outcome's notice is read first
            return answers

        monkeypatch.setattr(client._receipts, "_notices", read)
        monkeypatch.setattr(client._calls, "pipelined", answered_late)

        async def work() -> None:
            (claimed,) = await claim_until(worker, n=1)
            await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, 70)
            await worker.flush()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receipts_loop)
            await trio.sleep(0.1)  # the loop waits (the reader's first sweep is done)
            nursery.start_soon(work)
            with counted(monkeypatch) as calls:
                assert await client.accept(JOBS, task) == Admission.ACCEPTED
                watched[task.id] = None  # the caller watches it as it resumes (the engine)
                with trio.fail_after(5):  # a hang guard: it came a few turns later
                    await arrived.wait()
            nursery.cancel_scope.cancel()
        assert (found[task.id].state, found[task.id].result) == (TaskState.SUCCEEDED, 70)
        assert "read outcomes" not in calls  # from its notice, not a sweep of the records


async def test_finished_entries_leave_the_ready_stream_in_whole_nodes_and_all_at_the_end(
    redis_url: str,
) -> None:
    # finish.lua trims the stream approximately, every TRIM_EVERY (64) outcomes of a
    # state and when the queue has no task left: whole nodes (of up to 100 entries, the
    # default stream-node-max-entries, fewer of these envelopes: stream-node-max-bytes)
    # below the oldest pending entry; what is left of the node the trim ended in goes at a
    # later trim, and nothing is left once all finished.
    count = 300
    async with opened(redis_url) as broker, raw_client(redis_url) as raw:
        ready = key(redis_url, "jobs", "ready")
        assert await broker.accept_many(JOBS, [new_task(payload=n) for n in range(count)]) == count
        claimed = 0
        while claimed < count:
            tasks = await broker.claim(JOBS, 8, wait=0)
            claimed += len(tasks)
            for task in tasks:
                await broker.settle(JOBS, task, TaskState.SUCCEEDED, None)
            await broker.flush()
            left = await raw.xlen(ready) - (count - claimed)  # finished, not trimmed yet
            assert 0 <= left < 100
        assert await raw.xlen(ready) == 0
        assert await broker.outstanding("jobs") == 0


async def test_finished_entries_are_deleted_while_a_long_running_task_holds_the_trim_back(
    redis_url: str,
) -> None:
    # An entry read long ago and never acknowledged (a task running for long, or a lease
    # to reclaim) stops every trim at it: once a trim sees that, each call deletes the
    # entries it finished, so the stream keeps no more than the finished entries of the
    # calls before (under TRIM_EVERY), not every entry finished behind it.
    count = 300
    async with opened(redis_url) as broker, raw_client(redis_url) as raw:
        ready = key(redis_url, "jobs", "ready")
        assert await broker.claim(JOBS, 1, wait=0) == []  # the group exists
        await raw.xadd(ready, {"held": "1"}, identifier="1-1")  # long before any task
        held = await raw.xreadgroup(_keys.GROUP, "elsewhere", {ready: ">"}, count=1)
        assert held is not None
        assert await broker.accept_many(JOBS, [new_task(payload=n) for n in range(count)]) == count
        claimed = 0
        while claimed < count:
            tasks = await broker.claim(JOBS, 8, wait=0)
            claimed += len(tasks)
            for task in tasks:
                await broker.settle(JOBS, task, TaskState.SUCCEEDED, None)
            await broker.flush()
            left = await raw.xlen(ready) - 1 - (count - claimed)  # finished, still there
            assert 0 <= left < 64
        assert await broker.outstanding("jobs") == 0


class _Echo(Worker):
    async def handle(self, x: int) -> int:
        return x


async def test_the_outcomes_of_tasks_that_finish_at_once_go_with_the_next_claim(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One task at a time (a steady rate far below the maximum): each claim takes one task,
    # and the next claim waits for the worker it woke to run it, so that the outcome goes
    # in the claim's round trip, not in a write of its own (about half of them did).
    queue = Queue("paced", _Echo, workers=4)
    async with open_system(queue, broker=redis_url) as system:
        assert await (await system.submit("paced", -1)).result(timeout=30) == -1
        with counted(monkeypatch) as calls:
            for x in range(10):
                assert await (await system.submit("paced", x)).result(timeout=30) == x
    assert calls["write outcomes and claim"] >= 10
    assert calls["write outcomes"] == 0, calls

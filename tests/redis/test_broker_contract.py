"""`queueing.brokers.redis.RedisBroker` driven directly through the broker contract (no
engine): admission, claims and leases, outcomes, cancels, lookups, waiting for outcomes.

Leases and delays run in real time (a real Redis): they are short, and the tests assert
outcomes and order, never how long something took."""

from __future__ import annotations

import pytest
import trio
from broker_helpers import JOBS, claim_until, new_task, opened, running, settled_all
from redis_helpers import envelope, key, raw_client, replies_key

from queueing._exceptions import BrokerError
from queueing._task import ErrorInfo, TaskState
from queueing.brokers._contract import Admission, QueueInfo
from queueing.brokers.redis import _keys

pytestmark = pytest.mark.redis

LEASE = 0.5
ERROR = ErrorInfo("Boom", "it broke")


# -- accept ----------------------------------------------------------------------------------


async def test_accept_keeps_maxsize_under_concurrent_accepts(redis_url: str) -> None:
    small = QueueInfo("jobs", maxsize=20, max_payload=1024, result_ttl=60.0)
    answers: list[Admission] = []
    async with opened(redis_url, small) as broker:

        async def one() -> None:
            answers.append(await broker.accept(small, new_task()))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
        assert answers.count(Admission.ACCEPTED) == 20
        assert answers.count(Admission.FULL) == 30
        assert await broker.outstanding("jobs") == 20
        assert len(await broker.claim(small, 50, wait=0)) == 20


async def test_accept_of_an_id_accepted_before_is_exists(redis_url: str) -> None:
    async with opened(redis_url) as broker, opened(redis_url) as other:
        task = new_task(payload=1)
        assert await broker.accept(JOBS, task) is Admission.ACCEPTED
        again = new_task(payload=2)
        again.id = task.id
        assert await broker.accept(JOBS, again) is Admission.EXISTS
        assert await other.accept(JOBS, again) is Admission.EXISTS
        assert await broker.outstanding("jobs") == 1
        (claimed,) = await broker.claim(JOBS, 10, wait=0)
        assert claimed.payload == 1


async def test_accept_many_takes_the_first_that_fit(redis_url: str) -> None:
    small = QueueInfo("jobs", maxsize=3, max_payload=1024, result_ttl=60.0)
    async with opened(redis_url, small) as broker:
        first = new_task()
        assert await broker.accept(small, first) is Admission.ACCEPTED
        tasks = [new_task(payload=n) for n in range(4)]
        tasks[0].id = first.id  # EXISTS counts as taken
        assert await broker.accept_many(small, tasks) == 3
        assert await broker.outstanding("jobs") == 3
        claimed = await broker.claim(small, 10, wait=0)
        assert [t.payload for t in claimed] == [None, 1, 2]  # in order


async def test_waiters_for_room_share_one_blocking_read_and_a_token_lets_one_go_on(
    redis_url: str,
) -> None:
    # A blocking read per waiter would hold a connection of the client's pool each: with
    # dozens of waiters, every other command of the process queued behind them.
    small = QueueInfo("jobs", maxsize=1, max_payload=1024, result_ttl=60.0)
    waiters = 20
    async with opened(redis_url, small, serve=False) as client, raw_client(redis_url) as raw:
        assert await client.accept(small, new_task()) is Admission.ACCEPTED
        went_on: list[int] = []
        three = trio.Event()

        async def wait(index: int) -> None:
            await client.wait_room(small, 30.0)
            went_on.append(index)
            if len(went_on) == 3:
                three.set()

        async def blocked_reads() -> int:
            clients = await raw.client_list()
            return sum(1 for c in clients if c.get("cmd") == "blpop")

        async with trio.open_nursery() as nursery:
            for index in range(waiters):
                nursery.start_soon(wait, index)
            for _ in range(20):  # a while, with every waiter waiting
                await trio.sleep(0.05)
                assert await blocked_reads() <= 1
            assert went_on == []
            await raw.lpush(key(redis_url, "jobs", "room"), ["1", "1", "1"])  # three outcomes
            with trio.fail_after(10):
                await three.wait()
            await trio.sleep(0.3)
            assert len(went_on) == 3  # room for three: the others wait on
            nursery.cancel_scope.cancel()


async def test_an_id_over_the_limit_or_of_another_queue_is_refused(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        task = new_task()
        task.id = "jobs:" + "x" * _keys.MAX_ID_LENGTH
        with pytest.raises(BrokerError, match="over the limit"):
            await broker.accept(JOBS, task)
        with pytest.raises(BrokerError, match="does not name the queue 'jobs'"):
            await broker.accept(JOBS, new_task("other"))
        with pytest.raises(ValueError, match="Out of range float"):  # not plain JSON data
            await broker.accept(JOBS, new_task(payload=float("nan")))
        assert await broker.outstanding("jobs") == 0
        assert await broker.accept(JOBS, new_task()) is Admission.ACCEPTED  # still working


async def test_a_due_task_is_scheduled_then_claimable(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        task = new_task(payload="later")
        due = broker.clock() + 0.5
        assert await broker.accept(JOBS, task, due=due) is Admission.ACCEPTED
        stored = await broker.lookup(task.id)
        assert stored is not None
        assert stored.state is TaskState.SCHEDULED
        assert await broker.claim(JOBS, 10, wait=0) == []
        (claimed,) = await claim_until(broker)
        assert broker.clock() >= due
        assert claimed.id == task.id
        assert claimed.payload == "later"


# -- claim, leases, reclaim ------------------------------------------------------------------


async def test_claim_takes_up_to_n_and_waits_for_more(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        for n in range(5):
            await broker.accept(JOBS, new_task(payload=n))
        assert len(await broker.claim(JOBS, 3, wait=0)) == 3
        assert len(await broker.claim(JOBS, 10, wait=0)) == 2
        late = new_task(payload="late")
        claimed = []

        async def claimer() -> None:
            claimed.extend(await broker.claim(JOBS, 10, wait=1.5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claimer)
            await trio.sleep(0.2)
            await broker.accept(JOBS, late)
        assert [t.id for t in claimed] == [late.id]
        assert claimed[0].deliveries == 0


async def test_an_expired_lease_is_reclaimed_with_its_deliveries_counted(redis_url: str) -> None:
    async with opened(redis_url, lease=LEASE) as a, opened(redis_url, lease=LEASE) as b:
        task = new_task(payload="x")
        await a.accept(JOBS, task)
        (first,) = await a.claim(JOBS, 1, wait=0)
        assert first.deliveries == 0
        (second,) = await claim_until(b)  # a never renews: its lease runs out
        assert second.id == task.id
        assert second.deliveries == 1
        assert await a.renew(JOBS, [first]) == [first]  # a learns it is no longer its
        (third,) = await claim_until(a)  # b never renews either
        assert third.deliveries == 2
        assert await a.settle(JOBS, third, TaskState.SUCCEEDED, "ok")
        await a.flush()
        assert await a.outstanding("jobs") == 0


async def test_renew_keeps_a_slow_task_and_reports_the_ones_lost(redis_url: str) -> None:
    lease = 2 * LEASE  # renewals every lease/4 below: room for a slow machine
    async with opened(redis_url, lease=lease) as a, opened(redis_url, lease=lease) as b:
        kept, dropped = new_task(payload="kept"), new_task(payload="dropped")
        await a.accept(JOBS, kept)
        await a.accept(JOBS, dropped)
        mine = {t.id: t for t in await a.claim(JOBS, 2, wait=0)}
        taken = []
        with trio.move_on_after(6 * lease):
            while not taken:
                assert await a.renew(JOBS, [mine[kept.id]]) == []
                taken = await b.claim(JOBS, 10, wait=lease / 4)
        assert [t.id for t in taken] == [dropped.id]  # the slow one stayed a's
        lost = await a.renew(JOBS, list(mine.values()))
        assert [t.id for t in lost] == [dropped.id]
        assert await b.cancel(kept.id, ERROR) is not None
        (cancelled,) = await a.renew(JOBS, [mine[kept.id]])
        assert cancelled.state is TaskState.CANCELLED
        assert cancelled.error == ERROR


async def test_released_tasks_are_claimable_at_once(redis_url: str) -> None:
    async with opened(redis_url) as a, opened(redis_url) as b:  # a lease of 30 s
        for n in range(2):
            await a.accept(JOBS, new_task(payload=n))
        claimed = await a.claim(JOBS, 2, wait=0)
        await a.release(JOBS, claimed)
        again = await b.claim(JOBS, 10, wait=1.0)
        assert sorted(t.id for t in again) == sorted(t.id for t in claimed)
        assert all(t.deliveries == 0 for t in again)


# -- outcomes --------------------------------------------------------------------------------


async def test_the_first_outcome_wins_and_outstanding_returns_to_zero(redis_url: str) -> None:
    async with opened(redis_url, lease=LEASE) as a, opened(redis_url, lease=LEASE) as b:
        task = new_task()
        await a.accept(JOBS, task)
        (slow,) = await a.claim(JOBS, 1, wait=0)
        (fast,) = await claim_until(b)  # a stalled past its lease
        assert await b.settle(JOBS, fast, TaskState.SUCCEEDED, "b")
        assert not await b.settle(JOBS, fast, TaskState.FAILED)  # known final here
        await b.flush()
        await a.settle(JOBS, slow, TaskState.SUCCEEDED, "a")  # late: a does not know
        await a.flush()
        stored = await a.lookup(task.id)
        assert stored is not None
        assert (stored.state, stored.result) == (TaskState.SUCCEEDED, "b")
        assert await a.outstanding("jobs") == 0


async def test_a_stale_claim_does_not_settle_a_task_retried_elsewhere(redis_url: str) -> None:
    async with opened(redis_url, lease=LEASE) as a, opened(redis_url, lease=LEASE) as b:
        task = new_task()
        await a.accept(JOBS, task)
        (stale,) = await a.claim(JOBS, 1, wait=0)
        (taken,) = await claim_until(b)
        taken.attempts = 1
        await b.retry_at(JOBS, taken, b.clock())
        (again,) = await claim_until(b)  # a new entry: the record names it now
        await a.settle(JOBS, stale, TaskState.FAILED, error=ERROR)
        await a.flush()
        stored = await a.lookup(task.id)
        assert stored is not None
        assert stored.state is TaskState.RUNNING  # b's claim of it runs; the stale one lost
        await b.settle(JOBS, again, TaskState.SUCCEEDED, 2)
        await b.flush()
        (done,) = await b.wait_settled([task.id], 5.0)
        assert (done.state, done.result, done.attempts) == (TaskState.SUCCEEDED, 2, 1)


async def test_a_forged_entry_is_dead_lettered_and_leaves_the_task_alone(redis_url: str) -> None:
    async with opened(redis_url) as broker, raw_client(redis_url) as client:
        task = new_task(payload="real")
        await broker.accept(JOBS, task)
        ready = key(redis_url, "jobs", "ready")
        await client.xadd(ready, {"id": task.id, "env": envelope("jobs", task.id, "forged")})
        unknown = "jobs:nobody-submitted-this"
        await client.xadd(ready, {"id": unknown, "env": envelope("jobs", unknown, "forged")})
        claimed = await broker.claim(JOBS, 10, wait=0)
        assert [(t.id, t.payload) for t in claimed] == [(task.id, "real")]
        await broker.flush()
        letters = await broker.dead_letters("jobs", 10)
        reasons = sorted(letter.error.message for letter in letters if letter.error)
        assert len(reasons) == 2
        assert "no task 'jobs:nobody-submitted-this' was submitted" in reasons[0]
        assert f"not the entry task {task.id!r} was stored as" in reasons[1]
        assert all(letter.id == "" for letter in letters)  # not the real task's
        assert await broker.outstanding("jobs") == 1
        assert await client.xlen(ready) == 1
        assert await broker.settle(JOBS, claimed[0], TaskState.SUCCEEDED, "done")
        await broker.flush()
        stored = await broker.lookup(task.id)
        assert stored is not None
        assert stored.result == "done"


async def test_an_exact_copy_of_a_live_entry_is_dead_lettered(redis_url: str) -> None:
    """A task's entry says itself that it is live (its `x` field names its own id): a copy
    of all its fields, written after it, has another id and is checked against the record."""
    async with opened(redis_url) as broker, raw_client(redis_url) as client:
        task = new_task(payload="real")
        await broker.accept(JOBS, task)
        ready = key(redis_url, "jobs", "ready")
        ((_, fields),) = [(e.identifier, dict(e.field_values)) for e in await client.xrange(ready)]
        assert "x" in fields
        await client.xadd(ready, fields)
        claimed = await broker.claim(JOBS, 10, wait=0)
        assert [(t.id, t.payload) for t in claimed] == [(task.id, "real")]
        await broker.flush()
        (letter,) = await broker.dead_letters("jobs", 10)
        assert letter.error is not None
        assert f"not the entry task {task.id!r} was stored as" in letter.error.message
        assert await broker.settle(JOBS, claimed[0], TaskState.SUCCEEDED, "done")
        await broker.flush()
        (done,) = await broker.wait_settled([task.id], 5.0)
        assert done.result == "done"


async def test_entries_go_on_after_a_stream_id_from_the_future(redis_url: str) -> None:
    """A stream whose last id is later than the clock (set back, say): the entries are
    added with ids Redis picks, checked against their records when read."""
    async with opened(redis_url) as broker, raw_client(redis_url) as client:
        ready = key(redis_url, "jobs", "ready")
        await client.xadd(ready, {"env": "junk"}, identifier="9999999999999-0")
        tasks = [new_task(payload=n) for n in range(3)]
        for task in tasks:
            await broker.accept(JOBS, task)
        claimed = await broker.claim(JOBS, 10, wait=0)
        assert sorted(t.payload for t in claimed) == [0, 1, 2]
        live = key(redis_url, "jobs", "live")  # such entries are named there
        assert await client.hlen(live) == 3
        for task in claimed:
            assert await broker.settle(JOBS, task, TaskState.SUCCEEDED, task.payload)
        await broker.flush()
        done = await settled_all(broker, [t.id for t in tasks])
        assert sorted(t.result for t in done.values()) == [0, 1, 2]
        assert await client.hlen(live) == 0  # their outcomes took them out


async def test_a_blocking_read_hands_out_a_live_entry(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        got: list[object] = []

        async def claim() -> None:
            got.extend(await broker.claim(JOBS, 1, wait=5.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim)
            await trio.sleep(0.2)  # the claim waits in a blocking read
            task = new_task(payload="late")
            await broker.accept(JOBS, task)
        (claimed,) = got
        assert (claimed.id, claimed.payload) == (task.id, "late")
        assert await broker.settle(JOBS, claimed, TaskState.SUCCEEDED, 1)
        await broker.flush()
        (done,) = await broker.wait_settled([task.id], 5.0)
        assert done.result == 1


async def test_retry_at_makes_the_task_ready_again_when_due(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        task = new_task(payload="again")
        await broker.accept(JOBS, task)
        (claimed,) = await broker.claim(JOBS, 1, wait=0)
        claimed.attempts, claimed.error = 1, ERROR
        claimed.first_started = broker.clock()
        due = broker.clock() + 0.5
        await broker.retry_at(JOBS, claimed, due)
        await broker.flush()
        stored = await broker.lookup(task.id)
        assert stored is not None
        assert (stored.state, stored.attempts) == (TaskState.SCHEDULED, 1)
        assert await broker.outstanding("jobs") == 1
        assert await broker.claim(JOBS, 1, wait=0) == []
        (again,) = await claim_until(broker)
        assert broker.clock() >= due
        assert (again.attempts, again.first_started) == (1, claimed.first_started)
        assert again.payload == "again"


async def test_dead_letters_are_kept_listed_and_taken(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        tasks = [new_task(payload=n) for n in range(3)]
        for task in tasks:
            await broker.accept(JOBS, task)
        claimed = sorted(await broker.claim(JOBS, 3, wait=0), key=lambda t: t.payload)
        long = ErrorInfo("Huge", "x" * 100_000, "tb" * 100_000)
        assert await broker.dead_letter(JOBS, claimed[0], TaskState.FAILED, long)
        assert await broker.dead_letter(JOBS, claimed[1], TaskState.DEAD_LETTERED, ERROR)
        assert await broker.dead_letter(JOBS, claimed[2], TaskState.DEAD_LETTERED, ERROR)
        await broker.flush()
        letters = await broker.dead_letters("jobs", 10)
        assert [letter.payload for letter in letters] == [0, 1, 2]
        assert letters[0].state is TaskState.FAILED
        assert letters[0].error is not None
        assert len(letters[0].error.message) <= _keys.MAX_MESSAGE
        assert len(letters[0].error.traceback) <= _keys.MAX_TRACEBACK
        stored = await broker.lookup(tasks[0].id)
        assert stored is not None
        assert stored.state is TaskState.FAILED
        assert [letter.id for letter in await broker.dead_letters("jobs", 1)] == [tasks[2].id]
        taken = await broker.take_dead_letters("jobs", [tasks[1].id])
        assert [letter.id for letter in taken] == [tasks[1].id]
        assert [letter.id for letter in await broker.take_dead_letters("jobs", None)] == [
            tasks[0].id,
            tasks[2].id,
        ]
        assert await broker.dead_letters("jobs", 10) == []
        assert await broker.outstanding("jobs") == 0


# -- cancel and lookup -----------------------------------------------------------------------


async def test_a_cancelled_queued_task_is_never_claimed(redis_url: str) -> None:
    async with opened(redis_url) as broker:
        queued, delayed = new_task(), new_task()
        await broker.accept(JOBS, queued)
        await broker.accept(JOBS, delayed, due=broker.clock() + 0.3)
        for task in (queued, delayed):
            record = await broker.cancel(task.id, ERROR)
            assert record is not None
            assert (record.id, record.state, record.error) == (
                task.id,
                TaskState.CANCELLED,
                ERROR,
            )
            assert await broker.cancel(task.id, ERROR) is None  # it has an outcome
        assert await broker.claim(JOBS, 10, wait=0.8) == []
        assert await broker.outstanding("jobs") == 0
        stored = await broker.lookup(queued.id)
        assert stored is not None
        assert stored.state is TaskState.CANCELLED


async def test_a_cancelled_running_task_keeps_its_outcome(redis_url: str) -> None:
    async with opened(redis_url) as worker, opened(redis_url, serve=False) as client:
        task = new_task()
        await client.accept(JOBS, task)
        (running_task,) = await worker.claim(JOBS, 1, wait=1.0)
        assert await client.cancel(task.id, ERROR) is not None
        (told,) = await worker.renew(JOBS, [running_task])
        assert told.state is TaskState.CANCELLED
        await worker.settle(JOBS, running_task, TaskState.SUCCEEDED, "too late")
        await worker.flush()
        stored = await client.lookup(task.id)
        assert stored is not None
        assert stored.state is TaskState.CANCELLED
        assert await client.outstanding("jobs") == 0


async def test_lookup_of_unknown_and_expired_ids_is_none(redis_url: str) -> None:
    brief = QueueInfo("jobs", maxsize=100, max_payload=1024, result_ttl=1.0)
    async with opened(redis_url, brief) as broker:
        assert await broker.lookup("jobs:unknown") is None
        assert await broker.lookup("no-queue-in-this-id") is None
        task = new_task()
        await broker.accept(brief, task)
        pending = await broker.lookup(task.id)
        assert pending is not None
        assert pending.state is TaskState.PENDING
        (claimed,) = await broker.claim(brief, 1, wait=0)
        await broker.settle(brief, claimed, TaskState.SUCCEEDED, {"n": 1})
        await broker.flush()
        stored = await broker.lookup(task.id)
        assert stored is not None
        assert stored.result == {"n": 1}
        with trio.fail_after(5):
            while await broker.lookup(task.id) is not None:  # noqa: ASYNC110 - polls Redis
                await trio.sleep(0.2)


# -- waiting for outcomes --------------------------------------------------------------------


async def test_wait_settled_times_out_then_wakes_for_an_outcome(redis_url: str) -> None:
    async with opened(redis_url) as worker, opened(redis_url, serve=False) as client:
        task = new_task()
        await client.accept(JOBS, task)
        assert await client.wait_settled([task.id], 0.2) == []
        (claimed,) = await worker.claim(JOBS, 1, wait=1.0)
        outcome = []

        async def waiter() -> None:
            outcome.extend(await client.wait_settled([task.id], 10.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, "hi")
        assert [(t.id, t.result) for t in outcome] == [(task.id, "hi")]


async def test_wait_settled_for_another_clients_tasks(redis_url: str) -> None:
    async with (
        opened(redis_url) as worker,
        opened(redis_url, serve=False) as submitter,
        opened(redis_url, serve=False) as other,
    ):
        tasks = [new_task(payload=n) for n in range(5)]
        for task in tasks:
            await submitter.accept(JOBS, task)
        ids = [t.id for t in tasks]
        assert await other.wait_settled(ids, 0) == []
        for claimed in await worker.claim(JOBS, 10, wait=1.0):
            await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, claimed.payload)
        found = await settled_all(other, ids)
        assert [found[t.id].result for t in tasks] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("lost", ["deleted", "trimmed"])
async def test_wait_settled_reads_stored_outcomes_when_notices_are_lost(
    redis_url: str, lost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 300 if lost == "trimmed" else 20
    monkeypatch.setattr(_keys, "REPLIES_MAXLEN", 10)  # trimmed in nodes of 100 entries
    async with opened(redis_url) as worker, running(redis_url, serve=False) as handle:
        client = handle.broker
        tasks = [new_task(payload=n) for n in range(count)]
        assert await client.accept_many(JOBS, tasks) == count
        ids = [t.id for t in tasks]
        assert await client.wait_settled(ids, 0) == []
        await handle.pause()  # the client stops reading
        while claimed := await worker.claim(JOBS, 100, wait=0):
            for task in claimed:
                await worker.settle(JOBS, task, TaskState.SUCCEEDED, task.payload)
                if lost == "trimmed":  # one write per outcome: a notice per stream entry
                    await worker.flush()
        await worker.flush()
        async with raw_client(redis_url) as raw:
            replies = replies_key(redis_url, "jobs", client.consumer)
            if lost == "deleted":
                assert await raw.delete([replies]) == 1
            else:
                assert await raw.xlen(replies) < count - 100
        await handle.resume()
        found = await settled_all(client, ids)
        assert [found[i].result for i in ids] == list(range(count))

"""Priorities over Redis, below the contract: a ranked queue's figures, lookups and
cancels see the tasks waiting by priority, and the entries waiting in the stream when a
queue is ranked keep their place (ahead of later tasks of their priority)."""

from __future__ import annotations

import pytest
import trio
from broker_helpers import JOBS, claim_until, new_task, opened
from redis_helpers import key, raw_client

from queueing._task import ErrorInfo, Task, TaskState
from queueing.brokers.redis import RedisBroker

pytestmark = pytest.mark.redis


def task(priority: int, payload: str) -> Task:
    made = new_task(payload=payload)
    if priority:
        made.priority = priority
    return made


async def claim_all(broker: RedisBroker, count: int) -> list[Task]:
    """Claim one at a time (as one idle worker does) until `count` came."""
    claimed: list[Task] = []
    while len(claimed) < count:
        claimed += await claim_until(broker, n=1)
    return claimed


async def test_a_ranked_queue_keeps_its_backlog_first_and_counts_every_waiting_task(
    redis_url: str,
) -> None:
    async with opened(redis_url, JOBS) as broker, raw_client(redis_url) as raw:
        for name in ("old-1", "old-2"):
            await broker.accept(JOBS, task(0, name))
        assert not await raw.exists([key(redis_url, "jobs", "ranked")])
        for priority, name in ((0, "new-0"), (4, "new-4"), (9, "new-9")):
            await broker.accept(JOBS, task(priority, name))
        assert await raw.exists([key(redis_url, "jobs", "ranked")]) == 1
        assert await raw.xlen(key(redis_url, "jobs", "ready")) == 0  # all in `waiting`
        figures = await broker.figures("jobs")
        assert (figures["ready"], figures["outstanding"], figures["in_flight"]) == (5, 5, 0)
        claimed = await claim_all(broker, 5)
        assert [t.payload for t in claimed] == ["new-9", "new-4", "old-1", "old-2", "new-0"]
        assert [getattr(t, "priority", 0) for t in claimed] == [9, 4, 0, 0, 0]
        figures = await broker.figures("jobs")
        assert (figures["ready"], figures["in_flight"]) == (0, 5)
        running = await broker.lookup(claimed[0].id)
        assert running is not None
        assert (running.state, getattr(running, "priority", 0)) == (TaskState.RUNNING, 9)


async def test_a_cancelled_waiting_task_leaves_the_ranked_queue(redis_url: str) -> None:
    async with opened(redis_url, JOBS) as broker:
        doomed, kept = task(7, "doomed"), task(7, "kept")
        await broker.accept(JOBS, doomed)
        await broker.accept(JOBS, kept)
        assert await broker.cancel(doomed.id, ErrorInfo("Cancelled", "by the test")) is not None
        assert await broker.outstanding("jobs") == 1
        (claimed,) = await claim_until(broker)
        assert claimed.id == kept.id
        assert (await broker.figures("jobs"))["ready"] == 0


async def test_an_idle_consumer_of_a_ranked_queue_is_woken_by_a_submit(redis_url: str) -> None:
    async with opened(redis_url, JOBS) as broker, opened(redis_url, serve=False) as client:
        await client.accept(JOBS, task(3, "first"))  # ranks the queue
        (first,) = await claim_until(broker)
        got: list[Task] = []

        async def idle_claim() -> None:
            got.extend(await broker.claim(JOBS, 1, wait=broker.block * 5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(idle_claim)
            await trio.sleep(0.2)  # the claim waits (on the nudge list)
            started = trio.current_time()
            await client.accept(JOBS, task(0, "later"))
        assert [t.payload for t in got] == ["later"]
        # Woken by the submit, not by the end of a blocking wait (`block`).
        assert trio.current_time() - started < broker.block
        assert first.payload == "first"


async def test_a_consumer_waiting_on_the_stream_is_woken_when_the_queue_is_ranked(
    redis_url: str,
) -> None:
    async with (
        opened(redis_url, JOBS) as broker,
        opened(redis_url, serve=False) as client,
        raw_client(redis_url) as raw,
    ):
        got: list[Task] = []

        async def idle_claim() -> None:
            got.extend(await broker.claim(JOBS, 1, wait=broker.block * 5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(idle_claim)
            await trio.sleep(0.2)  # blocked reading the stream: the queue is not ranked yet
            started = trio.current_time()
            await client.accept(JOBS, task(5, "first"))
        assert [t.payload for t in got] == ["first"]
        assert trio.current_time() - started < broker.block  # woken, not timed out
        # The wake-up entry is gone; the claimed task's entry stays until it is settled.
        assert await raw.xlen(key(redis_url, "jobs", "ready")) == 1
        await broker.settle(JOBS, got[0], TaskState.SUCCEEDED, None)
        await broker.flush()
        assert await raw.xlen(key(redis_url, "jobs", "ready")) == 0


async def test_a_wake_up_entry_nobody_waited_for_is_dropped_by_the_next_claim(
    redis_url: str,
) -> None:
    async with opened(redis_url, JOBS) as broker, raw_client(redis_url) as raw:
        ready = key(redis_url, "jobs", "ready")
        await broker.accept(JOBS, task(2, "first"))  # ranks the queue: nothing was waiting
        assert await raw.xlen(ready) == 1  # the wake-up entry, for consumers blocked on it
        (claimed,) = await claim_until(broker)
        assert claimed.payload == "first"
        assert await raw.xlen(ready) == 1  # the claimed task's entry only
        assert (await broker.figures("jobs"))["in_flight"] == 1

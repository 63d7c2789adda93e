"""The two forms of a submit: plain tasks ready now (the bulk of a `submit_many`) go in a
compact form, encoded from a template; any other task in the full one. Both store the same
records and envelopes, and a round trip mixing them keeps each task's own fields and the
order of each submit's ready ones; the answers name each task that was not accepted."""

from __future__ import annotations

import json
import time

import pytest
import trio
from broker_helpers import JOBS, claim_until, new_run, new_task, opened

from queueing._task import ErrorInfo, Task, TaskState
from queueing.brokers._contract import Admission, QueueInfo
from queueing.brokers.redis._wire import encode_envelope, encode_meta, encode_plain

pytestmark = pytest.mark.redis

PAYLOADS = [0, -7, 2**62, "", 'héllo "quoted"\n\t\u2028', 1.5, None, True, [1, [2, {"a": None}]]]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("expires_at", [None, 1_800_000_000.25])
def test_the_template_writes_what_the_documents_do(
    payload: object, expires_at: float | None
) -> None:
    task = Task("jobs:ab12", "jobs", payload, time.time(), expires_at)
    assert encode_plain(task) == (encode_envelope(task), encode_meta(task))
    envelope, meta = encode_plain(task) or ("", "")
    assert json.loads(envelope)["payload"] == payload
    assert json.loads(meta)["expires_at"] == expires_at


def test_tasks_with_more_than_the_template_has_are_encoded_in_full() -> None:
    prioritized = new_task(payload=1)
    prioritized.priority = 3
    tenanted = new_task(payload=1)
    tenanted.tenant = "acme"
    traced = new_task(payload=1)
    traced.trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    _, stage = new_run("flow", "jobs")
    started = new_task(payload=1)
    started.first_started = 5.0
    for task in (prioritized, tenanted, traced, stage, started):
        assert encode_plain(task) is None


async def test_one_round_trip_mixing_both_forms_keeps_each_tasks_fields_and_order(
    redis_url: str,
) -> None:
    async with opened(redis_url) as broker:
        plain = [[new_task(payload={"n": i, "s": "ü"}) for i in range(3)] for _ in range(3)]
        delayed = [new_task(payload=f"later {i}") for i in range(2)]
        taken: list[int] = []

        async def many(tasks: list[Task]) -> None:
            taken.append(await broker.accept_many(JOBS, tasks))

        async def later(task: Task) -> None:
            await broker.accept(JOBS, task, due=time.time() + 60)

        async with trio.open_nursery() as nursery:  # queued together: one round trip
            nursery.start_soon(many, plain[0])
            nursery.start_soon(later, delayed[0])
            nursery.start_soon(many, plain[1])
            nursery.start_soon(later, delayed[1])
            nursery.start_soon(many, plain[2])
        assert taken == [3, 3, 3]
        for task in delayed:
            record = await broker.lookup(task.id)
            assert record is not None
            assert record.state is TaskState.SCHEDULED
        ready = [task for group in plain for task in group]
        for task in ready:
            record = await broker.lookup(task.id)
            assert record is not None
            assert (record.state, record.submitted_at) == (TaskState.PENDING, task.submitted_at)
        claimed: list[Task] = []
        while len(claimed) < len(ready):
            claimed += await claim_until(broker, n=len(ready))
        # Each submit's tasks in their order (the submits' own order is trio's to choose).
        order = [task.id for task in claimed]
        for group in plain:
            start = order.index(group[0].id)
            assert order[start : start + len(group)] == [task.id for task in group]
        by_id = {task.id: task for task in claimed}
        assert [by_id[task.id].payload for task in ready] == [task.payload for task in ready]


async def test_the_answers_name_each_task_not_accepted(redis_url: str) -> None:
    small = QueueInfo("small", maxsize=5, max_payload=4096, result_ttl=60.0)
    async with opened(redis_url, small) as broker:
        first = [new_task("small", payload=i) for i in range(3)]
        assert await broker.accept_many(small, first) == 3
        # Already there (counted as taken), two that fit, then the queue is full.
        fresh = [new_task("small", payload=i) for i in range(3, 6)]
        assert await broker.accept_many(small, [first[1], *fresh]) == 3
        assert await broker.lookup(fresh[0].id) is not None
        assert await broker.lookup(fresh[1].id) is not None
        assert await broker.lookup(fresh[2].id) is None
        assert await broker.outstanding("small") == 5


async def test_ids_and_prefixes_beyond_ascii_keep_their_tasks(redis_url: str) -> None:
    async with opened(redis_url, prefix="prëfix") as broker:
        # A ranked queue (one task with a priority first): its tasks wait by their ids, and
        # a cancel takes a waiting one out by its id.
        first = Task("jobs:ключ-first", "jobs", -1, time.time())
        first.priority = 1
        assert await broker.accept(JOBS, first) is Admission.ACCEPTED
        tasks = [Task(f"jobs:ключ-{i}", "jobs", i, time.time()) for i in range(3)]
        assert await broker.accept_many(JOBS, tasks) == 3
        for task in tasks:
            record = await broker.lookup(task.id)
            assert record is not None
            assert record.state is TaskState.PENDING
        cancelled = await broker.cancel(tasks[1].id, ErrorInfo("Cancelled", "by the test"))
        assert cancelled is not None
        claimed: list[Task] = []
        while len(claimed) < 3:
            claimed += await claim_until(broker, n=4)
        assert await broker.claim(JOBS, 4, wait=0) == []
        assert [(task.id, task.payload) for task in claimed] == [
            (t.id, t.payload) for t in [first, tasks[0], tasks[2]]
        ]


@pytest.mark.parametrize("compact", [True, False])
async def test_an_id_twice_in_one_submit_makes_one_task(redis_url: str, compact: bool) -> None:
    async with opened(redis_url) as broker:
        # The call's records are looked up together (none exists): the second of an id is
        # still found as written by the first, in either form of the call.
        first = new_task(payload=1)
        if not compact:
            first.priority = 0
            first.trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        again = Task(first.id, "jobs", 2, time.time())
        others = [new_task(payload=i) for i in range(3)]
        assert await broker.accept_many(JOBS, [others[0], first, others[1], again, others[2]]) == 5
        assert await broker.outstanding("jobs") == 4
        claimed: list[Task] = []
        while len(claimed) < 4:
            claimed += await claim_until(broker, n=8)
        assert await broker.claim(JOBS, 8, wait=0) == []
        assert [(task.id, task.payload) for task in claimed] == [
            (t.id, t.payload) for t in [others[0], first, others[1], others[2]]
        ]

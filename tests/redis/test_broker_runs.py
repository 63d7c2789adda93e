"""`RedisBroker.runs` (the `RunStore` of pipeline runs) driven directly: a run starts with
its first stage task or not at all, every step counts once, results come in path order,
the first failure or cancel ends it."""

from __future__ import annotations

import pytest
from broker_helpers import JOBS, new_run, opened

from queueing._task import ErrorInfo, TaskState
from queueing.brokers._contract import Admission, QueueInfo

pytestmark = pytest.mark.redis

ERROR = ErrorInfo("Boom", "it broke")


async def test_a_run_starts_with_its_first_stage_task_or_not_at_all(redis_url: str) -> None:
    full = QueueInfo("full", maxsize=0, max_payload=1024, result_ttl=60.0)
    async with opened(redis_url, JOBS, full) as broker:
        run, first = new_run("ingest", "jobs")
        assert await broker.runs.start(run, JOBS, first, due=None) is Admission.ACCEPTED
        stored = await broker.lookup(run.id)
        assert stored is not None
        assert (stored.state, stored.route) == (TaskState.PENDING, "ingest")
        assert not await broker.runs.ended(run.id)
        assert await broker.runs.start(run, JOBS, first, due=None) is Admission.EXISTS
        (stage,) = await broker.claim(JOBS, 10, wait=0)
        assert (stage.id, stage.run, stage.route) == (first.id, run.id, "ingest")
        refused, refused_first = new_run("ingest", "full")
        assert await broker.runs.start(refused, full, refused_first, due=None) is Admission.FULL
        assert await broker.lookup(refused.id) is None


async def test_a_run_fanned_out_ends_with_its_results_in_path_order(redis_url: str) -> None:
    async with opened(redis_url, serve=False) as broker:
        run, first = new_run("ingest", "jobs")
        await broker.runs.start(run, JOBS, first, due=None)
        runs = broker.runs
        assert await runs.advance(run.id, first.id, 2, True) is None
        assert await runs.advance(run.id, first.id, 2, True) is None  # counted once
        assert await runs.advance(run.id, "jobs:b.0", 2, True) is None  # paths (0, i)
        assert await runs.advance(run.id, "jobs:b.1", 1, False) is None  # path (1,)
        assert await runs.branch_done(run.id, (1,), {"c": 3}) is None
        assert await runs.branch_done(run.id, (0, 1), "b") is None
        assert await runs.branch_done(run.id, (0, 1), "again") is None  # once per branch
        assert not await runs.ended(run.id)
        done = await runs.branch_done(run.id, (0, 0), "a")
        assert done is not None
        assert (done.id, done.state, done.fanned) == (run.id, TaskState.SUCCEEDED, True)
        assert done.result == ["a", "b", {"c": 3}]
        assert await runs.ended(run.id)
        assert await runs.branch_done(run.id, (2,), "late") is None
        (waited,) = await broker.wait_settled([run.id], 5.0)
        assert waited.result == ["a", "b", {"c": 3}]


async def test_a_run_without_fan_out_or_fanned_to_nothing(redis_url: str) -> None:
    async with opened(redis_url, serve=False) as broker:
        run, first = new_run("ingest", "jobs")
        await broker.runs.start(run, JOBS, first, due=None)
        assert await broker.runs.advance(run.id, first.id, 1, False) is None
        done = await broker.runs.branch_done(run.id, (), 42)
        assert done is not None
        assert (done.result, done.fanned) == (42, False)
        empty, empty_first = new_run("ingest", "jobs")
        await broker.runs.start(empty, JOBS, empty_first, due=None)
        nothing = await broker.runs.advance(empty.id, empty_first.id, 0, True)
        assert nothing is not None
        assert (nothing.state, nothing.result) == (TaskState.SUCCEEDED, [])


async def test_a_run_ends_at_its_first_failure_or_cancel(redis_url: str) -> None:
    async with opened(redis_url, serve=False) as broker:
        run, first = new_run("ingest", "jobs")
        await broker.runs.start(run, JOBS, first, due=None)
        first.attempts, first.deliveries, first.stage = 3, 1, 0
        ended = await broker.runs.end(run.id, first, TaskState.FAILED, ERROR)
        assert ended is not None
        assert (ended.state, ended.error, ended.attempts) == (TaskState.FAILED, ERROR, 3)
        assert await broker.runs.end(run.id, first, TaskState.CANCELLED, ERROR) is None
        assert await broker.runs.ended(run.id)
        assert await broker.runs.branch_done(run.id, (), 1) is None
        stored = await broker.lookup(run.id)
        assert stored is not None
        assert stored.state is TaskState.FAILED
        cancelled, cancelled_first = new_run("ingest", "jobs")
        await broker.runs.start(cancelled, JOBS, cancelled_first, due=None)
        record = await broker.cancel(cancelled.id, ERROR)
        assert record is not None
        assert (record.id, record.state) == (cancelled.id, TaskState.CANCELLED)
        assert await broker.cancel(cancelled.id, ERROR) is None
        assert await broker.runs.ended(cancelled.id)

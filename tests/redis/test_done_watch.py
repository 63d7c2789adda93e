"""A queue's `done` stream (the wake-ups of clients waiting for ids another client
submitted) is written only while some client reads it: the reader keeps it with its reads
of records (`watch.lua`), and one that finds it gone (let lapse: notices missed) reads
every record it waits on."""

from __future__ import annotations

import pytest
from broker_helpers import JOBS, new_task, opened, settled_all
from redis_helpers import key, raw_client

from queueing._task import TaskState
from queueing.brokers.redis import _keys, _receipts

pytestmark = pytest.mark.redis


async def test_outcomes_go_to_done_only_while_a_client_reads_it(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_receipts, "SWEEP_EVERY", 1000.0)  # only a notice wakes a waiter
    done = key(redis_url, "jobs", "done")
    async with (
        opened(redis_url) as worker,
        opened(redis_url, serve=False) as submitter,
        opened(redis_url, serve=False) as other,
        raw_client(redis_url) as raw,
    ):
        first, second = new_task(payload=1), new_task(payload=2)
        assert await submitter.accept_many(JOBS, [first, second]) == 2
        (claimed, again) = await worker.claim(JOBS, 2, wait=0)
        await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, "one")
        await worker.flush()
        assert (await settled_all(submitter, [first.id]))[first.id].result == "one"
        assert await raw.exists([done]) == 0  # no one read it: nothing written there
        # Another client waits for the second: it keeps the stream, and the notice there
        # wakes it (no sweep comes in this test).
        assert await other.wait_settled([second.id], 0.2) == []
        assert 0 < await raw.pttl(done) <= _keys.DONE_WATCH_TTL * 1000
        assert await raw.xlen(done) == 0
        await worker.settle(JOBS, again, TaskState.SUCCEEDED, "two")
        await worker.flush()
        assert await raw.xlen(done) == 1
        assert (await settled_all(other, [second.id]))[second.id].result == "two"


async def test_a_reader_that_finds_the_stream_gone_reads_every_record_it_waits_on(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_receipts, "SWEEP_EVERY", 1000.0)
    monkeypatch.setattr(_receipts, "WATCH_EVERY", 0.0)  # kept at every read of records
    done = key(redis_url, "jobs", "done")
    async with (
        opened(redis_url) as worker,
        opened(redis_url, serve=False) as submitter,
        opened(redis_url, serve=False) as other,
        raw_client(redis_url) as raw,
    ):
        first, later = new_task(payload=1), new_task(payload=2)
        assert await submitter.accept_many(JOBS, [first, later]) == 2
        assert await other.wait_settled([first.id], 0.2) == []
        await raw.delete([done])  # its TTL ran out (no read for long)
        (claimed, _) = await worker.claim(JOBS, 2, wait=0)
        await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, "one")
        await worker.flush()
        assert await raw.exists([done]) == 0  # the outcome's notice went nowhere
        # The next read of records (for an id new here) finds the stream gone and made
        # again: every record waited on is read.
        got = await other.wait_settled({first.id, later.id}, 5.0)
        assert [(task.id, task.result) for task in got] == [(first.id, "one")]
        assert await raw.exists([done]) == 1


async def test_a_done_stream_the_previous_version_wrote_is_written_and_read_on(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The previous version wrote `done` at every outcome, without a TTL: while it exists,
    # outcomes go there as before, and a reader's keep gives it its TTL.
    monkeypatch.setattr(_receipts, "SWEEP_EVERY", 1000.0)
    done = key(redis_url, "jobs", "done")
    async with (
        opened(redis_url) as worker,
        opened(redis_url, serve=False) as submitter,
        opened(redis_url, serve=False) as other,
        raw_client(redis_url) as raw,
    ):
        await raw.xadd(done, {"jobs:written-before": ""})
        assert await raw.pttl(done) == -1
        task = new_task(payload=1)
        assert await submitter.accept_many(JOBS, [task]) == 1
        (claimed,) = await worker.claim(JOBS, 1, wait=0)
        await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, "one")
        await worker.flush()
        assert await raw.xlen(done) == 2
        other_task = new_task(payload=2)
        assert await submitter.accept_many(JOBS, [other_task]) == 1
        assert await other.wait_settled([other_task.id], 0.2) == []
        assert await raw.pttl(done) > 0
        (claimed,) = await worker.claim(JOBS, 1, wait=0)
        await worker.settle(JOBS, claimed, TaskState.SUCCEEDED, "two")
        await worker.flush()
        assert (await settled_all(other, [other_task.id]))[other_task.id].result == "two"

"""Pipelines over Redis: stages chained through the broker, fan-out, failures naming
their stage, receipts from other clients, and cancellation of a run."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from redis_helpers import outcome_of, outstanding, raw_client, wait_for

from queueing import (
    FanOut,
    Pipeline,
    Queue,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskState,
    Worker,
    connect,
    open_system,
)

pytestmark = pytest.mark.redis


@attrs.frozen
class Page:
    url: str


@attrs.frozen
class Body:
    url: str
    text: str


class Fetch(Worker):
    async def handle(self, page: Page) -> Body:
        return Body(page.url, f"<html>{page.url}</html>")


class Measure(Worker):
    async def handle(self, body: Body) -> int:
        assert isinstance(body, Body)
        return len(body.text)


class Split(Worker):
    async def handle(self, text: str) -> FanOut:
        return FanOut(text.split())


class SlowUpper(Worker):
    """Shorter words take longer, so branches finish out of order."""

    async def handle(self, word: str) -> str:
        await trio.sleep(0.02 * (10 - len(word)))
        return word.upper()


class Boom(Worker):
    async def handle(self, payload: Any) -> Any:
        raise ValueError(f"cannot handle {payload!r}")


class Gate(Worker):
    def __init__(self, gate: trio.Event, seen: list[Any]) -> None:
        self.gate = gate
        self.seen = seen

    async def handle(self, payload: str) -> str:
        self.seen.append(payload)
        await self.gate.wait()
        return payload


def ingest() -> tuple[Queue, Queue, Pipeline]:
    fetch = Queue("fetch", Fetch, workers=2)
    measure = Queue("measure", Measure, workers=2)
    return fetch, measure, Pipeline("ingest", [fetch, measure])


async def test_stage_results_feed_the_next_stage(redis_url: str) -> None:
    async with open_system(*ingest(), broker=redis_url) as system:
        receipts = [await system.submit("ingest", Page(f"u{n}")) for n in range(20)]
        expected = [len(f"<html>u{n}</html>") for n in range(20)]
        assert [await r.result(timeout=10) for r in receipts] == expected
        await system.drain(timeout=5)
        async with raw_client(redis_url) as client:
            for name in ("fetch", "measure"):
                assert await outstanding(client, redis_url, name) == 0


async def test_fan_out_results_come_back_in_order(redis_url: str) -> None:
    split = Queue("split", Split)
    upper = Queue("upper", SlowUpper, workers=4)
    words = Pipeline("words", [split, upper])
    async with open_system(split, upper, words, broker=redis_url) as system:
        receipt = await system.submit("words", "a quick brown fox jumps")
        assert await receipt.result(timeout=10) == ["A", "QUICK", "BROWN", "FOX", "JUMPS"]
        empty = await system.submit("words", "")
        assert await empty.result(timeout=10) == []


async def test_a_failed_stage_fails_the_run_and_is_named(redis_url: str) -> None:
    fetch = Queue("fetch", Fetch)
    boom = Queue("boom", Boom, retry=RetryPolicy.never())
    broken = Pipeline("broken", [fetch, boom])
    async with open_system(fetch, boom, broken, broker=redis_url) as system:
        failure = await outcome_of(await system.submit("broken", Page("x")))
        assert isinstance(failure, TaskFailed)
        assert failure.stage == "boom"
        assert failure.outcome is TaskState.FAILED
        assert "cannot handle" in str(failure)


async def test_run_submitted_by_a_client_and_found_by_another(redis_url: str) -> None:
    fetch, measure, pipeline = ingest()
    async with (
        open_system(fetch, measure, pipeline, broker=redis_url),
        connect(redis_url, pipeline) as alice,
        connect(redis_url, pipeline) as bob,
    ):
        receipt = await alice.submit("ingest", Page("abc"))
        assert await receipt.result(timeout=10) == len("<html>abc</html>")
        assert await bob.receipt(receipt.id).result(timeout=10) == len("<html>abc</html>")


async def test_run_found_by_a_client_that_does_not_know_the_pipeline(redis_url: str) -> None:
    fetch, measure, pipeline = ingest()
    async with (
        open_system(fetch, measure, pipeline, broker=redis_url) as system,
        connect(redis_url) as bob,
    ):
        receipt = await system.submit("ingest", Page("abc"))
        assert await receipt.result(timeout=10) == len("<html>abc</html>")
        assert await bob.receipt(receipt.id).result(timeout=10) == len("<html>abc</html>")


async def test_cancel_a_run_while_its_first_stage_runs(redis_url: str) -> None:
    gate, seen = trio.Event(), []
    first = Queue("first", Gate, worker_kwargs={"gate": gate, "seen": seen})
    second = Queue("second", Measure)
    run = Pipeline("run", [first, second])
    async with open_system(first, second, run, broker=redis_url) as system:
        receipt = await system.submit("run", "hello")

        async def started() -> bool:
            await trio.lowlevel.checkpoint()
            return bool(seen)

        await wait_for(started)
        assert await receipt.cancel() is True
        with pytest.raises(TaskCancelled):
            await receipt.result(timeout=5)
        gate.set()
        await system.drain(timeout=5)
        async with raw_client(redis_url) as client:
            for name in ("first", "second"):
                assert await outstanding(client, redis_url, name) == 0


class IdGate(Worker):
    """Records its task's own id (a stage task's), then waits for the gate."""

    def __init__(self, gate: trio.Event, ids: list[str]) -> None:
        self.gate = gate
        self.ids = ids

    async def handle(self, payload: str) -> str:
        assert self.task_id is not None
        self.ids.append(self.task_id)
        await self.gate.wait()
        return payload


class Length(Worker):
    async def handle(self, text: str) -> int:
        return len(text)


async def test_a_stage_task_found_by_id_another_client(redis_url: str) -> None:
    gate, ids = trio.Event(), []
    first = Queue("first", IdGate, worker_kwargs={"gate": gate, "ids": ids})
    second = Queue("second", Length)
    run = Pipeline("run", [first, second])
    async with open_system(first, second, run, broker=redis_url) as system:
        doomed = await system.submit("run", "hello")

        async def started() -> bool:
            await trio.lowlevel.checkpoint()
            return bool(ids)

        await wait_for(started)
        async with connect(redis_url) as client:
            # Cancelling one stage task ends its run: it cannot complete without it.
            assert await client.receipt(ids[0]).cancel() is True
            with pytest.raises(TaskCancelled):
                await doomed.result(timeout=5)
            gate.set()
            ok = await system.submit("run", "hi")
            assert await ok.result(timeout=5) == len("hi")
            # A finished stage task's receipt resolves to None: its result went on.
            assert await client.receipt(ids[1]).result(timeout=5) is None
        await system.drain(timeout=5)


class Held(Worker):
    """Holds its task until cancelled (or for a minute); logs each start and cancel."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def handle(self, payload: str) -> str:
        self.log.append(f"start {payload}")
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            self.log.append(f"cancelled {payload}")
            raise
        return payload


async def test_cancelling_a_run_stops_its_stage_running_in_another_process(
    redis_url: str,
) -> None:
    log: list[str] = []
    url = redis_url + "&lease=0.6"  # leases renewed (and ended runs checked) every 0.2 s
    first = Queue("first", Held, worker_kwargs={"log": log})
    run = Pipeline("run", [first, Queue("second", Measure)])
    async with open_system(first, run, broker=url) as workers, connect(url, run) as client:
        receipt = await client.submit("run", "hello")
        await wait_for(lambda: _logged(log, "start hello"))
        assert await client.receipt(receipt.id).cancel() is True  # from the client
        with pytest.raises(TaskCancelled):
            await receipt.result(timeout=5)
        await wait_for(lambda: _logged(log, "cancelled hello"), timeout=10)
        await workers.drain(timeout=10)
        assert workers.stats()["first"].in_flight == 0


async def _logged(log: list[str], line: str) -> bool:
    await trio.lowlevel.checkpoint()
    return line in log


async def test_a_client_that_knows_no_pipeline_submits_to_one_by_name(redis_url: str) -> None:
    fetch, measure, pipe = ingest()
    async with open_system(fetch, measure, pipe, broker=redis_url), connect(redis_url) as client:
        assert "ingest" in client.names
        receipt = await client.submit("ingest", {"url": "https://example.org"})
        assert await receipt.result(timeout=5) == len("<html>https://example.org</html>")

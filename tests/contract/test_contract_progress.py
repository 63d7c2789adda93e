"""Task progress (`Worker.progress`): what receipts see, the same on every broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from contract_workers import WAIT, Probe, outcome_of, serve

from queueing import Pipeline, Queue, Receipt, TaskState, TaskStatus, Worker


class Reporting(Worker):
    """Reports half of its steps, waits at the probe's gate, reports all and returns."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, steps: int) -> int:
        self.progress(steps // 2, steps, note="half")
        self.probe.note(self.probe.started, steps)
        await self.probe.gate.wait()
        self.progress(steps, steps, note="all")
        return steps


def reporting(probe: Probe) -> Queue:
    return Queue("reporting", Reporting, worker_kwargs={"probe": probe})


async def status_when(
    receipt: Receipt, predicate: Callable[[TaskStatus], bool], poll: float = 0.02
) -> TaskStatus:
    """The receipt's status once `predicate` holds (a publish may lag a report)."""
    with trio.fail_after(WAIT):
        while not predicate(status := await receipt.status()):  # noqa: ASYNC110 - a publish has no event to wait on across processes
            await trio.sleep(poll)
    return status


def noted(note: str) -> Callable[[TaskStatus], bool]:
    return lambda status: status.progress is not None and status.progress.note == note


async def test_a_running_task_shows_its_latest_progress(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, reporting(probe)) as system:
        receipt = await system.submit("reporting", 10)
        await probe.wait_for(probe.started)
        status = await status_when(receipt, noted("half"))
        found = await status_when(system.receipt(receipt.id), noted("half"))
        probe.gate.set()
        assert await outcome_of(receipt) == 10
    for seen in (status, found):
        assert seen.progress is not None
        assert (seen.progress.done, seen.progress.total, seen.progress.fraction) == (5, 10, 0.5)
        assert seen.progress.at > 0


async def test_the_last_report_is_kept_with_the_outcome(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, reporting(probe)) as system:
        receipt = await system.submit("reporting", 4)
        assert await outcome_of(receipt) == 4
        # The last report is published before the outcome is recorded: no waiting.
        status = await receipt.status()
        found = await system.receipt(receipt.id).status()
    assert status.state is found.state is TaskState.SUCCEEDED
    assert noted("all")(status)
    assert status.progress == found.progress
    assert status.progress is not None
    assert status.progress.fraction == 1.0


async def test_a_task_that_never_reports_has_no_progress(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    class Quiet(Worker):
        async def handle(self, number: int) -> int:
            return number

    async with serve(broker, Queue("quiet", Quiet)) as system:
        receipt = await system.submit("quiet", 1)
        assert await outcome_of(receipt) == 1
        await trio.sleep(0.2)
        assert (await receipt.status()).progress is None
        assert (await system.receipt(receipt.id).status()).progress is None


async def test_watch_sees_the_progress_then_ends_with_the_outcome(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    seen: list[TaskStatus] = []
    async with serve(broker, reporting(probe)) as system:
        receipt = await system.submit("reporting", 8)

        async def follow() -> None:
            async for status in receipt.watch(interval=0.05):
                seen.append(status)
                if noted("half")(status):
                    probe.gate.set()

        with trio.fail_after(WAIT):
            await follow()
    assert seen[-1].state is TaskState.SUCCEEDED
    assert [s.state.final for s in seen].count(True) == 1
    notes: list[Any] = [s.progress.note for s in seen if s.progress is not None]
    assert notes[0] == "half"


class Passing(Worker):
    """A pipeline's first stage: hands its payload on."""

    async def handle(self, steps: int) -> int:
        return steps


async def test_a_pipeline_runs_status_shows_its_stages_progress(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    first = Queue("first", Passing)
    pipeline = Pipeline("flow", [first, reporting(probe)])  # type: ignore[list-item]
    async with serve(broker, pipeline) as system:
        receipt = await system.submit("flow", 6)
        await probe.wait_for(probe.started)
        status = await status_when(receipt, noted("half"))
        probe.gate.set()
        assert await outcome_of(receipt) == 6
        final = await status_when(receipt, noted("all"))
    assert status.progress is not None
    assert (status.progress.done, status.progress.total) == (3, 6)
    assert status.progress.stage == "reporting"
    assert final.progress is not None
    assert final.progress.stage == "reporting"

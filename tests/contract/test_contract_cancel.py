"""Cancelling through a receipt: a queued task never runs, a running one is cancelled
where it is, and the worker goes on."""

from __future__ import annotations

import pytest
import trio
from contract_workers import WAIT, Gated, Probe, outcome_of, serve

from queueing import Queue, TaskCancelled, TaskState


def gated(probe: Probe) -> Queue:
    return Queue("gated", Gated, workers=1, worker_kwargs={"probe": probe})


async def test_a_cancelled_queued_task_never_runs(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        busy = await system.submit("gated", "busy")
        await probe.wait_for(probe.started)
        queued = await system.submit("gated", "queued")
        assert await queued.cancel() is True
        with pytest.raises(TaskCancelled) as info:
            await queued.result(timeout=WAIT)
        assert info.value.outcome is TaskState.CANCELLED
        assert queued.done()
        assert (await queued.status()).state is TaskState.CANCELLED
        probe.gate.set()
        assert await outcome_of(busy) == "busy"
        await system.drain(timeout=WAIT)
    assert probe.started == ["busy"]


async def test_a_second_cancel_returns_false(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        await system.submit("gated", "busy")
        await probe.wait_for(probe.started)
        queued = await system.submit("gated", "queued")
        assert await queued.cancel() is True
        assert await queued.cancel() is False
        probe.gate.set()


async def test_cancel_of_a_finished_task_returns_false_and_keeps_its_result(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, gated(probe)) as system:
        receipt = await system.submit("gated", "done")
        assert await outcome_of(receipt) == "done"
        assert await receipt.cancel() is False
        assert await outcome_of(receipt) == "done"
        assert (await receipt.status()).state is TaskState.SUCCEEDED


async def test_cancelling_a_running_task_cancels_its_handler(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        running = await system.submit("gated", "running")
        await probe.wait_for(probe.started)
        assert await running.cancel() is True
        with pytest.raises(TaskCancelled) as info:
            await running.result(timeout=WAIT)
        assert info.value.outcome is TaskState.CANCELLED
        assert info.value.attempts == 1  # the attempt it was cancelled in counts
        assert (await system.receipt(running.id).status()).attempts == 1
        await probe.wait_for(probe.cancelled)
    assert probe.cancelled == ["running"]
    assert probe.finished == []


async def test_the_worker_goes_on_after_its_running_task_is_cancelled(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        running = await system.submit("gated", "running")
        await probe.wait_for(probe.started)
        after = await system.submit("gated", "after")
        assert await running.cancel() is True
        await probe.wait_for(probe.started, 2)  # the only worker took the next task
        probe.gate.set()
        assert await outcome_of(after) == "after"
    assert probe.started == ["running", "after"]

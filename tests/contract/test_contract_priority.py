"""`submit(..., priority=)`: waiting tasks of higher priority start first, FIFO within one
priority, on every broker; the pull model, `maxsize`, delays and retries unchanged."""

from __future__ import annotations

from typing import Any

import pytest
import tenacity
import trio
from contract_workers import Probe, outcome_of, pipeline, serve, until_ready

import queueing
from queueing import InvalidQueue, Overflow, Queue, QueueFull, RetryPolicy, Worker

#: The retry backoff of the tests below: short.
BACKOFF = 0.05
#: The backoff (and the delay) of a task that must become due only after the worker took
#: the next task (the order asserted depends on it): long enough for a loaded machine,
#: short enough to wait out (in memory it costs no real time).
DUE = 0.5


class Ordered(Worker):
    """Logs (name, attempt) at each start; a name starting with "hold" waits at the
    probe's gate, one starting with "wait" at `probe.later` (a second gate); a payload
    `{"name": n, "fail": k}` raises `Transient` on its first k attempts."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, payload: Any) -> str:
        name, fail = payload, 0
        if isinstance(payload, dict):
            name, fail = payload["name"], payload["fail"]
        self.probe.note(self.probe.started, (name, self.attempt))
        if name.startswith("hold"):
            await self.probe.gate.wait()
        elif name.startswith("wait"):
            await later(self.probe).wait()
        if self.attempt <= fail:
            raise queueing.Transient(f"{name}: attempt {self.attempt} fails")
        self.probe.note(self.probe.finished, name)
        return str(name)


def later(probe: Probe) -> trio.Event:
    """A second gate on the probe (made on first use)."""
    gate: trio.Event | None = getattr(probe, "later", None)
    if gate is None:
        gate = probe.later = trio.Event()  # type: ignore[attr-defined]
    return gate


def one_worker(
    probe: Probe, name: str = "ranked", backoff: float = BACKOFF, **options: Any
) -> Queue:
    retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(backoff))
    return Queue(name, Ordered, worker_kwargs={"probe": probe}, workers=1, retry=retry, **options)


def names(probe: Probe) -> list[str]:
    return [name for name, _ in probe.started]


async def test_waiting_tasks_start_by_priority_then_in_submission_order(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")  # the one worker is busy with this
        await probe.wait_for(probe.started)
        order = [("low-a", 0), ("high-a", 9), ("mid-a", 5), ("low-b", 0), ("high-b", 9)]
        receipts = [await system.submit("ranked", n, priority=p) for n, p in order]
        receipts += await system.submit_many("ranked", ["mid-b", "mid-c"], priority=5)
        probe.gate.set()
        for receipt in receipts:
            assert isinstance(await outcome_of(receipt), str)
        await system.drain()
    assert names(probe) == [
        "hold",
        "high-a",
        "high-b",
        "mid-a",
        "mid-b",
        "mid-c",
        "low-a",
        "low-b",
    ]
    assert probe.cancelled == []  # the busy worker's task ran on: nothing jumps into it


async def test_under_backlog_every_high_priority_task_starts_before_the_low_ones(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    low, high = 200, 20
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started)
        await system.submit_many("ranked", [f"low-{i}" for i in range(low)])
        for i in range(high):
            await system.submit("ranked", f"high-{i}", priority=1)
        probe.gate.set()
        # Real time over a shared broker: 221 tasks one after the other take a while under
        # load (what is asserted is their order).
        await probe.wait_for(probe.finished, 1 + low + high, timeout=60)
    started = names(probe)[1:]
    assert started[:high] == [f"high-{i}" for i in range(high)]
    assert started[high:] == [f"low-{i}" for i in range(low)]


async def test_a_priority_task_counts_toward_maxsize(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    spec = one_worker(probe, maxsize=2, when_full=Overflow.REJECT)
    async with serve(broker, spec) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started)
        await system.submit("ranked", "low")
        with pytest.raises(QueueFull):
            await system.submit("ranked", "high", priority=9)
        probe.gate.set()
        await system.drain()
    assert names(probe) == ["hold", "low"]


@pytest.mark.parametrize("how", ["retry", "delay"])
async def test_a_task_keeps_its_priority_when_it_becomes_due(
    broker: str, clock: trio.abc.Clock | None, how: str
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe, backoff=DUE)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started)
        if how == "retry":
            # Its first attempt fails: it waits out its backoff, holding no worker.
            await system.submit("ranked", {"name": "high", "fail": 1}, priority=7)
        else:
            await system.submit("ranked", "high", priority=7, delay=DUE)
        await system.submit_many("ranked", ["wait-1", "wait-2", "wait-3"])
        probe.gate.set()
        await probe.wait_for(probe.started, 3 if how == "retry" else 2)
        # "high" becomes due behind "wait-1"'s worker; wait-2 and wait-3 wait too.
        await until_ready(broker, system, "ranked", 3, due_in=DUE)
        later(probe).set()
        await system.drain()
    expected = [("hold", 1), ("wait-1", 1), ("high", 1), ("wait-2", 1), ("wait-3", 1)]
    if how == "retry":
        expected = [("hold", 1), ("high", 1), ("wait-1", 1), ("high", 2), ("wait-2", 1)]
        expected.append(("wait-3", 1))
    assert probe.started == expected


async def test_a_waiting_task_with_a_priority_can_be_cancelled(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started)
        doomed = await system.submit("ranked", "doomed", priority=9)
        kept = await system.submit("ranked", "kept", priority=3)
        assert await doomed.cancel()
        probe.gate.set()
        assert await outcome_of(kept) == "kept"
        assert isinstance(await outcome_of(doomed), queueing.TaskCancelled)
        await system.drain()
    assert names(probe) == ["hold", "kept"]


async def test_a_requeued_dead_letter_keeps_its_priority(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, one_worker(probe)) as system:
        # Three attempts, three failures: a dead letter.
        doomed = await system.submit("ranked", {"name": "doomed", "fail": 3}, priority=7)
        assert isinstance(await outcome_of(doomed), queueing.TaskFailed)
        (letter,) = await system.dead_letters("ranked")
        assert (letter.id, letter.priority) == (doomed.id, 7)
        (again,) = await system.requeue("ranked")
        assert (await again.status()).priority == 7
        assert isinstance(await outcome_of(again), queueing.TaskFailed)


async def test_the_status_of_a_task_shows_its_priority(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started)
        high = await system.submit("ranked", "high", priority=6)
        low = await system.submit("ranked", "low")
        assert (await high.status()).priority == 6
        assert (await system.receipt(high.id).status()).priority == 6
        assert (await low.status()).priority == 0
        probe.gate.set()
        assert await outcome_of(high) == "high"
        assert (await system.receipt(high.id).status()).priority == 6


async def test_a_pipeline_runs_every_stage_at_its_priority(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe, before = Probe(), Probe()
    before.gate.set()
    first = one_worker(before, name="first")
    second = one_worker(probe, name="second")
    flow = pipeline("flow", first, second)
    async with serve(broker, first, second, flow) as system:
        await system.submit("second", "hold")
        await probe.wait_for(probe.started)
        await system.submit_many("second", ["low-1", "low-2"])
        run = await system.submit("flow", "urgent", priority=8)
        # Its first stage runs at once (an idle worker); its second waits behind "hold".
        await before.wait_for(before.finished)
        await until_ready(broker, system, "second", 3)  # low-1, low-2 and urgent
        probe.gate.set()
        assert await outcome_of(run) == "urgent"
        await system.drain()
    assert names(probe) == ["hold", "urgent", "low-1", "low-2"]


@pytest.mark.parametrize("priority", [-1, 10, 1000, True, 1.0, "9", None])
async def test_a_bad_priority_is_refused_naming_the_range(
    broker: str, clock: trio.abc.Clock | None, priority: object
) -> None:
    async with serve(broker, one_worker(Probe())) as system:
        with pytest.raises(InvalidQueue, match=r"priority must be .*0.* to 9"):
            await system.submit("ranked", "x", priority=priority)  # type: ignore[arg-type]
        with pytest.raises(InvalidQueue, match=r"priority must be"):
            await system.submit_many("ranked", ["x"], priority=priority)  # type: ignore[arg-type]

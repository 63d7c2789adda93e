"""`Queue(retry_ahead=True)`: a due retry starts ahead of the new tasks waiting at its
priority (retries in the order they became due), never ahead of a higher priority; without
it, a retry joins the back of its priority. On every broker."""

from __future__ import annotations

import pytest
import tenacity
import trio
from contract_workers import Probe, serve, until_ready

import queueing
from queueing import InvalidQueue, Queue, RetryPolicy, Worker

#: The retry backoff of the tests below: long enough that a loaded machine does not let a
#: failed task become due before the worker has taken the next one (the order asserted
#: depends on it), short enough to wait out (in memory it costs no real time).
BACKOFF = 0.5
#: The backlog of new tasks behind the failing ones.
BACKLOG = 5


class Broken(Exception):
    """The worker's state is lost: a fatal error (its worker is rebuilt, the task handed
    back)."""


class Flaky(Worker):
    """Logs (name, attempt) at each start. A name starting with "hold" waits at the
    probe's gate, one starting with "wait" at `probe.later`; a name starting with "flaky"
    raises `Transient` on its first attempt; "crash" waits at `probe.later`, then crashes
    its worker the first time."""

    fatal = (Broken,)

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, name: str) -> str:
        self.probe.note(self.probe.started, (name, self.attempt))
        if name.startswith("hold"):
            await self.probe.gate.wait()
        elif name.startswith("wait") or name == "crash":
            await later(self.probe).wait()
        if name == "crash" and [n for n, _ in self.probe.started].count("crash") == 1:
            raise Broken("worker state lost")
        if name.startswith("flaky") and self.attempt == 1:
            raise queueing.Transient(f"{name}: first attempt fails")
        self.probe.note(self.probe.finished, name)
        return name


def later(probe: Probe) -> trio.Event:
    gate: trio.Event | None = getattr(probe, "later", None)
    if gate is None:
        gate = probe.later = trio.Event()  # type: ignore[attr-defined]
    return gate


def one_worker(probe: Probe, *, ahead: bool) -> Queue[str]:
    retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(BACKOFF))
    return Queue(
        "tail",
        Flaky,
        worker_kwargs={"probe": probe},
        workers=1,
        retry=retry,
        retry_ahead=ahead,
    )


@pytest.mark.parametrize("ahead", [True, False], ids=["ahead", "default"])
async def test_a_due_retry_starts_before_the_backlog_only_with_retry_ahead(
    broker: str, clock: trio.abc.Clock | None, ahead: bool
) -> None:
    probe = Probe()
    backlog = [f"wait-{i}" for i in range(BACKLOG)]
    async with serve(broker, one_worker(probe, ahead=ahead)) as system:
        await system.submit("tail", "hold")  # the one worker is busy with this
        await probe.wait_for(probe.started)
        await system.submit_many("tail", ["flaky-a", "flaky-b", *backlog])
        probe.gate.set()
        # flaky-a and flaky-b fail once; wait-0 starts and waits while both become due.
        await probe.wait_for(probe.started, 4)
        await until_ready(broker, system, "tail", 2 + BACKLOG - 1, due_in=BACKOFF)
        later(probe).set()
        await probe.wait_for(probe.finished, 3 + BACKLOG)
        await system.drain()
    first = [("hold", 1), ("flaky-a", 1), ("flaky-b", 1), ("wait-0", 1)]
    retries = [("flaky-a", 2), ("flaky-b", 2)]
    rest = [(name, 1) for name in backlog[1:]]
    assert probe.started == first + (retries + rest if ahead else rest + retries)


@pytest.mark.parametrize("ahead", [True, False], ids=["ahead", "default"])
async def test_a_due_retry_never_starts_ahead_of_a_higher_priority(
    broker: str, clock: trio.abc.Clock | None, ahead: bool
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe, ahead=ahead)) as system:
        await system.submit("tail", "hold")
        await probe.wait_for(probe.started)
        flaky, *_ = await system.submit_many("tail", ["flaky", "wait-mid-1", "mid-2"], priority=4)
        await system.submit_many("tail", ["low-1"])
        probe.gate.set()
        await probe.wait_for(probe.started, 3)
        await until_ready(broker, system, "tail", 3, due_in=BACKOFF)  # flaky, mid-2, low-1
        # While wait-mid-1 runs, flaky is due again and a task of a higher priority comes.
        await system.submit("tail", "urgent", priority=9)
        later(probe).set()
        await probe.wait_for(probe.finished, 5)
        await system.drain()
        status = await flaky.status()
        assert (status.state, status.attempts, status.priority) == (
            queueing.TaskState.SUCCEEDED,
            2,
            4,
        )
    head = [("hold", 1), ("flaky", 1), ("wait-mid-1", 1), ("urgent", 1)]
    mid = [("flaky", 2), ("mid-2", 1)] if ahead else [("mid-2", 1), ("flaky", 2)]
    assert probe.started == [*head, *mid, ("low-1", 1)]


async def test_a_task_handed_back_by_a_crashed_worker_goes_before_due_retries(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe, ahead=True)) as system:
        await system.submit("tail", "hold")
        await probe.wait_for(probe.started)
        await system.submit_many("tail", ["flaky", "crash", "new"])
        probe.gate.set()
        # flaky fails once and is due again while "crash" runs; then its worker crashes.
        await probe.wait_for(probe.started, 3)
        await until_ready(broker, system, "tail", 2, due_in=BACKOFF)  # flaky and new
        later(probe).set()
        await probe.wait_for(probe.finished, 4)
        await system.drain()
    names = [name for name, _ in probe.started]
    assert names == ["hold", "flaky", "crash", "crash", "flaky", "new"]


def test_retry_ahead_must_be_a_bool() -> None:
    with pytest.raises(InvalidQueue, match="retry_ahead must be True or False, got 'yes'"):
        Queue("tail", Flaky, retry_ahead="yes")  # type: ignore[arg-type]

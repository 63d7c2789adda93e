"""Time on every broker: `delay=`, `expires=`, the queue's `timeout`, and the working
states a receipt reports on the way (PENDING, SCHEDULED, RUNNING)."""

from __future__ import annotations

import trio
from contract_workers import (
    LONG,
    SETTLE,
    WAIT,
    Gated,
    Probe,
    Sleeper,
    failure_of,
    outcome_of,
    serve,
)

from queueing import Queue, RetryPolicy, TaskExpired, TaskState

DELAY = 0.3  # seconds: a submit's delay=
EXPIRES = 0.1  # seconds: a submit's expires=
TIMEOUT = 0.1  # seconds: Queue(timeout=...)
#: Clocks may round a due time to the millisecond (Redis keeps them in ms).
ROUNDING = 0.002


async def test_a_delayed_task_does_not_start_before_its_delay(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        submitted = trio.current_time()
        receipt = await system.submit("gated", "later", delay=DELAY)
        assert await outcome_of(receipt) == "later"
    [started] = probe.started_at
    assert started - submitted >= DELAY - ROUNDING


async def test_a_delayed_task_reports_scheduled_while_it_waits(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        receipt = await system.submit("gated", "later", delay=DELAY)
        assert (await receipt.status()).state is TaskState.SCHEDULED
        assert not receipt.done()
        assert await outcome_of(receipt) == "later"
        assert (await receipt.status()).state is TaskState.SUCCEEDED


async def test_a_queued_task_reports_pending(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        await system.submit("gated", "busy")
        await probe.wait_for(probe.started)
        waiting = await system.submit("gated", "waiting")
        status = await waiting.status()
        assert (status.state, status.attempts) == (TaskState.PENDING, 0)
        probe.gate.set()
        assert await outcome_of(waiting) == "waiting"


async def test_a_running_task_reports_running(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        receipt = await system.submit("gated", "busy")
        await probe.wait_for(probe.started)
        status = await receipt.status()
        assert (status.state, status.attempts) == (TaskState.RUNNING, 1)
        probe.gate.set()
        assert await outcome_of(receipt) == "busy"


async def test_a_task_that_could_not_start_before_it_expires_never_runs(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, workers=1, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        busy = await system.submit("gated", "busy")
        await probe.wait_for(probe.started)
        late = await system.submit("gated", "late", expires=EXPIRES)
        await trio.sleep(EXPIRES + SETTLE)  # the only worker is still busy: past the deadline
        probe.gate.set()
        assert await outcome_of(busy) == "busy"
        failure = await failure_of(late)
        status = await late.status()
        await system.drain(timeout=WAIT)
    assert isinstance(failure, TaskExpired)
    assert failure.outcome is TaskState.EXPIRED
    assert status.state is TaskState.EXPIRED
    assert probe.started == ["busy"]


async def test_a_task_that_starts_before_it_expires_runs(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        receipt = await system.submit("gated", "soon", expires=WAIT)
        assert await outcome_of(receipt) == "soon"


async def test_an_attempt_past_the_timeout_fails_with_task_timeout(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # TaskTimeout is retryable (Transient): with no retry allowed, its retries ran out at
    # once, which docs/concepts/retries.md's outcome table calls DEAD_LETTERED.
    queue = Queue("sleeper", Sleeper, timeout=TIMEOUT, retry=RetryPolicy.never())
    async with serve(broker, queue) as system:
        receipt = await system.submit("sleeper", [LONG])
        failure = await failure_of(receipt)
        status = await receipt.status()
    assert failure.outcome is TaskState.DEAD_LETTERED
    assert failure.error_type == "queueing.TaskTimeout"
    assert failure.attempts == 1
    assert status.state is TaskState.DEAD_LETTERED
    assert status.error is not None
    assert status.error.type == "queueing.TaskTimeout"


async def test_a_timed_out_attempt_is_retried_by_the_default_policy(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("sleeper", Sleeper, timeout=TIMEOUT)) as system:
        receipt = await system.submit("sleeper", [LONG, 0])  # only the first attempt is slow
        assert await outcome_of(receipt) == 2
        status = await receipt.status()
    assert (status.state, status.attempts) == (TaskState.SUCCEEDED, 2)


async def test_the_worker_goes_on_after_a_timed_out_attempt(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    queue = Queue("sleeper", Sleeper, workers=1, timeout=TIMEOUT, retry=RetryPolicy.never())
    async with serve(broker, queue) as system:
        slow = await system.submit("sleeper", [LONG])
        quick = await system.submit("sleeper", [0])
        assert await outcome_of(quick) == 1
        assert (await failure_of(slow)).error_type == "queueing.TaskTimeout"

"""How a queue serves its tasks on every broker: start order, the worker bound, backoff
that holds no worker, supervised worker crashes, what a handler and a receipt know."""

from __future__ import annotations

import pytest
import trio
from contract_workers import (
    SETTLE,
    WAIT,
    Echo,
    Fatal,
    FlakyStart,
    Gated,
    Greeter,
    Probe,
    Troubled,
    WhoAmI,
    outcome_of,
    serve,
)
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    InvalidQueue,
    Queue,
    QueueSystem,
    ResultTimeout,
    RetryPolicy,
    TaskState,
    TaskStatus,
    UnknownTask,
)
from queueing._validate import MAX_COUNT

RESULT_TTL = 0.2  # seconds: Queue(result_ttl=...) of the expiry test
BACKOFF = 0.3  # seconds: long enough for other work to run meanwhile


async def _status_by_id(system: QueueSystem, task_id: str) -> TaskStatus:
    return await system.receipt(task_id).status()


async def test_tasks_start_in_the_order_they_were_accepted(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, workers=1, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        receipts = [await system.submit("gated", n) for n in range(10)]
        probe.gate.set()
        assert [await outcome_of(r) for r in receipts] == list(range(10))
    assert probe.started == list(range(10))


async def test_a_queue_runs_at_most_its_workers_at_once(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, workers=2, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        receipts = [await system.submit("gated", n) for n in range(5)]
        await probe.wait_for(probe.started, 2)
        await trio.sleep(SETTLE)
        assert sorted(probe.started) == [0, 1]
        probe.gate.set()
        assert [await outcome_of(r) for r in receipts] == list(range(5))


async def test_a_task_waiting_out_its_backoff_holds_no_worker_and_is_scheduled(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    policy = RetryPolicy(stop=stop_after_attempt(2), wait=wait_fixed(BACKOFF))
    queue = Queue("troubled", Troubled, workers=1, retry=policy, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        flaky = await system.submit("troubled", {"name": "flaky", "transient": 1})
        await probe.wait_for(probe.started)
        other = await system.submit("troubled", {"name": "other"})
        assert await outcome_of(other) == "OTHER"  # the only worker was free meanwhile
        assert (await flaky.status()).state is TaskState.SCHEDULED
        assert await outcome_of(flaky) == "FLAKY"
    assert probe.started == [("flaky", 1), ("other", 1), ("flaky", 2)]


async def test_the_task_of_a_crashed_worker_is_delivered_again(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, Queue("fatal", Fatal, worker_kwargs={"probe": probe})) as system:
        receipt = await system.submit("fatal", "once")
        assert await outcome_of(receipt) == "once"
        status = await receipt.status()
    assert probe.started == ["once", "once"]
    assert (status.state, status.deliveries) == (TaskState.SUCCEEDED, 2)


async def test_a_worker_whose_on_start_fails_is_restarted_and_serves(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("starting", FlakyStart, worker_kwargs={"probe": probe, "failures": 2})
    async with serve(broker, queue) as system:
        assert await outcome_of(await system.submit("starting", 1)) == 2
    assert probe.started[:3] == ["on_start"] * 3


async def test_worker_args_reach_the_worker(broker: str, clock: trio.abc.Clock | None) -> None:
    async with serve(broker, Queue("greet", Greeter, worker_args=("hello",))) as system:
        assert await outcome_of(await system.submit("greet", "world")) == "hello, world"


async def test_a_handler_knows_its_task_id_and_attempt(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("whoami", WhoAmI)) as system:
        receipt = await system.submit("whoami", "me")
        assert await outcome_of(receipt) == [receipt.id, 1]


async def test_result_with_a_timeout_raises_result_timeout_and_the_task_goes_on(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        receipt = await system.submit("gated", "slow")
        with pytest.raises(ResultTimeout) as info:
            await receipt.result(timeout=SETTLE)
        assert info.value.task_id == receipt.id
        assert not receipt.done()
        probe.gate.set()
        assert await outcome_of(receipt) == "slow"


async def test_a_finished_receipt_can_be_awaited_again(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, Queue("gated", Gated, worker_kwargs={"probe": probe})) as system:
        receipt = await system.submit("gated", {"again": [1, 2]})
        with trio.fail_after(WAIT):
            first = await receipt
            second = await receipt
        assert first == second == {"again": [1, 2]}
        assert receipt.done()


async def test_an_outcome_is_forgotten_after_its_result_ttl(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    queue = Queue("gated", Gated, result_ttl=RESULT_TTL, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        receipt = await system.submit("gated", "brief")
        assert await outcome_of(receipt) == "brief"
        await trio.sleep(RESULT_TTL + SETTLE)
        with pytest.raises(UnknownTask):  # at the receipt's first await
            await _status_by_id(system, receipt.id)


# `max_payload` stops lower, at 512 MiB (tests/queueing/test_limits.py).
@pytest.mark.parametrize(
    "option", ["maxsize", "max_deliveries", "tenant_maxsize", "tenant_concurrency"]
)
async def test_a_count_past_max_count_is_refused_and_max_count_serves(
    broker: str, clock: trio.abc.Clock | None, option: str
) -> None:
    # SQLite's INTEGER holds 2**63 - 1 and Redis's Lua numbers are doubles: a count past
    # MAX_COUNT failed open_system with OverflowError from the broker.
    with pytest.raises(InvalidQueue, match=f"{option} must be at most {MAX_COUNT}"):
        Queue("echo", Echo, **{option: 10**20})
    limits = {option: MAX_COUNT}
    if option == "tenant_maxsize":
        limits["maxsize"] = MAX_COUNT
    async with serve(broker, Queue("echo", Echo, **limits)) as system:
        assert await outcome_of(await system.submit("echo", "fits")) == "fits"

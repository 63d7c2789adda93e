"""Fair share in process (memory://): the order of starts is exactly the contract's
start-time fair queuing (property-tested against a model of it, with tenants arriving
while others' tasks run, priorities and weights), composed with retries (`retry_ahead`),
crashes, cancels and `tenant_concurrency`."""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import pytest
import tenacity
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import queueing
from queueing import (
    Overflow,
    Queue,
    QueueFull,
    RetryPolicy,
    TenantFigures,
    Worker,
    open_system,
)

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
TENANTS = [None, "a", "b", "c", "d"]
WEIGHTS = {"b": 2, "c": 0.5}

# One wave of submits: (tenant index, priority) per task. Each wave has one at least, so
# the worker is never idle when the next wave comes (the model's timeline: wave k arrives
# while the worker runs the k-th task).
waves = st.lists(
    st.lists(
        st.tuples(st.integers(0, len(TENANTS) - 1), st.sampled_from([0, 0, 0, 5])),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=6,
)


def model(
    batches: list[list[tuple[int, str | None, int]]], weights: dict[str, float] | None
) -> list[int]:
    """The contract's order of starts (brokers/_contract.py, "Fair share"), one worker:
    wave k arrives while the worker runs the k-th task; each take picks the flow of the
    highest priority, then the lowest start tag, then the tag set first."""
    flows: dict[tuple[str | None, int], dict[str, Any]] = {}
    vtime: dict[int, float] = defaultdict(float)
    seq = 0
    order: list[int] = []
    pending = deque(batches)
    # Task "hold" (tenant "h") was taken first: V stays 0, its flow ended.
    while pending or flows:
        if pending:
            for index, tenant, priority in pending.popleft():
                flow = flows.get((tenant, priority))
                if flow is None:
                    seq += 1
                    flow = flows[tenant, priority] = {"tasks": deque(), "S": vtime[priority]}
                    flow["seq"] = seq
                flow["tasks"].append(index)
        if not flows:
            continue
        key = min(flows, key=lambda k: (-k[1], flows[k]["S"], flows[k]["seq"]))
        flow = flows[key]
        order.append(flow["tasks"].popleft())
        vtime[key[1]] = flow["S"]
        weight = (weights or {}).get(key[0], 1) if key[0] is not None else 1
        flow["S"] += 1 / weight
        seq += 1
        flow["seq"] = seq
        if not flow["tasks"]:
            del flows[key]
    return order


class Timed(Worker):
    """Each task takes one second (of the mock clock); logs its index at the start."""

    def __init__(self, started: list[int]) -> None:
        self.started = started

    async def handle(self, index: int) -> None:
        self.started.append(index)
        await trio.sleep(1)


def start_order(
    batches: list[list[tuple[int, str | None, int]]], weights: dict[str, float] | None
) -> list[int]:
    started: list[int] = []

    async def body() -> None:
        spec = Queue(
            "q", Timed, worker_kwargs={"started": started}, workers=1, tenant_weights=weights
        )
        async with open_system(spec) as system:
            await system.submit("q", -1, tenant="h")  # runs from t=0 to t=1
            for wave, batch in enumerate(batches):
                await trio.sleep_until(wave + 0.5)  # while the worker runs a task
                for index, tenant, priority in batch:
                    await system.submit("q", index, tenant=tenant, priority=priority)
            await system.drain()

    trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))
    return started[1:]


@SETTINGS
@given(waves, st.sampled_from([None, WEIGHTS]))
def test_starts_follow_the_contracts_fair_queuing(
    shape: list[list[tuple[int, int]]], weights: dict[str, float] | None
) -> None:
    """With weights, and without (every tag of a priority is then V or V + 1)."""
    count = iter(range(1000))
    batches = [[(next(count), TENANTS[t], p) for t, p in wave] for wave in shape]
    assert start_order(batches, weights) == model(batches, weights)


class Held(Worker):
    """Logs each start; a task named "hold..." waits at the gate."""

    def __init__(self, started: list[str], gate: trio.Event) -> None:
        self.started = started
        self.gate = gate

    async def handle(self, name: str) -> str:
        self.started.append(name)
        if name.startswith("hold"):
            await self.gate.wait()
        return name


async def test_a_backlog_by_priority_keeps_its_place_when_tenants_come(autojump_clock: Any) -> None:
    # Waiting tasks (some with a priority) move to the fair store in their order, as the
    # default tenant's, when the first task with a tenant comes.
    started: list[str] = []
    gate = trio.Event()
    spec = Queue("q", Held, worker_kwargs={"started": started, "gate": gate}, workers=1)
    async with open_system(spec) as system:
        await system.submit("q", "hold")
        await trio.testing.wait_all_tasks_blocked()
        for name, priority in [("n1", 0), ("p1", 5), ("n2", 0), ("p2", 5)]:
            await system.submit("q", name, priority=priority)
        await system.submit_many("q", ["a1", "a2"], tenant="A")
        await system.submit("q", "A5", tenant="A", priority=5)
        gate.set()
        await system.drain()
    assert started == ["hold", "p1", "A5", "p2", "n1", "a1", "n2", "a2"]


class Flaky(Worker):
    """Logs each start; "hold" waits at the gate; "flaky" fails its first attempt."""

    def __init__(self, started: list[str], gate: trio.Event) -> None:
        self.started = started
        self.gate = gate

    async def handle(self, name: str) -> str:
        self.started.append(name)
        if name.startswith("hold"):
            await self.gate.wait()
        if name == "flaky" and self.attempt == 1:
            raise queueing.Transient("first attempt fails")
        if name.startswith("slow"):
            await trio.sleep(10)
        elif name.startswith("tick"):
            await trio.sleep(1)
        return name


def flaky_queue(started: list[str], gate: trio.Event, **options: Any) -> Queue:
    retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(1))
    return Queue(
        "q",
        Flaky,
        worker_kwargs={"started": started, "gate": gate},
        workers=1,
        retry=retry,
        **options,
    )


async def test_a_due_retry_joins_the_back_of_its_flow(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()
    async with open_system(flaky_queue(started, gate)) as system:
        await system.submit("q", "flaky", tenant="A")
        await trio.testing.wait_all_tasks_blocked()  # its first attempt failed at t=0
        await system.submit_many("q", ["slow-a1", "a2"], tenant="A")
        await system.submit_many("q", ["b1", "b2"], tenant="B")
        await system.drain()
    # flaky fails at t=0 and is due at t=1, while slow-a1 runs: behind a2 in A's flow.
    assert started == ["flaky", "slow-a1", "b1", "a2", "b2", "flaky"]


async def test_with_retry_ahead_a_due_retry_leads_its_flow(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()
    async with open_system(flaky_queue(started, gate, retry_ahead=True)) as system:
        await system.submit("q", "flaky", tenant="A")
        await trio.testing.wait_all_tasks_blocked()  # its first attempt failed at t=0
        await system.submit_many("q", ["slow-a1", "a2"], tenant="A")
        await system.submit_many("q", ["b1", "b2"], tenant="B")
        await system.drain()
    # Due at t=1: first in A's flow, which still waits for its turn (B's).
    assert started == ["flaky", "slow-a1", "b1", "flaky", "b2", "a2"]


async def test_a_task_handed_back_by_a_crashed_worker_goes_first(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()

    class Crashy(Worker):
        fatal = (RuntimeError,)

        async def handle(self, name: str) -> None:
            started.append(name)
            if name == "hold":
                await gate.wait()
            if name == "crash" and started.count("crash") == 1:
                raise RuntimeError("worker state lost")

    async with open_system(Queue("q", Crashy, workers=1, tenant_concurrency=1)) as system:
        await system.submit("q", "hold", tenant="H")
        await trio.testing.wait_all_tasks_blocked()
        await system.submit("q", "crash", tenant="A")
        await system.submit_many("q", ["b1", "b2"], tenant="B")
        await system.submit("q", "a2", tenant="A")
        gate.set()
        await system.drain()
    assert started == ["hold", "crash", "crash", "b1", "a2", "b2"]


async def test_a_task_cancelled_while_it_waits_takes_no_turn(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()
    spec = Queue("q", Held, worker_kwargs={"started": started, "gate": gate}, workers=1)
    async with open_system(spec) as system:
        await system.submit("q", "hold", tenant="H")
        await trio.testing.wait_all_tasks_blocked()
        a1, *_ = await system.submit_many("q", ["a1", "a2", "a3"], tenant="A")
        await system.submit_many("q", ["b1", "b2"], tenant="B")
        assert await a1.cancel()
        gate.set()
        await system.drain()
    assert started == ["hold", "a2", "b1", "a3", "b2"]


class Counted(Worker):
    """Records how many tasks of each tenant run at once (the highest seen)."""

    def __init__(self, running: dict[str, int], most: dict[str, int]) -> None:
        self.running = running
        self.most = most

    async def handle(self, job: dict[str, Any]) -> None:
        tenant = job["tenant"]
        self.running[tenant] += 1
        self.most[tenant] = max(self.most[tenant], self.running[tenant])
        try:
            await trio.sleep(job["seconds"])
            if job["fail"] and self.attempt == 1:
                raise queueing.Transient("once")
        finally:
            self.running[tenant] -= 1


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(1, 5), st.booleans(), st.integers(0, 9)),
        max_size=30,
    ),
    st.integers(1, 3),
    st.integers(1, 6),
)
def test_tenant_concurrency_caps_each_tenant(
    jobs: list[tuple[str, int, bool, int]], cap: int, workers: int
) -> None:
    running: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)

    async def body() -> None:
        retry = RetryPolicy(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(1))
        spec = Queue(
            "q",
            Counted,
            worker_kwargs={"running": running, "most": most},
            workers=workers,
            retry=retry,
            tenant_concurrency=cap,
        )
        async with open_system(spec) as system:
            receipts = []
            for tenant, seconds, fail, priority in jobs:
                job = {"tenant": tenant, "seconds": seconds, "fail": fail}
                receipts.append(await system.submit("q", job, tenant=tenant, priority=priority))
            await system.drain()
            for receipt in receipts:
                assert (await receipt.status()).state is queueing.TaskState.SUCCEEDED

    trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))
    for tenant in "abc":
        assert most[tenant] <= cap


async def test_a_tenant_at_its_limit_resumes_at_the_current_virtual_time(
    autojump_clock: Any,
) -> None:
    # A (cap 2) is set aside while its first two tasks wait at the gate; B takes turns
    # alone meanwhile. A comes back with S = max(S, V): it shares from then on, and does
    # not catch up on the turns it missed (a3 and a4 back to back).
    started: list[str] = []
    gate = trio.Event()
    spec = Queue(
        "q",
        Flaky,
        worker_kwargs={"started": started, "gate": gate},
        workers=3,
        tenant_concurrency=2,
    )
    async with open_system(spec) as system:
        await system.submit_many("q", ["hold-a1", "hold-a2"], tenant="A")
        await system.submit_many("q", [f"tick-b{i}" for i in range(1, 9)], tenant="B")
        await system.submit_many("q", ["tick-a3", "tick-a4", "tick-a5"], tenant="A")
        await trio.sleep_until(3.5)
        gate.set()
        await system.drain()
    assert started[:8] == [
        "hold-a1",
        "tick-b1",
        "hold-a2",
        "tick-b2",
        "tick-b3",
        "tick-b4",
        "tick-a3",
        "tick-b5",
    ]
    assert sorted(started) == sorted(
        [
            "hold-a1",
            "hold-a2",
            *[f"tick-b{i}" for i in range(1, 9)],
            "tick-a3",
            "tick-a4",
            "tick-a5",
        ]
    )


# -- tenant_maxsize ----------------------------------------------------------------------


def held_queue(started: list[str], gate: trio.Event, **options: Any) -> Queue:
    return Queue("q", Held, worker_kwargs={"started": started, "gate": gate}, **options)


async def test_a_full_tenant_waits_its_timeout_then_is_refused_by_name(
    autojump_clock: Any,
) -> None:
    started: list[str] = []
    gate = trio.Event()
    spec = held_queue(started, gate, workers=3, tenant_maxsize=2, full_timeout=5)
    async with open_system(spec) as system:
        await system.submit_many("q", ["hold-a1", "hold-a2"], tenant="A")
        before = trio.current_time()
        with pytest.raises(QueueFull) as caught:
            await system.submit("q", "a3", tenant="A")
        assert trio.current_time() - before == pytest.approx(5)
        assert (caught.value.queue, caught.value.tenant, caught.value.maxsize) == ("q", "A", 2)
        assert str(caught.value).startswith(
            "tenant 'A' of queue 'q' has 2 outstanding tasks (Queue(tenant_maxsize=2)) after "
            "waiting 5s"
        )
        # Another tenant's outcome does not let A in: it goes on waiting.
        async with trio.open_nursery() as nursery:
            waiting = trio.Event()

            async def submit_a3() -> None:
                waiting.set()
                await system.submit("q", "a3", tenant="A", timeout=100)

            nursery.start_soon(submit_a3)
            await waiting.wait()
            assert await (await system.submit("q", "b1", tenant="B")) == "b1"
            await trio.sleep(10)
            assert "a3" not in started
            gate.set()  # A's tasks end: a3 gets in
        await system.drain()
    assert started[-1] == "a3"


async def test_submit_many_of_a_full_tenant_says_what_was_accepted(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()
    spec = held_queue(started, gate, workers=1, tenant_maxsize=3, when_full=Overflow.REJECT)
    async with open_system(spec) as system:
        with pytest.raises(QueueFull, match="tenant 'A'") as caught:
            await system.submit_many("q", ["hold", "a2", "a3", "a4", "a5"], tenant="A")
        assert len(caught.value.accepted) == 3
        assert caught.value.rejected == ["a4", "a5"]
        # The default tenant is a tenant too, with a limit of its own.
        await system.submit_many("q", ["n1", "n2", "n3"])
        with pytest.raises(QueueFull, match=r"the default tenant \(tasks without one\)") as plain:
            await system.submit("q", "n4")
        assert plain.value.tenant == ""
        gate.set()
        await system.drain()
    assert sorted(started) == ["a2", "a3", "hold", "n1", "n2", "n3"]


# -- figures -----------------------------------------------------------------------------


async def test_tenants_lists_the_busiest_with_waiting_and_running(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()
    spec = held_queue(started, gate, workers=4, tenant_concurrency=2)
    plain = Queue("p", Held, worker_kwargs={"started": started, "gate": gate})
    async with open_system(spec, plain) as system:
        await system.submit_many("p", ["hold-p", "p2"])
        await system.submit_many("q", [f"hold-a{i}" for i in range(5)], tenant="A")
        await trio.testing.wait_all_tasks_blocked()  # A runs 2 (its limit), 3 wait
        await system.submit_many("q", ["hold-b1", "hold-b2"], tenant="B")
        await trio.testing.wait_all_tasks_blocked()  # B runs 2: the 4 workers are busy
        await system.submit_many("q", ["hold-n1", "hold-n2"])
        assert await system.tenants("q") == [
            TenantFigures("A", 3, 2),
            TenantFigures("", 2, 0),  # the default tenant
            TenantFigures("B", 0, 2),
        ]
        assert await system.tenants("q", limit=1) == [TenantFigures("A", 3, 2)]
        assert await system.tenants("p") == []  # never had a tenant
        with pytest.raises(queueing.InvalidQueue, match="limit"):
            await system.tenants("q", limit=0)
        gate.set()
        await system.drain()
        assert await system.tenants("q") == []


async def test_a_schedule_submits_for_its_tenant(autojump_clock: Any) -> None:
    started: list[str] = []
    gate = trio.Event()
    tick = queueing.Schedule("nightly", "q", every=60, payload="hold-tick", tenant="acme")
    async with open_system(held_queue(started, gate, workers=1), tick) as system:
        # Ticks are aligned on the epoch (the wall clock): the first comes within 60 s,
        # the next 60 s after it. Sleeping 61 s saw two when the wall clock was within a
        # second of a whole minute (the second one waiting behind the held first).
        for _ in range(61):
            if started:
                break
            await trio.sleep(1)
        assert started == ["hold-tick"]
        assert await system.tenants("q") == [TenantFigures("acme", 0, 1)]
        gate.set()
    with pytest.raises(queueing.InvalidQueue, match="tenant must be"):
        queueing.Schedule("bad", "q", every=60, tenant="")

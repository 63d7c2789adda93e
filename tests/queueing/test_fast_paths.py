"""The in-process fast paths give what the general paths give, on the same inputs.

With an in-process broker (`nowait = True`) a submit is accepted with `accept_nowait` and a
plain result is recorded with `settle_nowait` (no coroutine per call); every other case,
and every shared broker, takes the general path (`Engine.accept`, `Engine.succeeded`). The
test runs random scenarios on `memory://` both ways (the second through a broker that
offers no fast path) and compares everything a user can see.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from queueing import (
    Overflow,
    Queue,
    QueueFull,
    Receipt,
    TaskFailed,
    Transient,
    Worker,
    open_system,
)
from queueing._task import Task, new_task
from queueing.brokers import MemoryBroker


class GeneralPathsOnly(MemoryBroker):
    """The memory broker, without its fast paths: the engine takes its general ones."""

    nowait = False


@attrs.frozen
class Point:
    x: int
    y: int


class Echo(Worker):
    """Returns what the payload asks for, or fails as it asks."""

    async def handle(self, payload: Any) -> Any:
        kind, value = payload
        await trio.sleep(0.001 * (len(str(value)) % 3))
        if kind == "transient" and self.attempt < 2:
            raise Transient("once")
        if kind == "fail":
            raise ValueError(str(value))
        if kind == "point":
            return Point(int(value), -int(value))
        if kind == "float":
            return float(value)
        if kind == "surrogate":  # a str no broker holds: the task fails on either path
            return f"{value} \ud800"
        return value


_values = st.one_of(
    st.integers(-(10**30), 10**30),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
_items = st.lists(
    st.one_of(
        st.tuples(st.just("value"), _values),
        st.tuples(st.just("float"), st.sampled_from(["1.5", "nan", "inf", "-inf", "0"])),
        st.tuples(st.just("point"), st.integers(-100, 100)),
        st.tuples(st.just("surrogate"), st.integers(0, 9)),
        st.tuples(st.sampled_from(["transient", "fail"]), st.integers(0, 9)),
    ),
    max_size=30,
)


def _run(
    items: list[Any], maxsize: int, policy: Overflow, fast: bool, tenants: bool = False
) -> list[Any]:
    async def main() -> list[Any]:
        # With tenants, the queue shares its tasks out (and counts each tenant's running
        # ones: a success must give its tenant's turn back, or the run stalls).
        limit = 1 if tenants else None
        queue = Queue(
            "echo", Echo, workers=2, maxsize=maxsize, when_full=policy, tenant_concurrency=limit
        )
        broker = MemoryBroker() if fast else GeneralPathsOnly()
        # A path that loses a wake-up (a tenant's turn, a receipt) fails here, in virtual
        # time, rather than hanging.
        with trio.fail_after(3600):
            return await _scenario(queue, broker, items, tenants)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def _scenario(
    queue: Queue, broker: MemoryBroker, items: list[Any], tenants: bool
) -> list[Any]:
    seen: list[Any] = []
    async with open_system(queue, broker=broker) as system:
        receipts = []
        for i, item in enumerate(items):
            tenant = ("a", "b")[i % 2] if tenants else None
            try:
                receipts.append(await system.submit("echo", item, timeout=1.0, tenant=tenant))
            except QueueFull:
                seen.append("full")
        for receipt in receipts:
            try:
                value = await receipt
            except TaskFailed as exc:
                value = (exc.outcome, exc.error_type, exc.attempts)
            status = await receipt.status()
            seen.append((value, status.state, status.attempts, status.deliveries))
        await system.drain()
        stats = system.stats()["echo"]
        seen.append((stats.submitted, stats.succeeded, stats.failed, stats.retried))
        seen.append((stats.dead_lettered, stats.outstanding, stats.in_flight))
        # (Latencies themselves differ: a retry's backoff is jittered.)
        seen.append((stats.p50 is None, stats.p99 is None))
    return seen


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@settings(max_examples=40, deadline=None)
@given(
    items=_items,
    maxsize=st.integers(1, 40),
    policy=st.sampled_from([Overflow.WAIT, Overflow.REJECT]),
    tenants=st.booleans(),
)
def test_fast_and_general_paths_give_the_same_outcomes(
    items: list[Any], maxsize: int, policy: Overflow, tenants: bool
) -> None:
    fast = _run(items, maxsize, policy, fast=True, tenants=tenants)
    general = _run(items, maxsize, policy, fast=False, tenants=tenants)
    assert len(fast) == len(general)
    assert all(_same(a, b) for a, b in zip(fast, general, strict=True)), (fast, general)


async def test_a_submitted_receipt_is_made_as_receipt_init_makes_one() -> None:
    """`submit` makes its receipt without calling the class (a fast path): every slot is
    set as `Receipt.__init__` sets it for the same task (here, found again by id)."""
    async with open_system(Queue("echo", Echo)) as system:
        receipt = await system.submit("echo", ("value", 1))
        again = system.receipt(receipt.id)
        assert again == receipt
        for name in Receipt.__slots__:
            assert getattr(receipt, name) is getattr(again, name), name
        assert await receipt == 1


def test_the_engine_makes_a_task_record_as_task_init_does() -> None:
    """`new_task` (the engine's submit, without a class call) sets every field
    `Task.__init__` sets, to the same values, and no other."""
    made = new_task("q:1", "q", {"x": 1}, 100.0, 5.0, 7.0)
    reference = Task("q:1", "q", made.payload, 100.0, 5.0)
    reference._born = 7.0
    for name in Task.__slots__:
        if name == "__weakref__":
            continue
        assert hasattr(made, name) == hasattr(reference, name), name
        if hasattr(reference, name):
            assert getattr(made, name) == getattr(reference, name), name

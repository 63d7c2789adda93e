"""Queued outcome writes of the RabbitMQ broker's results store: the outcomes of one queue
queued next to each other go as one `finish_many` call (the queue's keys and shared
arguments once, then each task's own), whose answers reach each write's callback (the
acknowledgement of its message) in order; writes of other kinds or other queues keep
their place. Each task's part is what `finish.lua` takes for it alone (the call a cancel
makes). Whether the outcomes land is the contract suite's business."""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio
import trio.testing

from queueing._task import Task, TaskState
from queueing.brokers._contract import QueueInfo
from queueing.brokers.amqp._store import (
    FINISH_ARGS,
    FINISH_OWN,
    FINISH_SHARED,
    Store,
    StoreCalls,
)
from queueing.brokers.amqp._store_writes import Op, Writes
from queueing.brokers.redis import _keys as k

A = QueueInfo("a", maxsize=100, max_payload=4096, result_ttl=60.0)
B = QueueInfo("b", maxsize=100, max_payload=4096, result_ttl=60.0)


def new_store() -> Store:
    return Store(StoreCalls("redis://127.0.0.1:1/0", connect_timeout=1, block=1), k.Keys("p"), "me")


def done(queue: QueueInfo, n: int) -> Task:
    task = Task(f"{queue.name}:t{n}", queue.name, n, time.time())
    task.settle(TaskState.SUCCEEDED, n * 10, None, time.time())
    return task


def finish(store: Store, queue: QueueInfo, n: int, answers: list[Any], *, reply: str = "") -> Task:
    task = done(queue, n)
    store.finish(queue, task, f"nonce-{n}", reply, "", lambda a: answers.append((n, a)))
    return task


def test_outcomes_of_one_queue_go_in_one_call_and_each_callback_gets_its_answer() -> None:
    store = new_store()
    answers: list[Any] = []
    tasks = [
        finish(store, A, 1, answers, reply="c1"),
        finish(store, A, 2, answers),
        finish(store, A, 3, answers),
    ]
    [joined] = store.take()
    assert joined.script == "finish_many"
    # What `finish.lua` would take for each task alone.
    alone = [
        store._finish_call("a", task, f"nonce-{n}", reply, k.ttl(60.0), "", 100)
        for n, task, reply in zip((1, 2, 3), tasks, ("c1", "", ""), strict=True)
    ]
    first_keys, first_args = alone[0]
    assert len(first_args) == FINISH_ARGS
    # The first record, the queue's other keys (its replies stream left out), then each
    # task's record and replies stream (its record again when it has none).
    shared_keys = first_keys[:-1]
    assert joined.keys[: len(shared_keys)] == shared_keys
    assert joined.keys[len(shared_keys) :] == [
        "{p:a}:task:a:t1",
        first_keys[-1],
        "{p:a}:task:a:t2",
        "{p:a}:task:a:t2",
        "{p:a}:task:a:t3",
        "{p:a}:task:a:t3",
    ]
    assert first_keys[-1] == store.keys.replies("a", "c1")
    # The arguments every task of the queue shares once, then each task's own.
    assert joined.args == [
        *(first_args[at - 1] for at in FINISH_SHARED),
        *(args[at - 1] for _, args in alone for at in FINISH_OWN),
    ]
    assert joined.then is not None
    joined.then([1, 0, -2])
    assert answers == [(1, 1), (2, 0), (3, -2)]


def test_other_writes_and_other_queues_keep_their_place() -> None:
    store = new_store()
    answers: list[Any] = []
    move = Op("move", ["{p:a}:task:a:t9"], [])
    finish(store, A, 1, answers)
    finish(store, A, 2, answers)
    store.push(move)
    finish(store, A, 3, answers)
    finish(store, B, 4, answers)
    finish(store, B, 5, answers)
    joined = store.take()
    assert [op.script for op in joined] == ["finish_many", "move", "finish_many", "finish_many"]
    assert joined[1] is move
    assert [op.keys[0] for op in joined] == [
        "{p:a}:task:a:t1",
        "{p:a}:task:a:t9",
        "{p:a}:task:a:t3",
        "{p:b}:task:b:t4",
    ]
    for op, n in zip(joined, (2, 0, 1, 2), strict=True):
        assert op.script != "finish_many" or len(op.args) == len(FINISH_SHARED) + n * len(
            FINISH_OWN
        )


def test_outcomes_with_other_shared_arguments_are_not_joined() -> None:
    store = new_store()
    answers: list[Any] = []
    finish(store, A, 1, answers)
    finish(store, A, 2, answers)
    # The queue declared again with another maxsize: its outcomes share other arguments.
    finish(store, attrs.evolve(A, maxsize=7), 3, answers)
    joined = store.take()
    assert [op.script for op in joined] == ["finish_many", "finish_many"]
    assert joined[0].args[len(FINISH_SHARED) - 1] == 100
    assert joined[1].args[: len(FINISH_SHARED)][-1] == 7
    assert len(joined[1].args) == len(FINISH_SHARED) + len(FINISH_OWN)


class Calls:
    """Records the round trips the flush loop makes (each answered at once)."""

    block = 2.0

    def __init__(self) -> None:
        self.trips: list[list[str]] = []

    def script(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> str:
        pipe.append(name)
        return name

    async def pipelined(self, what: str, fill: Any) -> list[Any]:
        sent: list[str] = []
        fill(sent)
        self.trips.append(sent)
        await trio.lowlevel.checkpoint()
        return [1 for _ in sent]


async def test_writes_queued_while_a_claim_holds_deliveries_go_with_its_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = Calls()
    writes = Writes(calls)  # type: ignore[arg-type]
    answers: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writes.flush_loop)
        ride = writes.ride()  # a claim with deliveries in hand
        writes.push(Op("finish", ["k1"], [], answers.append))
        await trio.testing.wait_all_tasks_blocked()
        assert calls.trips == []  # left for the claim's check
        taken = writes.take()  # the check takes them along
        ride.off()
        assert [op.keys for op in taken] == [["k1"]]
        await trio.testing.wait_all_tasks_blocked()
        assert calls.trips == []  # nothing left to send alone
        # No claim about to check: a write goes in a round trip of its own.
        writes.push(Op("finish", ["k2"], [], answers.append))
        await trio.testing.wait_all_tasks_blocked()
        assert calls.trips == [["finish"]]
        assert answers == [1]
        # A claim that ends without a check (its deliveries were gone) lets them go.
        ride = writes.ride()
        writes.push(Op("move", ["k3"], [], answers.append))
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls.trips) == 1
        ride.off()
        ride.off()  # once only
        await trio.testing.wait_all_tasks_blocked()
        assert calls.trips == [["finish"], ["move"]]
        assert writes.riders == 0
        nursery.cancel_scope.cancel()

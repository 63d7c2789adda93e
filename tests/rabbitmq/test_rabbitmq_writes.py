"""Queued outcome writes of the RabbitMQ broker's results store: a run of `finish.lua`
calls of one queue goes as one `finish_many` call, whose answers reach each write's
callback (the acknowledgement of its message) in order; writes of other kinds or other
queues keep their place. Whether the outcomes land is the contract suite's business."""

from __future__ import annotations

from typing import Any

from queueing.brokers.amqp._store import FINISH_ARGS, FINISH_OWN, FINISH_SHARED, join_finishes
from queueing.brokers.amqp._store_writes import Op


def finish(queue: str, task: str, answers: list[Any], *, reply: str = "") -> Op:
    keys = [f"{queue}:task:{task}", *(f"{queue}:shared:{i}" for i in range(28))]
    if reply:
        keys.append(f"{queue}:replies:{reply}")
    args: list[Any] = [f"nonce-{task}", "ok", f"outcome-{task}", 60_000, task, "done", ""]
    args += [10_000, 1000, 3600, 5, reply, 4096, 0]
    assert len(args) == FINISH_ARGS
    return Op("finish", keys, args, lambda answer: answers.append((task, answer)))


def test_outcomes_of_one_queue_go_in_one_call_and_each_callback_gets_its_answer() -> None:
    answers: list[Any] = []
    ops = [
        finish("a", "1", answers, reply="c1"),
        finish("a", "2", answers),
        finish("a", "3", answers),
    ]
    [joined] = join_finishes(ops)
    assert joined.script == "finish_many"
    assert joined.keys[:29] == ops[0].keys[:29]  # the first record, then the shared keys
    # Then each task's record and replies stream (its record when it has none).
    assert joined.keys[29:] == [
        "a:task:1",
        "a:replies:c1",
        "a:task:2",
        "a:task:2",
        "a:task:3",
        "a:task:3",
    ]
    # The arguments every task of the queue shares once, then each task's own.
    assert joined.args == [
        *(ops[0].args[at - 1] for at in FINISH_SHARED),
        *(op.args[at - 1] for op in ops for at in FINISH_OWN),
    ]
    assert joined.args[: len(FINISH_SHARED)] == [60_000, 10_000, 1000, 3600, 5, 4096, 0]
    assert joined.then is not None
    joined.then([1, 0, -2])
    assert answers == [("1", 1), ("2", 0), ("3", -2)]


def test_other_writes_and_other_queues_keep_their_place() -> None:
    answers: list[Any] = []
    move = Op("move", ["a:task:9"], [])
    ops = [
        finish("a", "1", answers),
        finish("a", "2", answers),
        move,
        finish("a", "3", answers),
        finish("b", "4", answers),
        finish("b", "5", answers),
    ]
    joined = join_finishes(ops)
    assert [op.script for op in joined] == ["finish_many", "move", "finish", "finish_many"]
    assert joined[1] is move
    assert joined[2] is ops[3]


def test_outcomes_with_other_shared_arguments_are_not_joined() -> None:
    answers: list[Any] = []
    ops = [finish("a", "1", answers), finish("a", "2", answers), finish("a", "3", answers)]
    ops[2].args[FINISH_ARGS - 1] = 7  # another maxsize (the queue was declared again)
    joined = join_finishes(ops)
    assert [op.script for op in joined] == ["finish_many", "finish"]
    assert joined[1] is ops[2]

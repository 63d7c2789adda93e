"""Results of every JSON-able kind come back through `await receipt`, typed as declared;
results JSON cannot hold fail the task, the same way on every broker."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
from contract_workers import (
    WAIT,
    Describe,
    Echo,
    EchoBool,
    EchoFloat,
    EchoInt,
    EchoStr,
    Label,
    Locate,
    Nothing,
    Point,
    ToFloat,
    failure_of,
    outcome_of,
    serve,
)

from queueing import Queue, TaskFailed, TaskState, Worker

LARGE = 200 * 1024  # bytes: well past any inline or fast path, within max_payload
DEPTH = 100  # levels of nesting


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [level, value] if level % 2 else {"level": level, "inner": value}
    return value


PLAIN = {
    "int": 42,
    "negative-int": -7,
    "zero": 0,
    "float": 0.1,
    "huge-float": -1.5e300,
    "tiny-float": 5e-324,
    "str": "hello",
    "empty-str": "",
    "true": True,
    "false": False,
    "none": None,
    "big-int": 2**100,
    "big-negative-int": -(10**40),
    "unicode": "naïve café, 東京, Ελλάδα, 🚀, \u2028 and \x00",
    "large-str": "x" * LARGE,
    "large-unicode-str": "é" * (LARGE // 2),
    "large-list": [{"n": n, "name": f"item-{n}"} for n in range(LARGE // 25)],
    "empty-list": [],
    "empty-dict": {},
    "nested": _nested(DEPTH),
    "mixed": {"a": [1, 2.5, "three", None, True, {"b": []}], "c": {"d": {"e": "f"}}},
}


@pytest.mark.parametrize("value", list(PLAIN.values()), ids=list(PLAIN))
async def test_await_receipt_returns_plain_data_of_every_kind(
    broker: str, clock: trio.abc.Clock | None, value: Any
) -> None:
    async with serve(broker, Queue("echo", Echo)) as system:
        receipt = await system.submit("echo", value)
        with trio.fail_after(WAIT):
            result = await receipt
    assert result == value
    assert type(result) is type(value)


TYPED: dict[str, tuple[type[Worker], Any]] = {
    "int": (EchoInt, 42),
    "big-int": (EchoInt, 3**90),
    "float": (EchoFloat, 2.5),
    "whole-float": (EchoFloat, 2.0),
    "str": (EchoStr, "東京 🚀"),
    "bool": (EchoBool, False),
}


@pytest.mark.parametrize(("worker", "value"), list(TYPED.values()), ids=list(TYPED))
async def test_await_receipt_returns_the_declared_primitive_type(
    broker: str, clock: trio.abc.Clock | None, worker: type[Worker], value: Any
) -> None:
    async with serve(broker, Queue("typed", worker)) as system:
        with trio.fail_after(WAIT):
            result = await (await system.submit("typed", value))
    assert result == value
    assert type(result) is type(value)


async def test_a_handler_declared_to_return_none_gives_none(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("nothing", Nothing)) as system:
        receipt = await system.submit("nothing", "anything")
        with trio.fail_after(WAIT):
            assert await receipt is None
        assert (await receipt.status()).state is TaskState.SUCCEEDED


async def test_an_attrs_payload_and_a_dataclass_result_keep_their_types(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("describe", Describe)) as system:
        with trio.fail_after(WAIT):
            result = await (await system.submit("describe", Point(3, -4)))
    assert result == Label("(3, -4)", [3, -4])
    assert type(result) is Label


async def test_a_dataclass_payload_and_an_attrs_result_keep_their_types(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("locate", Locate)) as system:
        with trio.fail_after(WAIT):
            result = await (await system.submit("locate", Label("home", [1, 2])))
    assert result == Point(1, 2)
    assert type(result) is Point


async def test_a_payload_given_as_a_dict_is_structured_as_the_declared_class(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("describe", Describe)) as system:
        with trio.fail_after(WAIT):
            result = await (await system.submit("describe", {"x": 5, "y": 6}))
    assert result == Label("(5, 6)", [5, 6])


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
async def test_a_float_result_json_cannot_hold_fails_the_task_without_retry(
    broker: str, clock: trio.abc.Clock | None, text: str
) -> None:
    async with serve(broker, Queue("to-float", ToFloat)) as system:
        receipt = await system.submit("to-float", text)
        failure = await failure_of(receipt)
        status = await receipt.status()
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type == "queueing.PayloadError"
    assert failure.attempts == 1
    message = failure.error.lower()
    assert "result" in message
    assert "json" in message
    assert status.state is TaskState.FAILED
    assert status.attempts == 1


async def test_the_worker_goes_on_after_a_result_json_cannot_hold(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("to-float", ToFloat, workers=1)) as system:
        bad = await system.submit("to-float", "nan")
        good = await system.submit("to-float", "1.5")
        with trio.fail_after(WAIT):
            assert await good == 1.5
        assert (await failure_of(bad)).outcome is TaskState.FAILED


class WrongResult(Worker):
    """Declares an int result, returns what the payload says."""

    async def handle(self, value: Any) -> int:
        return value  # type: ignore[no-any-return]


@pytest.mark.parametrize("value", ["12", 2.5, True, {"n": 1}])
async def test_a_result_not_of_the_declared_type_fails_the_task_naming_the_result(
    broker: str, clock: trio.abc.Clock | None, value: Any
) -> None:
    async with serve(broker, Queue("wrong", WrongResult)) as system:
        failure = await failure_of(await system.submit("wrong", value))
        assert await outcome_of(await system.submit("wrong", 7)) == 7  # the worker goes on
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type == "queueing.PayloadError"
    assert "the result of handle()" in failure.error
    assert "expected int" in failure.error
    assert failure.attempts == 1


@pytest.mark.parametrize("kept", [math.inf, 1e308], ids=["inf", "1e308"])
async def test_outcomes_kept_past_any_clock_are_kept_and_read(
    broker: str, clock: trio.abc.Clock | None, kept: float
) -> None:
    # result_ttl=math.inf keeps outcomes as long as the broker can (Redis: its cap).
    async with serve(broker, Queue("echo", Echo, result_ttl=kept)) as system:
        receipt = await system.submit("echo", "kept")
        assert await outcome_of(receipt) == "kept"
        again = system.receipt(receipt.id)
        assert await outcome_of(again) == "kept"
        assert (await again.status()).state is TaskState.SUCCEEDED


class Surrogates(Worker):
    """Returns the payload, or, for "lone" and "nested", a result with a lone surrogate."""

    async def handle(self, word: str) -> Any:
        if word == "lone":
            return "half a pair: \ud800"
        if word == "nested":
            return {"words": ["\udfff"]}
        return word


@pytest.mark.parametrize("word", ["lone", "nested"])
async def test_a_result_utf8_cannot_hold_fails_its_task_and_no_other(
    broker: str, clock: trio.abc.Clock | None, word: str
) -> None:
    # A lone surrogate is a Python str no UTF-8 (so no broker) holds. Before: SQLite and
    # Redis failed the task, memory returned the str as it was (its fast path took any
    # str); before that, SQLite's and Redis's outcome writes failed and left the task (and
    # on Redis its neighbours) RUNNING.
    words = ["fine"] * 9 + [word] + ["fine"] * 10
    async with serve(broker, Queue("surrogates", Surrogates, workers=4)) as system:
        receipts = [await system.submit("surrogates", w) for w in words]
        outcomes = [await outcome_of(receipt) for receipt in receipts]
    failed = outcomes.pop(9)
    assert isinstance(failed, TaskFailed)
    assert failed.outcome is TaskState.FAILED
    assert failed.error_type == "queueing.PayloadError"
    assert failed.attempts == 1
    assert "surrogates not allowed" in failed.error
    assert outcomes == ["fine"] * 19


class Grow(Worker):
    """Returns `n` copies of a character, as a str, a list of str, or bytes."""

    async def handle(self, ask: dict[str, Any]) -> Any:
        text = ask["char"] * ask["n"]
        if ask["as"] == "list":
            return [text]
        if ask["as"] == "bytes":
            return text.encode()
        return text


MAX_RESULT = 4096  # bytes


@pytest.mark.parametrize(
    ("char", "kind"),
    [("a", "str"), ("é", "str"), ("\n", "str"), ("a", "list"), ("a", "bytes")],
    ids=["ascii", "two-byte", "escaped", "list", "bytes"],
)
async def test_a_result_over_max_result_fails_the_task_naming_the_limit(
    broker: str, clock: trio.abc.Clock | None, char: str, kind: str
) -> None:
    queue = Queue("grow", Grow, max_result=MAX_RESULT)
    async with serve(broker, queue) as system:
        small = await system.submit("grow", {"char": char, "n": 100, "as": kind})
        huge = await system.submit("grow", {"char": char, "n": MAX_RESULT, "as": kind})
        failure = await failure_of(huge)
        assert await outcome_of(small)  # well within the limit: kept (bytes as base85 text)
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type == "queueing.PayloadError"
    assert failure.attempts == 1  # not retried
    assert "the result of handle() is" in failure.error
    assert f"over the queue's max_result of {MAX_RESULT} bytes" in failure.error
    assert "Queue(max_result=...)" in failure.error


async def test_a_result_of_exactly_max_result_bytes_is_kept(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    queue = Queue("grow", Grow, max_result=MAX_RESULT)
    async with serve(broker, queue) as system:
        text = await outcome_of(
            await system.submit("grow", {"char": "a", "n": MAX_RESULT - 2, "as": "str"})
        )
        failure = await failure_of(
            await system.submit("grow", {"char": "a", "n": MAX_RESULT - 1, "as": "str"})
        )
    assert len(text) == MAX_RESULT - 2  # with its quotes: MAX_RESULT bytes of JSON
    assert f"is {MAX_RESULT + 1} bytes serialized" in failure.error


class Power(Worker):
    async def handle(self, exponent: int) -> Any:
        return 10**exponent


async def test_an_int_result_json_cannot_hold_fails_the_task_and_the_worker_goes_on(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Before: in process it was kept; over SQLite and Redis writing it raised in the
    # broker, which crashed the worker again at each delivery.
    async with serve(broker, Queue("power", Power, workers=1)) as system:
        failure = await failure_of(await system.submit("power", 5000))  # 5001 digits
        assert await outcome_of(await system.submit("power", 30)) == 10**30
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type == "queueing.PayloadError"
    assert failure.attempts == 1
    assert "the result of handle() does not serialize to JSON" in failure.error
    assert "4300 digits" in failure.error

"""Payload types by name: a client without the `Queue` objects (`connect(url)`, what
`queueing submit` does) checks payloads against the type the queue's workers published,
and refuses a wrong one with the `PayloadError` a type-checked client raises."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
from contract_workers import WAIT, Parse, Render, failure_of, outcome_of, pipeline, serve

from queueing import InvalidQueue, PayloadError, Queue, QueueSystem, TaskState, Worker, connect


@attrs.frozen
class Line:
    sku: str
    qty: int


@attrs.frozen
class Order:
    customer: str
    lines: list[Line]
    note: str | None = None


class Place(Worker):
    async def handle(self, order: Order) -> int:
        return sum(line.qty for line in order.lines)


@attrs.frozen
class RushOrder:
    """`Order` of a newer version: one field more, which `Place` (the older) refuses."""

    customer: str
    lines: list[Line]
    note: str | None = None
    rush: bool = False


class PlaceRush(Worker):
    async def handle(self, order: RushOrder) -> int:
        return sum(line.qty for line in order.lines)


class Untyped(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


class TakesStr(Worker):
    async def handle(self, text: str) -> str:
        return text.upper()


class TakesInt(Worker):
    async def handle(self, number: int) -> int:
        return number + 1


GOOD = {"customer": "ada", "lines": [{"sku": "a1", "qty": 2}, {"sku": "b2", "qty": 3}]}
BAD = {"customer": "ada", "lines": [{"sku": "a1", "qty": 2}, {"sku": "b2", "qty": "3"}]}


async def _refusal(system: QueueSystem, name: str, payload: Any, queue: str = "") -> str:
    """The message of the PayloadError that submitting `payload` raises, which names the
    queue (of a pipeline: its first stage's)."""
    with pytest.raises(PayloadError) as caught:
        await system.submit(name, payload)
    assert caught.value.queue == (queue or name)
    return str(caught.value)


async def _shared(broker: str) -> bool:
    """Whether the broker is shared; memory: the Queue objects are always at hand (checked)."""
    if broker != "memory://":
        return True
    with pytest.raises(InvalidQueue, match="needs a shared broker"):
        async with connect(broker):
            pass
    return False


async def test_a_client_without_the_queue_objects_refuses_a_wrong_payload(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("orders", Place)) as system:
        # The serving system (it has the Queue object) says what is wrong...
        typed = await _refusal(system, "orders", BAD)
        assert "$.lines[1].qty" in typed
        if not await _shared(broker):
            return
        async with connect(broker) as client:
            # ...and so does a client that knows the queue by name only: same field, same
            # expected type, same value.
            named = await _refusal(client, "orders", BAD)
            assert "does not structure as Order" in named
            assert "expected int, got '3' (str) @ $.lines[1].qty" in named
            assert "expected int, got '3' (str) @ $.lines[1].qty" in typed
            missing = await _refusal(client, "orders", {"lines": []})
            assert "required field missing @ $.customer" in missing
            extra = await _refusal(client, "orders", {**GOOD, "coupon": "x"})
            assert "extra fields found (coupon)" in extra
            assert "expected Order" in await _refusal(client, "orders", "ada")
            assert "expected str | None" in await _refusal(client, "orders", {**GOOD, "note": 1})
            # A right payload (plain data, or the attrs instance itself) is submitted.
            assert await outcome_of(await client.submit("orders", GOOD)) == 5
            order = Order("bob", [Line("c3", 4)], note="fragile")
            assert await outcome_of(await client.submit("orders", order)) == 4


async def test_a_pipeline_by_name_checks_the_payload_of_its_first_stage(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    steps = pipeline("steps", Queue("parse", Parse), Queue("render", Render))
    if not await _shared(broker):
        return
    async with serve(broker, steps), connect(broker) as client:
        refused = await _refusal(client, "steps", 21, queue="parse")  # Parse takes a str
        assert "expected str, got 21 (int)" in refused
        assert await outcome_of(await client.submit("steps", "21")) == "#21"


async def test_an_untyped_handler_leaves_every_payload_to_the_worker(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    if not await _shared(broker):
        return
    async with serve(broker, Queue("anything", Untyped)), connect(broker) as client:
        for payload in (1, "x", [1, "y"], {"a": None}):
            assert await outcome_of(await client.submit("anything", payload)) == payload


async def test_the_client_checks_against_the_latest_published_type(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    if not await _shared(broker):
        return
    async with serve(broker, Queue("shift", TakesInt)), connect(broker) as client:
        assert "expected int" in await _refusal(client, "shift", "a")
    # A newer worker of the same queue takes a str: clients that connect after it started
    # check against its type.
    async with serve(broker, Queue("shift", TakesStr)), connect(broker) as client:
        assert "expected str, got 7 (int)" in await _refusal(client, "shift", 7)
        assert await outcome_of(await client.submit("shift", "a")) == "A"


async def test_a_connected_client_follows_a_newer_workers_type(
    broker: str, clock: trio.abc.Clock | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import queueing._describe

    monkeypatch.setattr(queueing._describe, "FOLLOW_EVERY", 0.05)
    if not await _shared(broker):
        return
    async with serve(broker, Queue("shift", TakesInt)):
        pass
    async with connect(broker) as client:
        assert "expected int" in await _refusal(client, "shift", "a")
        # A worker of a newer version starts while the client is connected: the client
        # checks against its type from its next reading on.
        async with serve(broker, Queue("shift", TakesStr)):
            with trio.fail_after(WAIT):
                refused = ""
                while "expected str" not in refused:  # a poll: the client reads every 0.05 s
                    await trio.sleep(0.05)
                    refused = await _refusal_or_none(client, "shift", 7)
            assert await outcome_of(await client.submit("shift", "a")) == "A"


async def _refusal_or_none(system: QueueSystem, name: str, payload: Any) -> str:
    """The message of the PayloadError that submitting `payload` raises; "" if accepted."""
    try:
        await system.submit(name, payload)
    except PayloadError as exc:
        return str(exc)
    return ""


async def test_a_payload_of_another_version_is_dead_lettered_and_said_so(
    broker: str, clock: trio.abc.Clock | None, caplog: pytest.LogCaptureFixture
) -> None:
    # A rolling deploy: a process of the newer version started (and published its type),
    # one of the older still serves, a client of the newer one submits a payload the
    # older's handler does not take. Nothing is silent: the older process warns when it
    # starts, and again for the task, and the dead letter says why.
    caplog.set_level(logging.WARNING, logger="queueing")
    if not await _shared(broker):  # one process, one Queue per name: no other version
        return
    async with serve(broker, Queue("orders", PlaceRush)):
        pass
    async with (
        serve(broker, Queue("orders", Place)) as older,
        connect(broker, Queue("orders", PlaceRush)) as newer,
    ):
        (started,) = [r.getMessage() for r in caplog.records if "published" in r.getMessage()]
        assert "'orders'" in started
        assert "payloads of type Order, but the type published for it before was RushOrder" in (
            started
        )
        rushed = await newer.submit("orders", RushOrder("ada", [Line("a1", 1)], rush=True))
        failure = await failure_of(rushed)
        assert failure.outcome is TaskState.DEAD_LETTERED
        assert failure.attempts == 1  # no retry converts it
        assert failure.error_type == "queueing.PayloadError"
        assert failure.error.startswith(
            "queue 'orders': payload conversion failed in the worker, whose handler takes "
            "Order: the payload does not structure as Order: extra fields found (rush) @ $."
        )
        (letter,) = await older.dead_letters("orders")
        assert letter.error is not None
        assert (letter.error.type, letter.error.message) == (failure.error_type, failure.error)
        (logged,) = [r.getMessage() for r in caplog.records if rushed.id in r.getMessage()]
        assert "'orders'" in logged
        assert "payload conversion failed" in logged
        assert "extra fields found (rush)" in logged
        # Nothing is lost: once the processes agree, the dead letter runs again.
    async with serve(broker, Queue("orders", PlaceRush)) as fixed:
        (again,) = await fixed.requeue("orders")
        assert await outcome_of(again) == 1


async def test_a_rate_keyed_queue_says_payload_conversion_failed_too(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Its rate_key takes the structured payload: a payload that does not convert is the
    # same PayloadError as at the worker, not an error of the rate_key function.
    if not await _shared(broker):
        return
    keyed = Queue("orders", Place, rate_limit="100/s", rate_key=lambda order: order.customer)
    async with (
        serve(broker, keyed),
        connect(broker, Queue("orders", PlaceRush)) as newer,
    ):
        rushed = await newer.submit("orders", RushOrder("ada", [Line("a1", 1)], rush=True))
        failure = await failure_of(rushed)
    assert failure.error_type == "queueing.PayloadError"
    assert "payload conversion failed in the worker" in failure.error

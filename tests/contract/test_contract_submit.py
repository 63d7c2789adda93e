"""What `submit` and `submit_many` accept and refuse: payload checks at the caller,
`maxsize` with `Full.WAIT` / `Full.REJECT` / `full_timeout`, receipts in order."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
from contract_workers import (
    LONG,
    SETTLE,
    WAIT,
    Double,
    Echo,
    Gated,
    Half,
    Probe,
    Shout,
    failure_of,
    outcome_of,
    serve,
)

from queueing import (
    Full,
    InvalidQueue,
    PayloadError,
    PayloadTooLarge,
    Queue,
    QueueFull,
    QueueSystem,
    Receipt,
    TaskState,
    UnknownQueue,
    Worker,
)
from queueing._validate import MAX_DELAY

SMALL_PAYLOAD = 64  # bytes: Queue(max_payload=...) of the size tests


async def _nothing_accepted(system: QueueSystem, queue: str) -> None:
    await system.drain(timeout=WAIT)
    stats = system.stats()[queue]
    assert (stats.submitted, stats.outstanding) == (0, 0)
    assert await system.dead_letters(queue) == []


@pytest.mark.parametrize(
    ("queue", "payload"),
    [
        ("half", math.nan),
        ("half", math.inf),
        ("echo", math.nan),
        ("echo", {"values": [1.0, -math.inf]}),
    ],
    ids=["nan-as-float", "inf-as-float", "nan-as-any", "inf-nested-in-any"],
)
async def test_a_payload_json_cannot_hold_is_refused_at_submit(
    broker: str, clock: trio.abc.Clock | None, queue: str, payload: Any
) -> None:
    async with serve(broker, Queue("half", Half), Queue("echo", Echo)) as system:
        with pytest.raises(PayloadError, match=queue):
            await system.submit(queue, payload)
        await _nothing_accepted(system, queue)


@pytest.mark.parametrize("option", ["delay", "expires"])
@pytest.mark.parametrize("seconds", [math.inf, 1e308, MAX_DELAY * 2], ids=["inf", "1e308", "20y"])
async def test_a_delay_or_deadline_past_max_delay_is_refused_naming_it(
    broker: str, clock: trio.abc.Clock | None, option: str, seconds: float
) -> None:
    async with serve(broker, Queue("double", Double)) as system:
        with pytest.raises(InvalidQueue, match=f"{option} must be at most"):
            await system.submit("double", 1, **{option: seconds})
        with pytest.raises(InvalidQueue, match=f"{option} must be at most"):
            await system.submit_many("double", [1, 2], **{option: seconds})
        ten_years = await system.submit("double", 1, **{option: MAX_DELAY})
        if option == "delay":
            assert (await ten_years.status()).state is TaskState.SCHEDULED
            assert await ten_years.cancel()
        else:
            assert await outcome_of(ten_years) == 2
    stats = system.stats()["double"]
    assert stats.submitted == 1


@pytest.mark.parametrize(
    ("queue", "payload"),
    [
        ("echo", "lone \ud800 surrogate"),
        ("echo", {"text": ["\udfff"]}),
        ("words", "\ud83d"),
    ],
    ids=["str-as-any", "nested-in-any", "str-as-str"],
)
async def test_a_payload_utf8_cannot_hold_is_refused_and_fails_no_other_submit(
    broker: str, clock: trio.abc.Clock | None, queue: str, payload: Any
) -> None:
    # A lone surrogate is a Python str no UTF-8 (so no broker) holds. Before: accepted in
    # memory, a bare UnicodeEncodeError on SQLite, and on Redis a BrokerError for every
    # submit sent in the same round trip as it.
    outcomes: dict[int, Any] = {}
    async with serve(broker, Queue("echo", Echo), Queue("words", Shout)) as system:

        async def submit(index: int, value: Any) -> None:
            try:
                outcomes[index] = await outcome_of(await system.submit(queue, value))
            except PayloadError as exc:
                outcomes[index] = exc

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for index in range(20):
                    nursery.start_soon(submit, index, payload if index == 10 else "fine")
    refused = outcomes.pop(10)
    assert isinstance(refused, PayloadError)
    assert "surrogates not allowed" in str(refused)
    assert set(outcomes.values()) == {"fine" if queue == "echo" else "FINE"}
    assert system.stats()[queue].submitted == 19


@pytest.mark.parametrize(
    ("queue", "payload", "where"),
    [
        ("echo", {1: 2}, "1 (int) @ $"),
        ("echo", {"a": [{"b": 1}, {None: 1}]}, "None (NoneType) @ $['a'][1]"),
        ("echo", {1.5: "x"}, "1.5 (float) @ $"),
    ],
    ids=["int-key", "nested-none-key", "float-key"],
)
async def test_a_payload_with_a_dict_key_not_a_str_is_refused_naming_where(
    broker: str, clock: trio.abc.Clock | None, queue: str, payload: Any, where: str
) -> None:
    # JSON object keys are strings. Before: `{1: 2}` came back `{1: 2}` in memory and
    # `{"1": 2}` from SQLite and Redis; a `dict[int, str]` payload reached its handler in
    # memory and was dead-lettered elsewhere ("expected int, got '1'"); now a handle that
    # declares one is refused at the Queue's definition (tests/queueing/test_limits.py).
    async with serve(broker, Queue("echo", Echo)) as system:
        with pytest.raises(PayloadError) as refused:
            await system.submit(queue, payload)
        assert await outcome_of(await system.submit("echo", {"1": "fine"})) == {"1": "fine"}
    assert where in str(refused.value)
    assert "use str keys" in str(refused.value)
    assert system.stats()[queue].submitted == 1


class IntKeys(Worker):
    """Returns a dict keyed by int."""

    async def handle(self, size: int) -> Any:
        return {n: n for n in range(size)}


async def test_a_result_with_a_dict_key_not_a_str_fails_its_task(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("int-keys", IntKeys)) as system:
        failure = await failure_of(await system.submit("int-keys", 2))
        assert await outcome_of(await system.submit("int-keys", 0)) == {}
    assert failure.outcome is TaskState.FAILED
    assert failure.error_type == "queueing.PayloadError"
    assert "the result of handle() has a dict key that is not a str, 0 (int) @ $" in (failure.error)


async def test_a_payload_of_the_wrong_type_is_refused_at_submit(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("double", Double)) as system:
        with pytest.raises(PayloadError, match="double"):
            await system.submit("double", "not a number")
        await _nothing_accepted(system, "double")


async def test_a_payload_over_max_payload_is_refused_with_its_size_and_the_limit(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("small", Echo, max_payload=SMALL_PAYLOAD)) as system:
        with pytest.raises(PayloadTooLarge) as info:
            await system.submit("small", "x" * (2 * SMALL_PAYLOAD))
        assert info.value.limit == SMALL_PAYLOAD
        assert info.value.size > SMALL_PAYLOAD
        assert str(SMALL_PAYLOAD) in str(info.value)
        await _nothing_accepted(system, "small")


async def test_a_payload_at_max_payload_is_accepted(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    fits = "x" * (SMALL_PAYLOAD - 2)  # the JSON string's quotes count
    async with serve(broker, Queue("small", Echo, max_payload=SMALL_PAYLOAD)) as system:
        assert await outcome_of(await system.submit("small", fits)) == fits


async def test_an_unknown_queue_is_refused_with_the_known_names(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, Queue("echo", Echo), Queue("double", Double)) as system:
        with pytest.raises(UnknownQueue) as info:
            await system.submit("nosuch", 1)
        assert info.value.name == "nosuch"
        assert "double" in str(info.value)
        assert "echo" in str(info.value)
        for name in ("echo", "double"):
            await _nothing_accepted(system, name)


async def test_a_full_queue_that_waits_accepts_the_submit_once_a_task_finishes(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, maxsize=1, worker_kwargs={"probe": probe})
    accepted: list[tuple[Receipt, list[Any]]] = []
    async with serve(broker, queue) as system:
        first = await system.submit("gated", "first")

        async def submit_second() -> None:
            receipt = await system.submit("gated", "second")
            accepted.append((receipt, list(probe.finished)))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit_second)
                await probe.wait_for(probe.started)
                await trio.sleep(SETTLE)
                assert accepted == []  # still waiting for room
                probe.gate.set()
        assert await outcome_of(first) == "first"
        [(second, finished_before)] = accepted
        # Accepted only once the first one finished (on a loaded machine the second may
        # also have run before its submit's caller resumed).
        assert finished_before[:1] == ["first"]
        assert await outcome_of(second) == "second"


async def test_a_full_queue_that_rejects_raises_queue_full_at_once(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, maxsize=2, when_full=Full.REJECT, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        receipts = [await system.submit("gated", n) for n in range(2)]
        with trio.fail_after(WAIT), pytest.raises(QueueFull) as info:
            await system.submit("gated", 2)  # the gate is closed: nothing frees a place
        assert info.value.queue == "gated"
        assert "'gated'" in str(info.value)
        probe.gate.set()
        assert [await outcome_of(r) for r in receipts] == [0, 1]
        await system.drain(timeout=WAIT)
        assert probe.started == [0, 1]  # the refused one never ran


async def test_a_full_queue_that_waits_gives_up_after_full_timeout(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, maxsize=1, full_timeout=SETTLE, worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        first = await system.submit("gated", "first")
        started = trio.current_time()
        with pytest.raises(QueueFull, match=r"'gated'.*after waiting"):
            await system.submit("gated", "second")
        assert trio.current_time() - started >= SETTLE * 0.9  # it did wait
        probe.gate.set()
        assert await outcome_of(first) == "first"
        await system.drain(timeout=WAIT)
        assert probe.started == ["first"]


async def test_a_submit_timeout_bounds_the_wait_for_room(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, maxsize=1, worker_kwargs={"probe": probe})  # waits forever
    async with serve(broker, queue) as system:
        first = await system.submit("gated", "first")
        with pytest.raises(QueueFull, match="'gated'"):
            await system.submit("gated", "second", timeout=SETTLE)
        probe.gate.set()
        assert await outcome_of(first) == "first"


async def test_submit_many_returns_receipts_in_order(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    numbers = list(range(40))
    async with serve(broker, Queue("double", Double, workers=4)) as system:
        receipts = await system.submit_many("double", numbers)
        assert len({r.id for r in receipts}) == len(numbers)
        assert [await outcome_of(r) for r in receipts] == [2 * n for n in numbers]


async def test_submit_many_with_a_bad_payload_keeps_the_accepted_receipts(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, worker_kwargs={"probe": probe})
    probe.gate.set()
    payloads: list[Any] = [1, 2, math.nan, 4]
    async with serve(broker, queue) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit_many("gated", payloads)
        accepted = info.value.accepted
        assert info.value.unknown == []
        assert info.value.rejected[0] is payloads[2]  # the bad one, and any after it
        results = [await outcome_of(r) for r in accepted]
        await system.drain(timeout=WAIT)
    assert results[:2] == [1, 2]  # those before the bad one are accepted, in order
    assert set(results) <= {1, 2, 4}  # the bad one is not (a broker may accept the rest)
    assert sorted(probe.started) == sorted(results)  # every accepted one ran, nothing else


async def test_a_system_cancelled_from_outside_stops_and_keeps_what_it_accepted(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, worker_kwargs={"probe": probe})
    with trio.fail_after(LONG):  # a guard against a hang, not a measure
        with trio.CancelScope() as scope:
            async with serve(broker, queue) as system:
                receipt = await system.submit("gated", 1)
                # Cancelled a moment after the submit (however long the start took).
                scope.deadline = trio.current_time() + SETTLE
                await trio.sleep_forever()
        assert scope.cancelled_caught
    assert receipt.id

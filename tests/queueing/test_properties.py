"""Property tests (hypothesis) for the limits and for payload serialization.

Each example runs a whole system in its own `trio.run` on a `MockClock`, so examples are
independent and cost no real time waiting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing import (
    Full,
    PayloadError,
    PayloadTooLarge,
    Queue,
    QueueFull,
    QueueSystem,
    Worker,
    open_system,
)

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def run(queue: Queue, main: Callable[[QueueSystem], Awaitable[Any]], **options: Any) -> Any:
    """Run `main(system)` in a fresh system on a fresh mock clock; return its value."""

    async def body() -> Any:
        async with open_system(queue, **options) as system:
            return await main(system)

    return trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))


def json_size(value: Any) -> int:
    """The size the limit is about: compact JSON, UTF-8."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode())


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


# -- max_payload -------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)


async def submit_outcome(system: QueueSystem, payload: Any) -> tuple[str, Any]:
    try:
        receipt = await system.submit("echo", payload)
    except PayloadTooLarge as exc:
        return "refused", exc
    return "accepted", await receipt


@SETTINGS
@given(payload=json_values, limit=st.integers(16, 200))
def test_a_payload_is_accepted_iff_its_serialized_size_is_within_max_payload(
    payload: Any, limit: int
) -> None:
    size = json_size(payload)
    outcome, detail = run(
        Queue("echo", Echo, max_payload=limit), lambda s: submit_outcome(s, payload)
    )
    if size <= limit:
        assert outcome == "accepted"
        assert detail == payload
    else:
        assert outcome == "refused"
        assert (detail.size, detail.limit) == (size, limit)


@SETTINGS
@given(
    alphabet=st.sampled_from(["a", "é", "€", "𝄞", '"', "\n", "\x01"]),
    limit=st.integers(16, 120),
    delta=st.integers(-8, 8),
)
def test_text_right_around_max_payload_is_accepted_iff_it_fits(
    alphabet: str, limit: int, delta: int
) -> None:
    # Strings whose serialized size lands just under, on and just over the limit.
    per_char = json_size(alphabet) - 2
    payload = alphabet * max(0, (limit - 2) // per_char + delta)
    size = json_size(payload)
    outcome, _ = run(Queue("echo", Echo, max_payload=limit), lambda s: submit_outcome(s, payload))
    assert outcome == ("accepted" if size <= limit else "refused")


@SETTINGS
@given(value=st.sampled_from([math.nan, math.inf, -math.inf]), nested=st.booleans())
def test_a_payload_that_is_not_json_is_a_payload_error(value: float, nested: bool) -> None:
    async def main(system: QueueSystem) -> Any:
        try:
            await system.submit("echo", {"x": value} if nested else value)
        except PayloadError as exc:
            return exc
        return None

    assert isinstance(run(Queue("echo", Echo), main), PayloadError)


# -- maxsize -----------------------------------------------------------------------------


class Hold(Worker):
    """Runs until the test releases its payload's event (by index)."""

    def __init__(self, gates: list[trio.Event], running: list[int]) -> None:
        self.gates = gates
        self.running = running

    async def handle(self, index: int) -> int:
        self.running.append(index)
        await self.gates[index].wait()
        return index


@SETTINGS
@given(
    maxsize=st.integers(1, 6),
    workers=st.integers(1, 4),
    steps=st.lists(st.sampled_from(["submit", "submit", "finish", "tick"]), max_size=40),
    reject=st.booleans(),
)
def test_outstanding_tasks_never_exceed_maxsize(
    maxsize: int, workers: int, steps: list[str], reject: bool
) -> None:
    gates = [trio.Event() for _ in steps]
    running: list[int] = []
    policy = Full.REJECT if reject else Full.WAIT
    queue = Queue(
        "hold",
        Hold,
        workers=workers,
        maxsize=maxsize,
        when_full=policy,
        worker_kwargs={"gates": gates, "running": running},
    )

    async def main(system: QueueSystem) -> None:
        accepted: list[int] = []
        refused = 0
        finished = 0

        def check() -> None:
            stats = system.stats()["hold"]
            assert stats.outstanding <= maxsize
            assert stats.in_flight <= min(workers, maxsize)
            assert stats.outstanding == len(accepted) - finished

        async with trio.open_nursery() as nursery:

            async def submit(index: int) -> None:
                nonlocal refused
                try:
                    await system.submit("hold", index)
                except QueueFull:
                    refused += 1
                    return
                accepted.append(index)
                check()

            for index, step in enumerate(steps):
                if step == "submit":
                    nursery.start_soon(submit, index)
                elif step == "finish" and running:
                    gates[running.pop(0)].set()
                    finished += 1
                await trio.sleep(0.01)
                check()
            while running or system.stats()["hold"].outstanding:
                if running:
                    gates[running.pop(0)].set()
                    finished += 1
                await trio.sleep(0.01)
                check()
        assert system.stats()["hold"].succeeded == len(accepted)
        assert len(accepted) + refused == steps.count("submit")
        if not reject:
            assert refused == 0

    run(queue, main)


# -- serialization round trip -------------------------------------------------------------


@attrs.frozen
class Tag:
    name: str
    weight: float


@attrs.frozen
class Document:
    id: int
    title: str
    body: bytes
    tags: list[Tag]
    meta: dict[str, int]
    parent: int | None = None


class Store(Worker):
    async def handle(self, doc: Document) -> Document:
        assert isinstance(doc, Document)
        assert all(isinstance(tag, Tag) for tag in doc.tags)
        return doc


documents = st.builds(
    Document,
    id=st.integers(-(2**53), 2**53),
    title=st.text(max_size=30),
    body=st.binary(max_size=40),
    tags=st.lists(
        st.builds(
            Tag,
            name=st.text(max_size=10),
            weight=st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=4,
    ),
    meta=st.dictionaries(st.text(max_size=8), st.integers(-(2**31), 2**31), max_size=4),
    parent=st.none() | st.integers(0, 1000),
)


@SETTINGS
@given(doc=documents)
def test_an_attrs_payload_round_trips_through_a_queue(doc: Document) -> None:
    async def main(system: QueueSystem) -> Any:
        return await (await system.submit("store", doc))

    assert run(Queue("store", Store), main) == doc


@SETTINGS
@given(doc=documents)
def test_an_attrs_payload_given_as_a_dict_round_trips_too(doc: Document) -> None:
    async def main(system: QueueSystem) -> Any:
        data = system.converter.unstructure(doc)
        return await (await system.submit("store", data))

    assert run(Queue("store", Store), main) == doc

"""The default converter coerces nothing: a payload of the wrong type is refused at submit,
naming the field, the expected type and the value."""

from __future__ import annotations

import dataclasses
from typing import Any

import attrs
import pytest

from queueing import PayloadError, Queue, Worker, open_system


@attrs.frozen
class Resize:
    key: str
    width: int
    scale: float
    keep_ratio: bool


class Resizer(Worker):
    async def handle(self, job: Resize) -> str:
        return f"{job.key}:{job.width}"


class Counter(Worker):
    async def handle(self, n: int) -> int:
        return n + 1


class Namer(Worker):
    async def handle(self, key: str) -> str:
        return key


GOOD = {"key": "a.png", "width": 100, "scale": 1.5, "keep_ratio": True}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("width", 3.7, "expected int, got 3.7 (float)"),
        ("width", True, "expected int, got True (bool)"),
        ("width", "12", "expected int, got '12' (str)"),
        ("key", {"key": 1}, "expected str, got {'key': 1} (dict)"),
        ("key", 5, "expected str, got 5 (int)"),
        ("scale", "1.5", "expected float, got '1.5' (str)"),
        ("scale", False, "expected float, got False (bool)"),
        ("keep_ratio", 1, "expected bool, got 1 (int)"),
    ],
)
async def test_a_field_of_the_wrong_type_is_refused_with_its_name_and_value(
    field: str, value: Any, expected: str
) -> None:
    async with open_system(Queue("resize", Resizer)) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit("resize", {**GOOD, field: value})
        assert expected in str(info.value)
        assert f"$.{field}" in str(info.value)
        assert system.stats()["resize"].submitted == 0


async def test_ints_are_accepted_as_floats() -> None:
    async with open_system(Queue("resize", Resizer)) as system:
        receipt = await system.submit("resize", {**GOOD, "scale": 2})
        assert await receipt == "a.png:100"


@pytest.mark.parametrize("value", [True, 3.0, "3", None])
async def test_a_plain_int_payload_takes_ints_only(value: Any) -> None:
    async with open_system(Queue("count", Counter)) as system:
        with pytest.raises(PayloadError, match="expected int"):
            await system.submit("count", value)
        assert await (await system.submit("count", 3)) == 4


@pytest.mark.parametrize("value", [{"key": 1}, 12, ["a"]])
async def test_a_plain_str_payload_takes_strs_only(value: Any) -> None:
    async with open_system(Queue("name", Namer)) as system:
        with pytest.raises(PayloadError, match="expected str"):
            await system.submit("name", value)


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Plotter(Worker):
    async def handle(self, point: Point) -> int:
        return point.x * point.y


async def test_dataclass_payloads_are_as_strict() -> None:
    async with open_system(Queue("plot", Plotter)) as system:
        assert await (await system.submit("plot", Point(2, 3))) == 6
        assert await (await system.submit("plot", {"x": 2, "y": 4})) == 8
        with pytest.raises(PayloadError, match=r"expected int, got 2\.5 \(float\) @ \$\.y"):
            await system.submit("plot", {"x": 2, "y": 2.5})


@attrs.frozen
class Batch:
    keys: list[str]
    sizes: tuple[int, int]
    tags: frozenset[str]


class Batcher(Worker):
    async def handle(self, batch: Batch) -> list[str]:
        return [*batch.keys, *sorted(batch.tags)]


class Lister(Worker):
    async def handle(self, keys: list[list[str]]) -> int:
        return sum(map(len, keys))


BATCH = {"keys": ["a", "b"], "sizes": [1, 2], "tags": ["t"]}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("keys", "ab", "expected a list (a JSON array), got 'ab' (str) @ $.keys"),
        ("keys", {"a": 1}, "expected a list (a JSON array), got {'a': 1} (dict) @ $.keys"),
        ("sizes", "12", "expected a list (a JSON array), got '12' (str) @ $.sizes"),
        ("tags", "tt", "expected a list (a JSON array), got 'tt' (str) @ $.tags"),
    ],
)
async def test_a_string_or_a_dict_is_no_list(field: str, value: Any, expected: str) -> None:
    # cattrs iterates whatever it is given: a string became its characters, a dict its keys.
    async with open_system(Queue("batch", Batcher)) as system:
        with pytest.raises(PayloadError, match="does not structure as Batch") as info:
            await system.submit("batch", {**BATCH, field: value})
        assert expected in str(info.value)
        assert await (await system.submit("batch", BATCH)) == ["a", "b", "t"]
        assert await (await system.submit("batch", Batch(["c"], (3, 4), frozenset()))) == ["c"]


async def test_a_list_in_a_list_is_checked_too_and_the_type_is_named_in_full() -> None:
    async with open_system(Queue("lists", Lister)) as system:
        with pytest.raises(
            PayloadError, match=r"as list\[list\[str\]\]: expected a list .*@ \$\[1\]"
        ):
            await system.submit("lists", [["a"], "bc"])
        assert await (await system.submit("lists", [["a"], ("b", "c")])) == 3


class Anything(Worker):
    async def handle(self, value: object) -> object:
        return value


@pytest.mark.parametrize("payload", [{"a": [1, "b"]}, [1, 2], "text", None])
async def test_a_handle_that_takes_and_returns_object_takes_any_data(payload: Any) -> None:
    # `object` is "anything" to a type checker; to cattrs, a type without a hook.
    async with open_system(Queue("anything", Anything)) as system:
        receipt = await system.submit("anything", payload)
        assert await receipt.result(timeout=5) == payload


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ({"a": float("nan")}, "NaN"),
        ([float("inf")], "inf"),
        ([10**5000], "4300 digits"),
        ({"s": "\ud800"}, "surrogate"),
    ],
)
async def test_a_value_json_cannot_carry_is_named_with_what_to_send_instead(
    payload: Any, names: str
) -> None:
    async with open_system(Queue("anything", Anything)) as system:
        with pytest.raises(PayloadError, match="JSON cannot carry") as caught:
            await system.submit("anything", payload)
    message = str(caught.value)
    assert names in message
    assert "hook" not in message  # no hook makes NaN JSON: the advice is the value's

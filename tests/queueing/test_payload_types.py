"""The payload type a worker publishes for clients without the `Queue` objects, and the
check such a client applies: it refuses what the worker's converter refuses, never what it
accepts, and a description it does not understand checks nothing."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, NewType, Optional

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queueing import PayloadError, make_converter
from queueing._convert import Codec
from queueing._describe import DescribedCodec, describe, read

UserId = NewType("UserId", str)


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: str = ""
    tags: list[str] = dataclasses.field(default_factory=list)


@attrs.define
class Node:
    name: str
    children: list[Node] = attrs.Factory(list)


@attrs.define
class Shape:
    kind: Literal["box", "disc"]
    size: Size
    at: Point
    _secret: int = 0
    owner: Optional[UserId] = None  # noqa: UP045 (the older spelling is described too)


class Pair(NamedTuple):
    a: int
    b: int


# (type, payload): every case is checked both ways, by the converter (what a type-checked
# client and the worker do) and by the published description (what a client knowing the
# queue by name does); they must agree, except where `LOOSER` says the description lets
# through what the worker will refuse (never the reverse).
CASES: list[tuple[Any, Any]] = [
    (int, 1),
    (int, True),
    (int, 1.5),
    (int, "1"),
    (float, 1),
    (float, 1.5),
    (float, False),
    (str, "a"),
    (str, 1),
    (bool, True),
    (bool, 0),
    (type(None), None),
    (type(None), 0),
    (list[int], [1, 2]),
    (list[int], [1, "2"]),
    (list[int], "12"),
    (list[int], {"a": 1}),
    (list[type(None)], []),
    (Sequence[str], ["a"]),
    (set[int], [1, 2]),
    (frozenset[str], [1]),
    (tuple[int, ...], [1, 2, 3]),
    (tuple[int, str], [1, "a"]),
    (tuple[int, str], [1, 2]),
    (tuple[int, str], [1]),
    (tuple[int, str], [1, "a", "b"]),
    (dict[str, int], {"a": 1}),
    (dict[str, int], {"a": "1"}),
    (dict[str, int], [1]),
    (Mapping[str, list[int]], {"a": [1], "b": []}),
    (int | None, None),
    (int | None, "x"),
    (int | str, "x"),
    (int | str, 1.5),
    (Literal["a", "b"], "a"),
    (Literal["a", "b"], "c"),
    (Size, "s"),
    (Size, "m"),
    (Level, 2),
    (Level, 3),  # an IntEnum meets the converter's int hook: any int passes
    (Level, "2"),
    (UserId, "u1"),
    (UserId, 1),
    (Point, {"x": 1, "y": 2.5}),
    (Point, {"x": 1, "y": 2.5, "label": "p", "tags": ["a"]}),
    (Point, {"x": 1}),
    (Point, {"x": 1, "y": 2, "z": 3}),
    (Point, {"x": "1", "y": 2}),
    (Point, [1, 2]),
    (Node, {"name": "root", "children": [{"name": "leaf"}]}),
    (Node, {"name": "root", "children": [{"name": 1}]}),
    (Shape, {"kind": "box", "size": "l", "at": {"x": 0, "y": 0}, "_secret": 3}),
    (Shape, {"kind": "box", "size": "l", "at": {"x": 0, "y": 0}, "owner": "u1"}),
    (Shape, {"kind": "cube", "size": "l", "at": {"x": 0, "y": 0}}),
    (Shape, {"kind": "box", "size": "xl", "at": {"x": "0", "y": 0}}),
    (Shape, {"kind": "box", "size": "l", "at": {"x": 0, "y": 0}, "secret": 3}),
    (Pair, [1, 2]),
    (datetime.datetime, "2026-12-01T12:00:00"),
    (datetime.datetime, 12),
    (Any, {"anything": [1, None]}),
]
#: Cases the description lets through and the worker refuses: inner occurrences of a
#: recursive class (`Node` in `Node`) and NamedTuples are not checked; the converter
#: refuses every `list[type(None)]`, even an empty one (cattrs has no hook for it).
LOOSER = {
    (Node, '{"name": "root", "children": [{"name": 1}]}'),
    (Pair, "[1, 2]"),
    (list[type(None)], "[]"),
}


def _accepts(codec: Codec, payload: Any) -> bool:
    try:
        codec.check(payload)
    except PayloadError:
        return False
    return True


@pytest.mark.parametrize(("type_", "payload"), CASES, ids=[repr(c) for c in CASES])
def test_the_description_refuses_what_the_converter_refuses(type_: Any, payload: Any) -> None:
    converter = make_converter()
    typed = _accepts(Codec(converter, type_, "q"), payload)
    found = read(describe(type_))
    named = True if found is None else _accepts(DescribedCodec(converter, "q", *found), payload)
    if (type_, json.dumps(payload)) in LOOSER:
        assert (typed, named) == (False, True)
    else:
        assert named == typed


def test_a_refusal_names_the_field_the_expected_type_and_the_value() -> None:
    found = read(describe(Shape))
    assert found is not None
    codec = DescribedCodec(make_converter(), "shapes", *found)
    with pytest.raises(PayloadError) as caught:
        codec.check({"kind": "cube", "size": "l", "at": {"x": "0", "y": 0}, "extra": 1})
    message = str(caught.value)
    assert message.startswith("queue 'shapes': the payload does not structure as Shape: ")
    assert "expected one of 'box', 'disc', got 'cube' (str) @ $.kind" in message
    assert "expected float, got '0' (str) @ $.at.x" in message
    assert "extra fields found (extra) @ $" in message


def test_a_value_of_the_class_itself_is_unstructured_then_checked() -> None:
    found = read(describe(Point))
    assert found is not None
    codec = DescribedCodec(make_converter(), "points", *found)
    assert codec.check(Point(1, 2)) == {"x": 1, "y": 2, "label": "", "tags": []}
    with pytest.raises(PayloadError, match="JSON cannot carry"):
        codec.check(float("nan"))


@pytest.mark.parametrize(
    "text",
    [
        '{"version": 2, "title": "int", "schema": {"type": "integer"}}',  # a newer writer
        '{"title": "int", "schema": {"type": "integer"}}',  # an older one, or not ours
        "not json",
        '["version", 1]',
        '{"version": 1, "title": "int", "schema": "integer"}',
    ],
)
def test_a_description_of_another_version_or_unreadable_checks_nothing(text: str) -> None:
    assert read(text) is None


def test_a_part_of_a_schema_with_an_unknown_keyword_checks_nothing() -> None:
    # A newer writer may add keywords: where one appears, this reader checks nothing
    # rather than refuse what the worker accepts.
    text = json.dumps(
        {
            "version": 1,
            "title": "Job",
            "schema": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer"},
                    "when": {"type": "string", "format": "date-time"},
                    "size": {"type": "decimal"},
                },
                "required": ["n"],
                "additionalProperties": False,
            },
        }
    )
    found = read(text)
    assert found is not None
    codec = DescribedCodec(make_converter(), "jobs", *found)
    assert codec.check({"n": 1, "when": 5, "size": "12.5"}) == {"n": 1, "when": 5, "size": "12.5"}
    with pytest.raises(PayloadError, match=r"expected int, got 'x' \(str\) @ \$\.n"):
        codec.check({"n": "x"})


class Opaque:
    pass


@pytest.mark.parametrize("type_", [Any, Opaque, Pair, Optional[Any]], ids=repr)  # noqa: UP045
def test_any_and_types_it_cannot_describe_are_published_as_no_check(type_: Any) -> None:
    assert read(describe(type_)) is None


def test_a_part_it_cannot_describe_is_not_checked() -> None:
    found = read(describe(list[Opaque] | None))
    assert found is not None
    codec = DescribedCodec(make_converter(), "q", *found)
    assert codec.check([{"any": "thing"}, 1]) == [{"any": "thing"}, 1]
    with pytest.raises(PayloadError, match=r"expected list\[.*Opaque\] \| None, got 1 \(int\)"):
        codec.check(1)


# -- the same verdict on any type of the grammar the description covers, any JSON data ----

_scalars = st.sampled_from([int, float, str, bool, Literal["a", 1], Size])
types: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        inner.map(lambda t: list[t]),
        inner.map(lambda t: dict[str, t]),
        inner.map(lambda t: t | None),
        st.tuples(inner, inner).map(lambda ts: tuple[ts[0], ts[1]]),
    ),
    max_leaves=4,
)
json_data: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.sampled_from(["a", "s", "l", "1", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(type_=types, data=json_data)
def test_the_client_and_the_converter_agree_on_any_data(type_: Any, data: Any) -> None:
    converter = make_converter()
    typed = _accepts(Codec(converter, type_, "q"), data)
    found = read(describe(type_))
    assert found is not None
    assert _accepts(DescribedCodec(converter, "q", *found), data) == typed

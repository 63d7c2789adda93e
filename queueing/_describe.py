"""Payload types as published descriptions, and the check a client applies with them.

A serving process publishes, for each queue it declares, a description of the payload type
its `handle` takes (`describe`), so that a client without the `Queue` objects (`connect(url)`,
`queueing submit`) refuses a wrong payload at once, with the `PayloadError` a type-checked
client raises, instead of the worker dead-lettering it later.

A description is JSON text: `{"version": 1, "title": "Page", "schema": {...}}`, where the
schema is a small subset of JSON Schema (`type`, `items`, `prefixItems`, `minItems`,
`maxItems`, `properties`, `required`, `additionalProperties`, `anyOf`, `enum`, `title`),
over the types the system's converter structures strictly: ints, floats, str, bool, None,
lists, tuples, sets, `dict[str, T]`, unions and `Optional`, `Literal`, `Enum`, attrs classes
and dataclasses (nested). A type it cannot describe is `{}`: anything passes there.

Reading degrades, never refuses falsely: a description of another version, one that does not
parse, and any part of a schema with a keyword this version does not know check nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
import math
import typing
from collections import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import trio

from ._convert import AS_ANY, Codec, dumps, type_name
from ._exceptions import BrokerError, PayloadError

if TYPE_CHECKING:
    from ._runtime import QueueRuntime
    from .brokers._contract import Broker

log = logging.getLogger("queueing")

#: The version of the descriptions this process writes and reads.
VERSION = 1
#: The schema keywords this version checks; a part of a schema with any other is not checked.
_KNOWN = frozenset(
    {
        "type",
        "title",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "additionalProperties",
        "anyOf",
        "enum",
    }
)
_JSON_SCALARS = (str, int, float, bool, type(None))
#: Types the converter carries as strings (cattrs' JSON preset): checked as strings only.
_AS_STRINGS = (bytes, datetime.datetime, datetime.date)
_SIMPLE: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
}
_ARRAYS = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        abc.Sequence,
        abc.MutableSequence,
        abc.Set,
        abc.MutableSet,
    }
)
_MAPPINGS = frozenset(
    {
        dict,
        abc.Mapping,
        abc.MutableMapping,
    }
)


# -- describing ------------------------------------------------------------------------------


def describe(type_: Any) -> str:
    """The published description (JSON text) of a payload type; `Any` or a type it cannot
    describe gives the schema `{}` (no check)."""
    return dumps({"version": VERSION, "title": type_name(type_), "schema": _schema(type_, ())})


def _schema(type_: Any, seen: tuple[Any, ...]) -> dict[str, Any]:
    try:
        return _schema_of(type_, seen)
    except Exception:  # an odd annotation: no check rather than a wrong one
        return {}


def _schema_of(type_: Any, seen: tuple[Any, ...]) -> dict[str, Any]:
    if type_ is None:
        type_ = type(None)
    simple = _SIMPLE.get(type_)
    if simple is not None:
        return {"type": simple}
    if isinstance(type_, type):
        if issubclass(type_, _AS_STRINGS):
            return {"type": "string"}
        # A subclass of int or str (an IntEnum, a StrEnum) meets the converter's int or str
        # hook first: it takes what that hook takes.
        for base in (bool, int, float, str):
            if issubclass(type_, base) and not hasattr(type_, "_fields"):
                return {"type": _SIMPLE[base]}
    supertype = getattr(type_, "__supertype__", None)  # a NewType: as the converter does
    if supertype is not None:
        return _schema(supertype, seen)
    origin = typing.get_origin(type_)
    args = typing.get_args(type_)
    if origin is typing.Annotated:
        return _schema(args[0], seen)
    if origin is typing.Literal:
        if all(type(value) in _JSON_SCALARS for value in args):
            return {"enum": list(args), "title": type_name(type_)}
        return {}
    if origin is typing.Union or type(type_).__name__ == "UnionType":
        options = [_schema(arg, seen) for arg in args]
        if any(not option for option in options):
            return {}
        return {"anyOf": options, "title": type_name(type_)}
    if origin is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            items = [_schema(arg, seen) for arg in args]
            n = len(items)
            return {"type": "array", "prefixItems": items, "minItems": n, "maxItems": n}
        return {"type": "array", "items": _schema(args[0], seen) if args else {}}
    if (origin or type_) in _ARRAYS:
        if hasattr(type_, "_fields"):  # a NamedTuple
            return {}
        return {"type": "array", "items": _schema(args[0], seen) if args else {}}
    if (origin or type_) in _MAPPINGS:
        if args and args[0] is str:
            return {"type": "object", "additionalProperties": _schema(args[1], seen)}
        return {"type": "object"}
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        values = [member.value for member in type_]
        if all(type(value) in _JSON_SCALARS for value in values):
            return {"enum": values, "title": type_.__name__}
        return {}
    if isinstance(type_, type) and (attrs.has(type_) or dataclasses.is_dataclass(type_)):
        if type_ in seen:  # a recursive type: its inner occurrences are not checked
            return {}
        return _class_schema(type_, (*seen, type_))
    return {}


def _class_schema(cls: type, seen: tuple[Any, ...]) -> dict[str, Any]:
    """An attrs class or dataclass as the converter structures it: a JSON object of its
    `__init__` fields by name, those without a default required, no other key."""
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, bool]] = []
    if attrs.has(cls):
        for a in attrs.fields(cls):
            if a.init:
                fields.append((a.name, hints.get(a.name, a.type), a.default is attrs.NOTHING))
    else:
        for f in dataclasses.fields(cls):
            if f.init:
                required = (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                )
                fields.append((f.name, hints.get(f.name, f.type), required))
    return {
        "type": "object",
        "title": cls.__name__,
        "properties": {name: _schema(t, seen) for name, t, _ in fields},
        "required": [name for name, _, required in fields if required],
        "additionalProperties": False,
    }


# -- reading and checking --------------------------------------------------------------------


def read(text: Any) -> tuple[str, dict[str, Any]] | None:
    """A published description's title and schema; None: nothing to check (another version,
    unreadable, or `{}`)."""
    try:
        doc = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None
    schema, title = doc.get("schema"), doc.get("title")
    if not isinstance(schema, dict) or not schema or not isinstance(title, str):
        return None
    return title, schema


def problems(schema: Any, data: Any) -> list[str]:
    """What is wrong with plain JSON data for `schema`, each problem with its place (`@ $.n`)
    as the converter's errors say it; empty: it passes."""
    found: list[str] = []
    _check(schema, data, "$", found)
    return found


def _shown(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{shown} ({type(value).__name__})"


def _at(path: str) -> str:
    return "" if path == "$" else f" @ {path}"


_EXPECTED = {
    "integer": "int",
    "number": "float",
    "string": "str",
    "boolean": "bool",
    "null": "None",
    "array": "a list (a JSON array)",
    "object": "a dict (a JSON object)",
}


def _is(kind: Any, data: Any) -> bool | None:
    """Whether `data` is of the JSON type `kind`; None: a kind this version does not know."""
    if kind == "integer":
        return type(data) is int
    if kind == "number":
        return type(data) in (int, float) and math.isfinite(data)
    if kind == "string":
        return type(data) is str
    if kind == "boolean":
        return type(data) is bool
    if kind == "null":
        return data is None
    if kind == "array":
        return isinstance(data, list | tuple | set | frozenset)
    if kind == "object":
        return isinstance(data, dict)
    return None


def _check(schema: Any, data: Any, path: str, found: list[str]) -> None:
    if not isinstance(schema, dict) or not schema or not schema.keys() <= _KNOWN:
        return  # not understood: not checked
    title = schema.get("title")
    if "anyOf" in schema:
        options = schema["anyOf"]
        if not isinstance(options, list):
            return
        for option in options:
            if not problems(option, data):
                return
        found.append(f"expected {title or 'one of its types'}, got {_shown(data)}{_at(path)}")
        return
    if "enum" in schema:
        values = schema["enum"]
        if isinstance(values, list) and not any(
            type(data) in _JSON_SCALARS and data == value for value in values
        ):
            allowed = ", ".join(repr(value) for value in values)
            found.append(f"expected one of {allowed}, got {_shown(data)}{_at(path)}")
        return
    kind = schema.get("type")
    if kind is None:
        return
    is_kind = _is(kind, data)
    if is_kind is None:
        return
    if not is_kind:
        expected = _EXPECTED[kind]
        if kind == "object" and isinstance(title, str):
            expected = f"{title} (a JSON object)"
        found.append(f"expected {expected}, got {_shown(data)}{_at(path)}")
        return
    if kind == "array":
        _check_array(schema, list(data), path, found)
    elif kind == "object":
        _check_object(schema, data, path, found)


def _check_array(schema: dict[str, Any], data: list[Any], path: str, found: list[str]) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if (type(low) is int and len(data) < low) or (type(high) is int and len(data) > high):
        size = f"{low}" if low == high else f"{low} to {high}"
        found.append(f"expected {size} items, got {len(data)}{_at(path)}")
        return
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        for i, (item_schema, item) in enumerate(zip(prefix, data, strict=False)):
            _check(item_schema, item, f"{path}[{i}]", found)
        return
    items = schema.get("items")
    if isinstance(items, dict) and items:
        for i, item in enumerate(data):
            _check(items, item, f"{path}[{i}]", found)


def _check_object(
    schema: dict[str, Any], data: dict[Any, Any], path: str, found: list[str]
) -> None:
    properties = schema.get("properties")
    extra_schema = schema.get("additionalProperties", True)
    if isinstance(properties, dict):
        required = schema.get("required")
        if isinstance(required, list):
            for name in required:
                if name not in data:
                    found.append(f"required field missing @ {path}.{name}")
        for name, sub in properties.items():
            if name in data:
                _check(sub, data[name], f"{path}.{name}", found)
        if extra_schema is False:
            extra = [str(key) for key in data if key not in properties]
            if extra:
                found.append(f"extra fields found ({', '.join(extra)}) @ {path}")
        return
    if isinstance(extra_schema, dict):
        for key, value in data.items():
            _check(extra_schema, value, f"{path}[{key!r}]", found)


class DescribedCodec(Codec):
    """The payload codec of a queue a client knows from the broker only: it unstructures a
    caller's value as any codec does, then checks the data against the published schema."""

    __slots__ = ("schema", "title")

    def __init__(
        self, converter: cattrs.Converter, queue: str, title: str, schema: dict[str, Any]
    ) -> None:
        super().__init__(converter, Any, queue, "payload")
        self.title = title
        self.schema = schema
        self.as_is = AS_ANY  # the client structures nothing: its workers run elsewhere

    def check(self, value: Any) -> Any:
        data = super().check(value)
        found = problems(self.schema, data)
        if found:
            raise PayloadError(
                self.queue,
                f"{self.role} does not structure as {self.title}: {'; '.join(found)} "
                "(checked against the type the queue's workers published)",
            )
        return data


def takes_as_is(schema: dict[str, Any], kind: str) -> bool:
    """Whether every value of the JSON type `kind` passes `schema` (the engine then takes an
    int or a short str without a check)."""
    return not schema or (schema.get("type") == kind and schema.keys() <= {"type", "title"})


#: Seconds between a client's readings of the published payload types (a worker of a new
#: version, started since, replaces them).
FOLLOW_EVERY = 10.0


class Published:
    """The payload types a client applies to the queues it knows by name only, as the
    broker has them: read at connect, then every `FOLLOW_EVERY` seconds (`follow`)."""

    def __init__(self, runtimes: Mapping[str, QueueRuntime], converter: cattrs.Converter) -> None:
        self._runtimes = dict(runtimes)
        self._converter = converter
        # Each queue's own codec and fast paths, for a type that is no longer described.
        self._base = {
            name: (rt.payload_codec, rt.direct_int, rt.direct_str) for name, rt in runtimes.items()
        }
        self._texts: dict[str, str | None] = {}

    def apply(self, published: Mapping[str, str]) -> None:
        """Check each queue's payloads against its description in `published` (none, or one
        this version does not understand: no check)."""
        for name, rt in self._runtimes.items():
            text = published.get(name)
            if name in self._texts and self._texts[name] == text:
                continue
            self._texts[name] = text
            rt.payload_codec, rt.direct_int, rt.direct_str = self._base[name]
            found = read(text)
            if found is None:
                continue
            title, schema = found
            rt.payload_codec = DescribedCodec(self._converter, name, title, schema)
            if not takes_as_is(schema, "integer"):
                rt.direct_int = False
            if not takes_as_is(schema, "string"):
                rt.direct_str = -1

    async def follow(self, broker: Broker) -> None:
        """Read the published types again every `FOLLOW_EVERY` seconds, until cancelled."""
        while True:
            await trio.sleep(FOLLOW_EVERY)
            try:
                self.apply(await broker.declared_payload_types())
            except BrokerError as exc:  # the ones read last apply until the next reading
                log.debug("payload types not read again: %s", exc)

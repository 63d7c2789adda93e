"""The system's cattrs converter, payload validation, and the JSON wire format."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
import cattrs.v
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_abstract_set,
    is_any_set,
    is_frozenset,
    is_mutable_sequence,
    is_sequence,
    list_structure_factory,
)
from cattrs.preconf.json import make_converter as _make_json_converter

from ._exceptions import InvalidQueue, PayloadError

_PRIMITIVES = (int, float, str, bool, type(None))
PRIMITIVE_TYPES = frozenset(_PRIMITIVES)
#: `Codec.as_is` of a codec for `Any`: every value passes as it is.
AS_ANY: Any = object()
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class StrictTypeError(TypeError):
    """A value of the wrong type for a field (no silent coercion)."""

    def __init__(self, expected: str, value: Any) -> None:
        self.expected = expected
        self.value = value
        shown = repr(value)
        if len(shown) > _SHOWN:
            shown = shown[: _SHOWN - 3] + "..."
        super().__init__(f"expected {expected}, got {shown} ({type(value).__name__})")


#: Characters of a refused value shown in an error message.
_SHOWN = 80


def _strict_int(value: Any, _: Any) -> int:
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return int(value)
    raise StrictTypeError("int", value)


def _strict_float(value: Any, _: Any) -> float:
    # An int is a float's value too (JSON does not tell 3 from 3.0); a bool is not.
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise StrictTypeError("a finite float (JSON has no NaN or infinity)", value)
        return float(value)
    raise StrictTypeError("float", value)


def _strict_str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise StrictTypeError("str", value)


def _strict_bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise StrictTypeError("bool", value)


#: What a list, tuple or set field takes: a JSON array, or a Python collection a caller
#: passes (cattrs would iterate anything: a string into its characters, a dict into its keys).
_COLLECTIONS = (list, tuple, set, frozenset)


def _is_collection(type_: Any) -> bool:
    if hasattr(type_, "_fields"):  # a NamedTuple: cattrs' own hook
        return False
    return bool(
        is_sequence(type_) or is_any_set(type_) or (typing.get_origin(type_) or type_) is tuple
    )


def _collection_hook(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """cattrs' own hook for a list, tuple or set type, behind a check that the value is a
    collection at all."""
    inner: Callable[[Any, Any], Any]
    args = typing.get_args(type_)
    if (typing.get_origin(type_) or type_) is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            inner = converter.gen_structure_hetero_tuple(type_)
        else:
            inner = converter._structure_tuple
    elif is_mutable_sequence(type_):
        inner = list_structure_factory(type_, converter)
    elif is_sequence(type_):
        inner = homogenous_tuple_structure_factory(type_, converter)
    elif is_abstract_set(type_) or is_frozenset(type_):
        inner = converter._structure_frozenset
    else:
        inner = converter._structure_set

    def structure(value: Any, target: Any) -> Any:
        if not isinstance(value, _COLLECTIONS):
            raise StrictTypeError("a list (a JSON array)", value)
        return inner(value, target)

    return structure


def make_converter() -> cattrs.Converter:
    """A strict converter for JSON-compatible data (the default of every system).

    Nothing is coerced: an `int` field takes ints only (not `3.7`, `True` or `"12"`), a
    `float` field ints or floats (not bools, strings, NaN or infinity), a `str` field
    strings only, a `bool` field bools only, a list, tuple or set field lists (not a
    string, whose characters cattrs would take, nor a dict); extra keys are refused. Bytes
    travel as base85 strings and datetimes as ISO 8601 strings (as cattrs' JSON preset
    does). Register your own hooks on it and pass it as `open_system(converter=...)`.
    """
    converter = _make_json_converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook_factory(_is_collection, _collection_hook)
    return converter


_loads = json.JSONDecoder().decode


def _non_str_key(data: Any, path: str) -> str | None:
    """Where `data` has a dict key that is not a str (`1 (int) @ $['a']`), or None."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                return f"{key!r:.{_SHOWN}} ({type(key).__name__}) @ {path}"
            found = _non_str_key(value, f"{path}[{key!r:.{_SHOWN}}]")
            if found is not None:
                return found
    elif isinstance(data, list | tuple):
        for index, item in enumerate(data):
            found = _non_str_key(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def dumps(data: Any) -> str:
    return _dumps(data)


def encoded_size(data: Any, limit: int) -> int:
    """The UTF-8 size of `data` as compact JSON; exact once it may exceed `limit`."""
    kind = type(data)
    if kind is int or kind is float or kind is bool or data is None:
        if limit >= 24 and (kind is not int or -(10**22) < data < 10**22):
            return 1  # at most 24 bytes (a float's repr, a 22-digit int): within the limit
        return len(_dumps(data).encode())  # exact: a small limit, or a huge int
    if kind is str and 6 * len(data) + 2 <= limit and data.isascii():
        return len(data)
    # UnicodeEncodeError (a ValueError) for a lone surrogate, which no broker can store.
    return len(_dumps(data).encode())


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, StrictTypeError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def describe_error(exc: BaseException) -> str:
    """A converter's error as one line: each problem with the field it is at."""
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, format_exception=_format))
    if isinstance(exc, StrictTypeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def type_name(type_: Any) -> str:
    """A declared type as written: `int`, `list[int]`, `dict[str, Page]`, `int | None`."""
    if isinstance(type_, type) and typing.get_origin(type_) is None:
        return type_.__name__
    return str(type_).replace("typing.", "").replace("__main__.", "")


def handler_types(handle: Callable[..., Any]) -> tuple[Any, Any]:
    """The payload and result types a `handle` method declares (Any where it does not)."""
    handle = inspect.unwrap(handle)  # a bridged (asyncio) handle: its own annotations
    try:
        hints = typing.get_type_hints(handle)
    except Exception:
        hints = getattr(handle, "__annotations__", {})
    params = [name for name in hints if name != "return"]
    payload = hints[params[0]] if params else Any
    result = hints.get("return", Any)
    # `object` is any value to a type checker; to cattrs, a type it has no hook for.
    if payload is object:
        payload = Any
    if result is type(None) or result is object:
        result = Any
    return payload, result


def check_handler_types(handle: Callable[..., Any], queue: str) -> None:
    """Refuse, at the queue's definition, a `handle` whose annotations do not resolve or
    declare a payload or result that JSON cannot carry back as it was (a dict with int
    keys, say): otherwise every submit, or every result, would fail."""
    unwrapped = inspect.unwrap(handle)
    where = f"Queue({queue!r}): {getattr(unwrapped, '__qualname__', 'handle')}"
    try:
        hints = typing.get_type_hints(unwrapped)
    except Exception as exc:
        raise InvalidQueue(
            f"{where} has annotations that do not resolve ({type(exc).__name__}: {exc}): "
            "define or import each type it names at module level, before the Queue (under "
            "`from __future__ import annotations` annotations are strings, resolved from "
            "the module's globals), or annotate with Any"
        ) from None
    for name, type_ in hints.items():
        role = "its result" if name == "return" else f"its payload {name!r}"
        problem = _json_problem(type_, set())
        if problem is not None:
            raise InvalidQueue(
                f"{where}: {role} is declared as {type_name(type_)}, which JSON cannot carry "
                f"back as it was: {problem}"
            )


def _json_problem(type_: Any, seen: set[int]) -> str | None:
    """What in a declared type JSON cannot round-trip (a non-str dict key), or None."""
    if id(type_) in seen:
        return None
    seen.add(id(type_))
    origin = typing.get_origin(type_)
    args = typing.get_args(type_)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping) and args:
        key = _bad_key(args[0])
        if key is not None:
            return (
                f"its dict keys are {key}, but JSON object keys are strings (they would come "
                "back as str, or be refused); use str keys, or a list of pairs"
            )
    for arg in args:
        if isinstance(arg, type) or typing.get_origin(arg) is not None:
            problem = _json_problem(arg, seen)
            if problem is not None:
                return problem
    if isinstance(type_, type) and (attrs.has(type_) or dataclasses.is_dataclass(type_)):
        try:
            fields = typing.get_type_hints(type_)
        except Exception as exc:
            return (
                f"the annotations of {type_.__qualname__} do not resolve "
                f"({type(exc).__name__}: {exc}); define or import the types its fields name "
                "at module level"
            )
        for field, field_type in fields.items():
            problem = _json_problem(field_type, seen)
            if problem is not None:
                return f"{type_.__qualname__}.{field}: {problem}"
    return None


def _bad_key(key: Any) -> str | None:
    """How a dict key type is not a string in JSON (`int`), or None if it is (or may be)."""
    if key in (int, float, bool, type(None), bytes) or typing.get_origin(key) is tuple:
        return type_name(key)
    if key is tuple or key is frozenset or typing.get_origin(key) is frozenset:
        return type_name(key)
    if isinstance(key, type):
        if issubclass(key, enum.Enum) and not all(isinstance(m.value, str) for m in key):
            return f"{key.__qualname__} (an enum of non-str values)"
        if attrs.has(key) or dataclasses.is_dataclass(key):
            return f"{key.__qualname__} (a class)"
    origin = typing.get_origin(key)
    if origin is typing.Literal and not all(isinstance(v, str) for v in typing.get_args(key)):
        return type_name(key)
    if origin is typing.Union or origin is types.UnionType:
        for member in typing.get_args(key):
            if _bad_key(member) is not None:
                return type_name(key)
    return None


def _uncarried(exc: ValueError) -> str:
    """The value `exc` (from `json.dumps` or `str.encode`) refused, and what to use instead."""
    text = str(exc)
    if isinstance(exc, UnicodeEncodeError):
        return "a str with a lone surrogate (decode bytes with errors='replace')"
    if "digits" in text:
        return "an int of more than 4300 digits (Python's int-to-str limit; use a str)"
    if "float" in text:
        return "a NaN or infinite float (JSON has no NaN, inf or -inf; use None or a str)"
    if "Circular" in text:
        return "a container that contains itself"
    return "a value"


class Codec:
    """Unstructures and structures one declared type with the system's converter.

    `role` names what it converts in error messages: "payload" (what `handle` takes) or
    "result" (what `handle` returns).
    """

    __slots__ = ("_structure", "_unstructure", "as_is", "max_size", "queue", "role", "type")

    def __init__(
        self,
        converter: cattrs.Converter,
        type_: Any,
        queue: str,
        role: str = "payload",
        max_size: int | None = None,
    ) -> None:
        self.type = type_
        self.queue = queue
        self.role = "the result of handle()" if role == "result" else "the payload"
        #: The most bytes of JSON `check` lets through (a result's `max_result`); None:
        #: no limit here (a payload's `max_payload` is checked by the engine).
        self.max_size = max_size
        # Data that structures as itself: of this primitive type (AS_ANY: any data; None:
        # none). Hot paths read it to skip the call to `structure`.
        self.as_is: Any = AS_ANY if type_ is Any else type_ if type_ in PRIMITIVE_TYPES else None
        self._unstructure = converter.unstructure
        self._structure = converter.structure

    def unstructure(self, value: Any) -> Any:
        """`value` as plain JSON-able data; PayloadError if it has no such form."""
        kind = type(value)
        if kind is int or kind is str or kind is bool or value is None:
            return value
        if kind is float:
            if not math.isfinite(value):
                raise PayloadError(
                    self.queue,
                    f"{self.role} is {value!r}, which JSON cannot carry; use None or a string",
                )
            return value
        try:
            data = self._unstructure(value)
        except Exception as exc:
            raise PayloadError(
                self.queue,
                f"the converter cannot serialize {self.role}, a {kind.__name__}: "
                f"{describe_error(exc)}; use attrs classes, dataclasses or plain data, or "
                "register a hook",
            ) from exc
        if type(data) not in _PRIMITIVES:
            try:
                text = _dumps(data)
                size = len(text)
                if not text.isascii():
                    # UnicodeEncodeError (a ValueError): a lone surrogate
                    size = len(text.encode())
            except ValueError as exc:  # a value of a JSON type, that JSON cannot carry
                raise PayloadError(
                    self.queue,
                    f"{self.role}, a {kind.__name__}, holds {_uncarried(exc)}, which JSON "
                    f"cannot carry ({exc})",
                ) from exc
            except TypeError as exc:  # a type the converter left as it was
                raise PayloadError(
                    self.queue,
                    f"{self.role}, a {kind.__name__}, does not serialize to JSON ({exc}); "
                    "register an unstructure hook on the system's converter for the "
                    "offending type, or use plain data",
                ) from exc
            # JSON turns a dict's int (float, bool, None) key into a string: `{1: 2}` would
            # come back as `{"1": 2}` from a broker that stores JSON and as it was from one
            # that does not. Refused instead, on every broker. The data read back equals
            # the data unless something changed (a key; a tuple, which comes back a list,
            # is fine): only then is the data walked for the key.
            if "{" in text and _loads(text) != data:
                where = _non_str_key(data, "$")
                if where is not None:
                    raise PayloadError(
                        self.queue,
                        f"{self.role} has a dict key that is not a str, {where}: JSON "
                        "object keys are strings, so it would not come back as it was; "
                        "use str keys (str(key)), or a list of pairs",
                    )
            if self.max_size is not None and size > self.max_size:
                raise self.too_large(size)
        elif type(data) is str and self.max_size is not None:
            self._check_plain(data)
        return data

    def _check_plain(self, value: str | int) -> None:
        """A str or int within `max_size` as JSON (counted exactly only when it may be
        over), and one JSON can carry (an int of at most 4300 digits, Python's limit)."""
        limit = self.max_size
        if limit is None:
            return
        if isinstance(value, int):
            if -(10**22) < value < 10**22:
                return
        elif 6 * len(value) + 2 <= limit:
            return
        try:
            size = encoded_size(value, limit)
        except ValueError as exc:  # a lone surrogate; an int past Python's str() limit
            raise PayloadError(
                self.queue,
                f"{self.role} does not serialize to JSON ({exc}); return it as a str, or a "
                "smaller value",
            ) from exc
        if size > limit:
            raise self.too_large(size)

    def too_large(self, size: int) -> PayloadError:
        """The error of a value `size` bytes long, over `max_size`."""
        return PayloadError(
            self.queue,
            f"{self.role} is {size} bytes serialized, over the queue's max_result of "
            f"{self.max_size} bytes: store large data elsewhere (a file, an object store, "
            "a database) and return a reference to it, or raise Queue(max_result=...)",
        )

    def structure(self, data: Any) -> Any:
        as_is = self.as_is
        if as_is is AS_ANY or type(data) is as_is:
            return data
        target = self.type
        try:
            return self._structure(data, target)
        except Exception as exc:
            name = type_name(target)
            raise PayloadError(
                self.queue, f"{self.role} does not structure as {name}: {describe_error(exc)}"
            ) from exc

    def received(self, data: Any) -> Any:
        """`structure` for a worker, of the payload a task brought: a payload that does not
        convert raises a `PayloadError` that says so, for the log and the dead letter (it
        was accepted by a client that checked it against another type: a process of
        another version, most often). `structure`'s body, not a call of it: this runs for
        every task whose payload is a class (one frame less)."""
        as_is = self.as_is
        if as_is is AS_ANY or type(data) is as_is:
            return data
        target = self.type
        try:
            return self._structure(data, target)
        except Exception as exc:
            name = type_name(target)
            raise PayloadError(
                self.queue,
                f"payload conversion failed in the worker, whose handler takes {name}: "
                f"{self.role} does not structure as {name}: {describe_error(exc)}. "
                "Dead-lettered at once (no retry converts it): if a process of another "
                "version submits to or serves this queue, give them one payload type "
                "(docs/concepts/queues.md#two-versions-of-a-payload-type), then requeue "
                "the dead letters",
            ) from exc

    def check(self, value: Any) -> Any:
        """Validate a caller's value and return its unstructured form.

        A value that is not already of the declared type (a dict for an attrs class, say) is
        also structured as that type, so a bad field is reported to the caller by name.
        """
        kind = type(value)
        target = self.type
        if kind in PRIMITIVE_TYPES and (target is Any or target is kind):
            if kind is float and not math.isfinite(value):
                raise PayloadError(
                    self.queue,
                    f"{self.role} is {value!r}, which is not a JSON number (JSON cannot carry "
                    "NaN or infinity); use None or a string",
                )
            if self.max_size is not None and (kind is str or kind is int):
                self._check_plain(value)
            if kind is str and not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError as exc:
                    raise PayloadError(
                        self.queue,
                        f"{self.role} is a str that does not serialize to JSON ({exc}): a lone "
                        "surrogate, which no UTF-8 text holds (decode bytes with "
                        "errors='replace')",
                    ) from exc
            return value
        data = self.unstructure(value)
        if target is not Any and not (
            target not in PRIMITIVE_TYPES  # a bool is an int to isinstance, not to us
            and typing.get_origin(target) is None
            and isinstance(target, type)
            and isinstance(value, target)
        ):
            self.structure(data)
        return data

"""The JSON wire format: envelopes in streams, task records, outcomes and dead letters.

Anything read from Redis is untrusted: it may have been written by another program, an
older version, or by hand. `decode_envelope` checks every field and raises `BadEntry`
with the reason; the broker dead-letters such entries instead of running them. Records
and outcomes are read leniently (a record names its task by its key, which we built).
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
from collections.abc import Mapping
from typing import Any

from ..._task import (
    DeadLetter,
    ErrorInfo,
    PipelineTask,
    Task,
    TaskState,
    new_task,
    parse_priority,
    parse_tenant,
    parse_trace,
    priority_of,
    tenant_of,
    trace_of,
)
from .._contract import queue_of
from . import _keys as k

VERSION = 1
#: The most stages a pipeline may have (a bound on an untrusted `stage` field).
MAX_STAGES = 1000
#: Digits per index of a branch path (paths sort as text: indexes below 10**9).
PATH_DIGITS = 9

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
#: A JSON string literal of a str, as `dumps` writes it (ensure_ascii=False).
_string: Any = json.encoder.encode_basestring


class BadEntry(ValueError):
    """An entry that cannot be a task; the message says why."""


# -- envelopes: a task as a stream entry carries it ----------------------------------------


def encode_envelope(task: Task) -> str:
    doc: dict[str, Any] = {
        "v": VERSION,
        "id": task.id,
        "queue": task.queue,
        "payload": task.payload,
        "submitted_at": task.submitted_at,
        "expires_at": task.expires_at,
        "attempts": task.attempts,
        "first_started": task.first_started,
    }
    if isinstance(task, PipelineTask) and task.run is not None:
        doc.update(run=task.run, route=task.route, stage=task.stage, path=list(task.path))
    trace = trace_of(task)
    if trace:
        doc["trace"] = trace  # the submitter's trace context (tracing on)
    priority = priority_of(task)
    if priority:
        doc["priority"] = priority
    tenant = tenant_of(task)
    if tenant is not None:
        doc["tenant"] = tenant
    return dumps(doc)


def _number(doc: Mapping[str, Any], key: str, *, optional: bool) -> float | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadEntry(f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


#: The JSON scanner `json.loads` uses (`scan_once(text, index)`: the value there and
#: where it ends; StopIteration if none starts there).
_scan: Any = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _parse(raw: Any, max_bytes: int) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise BadEntry(f"field 'env' must be text, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise BadEntry(f"envelope is {len(raw)} bytes, over the limit of {max_bytes}")
    # The scanner `json.loads` ends in, called directly (`loads` and the decoder's
    # `decode` are two Python calls and two whitespace matches per task); an envelope
    # with anything around its document (whitespace, or more), or none readable, goes
    # the long way, which takes the whitespace and names the error.
    try:
        doc, end = _scan(raw, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(raw):
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BadEntry(f"field 'env' is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadEntry(f"envelope must be a JSON object, got {type(doc).__name__}")
    if doc.get("v") != VERSION:
        raise BadEntry(f"unsupported envelope version {doc.get('v')!r} (expected {VERSION})")
    return doc


#: An envelope in the plain form whose strings need no unescaping and whose payload is an
#: int or such a string, as `encode_plain` writes it: its id, queue, payload (int, or
#: str), submission time and attempts. A JSON number matches as `json` reads it (the
#: payload an int of at most 18 digits, the time a float with a fraction).
_PLAIN_ENVELOPE = re.compile(
    r'\{"v":1,"id":"([^"\\\x00-\x1f]+)","queue":"([^"\\\x00-\x1f]*)",'
    r'"payload":(?:(-?(?:0|[1-9][0-9]{0,17}))|"([^"\\\x00-\x1f]*)"),'
    r'"submitted_at":(-?(?:0|[1-9][0-9]*)\.[0-9]+(?:[eE][-+]?[0-9]+)?),'
    r'"expires_at":null,"attempts":(0|[1-9][0-9]{0,17}),"first_started":null\}'
).fullmatch


def decode_envelope(fields: Mapping[str, Any], queue: str, max_bytes: int) -> Task:
    """Parse and check a stream entry's fields (`id`, `env`) into a task record."""
    raw = fields.get("env")
    if type(raw) is str and len(raw) <= max_bytes:
        # The bulk of a queue's entries (`encode_plain`'s), read by one regular expression
        # match instead of the JSON scanner, with `_plain_task`'s checks; anything else,
        # or one that fails a check, takes the general way (which says why).
        # tests/redis/test_wire.py compares the two on random plain tasks.
        match = _PLAIN_ENVELOPE(raw)
        if match is not None:
            ident, named, number, text, submitted, attempts = match.groups()
            at = float(submitted)
            if (
                named == queue
                and len(ident) <= k.MAX_ID_LENGTH
                and _finite(at)
                and queue_of(ident) == queue
            ):
                read = new_task(
                    ident, queue, int(number) if number is not None else text, at, None, at
                )
                read.attempts = int(attempts)
                return read
    if raw is None:
        raise BadEntry(f"missing field 'env' (fields present: {sorted(map(str, fields))[:10]})")
    doc = _parse(raw, max_bytes)
    plain = _plain_task(doc, queue)
    if plain is not None:
        return plain
    task_id = doc.get("id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > k.MAX_ID_LENGTH:
        shown = task_id[: k.MAX_ID_LENGTH // 4] + "..." if isinstance(task_id, str) else task_id
        raise BadEntry(
            f"field 'id' must be a non-empty string of at most {k.MAX_ID_LENGTH} characters, "
            f"got {shown!r}"
        )
    if doc.get("queue") != queue:
        raise BadEntry(f"field 'queue' is {doc.get('queue')!r}, but the entry is in {queue!r}")
    if "payload" not in doc:
        raise BadEntry("missing field 'payload'")
    attempts = doc.get("attempts", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise BadEntry(f"field 'attempts' must be an int >= 0, got {attempts!r}")
    reply_to = doc.get("reply_to")  # written by older versions; checked, not used
    if reply_to is not None and not isinstance(reply_to, str):
        raise BadEntry(f"field 'reply_to' must be a string or null, got {reply_to!r}")
    submitted_at = _number(doc, "submitted_at", optional=False)
    assert submitted_at is not None
    expires_at = _number(doc, "expires_at", optional=True)
    task: Task
    if doc.get("run") is not None:
        run, route, stage, path = (
            doc.get("run"),
            doc.get("route"),
            doc.get("stage"),
            doc.get("path"),
        )
        if not isinstance(run, str) or not isinstance(route, str):
            raise BadEntry("fields 'run' and 'route' must be strings")
        if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < MAX_STAGES:
            raise BadEntry(f"field 'stage' must be an int in [0, {MAX_STAGES}), got {stage!r}")
        if not isinstance(path, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 10**PATH_DIGITS
            for i in path
        ):
            raise BadEntry(f"field 'path' must be a list of ints >= 0, got {path!r}")
        task = PipelineTask(
            task_id,
            queue,
            doc["payload"],
            submitted_at,
            expires_at,
            run=run,
            route=route,
            stage=stage,
            path=tuple(path),
        )
    else:
        task = Task(task_id, queue, doc["payload"], submitted_at, expires_at)
    task.attempts = attempts
    task.first_started = _number(doc, "first_started", optional=True)
    if "trace" in doc:
        task.trace = parse_trace(doc["trace"])
    if "priority" in doc:
        task.priority = parse_priority(doc["priority"])
    if "tenant" in doc:
        tenant = parse_tenant(doc["tenant"])
        if tenant is None:
            raise BadEntry(f"field 'tenant' must be a printable name, got {doc['tenant']!r}")
        task.tenant = tenant
    if queue_of(task_id) != queue:  # its record would be under another queue's keys
        raise BadEntry(f"task id {task_id!r} does not name the queue {queue!r} (<queue>:<unique>)")
    return task


#: The fields of an envelope `encode_plain` writes (a task with nothing optional).
_PLAIN_FIELDS = 8
_finite = math.isfinite


def _plain_task(doc: dict[str, Any], queue: str) -> Task | None:
    """The task of an envelope in the plain form (`encode_plain`'s, the bulk of a queue's
    entries: no pipeline, trace, priority, tenant, deadline or earlier start), checked as
    `decode_envelope` checks it, with fewer steps (this runs once per task claimed); None
    for an envelope in any other form, or one that fails a check (`decode_envelope`'s
    own checks then say why)."""
    if len(doc) != _PLAIN_FIELDS:
        return None
    task_id = doc.get("id")
    submitted_at = doc.get("submitted_at")
    attempts = doc.get("attempts")
    if (
        type(task_id) is not str
        or not task_id
        or len(task_id) > k.MAX_ID_LENGTH
        or type(submitted_at) is not float
        or not _finite(submitted_at)
        or type(attempts) is not int
        or attempts < 0
        or doc.get("queue") != queue
        or "payload" not in doc
        or "expires_at" not in doc
        or "first_started" not in doc
        or doc["expires_at"] is not None
        or doc["first_started"] is not None
        or queue_of(task_id) != queue
    ):
        return None
    task = new_task(task_id, queue, doc["payload"], submitted_at, None, submitted_at)
    task.attempts = attempts
    return task


def _float(value: float) -> str:
    """A finite float as `dumps` writes it (its repr)."""
    text = float.__repr__(value)
    if text in ("nan", "inf", "-inf"):
        raise ValueError(f"Out of range float values are not JSON compliant: {text}")
    return text


def _plain_payload(payload: Any) -> str:
    kind = type(payload)
    if kind is int:
        return int.__repr__(payload)
    if kind is str:
        return str(_string(payload))
    return dumps(payload)


def _plain_result(result: int | str | bool | None) -> str:
    """A plain result (`_PLAIN_RESULTS`) as `dumps` writes it."""
    if result is None:
        return "null"
    if result is True:
        return "true"
    if result is False:
        return "false"
    return _plain_payload(result)


def encode_plain(task: Task) -> tuple[str, str] | None:
    """A task's envelope and record meta, as `encode_envelope` and `encode_meta` write
    them, without building either document: for a task that is no pipeline stage and has
    no trace, priority or tenant (the bulk of a `submit_many`). None for any other task
    (use those two functions)."""
    if (
        type(task) is not Task
        or getattr(task, "trace", None)
        or getattr(task, "priority", 0)
        or getattr(task, "tenant", None) is not None
        or type(task.submitted_at) is not float
        or task.first_started is not None
        or type(task.attempts) is not int
        or type(task.id) is not str
        or type(task.queue) is not str
    ):
        return None
    expires = task.expires_at
    if expires is None:
        expires_text = "null"
    elif type(expires) is float:
        expires_text = _float(expires)
    else:
        return None
    times = f'"submitted_at":{_float(task.submitted_at)},"expires_at":{expires_text}'
    attempts = f'"attempts":{task.attempts}'
    envelope = (
        f'{{"v":{VERSION},"id":{_string(task.id)},"queue":{_string(task.queue)},'
        f'"payload":{_plain_payload(task.payload)},{times},{attempts},"first_started":null}}'
    )
    return envelope, f"{{{times},{attempts}}}"


# -- records: what Redis keeps of a task for lookups and outcomes ---------------------------


def encode_meta(task: Task) -> str:
    """The record's `m` field: what a lookup reports besides the outcome."""
    doc: dict[str, Any] = {
        "submitted_at": task.submitted_at,
        "expires_at": task.expires_at,
        "attempts": task.attempts,
    }
    priority = priority_of(task)
    if priority:
        doc["priority"] = priority
    tenant = tenant_of(task)
    if tenant is not None:
        doc["tenant"] = tenant
    if isinstance(task, PipelineTask):
        if task.run is None:
            doc.update(kind="run", route=task.route)
        else:
            doc.update(run=task.run, route=task.route, stage=task.stage, path=list(task.path))
    return dumps(doc)


def cap_error(error: ErrorInfo | None) -> ErrorInfo | None:
    """The error as stored: message and traceback cut to their caps."""
    if error is None:
        return None
    message, tb = error.message, error.traceback
    if len(message) <= k.MAX_MESSAGE and len(tb) <= k.MAX_TRACEBACK:
        return error
    if len(message) > k.MAX_MESSAGE:
        message = message[: k.MAX_MESSAGE - 3] + "..."
    if len(tb) > k.MAX_TRACEBACK:
        tb = "...\n" + tb[-(k.MAX_TRACEBACK - 4) :]  # the innermost frames matter most
    return ErrorInfo(error.type[: k.MAX_MESSAGE], message, tb)


def error_doc(error: ErrorInfo | None) -> dict[str, str] | None:
    error = cap_error(error)
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def error_from_doc(doc: Any) -> ErrorInfo | None:
    if not isinstance(doc, dict):
        return None
    return ErrorInfo(
        str(doc.get("type", "")), str(doc.get("message", "")), str(doc.get("traceback", ""))
    )


_SUCCEEDED = TaskState.SUCCEEDED
_PLAIN_RESULTS = (int, str, bool, type(None))


def encode_outcome(task: Task) -> str:
    """The record's `o` field once the task is final (run.lua writes the same for a run)."""
    result = task.result
    if (
        task.state is _SUCCEEDED
        and type(result) in _PLAIN_RESULTS
        and task.error is None
        and type(task) is Task
        and type(task.attempts) is int
        and type(task.deliveries) is int
        and type(task.finished_at) is float
    ):
        # The common case (a plain task succeeded with plain data), as `dumps` writes it,
        # without building the document (this runs once per task).
        return (
            f'{{"state":"succeeded","result":{_plain_result(result)},"error":null,'
            f'"attempts":{int.__repr__(task.attempts)},'
            f'"deliveries":{int.__repr__(task.deliveries)},'
            f'"finished_at":{_float(task.finished_at)},"stage":0,"fanned":false}}'
        )
    return dumps(
        {
            "state": task.state.value,
            "result": task.result,
            "error": error_doc(task.error),
            "attempts": task.attempts,
            "deliveries": task.deliveries,
            "finished_at": task.finished_at,
            "stage": task.stage,
            "fanned": task.fanned,
        }
    )


def apply_outcome(task: Task, raw: str) -> None:
    """Copy a stored outcome onto a task record."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("an outcome must be a JSON object")
    task.state = TaskState(doc["state"])
    task.result = doc.get("result")
    task.error = error_from_doc(doc.get("error"))
    task.attempts = int(doc.get("attempts") or 0)
    task.deliveries = int(doc.get("deliveries") or 0)
    finished = doc.get("finished_at")
    task.finished_at = float(finished) if finished is not None else None
    if isinstance(task, PipelineTask):
        task.stage = int(doc.get("stage") or 0)
        task.fanned = bool(doc.get("fanned"))


def task_from_record(
    task_id: str, state: str, meta: str | None, outcome: str | None, working: Any = None
) -> Task:
    """A task record as `lookup` reports it (no payload: the entry carries that); `working`
    is the record's `w` (a worker runs it now)."""
    doc = json.loads(meta) if meta else {}
    if not isinstance(doc, dict):
        doc = {}
    submitted_at = float(doc.get("submitted_at") or 0.0)
    expires = doc.get("expires_at")
    expires_at = float(expires) if expires is not None else None
    task: Task
    if doc.get("kind") == "run":
        route = str(doc.get("route") or queue_of(task_id))
        task = PipelineTask(task_id, route, None, submitted_at, expires_at, route=route)
    elif doc.get("run") is not None:
        task = PipelineTask(
            task_id,
            queue_of(task_id),
            None,
            submitted_at,
            expires_at,
            run=str(doc["run"]),
            route=str(doc.get("route") or ""),
            stage=int(doc.get("stage") or 0),
            path=tuple(int(i) for i in doc.get("path") or ()),
        )
    else:
        task = Task(task_id, queue_of(task_id), None, submitted_at, expires_at)
    task.attempts = int(doc.get("attempts") or 0)
    if "priority" in doc:
        task.priority = parse_priority(doc["priority"])
    tenant = parse_tenant(doc.get("tenant"))
    if tenant is not None:
        task.tenant = tenant
    task.state = TaskState(state)
    if task.state is TaskState.PENDING and working:
        task.state = TaskState.RUNNING
        task.attempts += 1  # the attempt running now
    if task.state.final and outcome:
        apply_outcome(task, outcome)
    return task


def task_from_outcome(task_id: str, outcome: str) -> Task:
    """A task record from an outcome alone (a notice's copy): the outcome's fields, and
    none of what a lookup adds (times, attempts of a task without an outcome)."""
    task = Task(task_id, queue_of(task_id), None, 0.0)
    apply_outcome(task, outcome)
    if not task.state.final:
        raise ValueError(f"a notice's outcome must be final, got {task.state.value!r}")
    return task


def path_key(path: tuple[int, ...]) -> str:
    """A branch's position as text that sorts like the path itself."""
    return ".".join(f"{i:0{PATH_DIGITS}d}" for i in path)


# -- dead letters ---------------------------------------------------------------------------


def encode_dead_letter(letter: DeadLetter) -> str:
    doc = {
        "id": letter.id,
        "queue": letter.queue,
        "payload": letter.payload,
        "state": letter.state.value,
        "error": error_doc(letter.error),
        "attempts": letter.attempts,
        "deliveries": letter.deliveries,
        "submitted_at": letter.submitted_at,
        "failed_at": letter.failed_at,
    }
    if letter.priority:
        doc["priority"] = letter.priority
    if letter.tenant is not None:
        doc["tenant"] = letter.tenant
    return dumps(doc)


def letter_of(task: Task, queue: str) -> str:
    """The dead letter of a task that ended FAILED or DEAD_LETTERED."""
    return encode_dead_letter(
        DeadLetter(
            id=task.id,
            queue=queue,
            payload=task.payload,
            state=task.state,
            error=task.error,
            attempts=task.attempts,
            deliveries=task.deliveries,
            submitted_at=task.submitted_at,
            failed_at=task.finished_at or 0.0,
            priority=priority_of(task),
            tenant=tenant_of(task),
        )
    )


def bad_entry_letter(queue: str, fields: Mapping[Any, Any], reason: str, now: float) -> str:
    """The dead letter of an entry that is not a task of ours: its fields, capped."""
    kept = list(fields.items())[: k.BAD_ENTRY_FIELDS]
    payload = {
        str(key)[: k.BAD_ENTRY_NAME_CHARS]: str(value)[: k.BAD_ENTRY_FIELD_CHARS]
        for key, value in kept
    }
    return encode_dead_letter(
        DeadLetter(
            id="",
            queue=queue,
            payload=payload,
            state=TaskState.DEAD_LETTERED,
            error=ErrorInfo("BadEntry", reason),
            attempts=0,
            deliveries=1,
            submitted_at=0.0,
            failed_at=now,
        )
    )


def decode_dead_letter(raw: str) -> DeadLetter:
    """A dead letter from the stream; anyone can write there, so a bad one is listed as
    unreadable rather than failing the listing."""
    try:
        doc = json.loads(raw)
        return DeadLetter(
            id=str(doc.get("id", "")),
            queue=str(doc.get("queue", "")),
            payload=doc.get("payload"),
            state=TaskState(doc.get("state", "dead-lettered")),
            error=error_from_doc(doc.get("error")),
            attempts=int(doc.get("attempts") or 0),
            deliveries=int(doc.get("deliveries") or 0),
            submitted_at=float(doc.get("submitted_at") or 0),
            failed_at=float(doc.get("failed_at") or 0),
            priority=parse_priority(doc.get("priority")),
            tenant=parse_tenant(doc.get("tenant")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return DeadLetter(
            id="",
            queue="",
            payload=raw[: k.BAD_ENTRY_FIELD_CHARS],
            state=TaskState.DEAD_LETTERED,
            error=ErrorInfo("BadEntry", f"unreadable dead letter ({type(exc).__name__})"),
            attempts=0,
            deliveries=0,
            submitted_at=0.0,
            failed_at=0.0,
        )

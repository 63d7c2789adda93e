"""The JSON wire format of envelopes and outcomes, and the validation of what we read.

Anything read from a broker is untrusted: it may have been written by another program,
an older version, or by hand. `decode_envelope` checks every field and raises `BadEntry`
with the reason; the broker dead-letters such entries instead of running them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._receipt import PipelineReceipt
from .._task import DeadLetter, Envelope, ErrorInfo, TaskState

VERSION = 1
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class BadEntry(ValueError):
    """An entry that cannot be a task; the message says why."""


def encode_envelope(env: Envelope, reply_to: str | None) -> str:
    return _dumps(
        {
            "v": VERSION,
            "id": env.id,
            "queue": env.queue,
            "payload": env.payload,
            "submitted_at": env.submitted_at,
            "expires_at": env.expires_at,
            "attempts": env.attempts,
            "first_started": env.first_started,
            "reply_to": reply_to,
            **(
                {}
                if env.pipeline is None
                else {
                    "run": env.pipeline,
                    "route": env.route,
                    "stage": env.stage,
                    "path": list(env.path),
                }
            ),
        }
    )


def _number(doc: dict[str, Any], key: str, *, optional: bool) -> float | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadEntry(f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


def decode_envelope(
    fields: dict[str, Any], queue: str, max_bytes: int
) -> tuple[Envelope, str | None]:
    """Parse and check a stream entry's fields; returns the envelope and its reply stream."""
    raw = fields.get("env")
    if raw is None:
        raise BadEntry(f"missing field 'env' (fields present: {sorted(fields)[:10]})")
    if not isinstance(raw, str):
        raise BadEntry(f"field 'env' must be text, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise BadEntry(f"envelope is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BadEntry(f"field 'env' is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadEntry(f"envelope must be a JSON object, got {type(doc).__name__}")
    if doc.get("v") != VERSION:
        raise BadEntry(f"unsupported envelope version {doc.get('v')!r} (expected {VERSION})")
    task_id = doc.get("id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > 200:
        raise BadEntry(f"field 'id' must be a non-empty string, got {task_id!r}")
    if doc.get("queue") != queue:
        raise BadEntry(f"field 'queue' is {doc.get('queue')!r}, but the entry is in {queue!r}")
    if "payload" not in doc:
        raise BadEntry("missing field 'payload'")
    attempts = doc.get("attempts", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise BadEntry(f"field 'attempts' must be an int >= 0, got {attempts!r}")
    reply_to = doc.get("reply_to")
    if reply_to is not None and not isinstance(reply_to, str):
        raise BadEntry(f"field 'reply_to' must be a string or null, got {reply_to!r}")
    submitted_at = _number(doc, "submitted_at", optional=False)
    assert submitted_at is not None
    expires_at = _number(doc, "expires_at", optional=True)
    env: Envelope
    if doc.get("run") is not None:
        run, route, stage, path = (
            doc.get("run"),
            doc.get("route"),
            doc.get("stage"),
            doc.get("path"),
        )
        if not isinstance(run, str) or not isinstance(route, str):
            raise BadEntry("fields 'run' and 'route' must be strings")
        if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < 1000:
            raise BadEntry(f"field 'stage' must be an int in [0, 1000), got {stage!r}")
        if not isinstance(path, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in path
        ):
            raise BadEntry(f"field 'path' must be a list of ints >= 0, got {path!r}")
        env = PipelineReceipt(
            task_id,
            queue,
            doc["payload"],
            submitted_at,
            submitted_at,
            expires_at,
            pipeline=run,
            route=route,
            stage=stage,
            path=tuple(path),
        )
    else:
        env = Envelope(task_id, queue, doc["payload"], submitted_at, submitted_at, expires_at)
    env.attempts = attempts
    env.first_started = _number(doc, "first_started", optional=True)
    return env, reply_to


def path_key(path: tuple[int, ...]) -> str:
    """A branch's position as text that sorts like the path itself."""
    return ".".join(f"{i:06d}" for i in path)


def error_doc(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def error_from_doc(doc: Any) -> ErrorInfo | None:
    if not isinstance(doc, dict):
        return None
    return ErrorInfo(
        str(doc.get("type", "")), str(doc.get("message", "")), str(doc.get("traceback", ""))
    )


def encode_dead_letter(letter: DeadLetter) -> str:
    return _dumps(
        {
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
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return DeadLetter(
            id="",
            queue="",
            payload=raw[:4096],
            state=TaskState.DEAD_LETTERED,
            error=ErrorInfo("BadEntry", f"unreadable dead letter ({type(exc).__name__})"),
            attempts=0,
            deliveries=0,
            submitted_at=0.0,
            failed_at=0.0,
        )


def encode_outcome(env: Envelope) -> str:
    return _dumps(
        {
            "state": env.state.value,
            "queue": env.queue,
            "result": env.value,
            "error": error_doc(env.error),
            "attempts": env.attempts,
            "deliveries": env.deliveries,
            "submitted_at": env.submitted_at,
            "finished_at": env.finished_at,
            "stage": env.stage,
            "fanned": env.fanned,
        }
    )


def apply_outcome(env: Envelope, raw: str) -> None:
    """Copy a stored outcome onto a local envelope (a receipt's view of the task)."""
    doc = json.loads(raw)
    env.state = TaskState(doc["state"])
    env.queue = str(doc.get("queue") or env.queue)
    env.value = doc.get("result")
    env.error = error_from_doc(doc.get("error"))
    env.attempts = int(doc.get("attempts") or 0)
    env.deliveries = int(doc.get("deliveries") or 0)
    env.finished_at = doc.get("finished_at")
    if isinstance(env, PipelineReceipt):  # other tasks are never in a pipeline
        env.stage = int(doc.get("stage") or 0)
        env.fanned = bool(doc.get("fanned"))
    if env.event is not None:
        env.event.set()

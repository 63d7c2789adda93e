"""Rows and records: how a task is stored in the `tasks` table, and read back.

Payloads, results and errors are JSON text. Anything read back is checked where it
becomes a record: a row another program wrote by hand that does not parse becomes a task
with an unreadable payload, which the worker dead-letters (its payload does not structure).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..._task import (
    DeadLetter,
    ErrorInfo,
    PipelineTask,
    Task,
    TaskState,
    parse_priority,
    parse_tenant,
    parse_trace,
    priority_of,
    tenant_of,
    trace_of,
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads
#: The states a task has before its outcome, as stored.
OPEN_STATES = ("pending", "scheduled", "running")
STATES = {state.value: state for state in TaskState}

#: The columns a record is made from, in `record()`'s order.
COLUMNS = (
    "id, queue, state, payload, submitted_at, expires_at, attempts, deliveries, "
    "first_started, result, error, finished_at, run, route, stage, path, fanned, trace, "
    "priority, tenant"
)


def dumps(data: Any) -> str:
    """Compact JSON (the engine has checked that the data is JSON-able)."""
    return _dumps(data)


def loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return _loads(text)
    except ValueError:
        return {"unreadable": text[:4096]}


def error_text(error: ErrorInfo | None) -> str | None:
    if error is None:
        return None
    return _dumps({"type": error.type, "message": error.message, "traceback": error.traceback})


def error_of(text: str | None) -> ErrorInfo | None:
    if text is None:
        return None
    doc = loads(text)
    if not isinstance(doc, dict):
        return ErrorInfo("BadEntry", f"unreadable error {text[:200]!r}")
    return ErrorInfo(
        str(doc.get("type", "")), str(doc.get("message", "")), str(doc.get("traceback", ""))
    )


def path_text(path: tuple[int, ...]) -> str | None:
    return ".".join(map(str, path)) if path else None


def path_of(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def path_key(path: tuple[int, ...]) -> str:
    """A branch's position as text that sorts like the path itself."""
    return ".".join(f"{i:06d}" for i in path)


def ttl_end(now: float, ttl: float) -> float | None:
    """When an outcome kept `ttl` seconds from `now` is forgotten (None: never)."""
    return now + ttl if math.isfinite(ttl) else None


def task_row(task: Task) -> tuple[Any, ...]:
    """The values of a new task's columns, for `INSERT_TASK` (after id, queue, state,
    avail_at)."""
    return (
        _dumps(task.payload),
        task.submitted_at,
        task.expires_at,
        task.attempts,
        task.first_started,
        task.run,
        task.route,
        task.stage,
        path_text(task.path),
        _trace_text(task),
        priority_of(task),
        tenant_of(task) or DEFAULT_TENANT,
    )


def _trace_text(task: Task) -> str | None:
    trace = trace_of(task)
    return _dumps(trace) if trace else None


#: The `tenant` column of a task without one (the queue's default tenant): tenant names
#: are never empty.
DEFAULT_TENANT = ""
#: Where `task_row` puts the tenant.
TENANT_INDEX = 11

INSERT_TASK = (
    "INSERT OR IGNORE INTO tasks (id, queue, state, avail_at, payload, submitted_at, "
    "expires_at, attempts, first_started, run, route, stage, path, trace, priority, tenant) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: A new ready task of a queue in fair mode: in its flow at `fseq` (the last value).
INSERT_FAIR = (
    "INSERT OR IGNORE INTO tasks (id, queue, state, payload, submitted_at, "
    "expires_at, attempts, first_started, run, route, stage, path, trace, priority, tenant, "
    "fseq) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def record(row: Any, payload: bool = True) -> Task:
    """The record a row stores (the payload left as None unless `payload`)."""
    (
        task_id,
        queue,
        state,
        payload_text,
        submitted_at,
        expires_at,
        attempts,
        deliveries,
        first_started,
        result,
        error,
        finished_at,
        run,
        route,
        stage,
        path,
        fanned,
        trace,
        priority,
        tenant,
    ) = row
    data = loads(payload_text) if payload else None
    task: Task
    if route is None:
        task = Task(task_id, queue, data, submitted_at, expires_at)
    else:
        task = PipelineTask(
            task_id,
            queue,
            data,
            submitted_at,
            expires_at,
            run=run,
            route=route,
            stage=stage,
            path=path_of(path),
        )
        task.fanned = bool(fanned)
    task.state = STATES.get(state, TaskState.PENDING)
    task.attempts = attempts
    task.deliveries = deliveries
    task.first_started = first_started
    if result is not None:
        task.result = loads(result)
    task.error = error_of(error)
    task.finished_at = finished_at
    if trace is not None:
        task.trace = parse_trace(loads(trace))
    if priority:
        # A due retry of a `retry_ahead` queue waits half a level up (`_ops.retry_at`).
        task.priority = parse_priority(int(priority) if type(priority) is float else priority)
    if tenant:
        named = parse_tenant(tenant)
        if named is not None:
            task.tenant = named
    return task


def letter_text(
    task: Task, queue: str, state: TaskState, error: ErrorInfo | None, failed_at: float
) -> str:
    doc = {
        "id": task.id,
        "queue": queue,
        "payload": task.payload,
        "state": state.value,
        "error": None if error is None else loads(error_text(error)),
        "attempts": task.attempts,
        "deliveries": task.deliveries,
        "submitted_at": task.submitted_at,
        "failed_at": failed_at,
    }
    priority = priority_of(task)
    if priority:
        doc["priority"] = priority
    tenant = tenant_of(task)
    if tenant is not None:
        doc["tenant"] = tenant
    return _dumps(doc)


def letter_of(text: str) -> DeadLetter:
    """A stored dead letter; one that does not parse is listed as unreadable (with an
    empty id, so it is never requeued) rather than failing the listing."""
    try:
        doc = _loads(text)
        error = doc.get("error")
        return DeadLetter(
            id=str(doc["id"]),
            queue=str(doc["queue"]),
            payload=doc.get("payload"),
            state=TaskState(doc.get("state", "dead-lettered")),
            error=None if error is None else error_of(_dumps(error)),
            attempts=int(doc.get("attempts") or 0),
            deliveries=int(doc.get("deliveries") or 0),
            submitted_at=float(doc.get("submitted_at") or 0.0),
            failed_at=float(doc.get("failed_at") or 0.0),
            priority=parse_priority(doc.get("priority")),
            tenant=parse_tenant(doc.get("tenant")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return DeadLetter(
            id="",
            queue="",
            payload=text[:4096],
            state=TaskState.DEAD_LETTERED,
            error=ErrorInfo("BadEntry", f"unreadable dead letter ({type(exc).__name__})"),
            attempts=0,
            deliveries=0,
            submitted_at=0.0,
            failed_at=0.0,
        )

"""Tasks: their states, the record a broker stores, and the snapshot a receipt reports."""

from __future__ import annotations

import enum
import math
import traceback
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from ._results import Waiter


class TaskState(enum.Enum):
    """Where a task is. The last six are final: a task reaches exactly one of them."""

    PENDING = "pending"
    """Accepted, waiting for a worker."""
    SCHEDULED = "scheduled"
    """Waiting out a retry backoff or a delay; holds no worker."""
    RUNNING = "running"
    """A worker runs it now."""
    SUCCEEDED = "succeeded"
    """The handler returned: the result is kept (for the queue's `result_ttl`)."""
    FAILED = "failed"
    """The handler raised an error that is not retried (also kept as a dead letter)."""
    CANCELLED = "cancelled"
    """Cancelled through its receipt (`receipt.cancel()`), or at shutdown (memory://)."""
    EXPIRED = "expired"
    """Not started before its deadline."""
    DEAD_LETTERED = "dead-lettered"
    """Retries ran out, or it crashed its worker too often (poison), or it did not parse."""
    LOST = "lost"
    """The broker lost the task's record (a Redis restarted without persistence, a
    FLUSHALL): its fate is unknown. Only a shared broker reports it, never for a task
    whose outcome was stored."""

    #: Whether this is an outcome (a task reaches exactly one).
    final: bool


for _state in TaskState:
    # A plain attribute, not a property: it is read several times per task.
    _state.final = _state.value not in ("pending", "scheduled", "running")


def storable(text: str) -> str:
    """`text` as UTF-8 can hold it: a lone surrogate ("\\ud800", from bytes decoded with
    errors="surrogateescape", say) becomes its escape, where writing it to a broker would
    fail."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@attrs.frozen
class ErrorInfo:
    """A failure, as plain data (it crosses processes): type name, message, traceback."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        kind = type(exc)
        module = kind.__module__
        if module.startswith(("queueing.", "actors.")):
            module = module.split(".", 1)[0]  # the public path: queueing.TaskTimeout
        name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        tb = "".join(traceback.format_exception(exc, limit=8))
        try:
            message = str(exc)
        except Exception as broken:  # an exception class whose __str__ raises
            message = f"<str() of the {name} raised {type(broken).__name__}: {broken!r:.200}>"
        return cls(name, storable(message), storable(tb))


@attrs.frozen
class Progress:
    """How far a task's handler says it got (`Worker.progress`), as last published.

    `done` and `total` are the handler's own units (pages, bytes, rows); `total` is None
    when the handler does not know it. `at` is the wall-clock time of the report. A
    pipeline run's status carries the latest progress of its stage tasks, and `stage`
    names the stage (queue) that reported it (None for a task of a queue).
    """

    done: float
    total: float | None = None
    note: str | None = None
    at: float = 0.0
    stage: str | None = None

    @property
    def fraction(self) -> float | None:
        """`done / total`, within [0, 1]; None without a total."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


@attrs.frozen
class TaskStatus:
    """A snapshot of one task, as `receipt.status()` reports it."""

    id: str
    queue: str
    state: TaskState
    attempts: int
    deliveries: int
    submitted_at: float
    finished_at: float | None
    error: ErrorInfo | None
    stage: str | None = None
    progress: Progress | None = None
    """The last progress its handler reported and this process has seen (None: none)."""
    priority: int = 0
    """Its `submit(priority=)`: among waiting tasks of its queue, higher starts first."""
    tenant: str | None = None
    """Its `submit(tenant=)` (or `Queue(tenant=)`'s): waiting tasks are shared out fairly
    between tenants (docs/concepts/fair-share.md). None: the queue's default tenant."""


@attrs.frozen
class DeadLetter:
    """A task that ended in the dead-letter store, with why and when."""

    id: str
    queue: str
    payload: Any
    state: TaskState
    error: ErrorInfo | None
    attempts: int
    deliveries: int
    submitted_at: float
    failed_at: float
    priority: int = 0
    """Its `submit(priority=)`: a requeue submits it again with it."""
    tenant: str | None = None
    """Its tenant (`submit(tenant=)`): a requeue submits it again with it."""


_PENDING = TaskState.PENDING


class Task:
    """One task's record: what a broker stores, and what the engine works on.

    A broker creates records when it reads tasks back (`claim`, `lookup`) and fills in
    the outcome fields when it settles one. Fields:

    - `id`, `queue`, `payload` (plain JSON-able data), `submitted_at` (wall-clock seconds);
    - `expires_at`: the broker clock's time by which it must have started, or None;
    - `attempts`: handler runs so far; `first_started`: broker clock at the first run;
    - `deliveries`: times it was handed to a worker for the current attempt (a worker that
      crashed while running it counts); the poison limit reads it;
    - `state`, `result` (plain data), `error` (`ErrorInfo`), `finished_at` (wall clock):
      its outcome, once `state.final`;
    - `handle`: the broker's own, whatever it needs per task (a stream entry id, a row id,
      a delivery tag); the engine never reads it;
    - `trace`: the submitter's trace context (W3C `traceparent`/`tracestate` as a dict of
      strings) when tracing is on, for a broker to carry with the task; `progress`: the
      handler's last `Progress`; `priority`: its `submit(priority=)` when not 0 (a broker
      stores it and hands out waiting tasks of higher priority first); `tenant`: its
      `submit(tenant=)` (a broker stores it and shares waiting tasks out fairly between
      tenants: `Broker.claim`). Each starts unset (None, or 0 for `priority`: the slots
      are there either way, and a read of an unset slot costs CPython an `AttributeError`
      it makes and drops, several thousand instructions per task on the hot paths); read
      them with `trace_of`, `progress_of`, `priority_of` and `tenant_of`, which also
      answer for a record made without them.

    Tasks of a pipeline are `PipelineTask`s. Attributes starting with `_` belong to the
    engine (who waits for the outcome, the cancel scope of the run): brokers leave them
    alone. Slots only, for what every task uses: the garbage collector visits each one of
    every outstanding task.
    """

    __slots__ = (
        "__weakref__",  # the receipt side watches records weakly (shared brokers)
        "_born",
        "_scope",
        "_waiter",
        "attempts",
        "deliveries",
        "error",
        "expires_at",
        "finished_at",
        "first_started",
        "handle",
        "id",
        "payload",
        "priority",
        "progress",
        "queue",
        "result",
        "state",
        "submitted_at",
        "tenant",
        "trace",
    )

    # Set to their defaults in __init__ and `new_task`: see `trace_of`, `progress_of`,
    # `priority_of`, `tenant_of`.
    trace: dict[str, str] | None
    progress: Progress | None
    priority: int
    tenant: str | None

    # The pipeline fields, with their values for a task outside any pipeline (see
    # PipelineTask, which has slots for them).
    run: str | None = None
    """The id of the pipeline run this stage task belongs to."""
    route: str | None = None
    """The pipeline's name (for a stage task and for the run's own record)."""
    stage: int = 0
    """The stage's index in its pipeline (for a run's record: the stage that ended it)."""
    path: tuple[int, ...] = ()
    """Where a branch sits among fanned-out tasks (one index per fan-out)."""
    fanned: bool = False
    """A run's record: its result is the list of its branches' results."""

    def __init__(
        self,
        id: str,
        queue: str,
        payload: Any,
        submitted_at: float,
        expires_at: float | None = None,
    ) -> None:
        self.id = id
        self.queue = queue
        self.payload = payload
        self.submitted_at = submitted_at
        self.expires_at = expires_at
        self.state = _PENDING
        self.attempts = 0
        self.deliveries = 0
        self.first_started: float | None = None
        self.result: Any = None
        self.error: ErrorInfo | None = None
        self.finished_at: float | None = None
        self.handle: Any = None
        self._waiter: Waiter | None = None
        self._scope: trio.CancelScope | None = None
        self._born = submitted_at  # on the broker clock, for latency (the engine sets it)
        self.trace = None
        self.progress = None
        self.priority = MIN_PRIORITY
        self.tenant = None

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.queue} {self.state.value}>"

    @property
    def is_run(self) -> bool:
        """Whether this is a pipeline run's own record (not a task of a queue)."""
        return self.route is not None and self.run is None

    def settle(self, state: TaskState, result: Any, error: ErrorInfo | None, now: float) -> None:
        """Record the outcome on this record (a broker's `settle` calls it)."""
        self.state = state
        self.result = result
        self.error = error
        self.finished_at = now


_new = object.__new__


def new_task(
    id: str, queue: str, payload: Any, submitted_at: float, expires_at: float | None, born: float
) -> Task:
    """`Task(id, queue, payload, submitted_at, expires_at)` with `_born` set to `born`, for
    the engine's submit (once per task): `object.__new__` and the stores cost less than a
    class call, which looks `__init__` up and calls it from C (bench/per_task_cost.py).
    The same fields as `Task.__init__` sets (tests/queueing/test_fast_paths.py compares)."""
    task: Task = _new(Task)
    task.id = id
    task.queue = queue
    task.payload = payload
    task.submitted_at = submitted_at
    task.expires_at = expires_at
    task.state = _PENDING
    task.attempts = 0
    task.deliveries = 0
    task.first_started = None
    task.result = None
    task.error = None
    task.finished_at = None
    task.handle = None
    task._waiter = None
    task._scope = None
    task._born = born
    task.trace = None
    task.progress = None
    task.priority = MIN_PRIORITY
    task.tenant = None
    return task


def trace_of(task: Task) -> dict[str, str] | None:
    """The trace context a task carries, if any (see `Task`)."""
    return getattr(task, "trace", None)


#: Entries, and characters of one key or value, a carried trace context may have (W3C
#: `traceparent` is 55 characters; `tracestate` at most 512).
MAX_TRACE_ENTRIES = 4
MAX_TRACE_CHARS = 512


def parse_trace(value: Any) -> dict[str, str] | None:
    """A trace context read back from storage, if it is one (a dict of a few short
    strings); anything else is dropped, never an error: tracing is advisory."""
    if not isinstance(value, dict) or not value or len(value) > MAX_TRACE_ENTRIES:
        return None
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            return None
        if len(key) > MAX_TRACE_CHARS or len(item) > MAX_TRACE_CHARS:
            return None
    return value


#: Characters of a stored progress note read back (`Worker.progress` writes fewer).
MAX_NOTE_READ = 4096


def progress_doc(progress: Progress) -> dict[str, Any]:
    """A progress as plain data, for a broker to store."""
    doc = {"done": progress.done, "total": progress.total, "note": progress.note, "at": progress.at}
    if progress.stage is not None:
        doc["stage"] = progress.stage
    return doc


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def progress_from_doc(doc: Any) -> Progress | None:
    """A progress read back from storage, if it is one (leniently: anyone could have
    written there); None if it is not."""
    if not isinstance(doc, dict):
        return None
    done = _finite(doc.get("done"))
    if done is None:
        return None
    note = doc.get("note")
    stage = doc.get("stage")
    return Progress(
        done,
        _finite(doc.get("total")),
        note[:MAX_NOTE_READ] if isinstance(note, str) else None,
        _finite(doc.get("at")) or 0.0,
        stage[:MAX_NOTE_READ] if isinstance(stage, str) else None,
    )


def progress_of(task: Task) -> Progress | None:
    """The last progress recorded on a task's record, if any (see `Task`)."""
    return getattr(task, "progress", None)


#: The lowest and highest `submit(priority=)`; the lowest is the default. Ten levels: every
#: broker keeps one ordered store per level in use (docs/concepts/priorities.md).
MIN_PRIORITY = 0
MAX_PRIORITY = 9


def priority_of(task: Task) -> int:
    """A task's priority (`MIN_PRIORITY` unless it was submitted with one; see `Task`)."""
    return getattr(task, "priority", MIN_PRIORITY)


def parse_priority(value: Any) -> int:
    """A priority read back from storage: an int within the range, else the default
    (anyone could have written there; an out-of-range level is never made up)."""
    if type(value) is int and MIN_PRIORITY <= value <= MAX_PRIORITY:
        return value
    if isinstance(value, str | bytes) and value.isdigit():
        number = int(value)
        if MIN_PRIORITY <= number <= MAX_PRIORITY:
            return number
    return MIN_PRIORITY


#: The most characters of a tenant name (`submit(tenant=)`).
MAX_TENANT = 128


def tenant_of(task: Task) -> str | None:
    """A task's tenant (None unless it was submitted with one; see `Task`)."""
    return getattr(task, "tenant", None)


def parse_tenant(value: Any) -> str | None:
    """A tenant read back from storage: a valid name, else None (anyone could have written
    there; a malformed one is dropped, never an error)."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and 0 < len(value) <= MAX_TENANT and value.isprintable():
        return value
    return None


class PipelineTask(Task):
    """A stage task of a pipeline run, or a run's own record (`run` is None for that)."""

    __slots__ = ("fanned", "path", "route", "run", "stage")

    def __init__(
        self,
        id: str,
        queue: str,
        payload: Any,
        submitted_at: float,
        expires_at: float | None = None,
        *,
        run: str | None = None,
        route: str | None = None,
        stage: int = 0,
        path: tuple[int, ...] = (),
    ) -> None:
        super().__init__(id, queue, payload, submitted_at, expires_at)
        self.run = run
        self.route = route
        self.stage = stage
        self.path = path
        self.fanned = False

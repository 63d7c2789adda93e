"""Tasks: their states, the envelope a broker carries, and the snapshot a receipt reports."""

from __future__ import annotations

import enum
import traceback
from typing import Any

import attrs
import trio


class TaskState(enum.Enum):
    """Where a task is. The last five are final: a task reaches exactly one of them."""

    PENDING = "pending"
    """Accepted, waiting for a worker."""
    SCHEDULED = "scheduled"
    """Waiting out a retry backoff or a delay; holds no worker."""
    RUNNING = "running"
    """A worker runs it now."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """The handler raised an error that is not retried (also kept as a dead letter)."""
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Not started before its deadline."""
    DEAD_LETTERED = "dead-lettered"
    """Retries ran out, or it crashed its worker too often (poison), or it did not parse."""

    #: Whether this is an outcome (a task reaches exactly one).
    final: bool


for _state in TaskState:
    # A plain attribute, not a property: it is read several times per task.
    _state.final = _state.value not in ("pending", "scheduled", "running")


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
        return cls(name, str(exc), tb)


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


class Envelope:
    """One task as the broker holds it: the wire fields plus, in memory, its live state.

    Slots only for what every task uses (the garbage collector visits each slot of every
    outstanding task, and `__init__` stores each). A pipeline's tasks carry four more
    fields: they are `PipelineReceipt`s, and other tasks read the class defaults below.
    """

    __slots__ = (
        "__weakref__",
        "_system",
        "attempts",
        "deliveries",
        "entry",
        "error",
        "event",
        "expires_at",
        "finished_at",
        "first_started",
        "id",
        "kept_until",
        "payload",
        "queue",
        "scope",
        "state",
        "submitted_at",
        "submitted_clock",
        "value",
    )

    # Pipeline fields, with their values for a task outside any pipeline (see above).
    pipeline: str | None = None  # the id of the pipeline run this stage task belongs to
    route: str | None = None  # the pipeline's name
    stage: int = 0
    path: tuple[int, ...] = ()
    fanned: bool = False  # a pipeline run whose result is the list of fanned-out results

    def __init__(
        self,
        id: str,
        queue: str,
        payload: Any,
        submitted_at: float,
        submitted_clock: float,
        expires_at: float | None = None,
        system: Any = None,
    ) -> None:
        self.id = id
        self.queue = queue
        self.payload = payload
        self.submitted_at = submitted_at
        self.submitted_clock = submitted_clock
        self.expires_at = expires_at
        self._system: Any = system  # the QueueSystem it was submitted through (receipts)
        self.state = TaskState.PENDING
        self.attempts = 0
        self.deliveries = 0
        self.first_started: float | None = None
        self.value: Any = None  # the result, as plain data
        self.error: ErrorInfo | None = None
        self.finished_at: float | None = None
        self.kept_until = 0.0  # when the broker may forget its outcome (memory broker)
        self.event: trio.Event | None = None  # set at the outcome, made when someone waits
        self.scope: trio.CancelScope | None = None
        self.entry: str | None = None  # the broker's handle on it (a stream entry id)

    def __repr__(self) -> str:
        return f"<Envelope {self.id} {self.queue} {self.state.value}>"

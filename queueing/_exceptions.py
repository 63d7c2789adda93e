"""Exceptions raised by processing queues.

The tree::

    QueueingError
    ├── QueueFull            (also actors.MailboxFull's sibling) maxsize reached, policy REJECT
    ├── PayloadTooLarge      (also ValueError) serialized payload over max_payload
    ├── PayloadError         (also TypeError) the converter cannot handle the payload
    ├── UnknownQueue         (also LookupError) no queue or pipeline of that name
    ├── UnknownTask          (also LookupError) no task of that id (or its result expired)
    ├── InvalidQueue         (also ValueError) a bad Queue/Pipeline/RetryPolicy setting
    ├── SystemStopping       the system is shutting down and takes no new tasks
    ├── ResultTimeout        (also TimeoutError) no result within result(timeout=...)
    ├── DrainTimeout         (also TimeoutError) queues still busy after drain(timeout=...)
    ├── WorkersCrashed       (also actors.SupervisorGaveUp) a queue's workers crashed past
    │                        its restart intensity; the system stopped
    ├── BrokerError          the broker failed (connection, protocol)
    │   └── BrokerOutOfMemory  the broker refused to store the tasks: out of memory
    └── TaskFailed           the task ended without a result
        ├── TaskCancelled    cancelled through its receipt (or by shutdown)
        ├── TaskExpired      not started before its deadline
        └── TaskLost         the broker lost its record: its fate is unknown

    Transient                base for errors a handler raises to ask for a retry
    └── TaskTimeout          (also TimeoutError) the handler ran past the queue's timeout
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors import SupervisorGaveUp


class QueueingError(Exception):
    """Root of every error raised by `queueing`.

    Attributes (set by `submit_many`, and by `submit` for a `BrokerError`; empty otherwise):
        accepted: receipts of the tasks that were accepted: they run.
        unknown: receipts of tasks whose acceptance is unknown: the broker got them but no
            answer came back (a stall past the per-call limit, a lost connection). Each may
            or may not run; `await receipt.status()` tells once the broker answers again
            (`UnknownTask`: it never got in). Submitted with a `key`, submitting it again is
            safe: it returns the same task instead of a second one.
        rejected: the payloads that were certainly not accepted (refused, or never sent):
            submitting them again cannot run them twice.
    """

    accepted: Sequence[Any] = ()
    unknown: Sequence[Any] = ()
    rejected: Sequence[Any] = ()


class QueueFull(QueueingError):
    """The queue holds `maxsize` outstanding tasks (or the task's tenant holds the queue's
    `tenant_maxsize`) and would not wait (longer).

    Attributes:
        queue: the queue.
        maxsize: the limit that refused the task: the queue's `maxsize`, or its
            `tenant_maxsize` when `tenant` is set.
        tenant: the tenant whose outstanding tasks reached `tenant_maxsize` ("" for the
            default tenant, the tasks without one); None: the queue itself is full.
        retry_after: seconds after which a new submit has a fair chance: the time the
            queue needs to drain a tenth of `maxsize` at its recent drain rate, between 1
            and 60 (1 while no rate is known). An HTTP handler's `Retry-After`.
        drain_rate: the recent drain rate (tasks a second) it came from, or None.
    """

    retry_after: float = 1.0
    drain_rate: float | None = None

    def __init__(
        self, queue: str, maxsize: int, waited: float | None = None, *, tenant: str | None = None
    ) -> None:
        self.queue = queue
        self.maxsize = maxsize
        self.tenant = tenant
        limit = "tenant_maxsize" if tenant is not None else "maxsize"
        if waited is not None:
            advice = "wait longer (Queue(full_timeout=...) or submit(timeout=...)), raise "
            advice += f"Queue({limit}=...), or add workers"
            how = f"after waiting {waited:g}s"
        else:
            advice = f"raise Queue({limit}=...), add workers, or use when_full=Overflow.WAIT "
            advice += "for backpressure"
            how = "and its policy is to reject"
        if tenant is None:
            message = f"queue {queue!r} is full ({maxsize} outstanding tasks) {how}; {advice}"
        else:
            who = f"tenant {tenant!r}" if tenant else "the default tenant (tasks without one)"
            message = (
                f"{who} of queue {queue!r} has {maxsize} outstanding tasks "
                f"(Queue(tenant_maxsize={maxsize})) {how}; {advice}"
            )
        super().__init__(message)


class PayloadTooLarge(QueueingError, ValueError):
    """The serialized payload is larger than the queue's `max_payload`."""

    def __init__(self, queue: str, size: int, limit: int) -> None:
        self.queue = queue
        self.size = size
        self.limit = limit
        super().__init__(
            f"payload for queue {queue!r} is {size} bytes serialized, over its max_payload of "
            f"{limit} bytes; send a reference (a key, a URL) instead of the data, or raise "
            "Queue(max_payload=...)"
        )


class PayloadError(QueueingError, TypeError):
    """The system's converter could not structure or serialize a payload or result."""

    def __init__(self, queue: str, detail: str) -> None:
        self.queue = queue
        super().__init__(f"queue {queue!r}: {detail}")


class UnknownQueue(QueueingError, LookupError):
    """No queue or pipeline has that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(
            f"no queue or pipeline named {name!r}; known: {', '.join(sorted(known)) or 'none'}"
        )


class UnknownTask(QueueingError, LookupError):
    """No task has that id, or its result is no longer kept.

    Attributes:
        task_id: the id looked up.
        expired: True if the task existed and its outcome is no longer kept (its queue's
            `result_ttl` ran out, or `max_results` newer ones pushed it out); False if no
            task ever had this id; None where the broker cannot tell the two apart. An
            HTTP handler answers 410 Gone for True, 404 otherwise.
    """

    def __init__(self, task_id: str, expired: bool | None = None, why: str = "") -> None:
        self.task_id = task_id
        self.expired = expired
        if expired is None:
            why = why or (
                "the id is wrong or its result expired (results are kept for the queue's "
                "result_ttl)"
            )
        elif expired:
            why = why or "its result is no longer kept"
        else:
            why = why or "no task ever had this id"
        super().__init__(f"no task {task_id!r:.{_SHOWN_ID}} is known: {why}")


#: Characters of an unknown id shown in `UnknownTask`'s message.
_SHOWN_ID = 120


class InvalidQueue(QueueingError, ValueError):
    """A Queue, Pipeline or RetryPolicy setting is out of range."""


class SystemStopping(QueueingError):
    """The system is shutting down and accepts no new tasks."""


class ResultTimeout(QueueingError, TimeoutError):
    """The result was not ready within the timeout; the task goes on."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(
            f"task {task_id!r} has no result after {timeout:g}s; it is still pending or "
            "running: wait longer, or check receipt.status()"
        )


class DrainTimeout(QueueingError, TimeoutError):
    """`drain(timeout=...)` ran out with tasks still outstanding."""

    def __init__(self, timeout: float, busy: dict[str, int]) -> None:
        self.timeout = timeout
        self.busy = busy
        where = ", ".join(f"{name}={count}" for name, count in busy.items()) or "none now"
        super().__init__(f"queues still busy after {timeout:g}s: {where}")


class WorkersCrashed(QueueingError, SupervisorGaveUp):
    """A queue's workers crashed more often than its restart intensity allows: its pool gave
    up, and the system stopped. (It is also the `actors.SupervisorGaveUp` of its pool.)

    Attributes:
        queue: the queue.
        max_restarts, within: its restart intensity (`Queue(max_restarts=, within=)`).
        cause: the last crash (also `__cause__`).
    """

    def __init__(
        self, queue: str, max_restarts: int, within: float, cause: BaseException | None
    ) -> None:
        self.queue = queue
        self.supervisor = f"{queue}.pool"
        self.child = ""
        self.max_restarts = max_restarts
        self.within = within
        self.cause = cause
        last = f"{type(cause).__name__}: {cause}" if cause is not None else "unknown"
        super(SupervisorGaveUp, self).__init__(
            f"the workers of queue {queue!r} crashed more than {max_restarts} times within "
            f"{within:g}s and the system stopped; the last crash: {last}. Fix its cause (a "
            "worker's on_start, or an error listed in Worker.fatal), or raise "
            "Queue(max_restarts=...)"
        )


class BrokerError(QueueingError):
    """The broker failed: connection lost, misconfigured, or an unexpected answer."""


class BrokerOutOfMemory(BrokerError):
    """The broker refused to store the tasks: it is out of memory (Redis: its used memory
    is above `maxmemory` under `maxmemory-policy noeviction`, so it refuses writes). None
    of the call's tasks was stored: they are in `.rejected` (submitting them again cannot
    run them twice); the tasks accepted before still run, and workers keep finishing them.
    The message says how to make room."""


class TaskFailed(QueueingError):
    """The task ended without a result.

    Attributes:
        task_id: the task's id.
        queue: the queue (or pipeline) it was submitted to.
        outcome: the final `TaskState` (FAILED, DEAD_LETTERED, CANCELLED, EXPIRED).
        error_type: the qualified name of the exception that ended it ("" if none).
        error: that exception's message.
        attempts: how many times the handler ran.
        stage: for a pipeline, the queue of the stage that failed.
    """

    def __init__(
        self,
        task_id: str,
        queue: str,
        outcome: Any,
        *,
        error_type: str = "",
        error: str = "",
        attempts: int = 0,
        stage: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.queue = queue
        self.outcome = outcome
        self.error_type = error_type
        self.error = error
        self.attempts = attempts
        self.stage = stage
        where = f" at stage {stage!r}" if stage else ""
        cause = f": {error_type}: {error}" if error_type else (f": {error}" if error else "")
        state = getattr(outcome, "value", outcome)
        tries = f" after {attempts} attempt(s)" if attempts else ""
        super().__init__(f"task {task_id!r} of {queue!r} {state}{where}{tries}{cause}")


class TaskCancelled(TaskFailed):
    """The task was cancelled (through its receipt, or by shutdown)."""


class TaskExpired(TaskFailed):
    """The task was not started before its deadline."""


class TaskLost(TaskFailed):
    """The broker lost the task's record (its data was lost: a server restarted without
    persistence, a FLUSHALL): whether it ran is unknown. Submit it again if it is safe to."""


class Transient(Exception):
    """Raise (or subclass) this in a handler for a failure worth retrying."""


class TaskTimeout(Transient, TimeoutError):
    """The handler ran longer than its queue's `timeout` (retried by default)."""

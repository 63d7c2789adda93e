"""What `queueing top` and the web dashboard show: a `Snapshot` of every queue, worker
process, schedule and recent failure, as plain values that travel as JSON."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs

#: The outcome totals a queue keeps, in the order the dashboards show them.
TOTALS = ("submitted", "succeeded", "failed", "retried", "dead_lettered", "cancelled", "expired")
#: The totals that count a task reaching its outcome (the rate out).
FINISHED = ("succeeded", "failed", "dead_lettered", "cancelled", "expired")


@attrs.frozen(kw_only=True)
class QueueView:
    """One queue: where it stands now, its rates and latencies over the sampler's window,
    its totals since it was first declared.

    `depth` is the tasks waiting (ready, or scheduled for a delay or a retry); `in_flight`
    those a worker holds. Rates are tasks per second; latencies are seconds from submit to
    success, of the tasks that succeeded in the window (None: none did, or not known:
    a broker whose workers publish no latencies). `workers` and `busy` count the worker
    slots of the live processes that serve it (None if they are not known).
    """

    name: str
    depth: int
    scheduled: int
    in_flight: int
    outstanding: int
    maxsize: int | None
    rate_in: float | None
    rate_out: float | None
    p50: float | None
    p99: float | None
    dead_letters: int
    workers: int | None
    busy: int | None
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    expired: int = 0
    rate_limit: str | None = None
    """The queue's `rate_limit` ("100/s"), as the processes serving it publish it (None:
    no limit, or not known); its `rate_out` is then close to its rate of starts."""


@attrs.frozen(kw_only=True)
class ProcessView:
    """A live worker process: what it serves, its worker slots and how many are busy
    (per queue in `slots`, when the process publishes them)."""

    name: str
    host: str | None
    pid: int | None
    queues: list[str]
    workers: int | None
    busy: int | None
    seen_at: float | None
    started: float | None = None
    slots: dict[str, list[int]] = attrs.field(factory=dict)
    """Per queue: [workers, busy]."""


@attrs.frozen(kw_only=True)
class ScheduleView:
    """A schedule some process runs, with its next tick and its last one (wall clock),
    and the outcome of the last tick's task ("succeeded", "failed", "running"...; None:
    no task of that tick is known: missed, expired, or not looked up)."""

    name: str
    queue: str
    cron: str | None
    every: float | None
    timezone: str
    next_at: float
    last_at: float | None = None
    last_outcome: str | None = None


@attrs.frozen(kw_only=True)
class FailureView:
    """A recent failure: a dead letter (retries ran out, or an error that is not retried)."""

    id: str
    queue: str
    state: str
    attempts: int
    failed_at: float
    error_type: str
    message: str
    traceback: str
    payload: Any = None


@attrs.frozen(kw_only=True)
class Snapshot:
    """Everything the dashboards show at one time (`taken_at`, wall clock).

    `window` is the seconds the rates and latencies cover (shorter while the sampler has
    not run that long; 0 before its second reading). `problem` says why the figures could
    not be read (a broker away), and the figures are then those of the last good reading.
    """

    taken_at: float
    source: str
    window: float
    queues: list[QueueView]
    processes: list[ProcessView]
    schedules: list[ScheduleView]
    failures: list[FailureView]
    problem: str | None = None

    def queue(self, name: str) -> QueueView | None:
        return next((q for q in self.queues if q.name == name), None)

    def to_doc(self) -> dict[str, Any]:
        """As JSON-able data (the web dashboard's `/api/snapshot`)."""
        doc: dict[str, Any] = _converter.unstructure(self)
        return doc

    @classmethod
    def from_doc(cls, doc: Any) -> Snapshot:
        """Read `to_doc`'s data (keys it does not know are ignored: a newer dashboard)."""
        snapshot: Snapshot = _converter.structure(doc, cls)
        return snapshot


_converter = cattrs.Converter(forbid_extra_keys=False)

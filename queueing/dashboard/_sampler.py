"""The snapshot sampler shared by `queueing top` and the web dashboard: it reads a
system's figures every `every` seconds and turns the readings of the last `window`
seconds into rates and latency percentiles (`Snapshot`), keeping a short history of them
for the charts."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import QueueingError
from .._report import Histogram
from ._source import ProcessReading, Reading, describe, read
from ._views import FINISHED, FailureView, ProcessView, QueueView, ScheduleView, Snapshot

if TYPE_CHECKING:
    from .._system import QueueSystem

log = logging.getLogger("queueing.dashboard")

#: Seconds between two readings.
EVERY = 1.0
#: Seconds the rates and latency percentiles cover.
WINDOW = 10.0
#: Seconds one reading may take before the snapshot says the broker does not answer.
READ_TIMEOUT = 5.0
#: Points of history kept for the charts (one per reading).
HISTORY = 600
_EMPTY = Histogram()


@attrs.frozen
class Point:
    """One reading's rates and latencies, for the charts: per queue,
    [rate in, rate out, p50, p99] (None where not known)."""

    at: float
    queues: dict[str, list[float | None]]

    def to_doc(self) -> dict[str, Any]:
        return {"at": self.at, "queues": self.queues}


class Sampler:
    """Reads `system` every `every` seconds (`run`) or when asked (`sample`); `snapshot`
    is the latest `Snapshot`, `history` the points of the last readings.

    Args:
        system: a running system: `open_system()`'s (in process, or serving queues over a
            shared broker) or a `connect()` client's.
        every: seconds between two readings.
        window: seconds the rates and percentiles cover.
        history: points kept for the charts.
    """

    def __init__(
        self,
        system: QueueSystem,
        *,
        every: float = EVERY,
        window: float = WINDOW,
        history: int = HISTORY,
    ) -> None:
        if not every > 0 or not window > 0:
            raise QueueingError(
                f"the sampler needs every > 0 and window > 0 seconds, got every={every!r}, "
                f"window={window!r}"
            )
        self.system = system
        self.every = every
        self.window = window
        self.source = describe(system)
        self.readings: deque[Reading] = deque()
        self.history: deque[Point] = deque(maxlen=history)
        self.snapshot: Snapshot | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read every `every` seconds until cancelled; started once the first is taken."""
        await self.sample()
        task_status.started()
        while True:
            await trio.sleep(self.every)
            await self.sample()

    async def sample(self) -> Snapshot:
        """Take a reading now; returns the new snapshot. A reading that fails (a broker
        away) leaves the figures as they were and says why in `snapshot.problem`."""
        reading = None
        try:
            with trio.move_on_after(READ_TIMEOUT):
                reading = await read(self.system)
            problem = f"the broker did not answer within {READ_TIMEOUT:g} s"
        except Exception as exc:  # a broker away, whatever its client raises: shown, not fatal
            problem = f"cannot read the figures: {type(exc).__name__}: {exc}"
        if reading is None:
            log.warning("dashboard: %s", problem)
            if self.snapshot is None:
                snapshot = Snapshot(
                    taken_at=time.time(),
                    source=self.source,
                    window=0.0,
                    queues=[],
                    processes=[],
                    schedules=[],
                    failures=[],
                    problem=problem,
                )
            else:
                snapshot = attrs.evolve(self.snapshot, problem=problem)
        else:
            self._keep(reading)
            snapshot = self._compute()
            self.history.append(
                Point(
                    snapshot.taken_at,
                    {q.name: [q.rate_in, q.rate_out, q.p50, q.p99] for q in snapshot.queues},
                )
            )
        self.snapshot = snapshot
        return snapshot

    def _keep(self, reading: Reading) -> None:
        readings = self.readings
        readings.append(reading)
        # Keep one reading at or before the window's start, so that rates cover it whole.
        while len(readings) > 2 and readings[1].at <= reading.at - self.window:
            readings.popleft()

    def _compute(self) -> Snapshot:
        readings = self.readings
        base, now = readings[0], readings[-1]
        span = now.at - base.at
        queues = []
        for name, q in now.queues.items():
            # From the first reading that knows the queue (one declared since is measured
            # from when it appeared).
            first = next(r for r in readings if name in r.queues)
            then, since = first.queues[name], now.at - first.at
            rate_in = rate_out = None
            if since > 0:
                rate_in = max(0, q.totals["submitted"] - then.totals["submitted"]) / since
                out = sum(q.totals[k] for k in FINISHED) - sum(then.totals[k] for k in FINISHED)
                rate_out = max(0, out) / since
            latency = self._latency(name)
            served = [p.slots[name] for p in now.processes.values() if name in p.slots]
            limits = [p.limits[name] for p in now.processes.values() if name in p.limits]
            queues.append(
                QueueView(
                    name=name,
                    depth=max(0, q.outstanding - q.in_flight),
                    scheduled=q.scheduled,
                    in_flight=q.in_flight,
                    outstanding=q.outstanding,
                    maxsize=q.maxsize,
                    rate_in=rate_in,
                    rate_out=rate_out,
                    p50=latency.percentile(50),
                    p99=latency.percentile(99),
                    dead_letters=q.dead_letters,
                    workers=sum(s[0] for s in served) if served else None,
                    busy=sum(s[1] for s in served) if served else None,
                    rate_limit=limits[0] if limits else None,
                    **q.totals,
                )
            )
        schedules: dict[str, ScheduleView] = {}
        for process in now.processes.values():
            for schedule in process.schedules:
                schedules.setdefault(schedule.name, schedule)
        return Snapshot(
            taken_at=now.wall,
            source=self.source,
            window=span,
            queues=queues,
            processes=[_process_view(p) for p in now.processes.values()],
            schedules=sorted(schedules.values(), key=lambda s: s.name),
            failures=[
                FailureView(
                    id=letter.id,
                    queue=letter.queue,
                    state=letter.state.value,
                    attempts=letter.attempts,
                    failed_at=letter.failed_at,
                    error_type=letter.error.type if letter.error else "",
                    message=letter.error.message if letter.error else "",
                    traceback=letter.error.traceback if letter.error else "",
                    payload=letter.payload,
                )
                for letter in now.failures
            ],
        )

    def _latency(self, queue: str) -> Histogram:
        """The latencies of `queue`'s tasks that succeeded in the window, over every
        process: each process's report now, less its first report in the window (nothing
        less if it started within the window)."""
        readings = self.readings
        base, now = readings[0], readings[-1]
        total = Histogram()
        for process in now.processes.values():
            current = process.latency.get(queue)
            if current is None:
                continue
            if process.started is not None and process.started >= base.wall:
                total.merge(current)
                continue
            first = _first_report(readings, process.name)
            total.merge(current.minus(first.latency.get(queue, _EMPTY)))
        return total


def _first_report(readings: deque[Reading], name: str) -> ProcessReading:
    return next(r.processes[name] for r in readings if name in r.processes)


def _process_view(p: ProcessReading) -> ProcessView:
    return ProcessView(
        name=p.name,
        host=p.host,
        pid=p.pid,
        queues=p.queues,
        workers=p.workers,
        busy=p.busy,
        seen_at=p.seen_at,
        started=p.started,
        slots=p.slots,
    )

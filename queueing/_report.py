"""What a serving process tells the dashboards about itself: per queue, its worker slots,
the busy ones, and a histogram of its latencies (submit to success) so far; the schedules
it runs.

Over a shared broker each serving process publishes this with its heartbeat (the Redis
broker does), so that `queueing top` and the web dashboard, in another process, show the
slots of every process and latency percentiles over all of them. Histograms are
cumulative and merge by adding counts: a reader takes the difference between two reports
of one process to get the latencies of the tasks that ended in between.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._stats import RING

if TYPE_CHECKING:
    from ._schedule import Schedule
    from ._system import QueueSystem
    from ._task import Task
    from .brokers._contract import Broker

#: The upper bound of the first latency bucket (seconds); shorter latencies count in it.
BUCKET_BASE = 1e-4
#: Each bucket's upper bound is this many times the one before (so a percentile read from
#: a bucket is off by at most half of that step).
BUCKET_GROWTH = 2**0.25
#: The last bucket (about 30 days at this base and growth): longer latencies count in it.
LAST_BUCKET = 160
_LOG_GROWTH = math.log(BUCKET_GROWTH)


def bucket_of(seconds: float) -> int:
    """The bucket that counts a latency of `seconds`."""
    if seconds <= BUCKET_BASE:
        return 0
    return min(LAST_BUCKET, math.ceil(math.log(seconds / BUCKET_BASE) / _LOG_GROWTH - 1e-9))


def bucket_value(index: int) -> float:
    """The latency a bucket stands for: the geometric middle of its bounds."""
    if index <= 0:
        return BUCKET_BASE
    return float(BUCKET_BASE * BUCKET_GROWTH ** (index - 0.5))


class Histogram:
    """Counts of latencies per bucket (sparse); they add up, and subtract, across reports."""

    __slots__ = ("counts",)

    def __init__(self, counts: Mapping[int, float] | None = None) -> None:
        self.counts: dict[int, float] = dict(counts or {})

    def add(self, seconds: float, weight: float = 1.0) -> None:
        index = bucket_of(seconds)
        self.counts[index] = self.counts.get(index, 0.0) + weight

    @property
    def total(self) -> float:
        return sum(self.counts.values())

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0.0) + count

    def minus(self, earlier: Histogram) -> Histogram:
        """The latencies added since `earlier` (a report of the same process before)."""
        counts = {}
        for index, count in self.counts.items():
            left = count - earlier.counts.get(index, 0.0)
            if left > 0:
                counts[index] = left
        return Histogram(counts)

    def percentile(self, p: float) -> float | None:
        """The latency below which `p` percent of them are (None if it holds none)."""
        total = self.total
        if total <= 0:
            return None
        rank = max(p / 100 * total, min(total, 1.0))
        seen = 0.0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank - 1e-9:
                return bucket_value(index)
        return bucket_value(max(self.counts))

    def to_doc(self) -> dict[str, float]:
        """As JSON (bucket index as text: count); whole counts are written as ints."""
        return {str(i): int(c) if c == int(c) else round(c, 3) for i, c in self.counts.items()}

    @classmethod
    def from_doc(cls, doc: Any) -> Histogram:
        """Read `to_doc`'s JSON; anything unreadable counts as no latency."""
        counts: dict[int, float] = {}
        if isinstance(doc, Mapping):
            for key, value in doc.items():
                try:
                    index, count = int(key), float(value)
                except (TypeError, ValueError):
                    continue
                if 0 <= index <= LAST_BUCKET and count > 0:
                    counts[index] = count
        return cls(counts)


def schedule_doc(
    schedule: Schedule,
    now: float,
    last: Task | None = None,
    ticks: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A schedule as the dashboards and `queueing status` list it: its next tick after
    `now` (wall clock), its last tick at or before `now`, and `last`, the task of that
    tick (found by the tick's key), when known: its id and state ("succeeded", "failed",
    "running"...; None: no task for that tick is known, because it was missed, its record
    expired, or nobody looked). `ticks`: (last, next) around `now`, if known already."""
    last_at, next_at = ticks or (schedule.last_tick(now), schedule.next_tick(now))
    return {
        "name": schedule.name,
        "queue": schedule.queue,
        "cron": schedule.cron,
        "every": schedule.every,
        "timezone": schedule.timezone,
        "next_at": next_at,
        "last_at": last_at,
        "last_task": None if last is None else last.id,
        "last_outcome": None if last is None or last.state is None else last.state.value,
    }


def tick_task_id(schedule: Schedule, tick: float) -> str:
    """The id of the task of one tick of `schedule` (every process submits it by that)."""
    from ._engine import key_id

    return key_id(schedule.queue, schedule.key(tick))


async def looked_up(broker: Broker, schedules: Iterable[Schedule]) -> list[dict[str, Any]]:
    """`schedule_doc` of each schedule, its last tick's task looked up in the broker."""
    docs = []
    for schedule in schedules:
        now = time.time()
        last = await broker.lookup(tick_task_id(schedule, schedule.last_tick(now)))
        docs.append(schedule_doc(schedule, now, last))
    return docs


def schedules_of(reports: Iterable[Any]) -> list[Schedule]:
    """The schedules that live processes' reports list (`ProcessReport.report`), once per
    name; an entry that does not make a `Schedule` is left out."""
    from ._exceptions import QueueingError
    from ._schedule import Schedule

    found: dict[str, Schedule] = {}
    for report in reports:
        if not isinstance(report, Mapping):
            continue
        for item in report.get("schedules") or ():
            if not isinstance(item, Mapping) or item.get("name") in found:
                continue
            try:
                schedule = Schedule(
                    item["name"],
                    queue=item["queue"],
                    cron=item.get("cron"),
                    every=item.get("every"),
                    timezone=item.get("timezone") or "UTC",
                )
            except (KeyError, TypeError, QueueingError):
                continue
            found[schedule.name] = schedule
    return list(found.values())


class ProcessReport:
    """Builds one serving process's report (`report()`), keeping its cumulative latency
    histograms between calls. It reads the figures the engine keeps already (each queue's
    ring of recent latencies): nothing is added to the per-task path."""

    def __init__(self, system: QueueSystem, schedules: Iterable[Schedule] = ()) -> None:
        self.system = system
        self.schedules = tuple(schedules)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        from ._schedule import _WallClock

        #: The schedules' wall clock (it follows trio's, as the scheduler's does).
        self._wall = _WallClock() if self.schedules else None
        self._ticks: dict[str, tuple[float, float]] = {}
        self._seen: dict[str, int] = {}
        self._latency: dict[str, Histogram] = {}

    def latency(self, queue: str) -> Histogram:
        """The queue's latencies so far (read from the queue's ring since the last call;
        when more ended in between than the ring keeps, the newest stand for all)."""
        histogram = self._latency.setdefault(queue, Histogram())
        rt = self.system._runtimes.get(queue)
        if rt is None:
            return histogram
        ring = rt.latency
        count = rt.succeeded  # one latency added per success
        new = count - self._seen.get(queue, 0)
        self._seen[queue] = count
        if new > 0:
            values = ring.newest(min(new, RING))
            weight = new / len(values)
            for value in values:
                histogram.add(value, weight)
        return histogram

    def _ticks_around(self, schedule: Schedule, now: float) -> tuple[float, float]:
        """The schedule's (last, next) ticks around `now`, computed again only once the
        next has come (a heartbeat then costs no cron parsing)."""
        ticks = self._ticks.get(schedule.name)
        if ticks is None or not ticks[0] <= now < ticks[1]:
            ticks = (schedule.last_tick(now), schedule.next_tick(now))
            self._ticks[schedule.name] = ticks
        return ticks

    def _last(self, schedule: Schedule, ticks: tuple[float, float]) -> Task | None:
        """The task of the schedule's last tick, if an in-process broker has it (a shared
        broker's is looked up by its reader: `queueing status`)."""
        broker = self.system._broker
        if broker.shared:
            return None
        return broker.lookup_nowait(tick_task_id(schedule, ticks[0]))

    def report(self) -> dict[str, Any]:
        """This process now, as plain data (JSON)."""
        queues = {}
        for name, rt in self.system._runtimes.items():
            if rt.pool is None:  # not served here (a client's, or a stage it does not run)
                continue
            queues[name] = {
                "workers": rt.spec.workers,
                "busy": rt.in_flight,
                "latency": self.latency(name).to_doc(),
            }
            if rt.spec.rate_limit is not None:
                queues[name]["rate_limit"] = str(rt.spec.rate_limit)
        now = time.time() if self._wall is None else self._wall.now()
        return {
            "host": self.host,
            "pid": self.pid,
            "started": self.started,
            "queues": queues,
            "schedules": [
                schedule_doc(s, now, self._last(s, ticks), ticks)
                for s in self.schedules
                for ticks in [self._ticks_around(s, now)]
            ],
        }

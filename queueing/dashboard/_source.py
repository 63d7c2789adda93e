"""One reading of a running system's figures, for the sampler: what each queue holds and
its totals, the live worker processes with their reports, the newest dead letters.

Where the figures come from:

- an in-process system (`memory://`): `system.stats()` and this process's report;
- a shared broker (`redis://`, `sqlite://`): the broker's `status()` (every queue's
  figures, over all processes, and the live processes with their heartbeats, which carry
  each process's report over Redis), whether this process serves queues or only
  `connect()`s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import trio

from .._report import Histogram, looked_up, schedules_of
from .._task import DeadLetter
from ._views import TOTALS, ScheduleView

if TYPE_CHECKING:
    from .._system import QueueSystem

#: Dead letters read per queue for the recent failures.
FAILURES_READ = 10
#: Dead letters counted per queue in process (a broker keeps at most `max_dead_letters`).
ALL_LETTERS = 1 << 30


@attrs.frozen(kw_only=True)
class QueueReading:
    name: str
    maxsize: int | None
    outstanding: int
    in_flight: int
    scheduled: int
    dead_letters: int
    totals: dict[str, int]


@attrs.frozen(kw_only=True)
class ProcessReading:
    name: str
    host: str | None = None
    pid: int | None = None
    queues: list[str] = attrs.field(factory=list)
    workers: int | None = None
    busy: int | None = None
    seen_at: float | None = None
    started: float | None = None
    slots: dict[str, list[int]] = attrs.field(factory=dict)
    latency: dict[str, Histogram] = attrs.field(factory=dict)
    schedules: list[ScheduleView] = attrs.field(factory=list)
    #: The rate limit of each rate-limited queue it serves ("100/s").
    limits: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Reading:
    at: float
    """trio's clock (the rates' time base)."""
    wall: float
    queues: dict[str, QueueReading]
    processes: dict[str, ProcessReading]
    failures: list[DeadLetter]


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def describe(system: QueueSystem) -> str:
    """What a system's figures are read from, for a person (no password)."""
    broker = system._broker
    if not broker.shared:
        return "memory:// (this process)"
    name = type(broker).__name__
    if type(broker).__repr__ is not object.__repr__:  # a broker that says where it is
        return repr(broker).strip("<>").removeprefix(name).strip() or name
    url = getattr(broker, "url", None)
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.password is not None:  # never shown
            url = url.replace(f":{parts.password}@", ":***@", 1)
        return url
    return name


def process_reading(name: str, doc: Mapping[str, Any], seen_at: float | None) -> ProcessReading:
    """A live process, from its heartbeat (`queueing status`'s `workers`) and, if it
    published one, its report (`queueing._report`)."""
    report = doc.get("report")
    report = report if isinstance(report, Mapping) else {}
    slots: dict[str, list[int]] = {}
    latency: dict[str, Histogram] = {}
    limits: dict[str, str] = {}
    served = report.get("queues")
    for queue, figures in (served if isinstance(served, Mapping) else {}).items():
        if isinstance(figures, Mapping):
            slots[str(queue)] = [_int(figures.get("workers")), _int(figures.get("busy"))]
            latency[str(queue)] = Histogram.from_doc(figures.get("latency"))
            if figures.get("rate_limit"):
                limits[str(queue)] = str(figures["rate_limit"])
    schedules = []
    for item in report.get("schedules") or ():
        try:
            schedules.append(
                ScheduleView(
                    name=str(item["name"]),
                    queue=str(item["queue"]),
                    cron=item.get("cron"),
                    every=_float(item.get("every")),
                    timezone=str(item.get("timezone", "UTC")),
                    next_at=float(item["next_at"]),
                    last_at=_float(item.get("last_at")),
                    last_outcome=_str(item.get("last_outcome")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a schedule this reader cannot show
    workers = doc.get("workers")
    queues = doc.get("queues")
    return ProcessReading(
        name=name,
        host=report.get("host") or doc.get("host"),
        pid=_int(report.get("pid") or doc.get("pid")) or None,
        queues=[str(q) for q in queues] if isinstance(queues, list) else sorted(slots),
        workers=sum(s[0] for s in slots.values()) if slots else (_int(workers) or None),
        busy=sum(s[1] for s in slots.values()) if slots else _int(doc.get("in_flight")),
        seen_at=seen_at,
        started=_float(report.get("started")),
        slots=slots,
        latency=latency,
        schedules=schedules,
        limits=limits,
    )


async def _newest_letters(system: QueueSystem, names: list[str]) -> list[DeadLetter]:
    broker = system._broker
    letters: list[DeadLetter] = []
    for name in names:
        letters.extend(await broker.dead_letters(name, FAILURES_READ))
    letters.sort(key=lambda letter: letter.failed_at, reverse=True)
    return letters[:FAILURES_READ]


async def read(system: QueueSystem) -> Reading:
    """Read a system's figures once (over a shared broker, a few round trips)."""
    if system._broker.shared:
        return await _read_shared(system)
    return await _read_local(system)


async def _read_local(system: QueueSystem) -> Reading:
    broker = system._broker
    queues = {}
    for name, stats in system.stats().items():
        kept = len(await broker.dead_letters(name, ALL_LETTERS))
        queues[name] = QueueReading(
            name=name,
            maxsize=stats.maxsize,
            outstanding=stats.outstanding,
            in_flight=stats.in_flight,
            scheduled=stats.scheduled,
            dead_letters=kept,
            totals={key: getattr(stats, key) for key in TOTALS},
        )
    processes = {}
    if system._report is not None:
        report = system._report.report()
        name = f"{report['host']}-{report['pid']}"
        processes[name] = process_reading(name, {"report": report}, time.time())
    failures = await _newest_letters(system, list(queues))
    return Reading(
        at=trio.current_time(),
        wall=time.time(),
        queues=queues,
        processes=processes,
        failures=failures,
    )


async def _status(system: QueueSystem) -> dict[str, Any]:
    """The broker's `status()` (Redis, SQLite); else what `figures()` tells per queue."""
    broker = system._broker
    status = getattr(broker, "status", None)
    if status is not None:
        info: dict[str, Any] = await status()
        return info
    queues = {}
    for name in system._runtimes:
        figures = await broker.figures(name)
        queues[name] = figures or {"outstanding": await broker.outstanding(name)}
    return {"queues": queues, "workers": {}}


async def _read_shared(system: QueueSystem) -> Reading:
    info = await _status(system)
    raw_queues = info.get("queues") or {}
    queues = {}
    for name in sorted({*raw_queues, *system._runtimes}):
        figures = raw_queues.get(name) or {}
        rt = system._runtimes.get(name)
        maxsize = rt.spec.maxsize if rt is not None else _int(figures.get("maxsize")) or None
        queues[name] = QueueReading(
            name=name,
            maxsize=maxsize,
            outstanding=_int(figures.get("outstanding")),
            in_flight=_int(figures.get("in_flight")),
            scheduled=_int(figures.get("scheduled")),
            dead_letters=_int(figures.get("dead_letters")),
            totals={key: _int(figures.get(key)) for key in TOTALS},
        )
    processes = {}
    for name, doc in (info.get("workers") or {}).items():
        if isinstance(doc, Mapping):
            seen = _float(doc.get("ts", doc.get("seen_at")))
            processes[str(name)] = process_reading(str(name), doc, seen)
    processes = await _with_last_outcomes(system, processes)
    failures = await _newest_letters(system, [n for n, q in queues.items() if q.dead_letters])
    return Reading(
        at=trio.current_time(),
        wall=time.time(),
        queues=queues,
        processes=processes,
        failures=failures,
    )


async def _with_last_outcomes(
    system: QueueSystem, processes: dict[str, ProcessReading]
) -> dict[str, ProcessReading]:
    """The processes, their schedules with the outcome of each one's last tick looked up
    in the shared broker (a serving process's heartbeat does not carry it): one lookup
    per schedule, by the tick's task id, as `queueing status` does."""
    names = {s.name for p in processes.values() for s in p.schedules}
    if not names:
        return processes
    reports = [_report_schedules(p) for p in processes.values()]
    docs = {doc["name"]: doc for doc in await looked_up(system._broker, schedules_of(reports))}

    def updated(view: ScheduleView) -> ScheduleView:
        doc = docs.get(view.name)
        if doc is None:
            return view
        return attrs.evolve(
            view, last_at=_float(doc.get("last_at")), last_outcome=_str(doc.get("last_outcome"))
        )

    return {
        name: attrs.evolve(p, schedules=[updated(view) for view in p.schedules])
        for name, p in processes.items()
    }


def _report_schedules(process: ProcessReading) -> dict[str, Any]:
    """A process's schedules as `schedules_of` reads them from a report."""
    return {
        "schedules": [
            {
                "name": s.name,
                "queue": s.queue,
                "cron": s.cron,
                "every": s.every,
                "timezone": s.timezone,
            }
            for s in process.schedules
        ]
    }

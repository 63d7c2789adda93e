"""How the `queueing` command line shows things: JSON documents, tables, times."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from ._task import DeadLetter, ErrorInfo, Progress, TaskStatus, progress_doc

#: The outcome counters of a queue, in the order `queueing status` shows them; a counter a
#: broker has not written yet is 0.
COUNTERS = (
    "submitted",
    "succeeded",
    "failed",
    "dead_lettered",
    "retried",
    "cancelled",
    "expired",
)
#: What a queue holds now, as `queueing status` shows it (key, column header).
NOW = (
    ("ready", "ready"),
    ("scheduled", "scheduled"),
    ("in_flight", "running"),
    ("outstanding", "outstanding"),
    ("dead_letters", "dead letters kept"),
)
#: Characters of a payload or result shown in a table cell (`--json` shows all of it).
SHOWN_CHARS = 60
#: The narrowest console the tables are laid out for (a pipe or a test has no width).
MIN_WIDTH = 100
#: The narrowest the dead-letters table makes its error column (it wraps within it).
ERROR_MIN_WIDTH = 20


def dumps(value: Any) -> str:
    """JSON for a person or a program: plain data as it is, anything else as its str."""
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def error_doc(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def status_doc(status: TaskStatus) -> dict[str, Any]:
    """A task's status as JSON-able data (times are Unix seconds)."""
    return {
        "id": status.id,
        "queue": status.queue,
        "state": status.state.value,
        "final": status.state.final,
        "attempts": status.attempts,
        "deliveries": status.deliveries,
        "submitted_at": status.submitted_at or None,
        "finished_at": status.finished_at,
        "stage": status.stage,
        "error": error_doc(status.error),
        "progress": progress_doc(status.progress) if status.progress is not None else None,
        "priority": status.priority,
        "tenant": status.tenant,
    }


def progress_text(progress: Progress) -> str:
    """A progress as one line: `5/10 (50%) resizing, 3 s ago`."""
    done = f"{progress.done:g}"
    if progress.total is not None:
        done += f"/{progress.total:g}"
    if progress.fraction is not None:
        done += f" ({progress.fraction:.0%})"
    if progress.note:
        done += f" {progress.note}"
    if progress.at:
        done += f", {ago(time.time() - progress.at)}"
    return done


def letter_doc(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "queue": letter.queue,
        "state": letter.state.value,
        "attempts": letter.attempts,
        "deliveries": letter.deliveries,
        "submitted_at": letter.submitted_at or None,
        "failed_at": letter.failed_at or None,
        "payload": letter.payload,
        "error": error_doc(letter.error),
        "priority": letter.priority,
        "tenant": letter.tenant,
    }


def status_figures(info: dict[str, Any]) -> dict[str, Any]:
    """`queueing status --json`: every figure of every queue, counters at 0 included."""
    queues = {}
    for name, figures in info.get("queues", {}).items():
        queues[name] = {key: int(figures.get(key, 0)) for key, _ in NOW}
        queues[name].update({key: int(figures.get(key, 0)) for key in COUNTERS})
        queues[name].update({k: v for k, v in figures.items() if k not in queues[name]})
    found = {"queues": queues, "workers": info.get("workers", {})}
    if info.get("rates"):
        found["rates"] = info["rates"]
    if info.get("schedules"):
        found["schedules"] = info["schedules"]
    if info.get("tenants"):
        found["tenants"] = info["tenants"]
    return found


# -- times ----------------------------------------------------------------------------------


def when(timestamp: float | None, now: float | None = None) -> str:
    """A Unix time as a person reads it: local date and time, and how long ago."""
    if not timestamp:
        return "-"
    now = time.time() if now is None else now
    local = datetime.fromtimestamp(timestamp).astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S %Z} ({ago(now - timestamp)})"


def clock_time(timestamp: float | None) -> str:
    """A Unix time as the local date and time."""
    return f"{datetime.fromtimestamp(timestamp):%Y-%m-%d %H:%M:%S}" if timestamp else "-"


def ago(seconds: float) -> str:
    if seconds < 0:
        return "in " + span(-seconds)
    return span(seconds) + " ago"


def span(seconds: float) -> str:
    """A duration, rounded to what a person cares about."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    if seconds < 86_400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 86_400:.0f} d {seconds % 86_400 // 3600:.0f} h"


def short(value: Any, chars: int = SHOWN_CHARS) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= chars else text[: chars - 1] + "…"


# -- tables ---------------------------------------------------------------------------------


def _console() -> Any:
    from rich.console import Console

    return Console(width=max(MIN_WIDTH, Console().width), highlight=False)


def print_status(info: dict[str, Any]) -> None:
    """`queueing status`: what each queue holds now, its outcomes, and the live workers."""
    from rich.table import Table

    figures = status_figures(info)
    console = _console()
    if not figures["queues"]:
        console.print("no queues are declared yet: start a `queueing worker`")
    now = Table(title="queues now")
    outcomes = Table(title="outcomes (since the queue was first declared)")
    for table in (now, outcomes):
        table.add_column("queue")
    for _, header in NOW:
        now.add_column(header, justify="right")
    for key in COUNTERS:
        outcomes.add_column(key.replace("_", "-"), justify="right")
    for name, q in figures["queues"].items():
        now.add_row(name, *(str(q[key]) for key, _ in NOW))
        outcomes.add_row(name, *(str(q[key]) for key in COUNTERS))
    if figures["queues"]:
        console.print(now)
        console.print(outcomes)
    if figures.get("rates"):
        rates = Table(title="rate-limited queues (all processes)")
        for column in ("queue", "limit", "last period", "starts"):
            rates.add_column(column, justify="left" if column == "queue" else "right")
        for name, r in figures["rates"].items():
            per = str(r["limit"]).partition("/")[2]  # the limit's period: "s" in "100/s"
            rates.add_row(name, str(r["limit"]), f"{r['last_period']}/{per}", str(r["started"]))
        console.print(rates)
    if figures.get("tenants"):
        tenants = Table(title="busiest tenants (all processes)")
        for column in ("queue", "tenant", "waiting", "running"):
            tenants.add_column(
                column, justify="right" if column in ("waiting", "running") else "left"
            )
        for name, rows in figures["tenants"].items():
            for row in rows:
                tenant = row["tenant"] or "(default)"
                tenants.add_row(name, tenant, str(row["waiting"]), str(row["running"]))
        console.print(tenants)
    if figures.get("schedules"):
        schedules = Table(title="schedules")
        for column in ("schedule", "queue", "when", "next run", "last run", "last outcome"):
            schedules.add_column(column)
        for s in figures["schedules"]:
            every = s.get("every")
            when = s.get("cron") or f"every {every:g} s"
            if s.get("cron") and s.get("timezone") not in (None, "UTC"):
                when += f" ({s['timezone']})"
            outcome = s.get("last_outcome") or "none found"
            schedules.add_row(
                s["name"],
                s["queue"],
                when,
                clock_time(s.get("next_at")),
                clock_time(s.get("last_at")),
                outcome,
            )
        console.print(schedules)
    workers = Table(title="live workers (a heartbeat within the last 10 s)")
    for column in ("worker process", "queues", "workers", "running"):
        workers.add_column(column)
    for name, w in figures["workers"].items():
        workers.add_row(
            name,
            ", ".join(w.get("queues", [])),
            str(w.get("workers") or "-"),
            str(w.get("in_flight", "-")),
        )
    if figures["workers"]:
        console.print(workers)
    else:
        console.print("live workers: none")


def print_dead_letters(queue: str, letters: list[DeadLetter], limit: int) -> None:
    """`queueing dead-letters list`: one row per letter, oldest first."""
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    if not letters:
        console.print(f"no dead letters in {queue!r}")
        return
    newest = f"the newest {len(letters)}" if len(letters) >= limit else f"{len(letters)}"
    title = f"dead letters of {queue!r}: {newest}, oldest first (times are local)"
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("failed at", no_wrap=True)
    table.add_column("error, and the payload", overflow="fold", min_width=ERROR_MIN_WIDTH)
    for letter in letters:
        error = f"{letter.error.type}: {letter.error.message}" if letter.error else "-"
        table.add_row(
            letter.id or "(not a task)",
            letter.state.value,
            str(letter.attempts),
            clock_time(letter.failed_at),
            f"{escape(error)}\n[dim]payload: {escape(short(letter.payload))}[/dim]",
        )
    console.print(table)


def print_inspect(status: TaskStatus, result: Any, has_result: bool) -> None:
    """`queueing inspect`: one task, one line per fact."""
    rows: list[tuple[str, str]] = [
        ("task", status.id),
        ("queue", status.queue or "-"),
        ("state", status.state.value),
        ("attempts", str(status.attempts)),
        ("deliveries", str(status.deliveries)),
        ("submitted", when(status.submitted_at)),
    ]
    if status.priority:
        rows.append(("priority", str(status.priority)))
    if status.tenant is not None:
        rows.append(("tenant", status.tenant))
    if status.finished_at:
        took = status.finished_at - status.submitted_at if status.submitted_at else None
        finished = when(status.finished_at)
        rows.append(("finished", finished + (f", {span(took)} after submit" if took else "")))
    if status.stage:
        rows.append(("stage", status.stage))
    if status.progress is not None:
        rows.append(("progress", progress_text(status.progress)))
    if status.error is not None:
        rows.append(("error", f"{status.error.type}: {status.error.message}"))
    if has_result:
        rows.append(("result", short(result, 200)))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label:<{width}}  {value}")
    if status.error is not None and status.error.traceback:
        click.echo("traceback (of the last failure):")
        for line in status.error.traceback.rstrip().splitlines():
            click.echo(f"  {line}")

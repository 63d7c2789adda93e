"""`queueing top`: a live terminal dashboard of every queue, worker process and schedule,
redrawn from the snapshot sampler (`queueing.dashboard.Sampler`) or from a web
dashboard's `/api/snapshot` (`--url`: the way to watch an in-process system)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Any

import trio

from ._cli_render import span
from ._exceptions import QueueingError
from .dashboard._views import Snapshot

#: Recent failures listed under the tables.
FAILURES_SHOWN = 5
#: Seconds a `--url` read waits for the dashboard's answer.
HTTP_TIMEOUT = 5.0
#: Characters of a failure's message shown on its line.
MESSAGE_CHARS = 100


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _latency(value: float | None) -> str:
    return "-" if value is None else span(value)


def _clock(timestamp: float | None) -> str:
    return f"{datetime.fromtimestamp(timestamp):%H:%M:%S}" if timestamp else "-"


def _table(style: Any) -> Any:
    from rich.table import Table

    return Table(box=style, padding=(0, 1), pad_edge=False, collapse_padding=True)


def render(snapshot: Snapshot) -> Any:
    """The screen of `queueing top` for one snapshot (a rich renderable)."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.text import Text

    parts: list[Any] = []
    window = f" · window {snapshot.window:.0f} s" if snapshot.window else ""
    header = Text.assemble(
        ("queueing top", "bold"),
        f" · {snapshot.source} · {_clock(snapshot.taken_at)}",
        (window, "dim"),
        (" · q quits", "dim"),
    )
    parts.append(header)
    if snapshot.problem:
        parts.append(Text(snapshot.problem, style="bold red"))
    queues = _table(box.SIMPLE_HEAD)
    queues.add_column("queue", no_wrap=True)
    for column in ("depth", "in flight", "sched", "in/s", "out/s", "p50", "p99"):
        queues.add_column(column, justify="right", no_wrap=True)
    for column in ("done", "failed", "retried", "dead", "workers"):
        queues.add_column(column, justify="right", no_wrap=True)
    for q in snapshot.queues:
        failed = q.failed + q.dead_lettered
        queues.add_row(
            escape(q.name) + (f" [dim]≤{escape(q.rate_limit)}[/dim]" if q.rate_limit else ""),
            str(q.depth),
            str(q.in_flight),
            str(q.scheduled),
            _rate(q.rate_in),
            _rate(q.rate_out),
            _latency(q.p50),
            _latency(q.p99),
            str(q.succeeded),
            Text(str(failed), style="red" if failed else ""),
            str(q.retried),
            Text(str(q.dead_letters), style="red" if q.dead_letters else ""),
            "-" if q.workers is None else f"{q.busy}/{q.workers}",
        )
    parts.append(queues if snapshot.queues else Text("no queues are declared yet"))
    processes = _table(box.SIMPLE_HEAD)
    for column in ("worker process", "queues (busy/slots)", "busy/slots", "seen"):
        processes.add_column(column, no_wrap=column != "queues (busy/slots)")
    now = time.time()
    for p in snapshot.processes:
        per = ", ".join(f"{q} {busy}/{n}" for q, (n, busy) in p.slots.items())
        slots = f"{p.busy if p.busy is not None else '-'}/{p.workers or '-'}"
        seen = f"{max(0.0, now - p.seen_at):.0f} s ago" if p.seen_at else "-"
        processes.add_row(escape(p.name), escape(per or ", ".join(p.queues)), slots, seen)
    parts.append(processes if snapshot.processes else Text("live worker processes: none"))
    if snapshot.schedules:
        schedules = _table(box.SIMPLE_HEAD)
        for column in ("schedule", "queue", "when", "next", "last", "last outcome"):
            schedules.add_column(column, no_wrap=True)
        for s in snapshot.schedules:
            when = f"cron {s.cron} ({s.timezone})" if s.cron else f"every {s.every:g} s"
            schedules.add_row(
                escape(s.name),
                escape(s.queue),
                escape(when),
                _clock(s.next_at),
                _clock(s.last_at),
                escape(s.last_outcome or "none found"),
            )
        parts.append(schedules)
    if snapshot.failures:
        parts.append(Text("recent failures", style="bold"))
        for f in snapshot.failures[:FAILURES_SHOWN]:
            message = f.message if len(f.message) <= MESSAGE_CHARS else f.message[:99] + "…"
            parts.append(
                Text.assemble(
                    f"{_clock(f.failed_at)}  {f.queue}  {f.id}  ",
                    (f"{f.error_type or f.state}: ", "red"),
                    message,
                )
            )
    return Group(*parts)


class HttpSnapshots:
    """Snapshots read from a web dashboard (`queueing dashboard`, `serve_dashboard`, or
    `queueing worker --dashboard-port`): GET `{url}/api/snapshot`."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise QueueingError(f"--url must be a dashboard's http:// address, got {url!r}")
        # The link a dashboard prints carries its token in the fragment: use it.
        given = urllib.parse.parse_qs(parts.fragment).get("token", [None])[0]
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/api/snapshot"
        self.token = token or given

    def _get(self) -> Any:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            try:
                reason = json.load(exc).get("error", exc.reason)
            except (ValueError, AttributeError):
                reason = exc.reason
            raise QueueingError(f"{self.url} answered {exc.code}: {reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise QueueingError(f"cannot read {self.url}: {exc}") from None

    async def __call__(self) -> Snapshot:
        doc = await trio.to_thread.run_sync(self._get)
        return Snapshot.from_doc(doc)


async def _keys(quit: trio.CancelScope) -> None:
    """`q` quits (a terminal only: keys come one by one, without Enter)."""
    if not sys.stdin.isatty():
        await trio.sleep_forever()
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        while True:
            key = await trio.to_thread.run_sync(os.read, fd, 1, abandon_on_cancel=True)
            if key in (b"q", b"Q", b""):
                quit.cancel()
                return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@asynccontextmanager
async def _screen() -> AsyncIterator[Callable[[Any], None]]:
    from rich.console import Console
    from rich.live import Live

    console = Console(highlight=False)
    with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        yield lambda renderable: live.update(renderable, refresh=True)


async def run_top(snapshots: Callable[[], Awaitable[Snapshot]], every: float) -> None:
    """Redraw the screen from `snapshots()` every `every` seconds until `q` or Ctrl-C."""
    async with _screen() as show, trio.open_nursery() as nursery:
        nursery.start_soon(_keys, nursery.cancel_scope)
        while True:
            try:
                snapshot = await snapshots()
            except QueueingError as exc:
                from rich.text import Text

                show(Text(f"queueing top: {exc} (trying again)", style="bold red"))
            else:
                show(render(snapshot))
            await trio.sleep(every)


def print_once(snapshot: Snapshot, as_json: bool) -> None:
    """`queueing top --once`: one screen (or its JSON) on stdout."""
    if as_json:
        print(json.dumps(snapshot.to_doc(), indent=2, default=str))
        return
    from rich.console import Console

    with suppress(BrokenPipeError):
        Console(highlight=False, width=max(100, Console().width)).print(render(snapshot))

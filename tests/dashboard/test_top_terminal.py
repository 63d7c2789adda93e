"""`queueing top` in a real terminal (a tmux pane), watching an in-process system through
the dashboard it serves (the example)."""

from __future__ import annotations

import os
import sys
from typing import Any

from dash_helpers import ROOT, example_serving

from queueing._top import render
from queueing.dashboard import QueueView, ScheduleView, Snapshot


def row(screen: str, queue: str) -> list[str]:
    """The cells of a queue's row on the screen: name, depth, in flight, scheduled, in/s,
    out/s, ... ([] if the queue is not shown)."""
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == queue:
            return cells
    return []


def rate_out(screen: str, queue: str) -> float:
    cells = row(screen, queue)
    try:
        return float(cells[5])
    except (IndexError, ValueError):
        return 0.0


def environment() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_top_shows_a_memory_system_through_its_dashboard(terminal: Any) -> None:
    with example_serving("--seconds", "60") as (_, link):
        command = [sys.executable, "-m", "queueing", "top", "--url", link, "--every", "0.5"]
        terminal.run(command, env=environment(), cwd=ROOT, width=130, height=40)
        screen = terminal.wait_for(lambda s: rate_out(s, "thumbnails") > 0)
        thumbnails = row(screen, "thumbnails")
        assert int(thumbnails[1]) >= 0  # depth
        assert int(thumbnails[2]) >= 0  # in flight
        assert thumbnails[-1].endswith("/4")  # busy/slots
        assert row(screen, "payments")
        assert "worker process" in screen
        terminal.keys("q")
        terminal.wait_for(lambda s: "exited 0" in s)


def test_render_shows_every_figure_of_a_queue() -> None:
    from rich.console import Console

    view = QueueView(
        name="resize",
        depth=12,
        scheduled=3,
        in_flight=4,
        outstanding=16,
        maxsize=100,
        rate_in=7.5,
        rate_out=6.25,
        p50=0.0421,
        p99=1.5,
        dead_letters=2,
        workers=8,
        busy=4,
        succeeded=950,
        failed=1,
        dead_lettered=2,
        retried=5,
    )
    snapshot = Snapshot(
        taken_at=0.0,
        source="redis://example:6379/0",
        window=10.0,
        queues=[view],
        processes=[],
        schedules=[],
        failures=[],
        problem="cannot read the figures: ConnectionError",
    )
    console = Console(width=130, record=True, color_system=None)
    console.print(render(snapshot))
    screen = console.export_text()
    assert row(screen, "resize")[:6] == ["resize", "12", "4", "3", "7.5", "6.2"]
    assert "42 ms" in screen
    assert "1.5 s" in screen
    assert row(screen, "resize")[-5:] == ["950", "3", "5", "2", "4/8"]
    assert "cannot read the figures: ConnectionError" in screen
    assert "live worker processes: none" in screen


def test_top_lists_each_schedules_last_tick_and_outcome() -> None:
    from rich.console import Console

    tick = ScheduleView(
        name="nightly",
        queue="reports",
        cron="0 3 * * *",
        every=None,
        timezone="UTC",
        next_at=90_000.0,
        last_at=3_600.0,
        last_outcome="failed",
    )
    fresh = ScheduleView(
        name="fresh", queue="reports", cron=None, every=60, timezone="UTC", next_at=60.0
    )
    snapshot = Snapshot(
        taken_at=0.0,
        source="memory://",
        window=10.0,
        queues=[],
        processes=[],
        schedules=[tick, fresh],
        failures=[],
    )
    console = Console(width=160, record=True, color_system=None)
    console.print(render(snapshot))
    screen = console.export_text()
    assert "last outcome" in screen
    assert row(screen, "nightly")[-1] == "failed"
    assert row(screen, "fresh")[-3:] == ["-", "none", "found"]

"""`queueing status` lists schedules: next run, last run and the last tick's outcome,
found by the tick's key in the broker (a SQLite file here: no server needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from queueing import Queue, Schedule, Worker, open_system
from queueing.cli import main

MODULE = """
from queueing import Queue, Schedule, Worker


class Report(Worker):
    async def handle(self, kind: str) -> str:
        return kind


reports = Queue("reports", Report)
yearly = Schedule("new-year", queue="reports", cron="0 0 1 1 *", payload="year")
hourly = Schedule("hourly", queue="reports", every=3600, payload="hour")
"""


class Report(Worker):
    async def handle(self, kind: str) -> str:
        return kind


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "sched_status_tasks.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "sched_status_tasks"


def test_status_shows_a_modules_schedules_with_the_last_ticks_outcome(
    tmp_path: Path, module: str
) -> None:
    url = f"sqlite:///{tmp_path}/queueing.db"
    yearly = Schedule("new-year", queue="reports", cron="0 0 1 1 *", payload="year")
    last = yearly.last_tick(time.time())

    async def the_last_tick_ran() -> None:  # as a worker would have, at new year
        async with open_system(Queue("reports", Report), broker=url) as system:
            await (await system.submit("reports", "year", key=yearly.key(last)))

    trio.run(the_last_tick_ran)
    shown = CliRunner().invoke(main, ["status", module, "--broker", url, "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    schedules = {s["name"]: s for s in info["schedules"]}
    assert set(schedules) == {"new-year", "hourly"}
    assert schedules["new-year"]["last_at"] == last
    assert schedules["new-year"]["last_outcome"] == "succeeded"
    assert schedules["new-year"]["next_at"] == yearly.next_tick(time.time())
    assert schedules["hourly"]["last_outcome"] is None  # no process ran its last tick
    assert schedules["hourly"]["next_at"] - schedules["hourly"]["last_at"] == 3600

    table = CliRunner().invoke(main, ["status", module, "--broker", url])
    assert table.exit_code == 0, table.output
    assert "schedules" in table.output
    assert "new-year" in table.output
    assert "succeeded" in table.output
    assert "none found" in table.output


def test_status_without_schedules_lists_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/queueing.db"

    async def declare() -> None:
        async with open_system(Queue("reports", Report), broker=url):
            pass

    trio.run(declare)
    shown = CliRunner().invoke(main, ["status", "--broker", url, "--json"])
    assert shown.exit_code == 0, shown.output
    assert "schedules" not in json.loads(shown.output)


async def test_a_serving_process_reports_its_schedules_last_outcome(autojump_clock: Any) -> None:
    # What a process publishes for the dashboards (over Redis, with its heartbeat).
    tick = Schedule("tick", queue="reports", every=10, payload="t")
    async with open_system(Queue("reports", Report), tick) as system:
        await trio.sleep(15)  # one tick ran (within the first 10 s)
        assert system._report is not None
        [doc] = system._report.report()["schedules"]
        await trio.sleep(10)
        [later] = system._report.report()["schedules"]
    assert doc["name"] == "tick"
    assert doc["last_outcome"] == "succeeded"
    assert doc["next_at"] - doc["last_at"] == 10
    assert later["last_at"] == doc["next_at"]  # the next tick came, and ran
    assert later["last_outcome"] == "succeeded"

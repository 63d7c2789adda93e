"""Schedules over RabbitMQ: each tick is one task, and `queueing status` lists the
schedules the live workers report, with the last tick's outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from queueing import Queue, Schedule, Worker, open_system
from queueing.cli import main

pytestmark = pytest.mark.amqp


class Log(Worker):
    def __init__(self, seen: list[str], ran: dict[str, trio.Event]) -> None:
        self.seen = seen
        self.ran = ran

    async def handle(self, payload: Any) -> None:
        self.seen.append(self.task_id or "")
        self.ran["tick"].set()


async def test_ticks_run_once_and_status_shows_the_last_outcome(amqp_url: str) -> None:
    seen: list[str] = []
    tick = Schedule("tick", queue="log", every=0.5)
    ran = {"tick": trio.Event()}
    queue = Queue("log", Log, worker_kwargs={"seen": seen, "ran": ran})
    started = trio.current_time()
    async with (
        open_system(queue, tick, broker=amqp_url),
        open_system(queue, tick, broker=amqp_url),
    ):
        await trio.sleep(2.2)
        ran["tick"] = trio.Event()
        await ran["tick"].wait()  # a tick just ran: it is the last one for a while
        shown = await trio.to_thread.run_sync(
            lambda: CliRunner().invoke(main, ["status", "--broker", amqp_url, "--json"])
        )
    # No more runs than ticks fell due while the two systems ran (each submitting every
    # tick would about double that); measured, not a fixed 6, so a slow start on a loaded
    # machine (more ticks due) is no failure.
    assert 4 <= len(seen) <= int((trio.current_time() - started) / 0.5) + 1
    assert len(set(seen)) == len(seen)  # no tick ran twice
    assert shown.exit_code == 0, shown.output
    [listed] = json.loads(shown.output)["schedules"]
    assert listed["name"] == "tick"
    assert listed["last_outcome"] in ("succeeded", "running")
    assert listed["next_at"] - listed["last_at"] == 0.5

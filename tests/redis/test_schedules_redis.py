"""Schedules over a shared broker: every process runs them, each tick is one task."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from redis_helpers import start_worker, stop_workers, wait_for

from queueing import Queue, Schedule, Worker, open_system
from queueing.cli import main

pytestmark = pytest.mark.redis


class Log(Worker):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def handle(self, payload: Any) -> None:
        self.seen.append(self.task_id or "")


async def test_two_processes_submit_each_tick_once(redis_url: str) -> None:
    seen: list[str] = []
    tick = Schedule("tick", queue="log", every=0.5)
    queue = Queue("log", Log, worker_kwargs={"seen": seen})
    started = trio.current_time()
    async with (
        open_system(queue, tick, broker=redis_url),
        open_system(queue, tick, broker=redis_url),
    ):
        await trio.sleep(2.2)
    # No more runs than ticks fell due while the two systems ran (each submitting every
    # tick would about double that); measured, not a fixed 5, so a slow start on a loaded
    # machine (more ticks due) is no failure.
    assert 3 <= len(seen) <= int((trio.current_time() - started) / 0.5) + 1
    assert len(set(seen)) == len(seen)  # no tick ran twice


# -- real worker processes ----------------------------------------------------------------


async def _tick_states(url: str, schedule: Schedule, ticks: list[float]) -> dict[float, str]:
    """The state of each tick's task that the broker knows (found by the tick's key)."""
    from queueing import UnknownTask, connect
    from queueing._engine import key_id

    found = {}
    async with connect(url) as client:
        for tick in ticks:
            try:
                status = await client.receipt(key_id("ticks", schedule.key(tick))).status()
            except UnknownTask:
                continue
            found[tick] = status.state.value
    return found


async def _submitted(url: str) -> int:
    from queueing import connect

    async with connect(url) as client:
        info = await client._broker.status()  # type: ignore[attr-defined]
    return int(info["queues"].get("ticks", {}).get("submitted", 0))


async def _live_workers(url: str, count: int) -> bool:
    """Whether `count` worker processes are live (a heartbeat)."""
    from queueing import connect

    async with connect(url) as client:
        info = await client._broker.status()  # type: ignore[attr-defined]
    return len(info["workers"]) >= count


@pytest.mark.slow
async def test_ticks_go_on_when_worker_processes_are_killed(redis_url: str, tmp_path: Path) -> None:
    from sched_tasks import beat

    began = time.time()
    workers = [start_worker(redis_url, "sched_tasks:beating", tmp_path) for _ in range(3)]
    try:
        await wait_for(lambda: _live_workers(redis_url, 3), timeout=60, every=0.2)
        await trio.sleep(2.5)
        # Every process submits every tick (the tick's key makes it one task), so the one
        # that got the last tick in is among those killed here; two of three are, SIGKILL
        # at once, no goodbye.
        watched_from = time.time()
        for victim in workers[:2]:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            await trio.sleep(3.2)
        watched_to = time.time() - 1.5  # the last tick's task has had time to run

        shown = await trio.to_thread.run_sync(
            lambda: CliRunner().invoke(main, ["status", "--broker", redis_url, "--json"])
        )
        shown_at = time.time()
    finally:
        stop_workers(workers)
    ticks = [float(t) for t in range(int(began), int(time.time()) + 2)]
    states = await _tick_states(redis_url, beat, ticks)
    watched = [t for t in ticks if watched_from <= t <= watched_to]
    assert len(watched) >= 4
    assert {t: states.get(t) for t in watched} == dict.fromkeys(watched, "succeeded")  # none missed
    assert await _submitted(redis_url) == len(states)  # none doubled: one task per tick
    # `queueing status` lists the schedule the live worker reports, with its last outcome.
    assert shown.exit_code == 0, shown.output
    [listed] = json.loads(shown.output)["schedules"]
    assert listed["name"] == "beat"
    # (None only if the tick had come a moment before and was not yet in.)
    in_yet = listed["last_outcome"] is not None or shown_at - listed["last_at"] < 0.5
    assert in_yet
    assert listed["last_outcome"] in ("succeeded", "pending", "running", None)
    assert listed["next_at"] - listed["last_at"] == 1


async def test_processes_starting_together_catch_up_the_missed_tick_once(
    redis_url: str, tmp_path: Path
) -> None:
    from sched_tasks import ten_minutes

    began = time.time()
    workers = [start_worker(redis_url, "sched_tasks:catching", tmp_path) for _ in range(3)]
    try:
        await wait_for(lambda: _live_workers(redis_url, 3), timeout=60, every=0.2)
        await trio.sleep(1.5)
    finally:
        stop_workers(workers)
    # The tick at or before the start (missed: no process ran), and one more only if a
    # ten-minute mark passed during the test.
    ticks = sorted({ten_minutes.last_tick(began), ten_minutes.last_tick(time.time())})
    states = await _tick_states(redis_url, ten_minutes, ticks)
    assert states[ticks[0]] == "succeeded"
    assert await _submitted(redis_url) == len(states)  # once, for three processes

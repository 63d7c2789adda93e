"""Schedules over a shared broker: every process runs them, each tick is one task."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from queueing import Queue, Schedule, Worker, open_system

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
    async with (
        open_system(queue, tick, broker=redis_url),
        open_system(queue, tick, broker=redis_url),
    ):
        await trio.sleep(2.2)
    assert 3 <= len(seen) <= 5
    assert len(set(seen)) == len(seen)  # no tick ran twice

"""The schedules of the multi-process schedule tests, run by `queueing worker
sched_tasks:beating` (a tick every second) or `sched_tasks:catching` (every 10 minutes,
catching up the latest missed tick at start)."""

from __future__ import annotations

from queueing import Queue, Schedule, Worker


class Tick(Worker):
    async def handle(self, payload: str) -> str:
        return payload


ticks = Queue("ticks", Tick, workers=2)
beat = Schedule("beat", queue="ticks", every=1.0, payload="beat")
ten_minutes = Schedule("ten-minutes", queue="ticks", every=600.0, payload="ten", catch_up=True)

beating = [ticks, beat]
catching = [ticks, ten_minutes]

"""Queues for the observability tests, run by `queueing worker observe_tasks`.

- `steps`: `{"steps": n, "every": s}` reports progress at each of n steps, s seconds
  apart, then returns n;
- `hang`: sleeps for the payload's seconds (a task to catch running, and kill).
"""

from __future__ import annotations

from typing import Any

import trio

from queueing import Queue, Worker


class Steps(Worker):
    async def handle(self, job: dict[str, Any]) -> int:
        steps = int(job["steps"])
        for done in range(1, steps + 1):
            await trio.sleep(float(job["every"]))
            self.progress(done, steps, note=f"step {done} of {steps}")
        return steps


class Hang(Worker):
    async def handle(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


steps = Queue("steps", Steps, workers=2)
hang = Queue("hang", Hang, workers=1)

"""Ours: a `job` queue served by `queueing worker ours_tasks:job --concurrency 8` on the
bench's SQLite file."""

from __future__ import annotations

from queueing import Queue, Worker


class Job(Worker):
    async def handle(self, payload: int) -> int:
        return payload


# maxsize above the bench's task count: Huey has no such limit, and waiting for room (our
# backpressure) is not what is measured here.
job = Queue("job", Job, workers=8, maxsize=1_000_000)

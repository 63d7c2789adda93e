"""The queue of the SQLite multi-process fair-share test, run by `queueing worker
sq_fair_tasks:capped` (see test_sqlite_fair_processes.py)."""

from __future__ import annotations

import os
import time

import trio

from queueing import Queue, Worker

#: `tenant_concurrency` of the `capped` queue.
TENANT_CAP = 2


class Span(Worker):
    """Records its tenant and when it started and ended (CLOCK_MONOTONIC nanoseconds, one
    clock for every process of the machine), in a file of this process in
    `$QUEUEING_TEST_RUNS`, before it answers (so inside the span its task was claimed)."""

    async def handle(self, job: dict[str, str]) -> str:
        started = time.monotonic_ns()
        await trio.sleep(float(os.environ.get("QUEUEING_TEST_TASK_SECONDS", "0.02")))
        ended = time.monotonic_ns()
        _span(f"{job['tenant']} {started} {ended} {self.task_id}\n")
        return job["tenant"]


def _span(line: str) -> None:
    path = os.path.join(os.environ["QUEUEING_TEST_RUNS"], f"{os.getpid()}.spans")
    spans = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(spans, line.encode())  # one write(2) per task
    finally:
        os.close(spans)


capped = Queue(
    "capped",
    Span,
    workers=4,
    maxsize=100_000,
    tenant=lambda job: job["tenant"],
    tenant_concurrency=TENANT_CAP,
)

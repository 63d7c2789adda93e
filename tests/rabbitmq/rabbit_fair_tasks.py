"""The queue of the multi-process fair share test, run by `queueing worker
rabbit_fair_tasks:capped` (a module of its own: tests that serve `rabbit_tasks` expect its
queues only)."""

from __future__ import annotations

import os
import time

import trio

from queueing import Queue, Worker


class Spans(Worker):
    """Records its tenant (the first word of its payload) with when it started and ended,
    one line per run in `$QUEUEING_TEST_RUNS/<pid>.spans`."""

    async def handle(self, name: str) -> str:
        start = time.time()
        await trio.sleep(float(os.environ.get("QUEUEING_TEST_TASK_SECONDS", "0.002")))
        path = os.path.join(os.environ["QUEUEING_TEST_RUNS"], f"{os.getpid()}.spans")
        line = f"{name.split()[0]} {start} {time.time()}\n".encode()
        spans = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(spans, line)  # one write(2), before the handler answers
        finally:
            os.close(spans)
        return name


capped = Queue("capped", Spans, workers=8, tenant_concurrency=2)

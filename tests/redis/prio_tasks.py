"""The queue of the cross-process priority test, run by `queueing worker prio_tasks:queue`.

Each start is recorded (the payload and `time.time_ns()`, one line, written straight to a
file of this process in `$QUEUEING_TEST_RUNS`) before the handler sleeps a little, so the
test can put every process's starts in one order.
"""

from __future__ import annotations

import os
import time

import trio

from queueing import Queue, Worker

_log: int | None = None


class Started(Worker):
    async def handle(self, name: str) -> str:
        global _log
        if _log is None:
            path = os.path.join(os.environ["QUEUEING_TEST_RUNS"], f"{os.getpid()}.log")
            _log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(_log, f"{time.time_ns()} {name}\n".encode())
        await trio.sleep(0.002)
        return name


queue = Queue("prio", Started, workers=2, maxsize=100_000)

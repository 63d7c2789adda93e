"""Queues for the multi-process tests, run by `queueing worker rabbit_tasks:queue`.

Each run of a task is recorded (its id, one line per run, written straight to a file of
this process in `$QUEUEING_TEST_RUNS`) before the handler answers, so a test can tell which
process ran what, even after a SIGKILL.
"""

from __future__ import annotations

import os

import trio

from queueing import Queue, RetryPolicy, Worker

_log: int | None = None


def _record(task_id: str) -> None:
    global _log
    if _log is None:
        directory = os.environ["QUEUEING_TEST_RUNS"]
        path = os.path.join(directory, f"{os.getpid()}.log")
        _log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log, f"{task_id}\n".encode())  # one write(2): survives a SIGKILL


class Record(Worker):
    """Takes a few milliseconds, records that it ran, returns its payload doubled."""

    async def handle(self, number: int) -> int:
        assert self.task_id is not None
        _record(self.task_id)
        await trio.sleep(float(os.environ.get("QUEUEING_TEST_TASK_SECONDS", "0.002")))
        return 2 * number


queue = Queue("mp", Record, workers=8, maxsize=100_000)


class Picky(Worker):
    """Accepts only "ok"; anything else fails for good (no retries): a dead letter."""

    async def handle(self, word: str) -> str:
        if word != "ok":
            raise ValueError(f"not ok: {word!r}")
        return "fine"


picky = Queue("picky", Picky, retry=RetryPolicy.never())

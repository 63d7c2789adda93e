"""The queue of the multi-process rate limit test, run by `queueing worker rate_tasks:rated`.

Each start is recorded (wall-clock time and payload, one line, straight to a file of this
process in `$QUEUEING_TEST_RUNS`); the limit comes from `$QUEUEING_TEST_RATE` ("200/s" by
default), per key (the payload modulo `$QUEUEING_TEST_RATE_KEYS`) if that is set.
"""

from __future__ import annotations

import os
import time

from queueing import Queue, Worker

_log: int | None = None


class Stamp(Worker):
    async def handle(self, number: int) -> int:
        global _log
        if _log is None:
            path = os.path.join(os.environ["QUEUEING_TEST_RUNS"], f"{os.getpid()}.log")
            _log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(_log, f"{time.time():.6f} {number}\n".encode())
        return number


def rate_key(number: int) -> str:
    return str(number % (KEYS or 1))


KEYS = int(os.environ.get("QUEUEING_TEST_RATE_KEYS", "0"))
rated = Queue(
    "rated",
    Stamp,
    workers=8,
    maxsize=100_000,
    rate_limit=os.environ.get("QUEUEING_TEST_RATE", "200/s"),
    rate_key=rate_key if KEYS else None,
)

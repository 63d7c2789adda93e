"""The queues of the cross-process fair-share tests, run by `queueing worker
fair_tasks:QUEUE` (`shared` and `capped`).

Each handler writes its own record, straight to a file of this process in
`$QUEUEING_TEST_RUNS` (one line per event, `time.monotonic_ns()` first: one clock for
every process of the machine): `shared` a line when a task is done (its completion), and
`capped` a line when a task starts and one when it ends, with its tenant, so the test can
count how many of a tenant's tasks ran at once.
"""

from __future__ import annotations

import os
import time

import trio

from queueing import Queue, Worker

_log: int | None = None


def record(line: str) -> None:
    global _log
    if _log is None:
        path = os.path.join(os.environ["QUEUEING_TEST_RUNS"], f"{os.getpid()}.log")
        _log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log, f"{time.monotonic_ns()} {line}\n".encode())


class Completed(Worker):
    async def handle(self, name: str) -> str:
        await trio.sleep(0.001)
        record(f"done {name}")
        return name


class Overlapping(Worker):
    async def handle(self, name: str) -> str:
        tenant = name.partition("-")[0]
        record(f"start {tenant}")
        await trio.sleep(0.1)  # long enough that a tenant has CAP at once
        record(f"end {tenant}")
        return name


#: Every tenant's name is the part of the payload before its first '-'.
shared = Queue("shared", Completed, workers=4, maxsize=100_000)
#: At most CAP of one tenant's tasks at once, over every process.
CAP = 2
capped = Queue("capped", Overlapping, workers=4, tenant_concurrency=CAP)

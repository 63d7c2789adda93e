"""Queues of the chaos scenarios, run by `queueing worker chaos_tasks:queue` (or `:small`).

Each run of a task is written (its id and the wall-clock time it started) to a file of its
process in `$QUEUEING_CHAOS_RUNS` (one `write(2)` per run, before the handler answers, so
it survives a SIGKILL): a scenario counts what ran twice, where, and since when.
"""

from __future__ import annotations

import os
import time

import trio

from queueing import Queue, Worker

_log: int | None = None

# A scenario may lower the cap of the replies streams (entries) in every process it starts.
if os.environ.get("QUEUEING_CHAOS_REPLIES_MAXLEN"):
    from queueing.brokers.redis import _keys

    _keys.REPLIES_MAXLEN = int(os.environ["QUEUEING_CHAOS_REPLIES_MAXLEN"])


def _record(task_id: str) -> None:
    global _log
    directory = os.environ.get("QUEUEING_CHAOS_RUNS")
    if not directory:
        return
    if _log is None:
        path = os.path.join(directory, f"{os.getpid()}.log")
        _log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log, f"{task_id} {time.time():.3f}\n".encode())


#: A payload from LONG up takes (payload - LONG) milliseconds: a long task.
LONG = 1_000_000


class Record(Worker):
    """Records that it ran, takes `$QUEUEING_CHAOS_TASK_SECONDS` (a long task: see LONG),
    returns its payload x 2."""

    async def handle(self, number: int) -> int:
        assert self.task_id is not None
        _record(self.task_id)
        if number >= LONG:
            await trio.sleep((number - LONG) / 1000)
        else:
            await trio.sleep(float(os.environ.get("QUEUEING_CHAOS_TASK_SECONDS", "0.005")))
        return 2 * number


#: The queue of most scenarios: room for every task of a run.
queue = Queue("chaos", Record, workers=8, maxsize=100_000)
#: The overload scenario's: a small maxsize, so that submitters wait.
small = Queue("small", Record, workers=4, maxsize=100)

"""Structured logs: the fields that say which task a log line is about.

Every line the queueing package logs about one task carries `queue`, `task_id` and
`attempt` as attributes of its `LogRecord` (stdlib `extra=`), so that a JSON formatter
writes them as fields. `TaskFields`, a `logging.Filter`, gives the same fields to the
lines a handler logs while it runs (any logger): the worker running in a trio task (or a
sync handler's thread, which runs in a copy of its context) is found through a context
variable set once per worker, so this costs nothing per task.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._task import Task
    from ._worker import Worker

#: The worker whose trio task (or sync handler's thread) this is.
current_worker: ContextVar[Worker[Any, Any] | None] = ContextVar(
    "queueing_current_worker", default=None
)
#: The names of the fields, as `LogRecord` attributes.
FIELDS = ("queue", "task_id", "attempt")


def task_fields(task: Task) -> dict[str, Any]:
    """`extra=` for a log line about `task`."""
    return {"queue": task.queue, "task_id": task.id, "attempt": task.attempts}


class TaskFields(logging.Filter):
    """A logging filter that adds `queue`, `task_id` and `attempt` to log records.

    Add it to a handler (`handler.addFilter(queueing.TaskFields())`): every record that
    passes that handler and was logged while a task's handler ran (in its trio task, or in
    the thread of a sync handler) gets the task's fields; the package's own lines about a
    task carry them already. Other records get None in each field, so that a format string
    such as `"%(task_id)s %(message)s"` works for every line. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "task_id", None) is not None:
            return True  # logged with the task's fields already
        worker = current_worker.get()
        task = worker._task if worker is not None else None
        if task is not None:
            record.queue = task.queue
            record.task_id = task.id
            record.attempt = task.attempts
        else:
            for name in FIELDS:
                if not hasattr(record, name):
                    setattr(record, name, None)
        return True

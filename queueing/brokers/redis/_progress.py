"""Task progress in Redis: one small JSON string per task that reported any.

`{prefix:queue}:progress:<task id>` (under its queue's hash tag, like the task's record)
holds the latest `Progress`, replaced at each publish (a SET per task, one pipeline per
publish: the engine coalesces reports). It expires `PROGRESS_TTL` after the last report
plus the queue's `result_ttl`: long enough to outlive any sane gap between two reports of
a running task and the outcome's own TTL; a task silent for longer than that loses only
its progress. Readers read it leniently: anyone could have written there.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from ..._task import Progress, Task, progress_doc, progress_from_doc
from .._contract import QueueInfo
from . import _keys as k
from ._calls import Calls
from ._wire import dumps

#: Seconds progress is kept after the last report, on top of the queue's `result_ttl`.
PROGRESS_TTL = 86_400.0


def progress_key(keys: k.Keys, task_id: str) -> str:
    return keys.of(keys.home(task_id), f"progress:{task_id}")


def decode(raw: Any) -> Progress | None:
    """A stored progress, or None if it is not one."""
    try:
        return progress_from_doc(json.loads(raw))
    except (TypeError, ValueError):
        return None


class ProgressStore:
    """`store_progress` and `read_progress` of the Redis broker."""

    def __init__(self, calls: Calls, keys: k.Keys) -> None:
        self.calls = calls
        self.keys = keys

    async def store(self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]) -> None:
        ttl = k.ttl(min(queue.result_ttl, k.MAX_TTL / 1000 - PROGRESS_TTL) + PROGRESS_TTL)

        def fill(pipe: Any) -> list[Any]:
            return [
                pipe.set(progress_key(self.keys, task.id), dumps(progress_doc(progress)), px=ttl)
                for task, progress in updates
            ]

        await self.calls.pipelined("store progress", fill)

    async def read(self, task_ids: Collection[str]) -> dict[str, Progress]:
        ids = list(task_ids)
        if not ids:
            return {}

        def fill(pipe: Any) -> list[Any]:
            return [pipe.get(progress_key(self.keys, task_id)) for task_id in ids]

        answers = await self.calls.pipelined("read progress", fill)
        found = {}
        for task_id, raw in zip(ids, answers, strict=True):
            progress = decode(raw) if isinstance(raw, str) else None
            if progress is not None:
                found[task_id] = progress
        return found

"""Leases of the tasks this process claimed: renewed on the engine's tick, and at once
when Redis answers again after a lost connection or lost data; handed back at shutdown.

A claimed entry sits in the ready stream's group pending list under this process's consumer
name; `renew.lua` resets its idle time (another process reclaims it once it is idle for a
whole lease) and tells which tasks are no longer ours: settled elsewhere (cancelled),
reclaimed by another process after this one stalled, or without a record (Redis lost it:
such a task is settled LOST here, so that the engine drops it quietly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import trio

from ..._task import Task, TaskState
from .._contract import QueueInfo
from . import _keys as k
from ._calls import Calls
from ._losses import LOST_ERROR, Losses
from ._wire import apply_outcome, encode_envelope

log = logging.getLogger("queueing.redis")

#: Tasks per `renew.lua` / `release.lua` call.
RENEW_CHUNK = 500


def _chunks(items: Sequence[Task], size: int) -> list[Sequence[Task]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Leases:
    """Renewals and hand-backs of the tasks in `held` (the consumer's, by queue and entry)."""

    def __init__(
        self,
        calls: Calls,
        keys: k.Keys,
        *,
        consumer: str,
        lease: float,
        held: dict[str, dict[str, Task]],
        losses: Losses,
    ) -> None:
        self.calls = calls
        self.keys = keys
        self.consumer = consumer
        self.lease = lease
        self.held = held
        self.losses = losses
        self._lost: dict[str, list[Task]] = {}
        self._renew_lot = trio.lowlevel.ParkingLot()
        self._renew_due = False
        calls.on_reconnect.append(self._reconnected)
        losses.on_loss.append(self._reconnected)  # drop at once what lost its record

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        lost = self._lost.pop(queue.name, [])
        mine = [task for task in tasks if task.handle is not None and not task.state.final]
        lost += await self._renew(queue.name, mine)
        unique = {id(task): task for task in lost}
        return list(unique.values())

    async def renew_now(self, name: str, tasks: Sequence[Task]) -> list[Task]:
        """Renew these tasks' leases (of the queue or shard `name`) now: those no longer
        ours (settled elsewhere, taken over, or gone), left out of `held`."""
        return await self._renew(name, tasks)

    async def _renew(self, name: str, tasks: Sequence[Task]) -> list[Task]:
        held = self.held.get(name, {})
        lost: list[Task] = []
        gone = 0
        for chunk in _chunks(tasks, RENEW_CHUNK):
            keys = [self.keys.ready(name), *(self.keys.task(task.id) for task in chunk)]
            args = [self.consumer, *(task.handle[0] for task in chunk)]
            verdicts = await self.calls.eval("renew leases", "renew", keys, args)
            for task, verdict in zip(chunk, verdicts, strict=True):
                verdict = str(verdict)
                if verdict == "+":
                    continue
                held.pop(task.handle[0], None)
                if verdict == "?":  # Redis lost its record: its outcome cannot be stored
                    if not task.state.final:
                        task.settle(TaskState.LOST, None, LOST_ERROR, time.time())
                        gone += 1
                elif verdict.startswith("="):
                    if task.state.final:
                        continue  # settled here meanwhile: nothing to tell
                    try:
                        apply_outcome(task, verdict[1:])
                    except (ValueError, TypeError, KeyError) as exc:
                        log.error("task %s: unreadable outcome (%s)", task.id, exc)
                else:
                    log.warning(
                        "queue %r: task %s is no longer ours: another process took it over "
                        "after this one stalled past its lease (%gs)",
                        name,
                        task.id,
                        self.lease,
                    )
                lost.append(task)
        if gone:
            self.losses.note(f"the records of {gone} task(s) held here are gone")
        return lost

    def _reconnected(self) -> None:
        self._renew_due = True
        self._renew_lot.unpark_all()

    async def renew_loop(self) -> None:
        """Background: after a lost connection, renew every lease we hold as soon as Redis
        answers again, not at the engine's next tick (which may come after the lease ran
        out for a stall shorter than it)."""
        while True:
            if not self._renew_due:
                await self._renew_lot.park()
                continue
            self._renew_due = False
            for name, held in list(self.held.items()):
                if held:
                    lost = await self._renew(name, list(held.values()))
                    self._lost.setdefault(name, []).extend(lost)

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:
        name = queue.name
        held = self.held.get(name, {})
        mine = [task for task in tasks if task.handle is not None]
        for chunk in _chunks(mine, RENEW_CHUNK):
            keys = [
                self.keys.ready(name),
                self.keys.live(name),
                *(self.keys.task(task.id) for task in chunk),
            ]
            args: list[Any] = []
            for task in chunk:
                args += [task.handle[0], task.id, encode_envelope(task)]
                held.pop(task.handle[0], None)
            await self.calls.eval("release", "release", keys, args)

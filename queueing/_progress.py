"""Task progress: what handlers report (`Worker.progress`), coalesced and published.

A handler may report in a tight loop: `report` only keeps the latest value per task (and
wakes the publisher if it sleeps). The publisher, an actor of the system, publishes what
changed at once, then at most once per `PUBLISH_EVERY` seconds while reports keep coming:
onto the task's own record (a receipt in this process reads it there) and to the broker
(`Broker.store_progress`), where a receipt in any process reads it
(`Broker.read_progress`). Watchers in this process (`Receipt.watch`) wake at each publish.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import trio

from actors import Actor

from ._exceptions import BrokerError
from ._logs import task_fields
from ._task import Progress, Task
from .brokers._contract import queue_of

if TYPE_CHECKING:
    from .brokers._contract import Broker, QueueInfo

log = logging.getLogger("queueing")
_wall = time.time

#: Seconds between two publishes while reports keep coming (the latest value wins).
PUBLISH_EVERY = 0.1
#: The longest `note` of a report, in characters.
MAX_NOTE = 1000


def checked(done: Any, total: Any, note: Any) -> None:
    """Refuse what a report cannot carry (the message says which argument, and why)."""
    if type(done) not in (int, float) or not math.isfinite(done):
        raise TypeError(f"progress(done=...) must be a finite int or float, got {done!r:.80}")
    if total is not None and (type(total) not in (int, float) or not math.isfinite(total)):
        raise TypeError(
            f"progress(total=...) must be None or a finite int or float, got {total!r:.80}"
        )
    if note is not None:
        if not isinstance(note, str):
            raise TypeError(f"progress(note=...) must be None or a str, got {type(note).__name__}")
        if len(note) > MAX_NOTE:
            raise ValueError(
                f"progress(note=...) is {len(note)} characters, over the limit of {MAX_NOTE}: "
                "keep notes short (a stage, a file name), not logs"
            )


class ProgressBoard:
    """Reports waiting to be published, and the publishing itself (one per system)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.shared = broker.shared
        # id: (queue, task, done, total, note, at); written by handlers (sync handlers from
        # their threads: hence the lock), taken whole by the publisher.
        self._pending: dict[str, tuple[QueueInfo, Task, float, float | None, str | None, float]]
        self._pending = {}
        self._lock = threading.Lock()
        self._idle = False
        self._wake = trio.lowlevel.ParkingLot()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = 0
        #: Unparked at each publish (watchers of this process).
        self.published = trio.lowlevel.ParkingLot()
        self._unsupported = False
        # One publish at a time, in order (trio's Lock is fair): a task's earlier report,
        # taken by the publisher and still on its way, never lands after its last one.
        self._publishing = trio.Lock()

    def report(
        self, queue: QueueInfo, task: Task, done: float, total: float | None, note: str | None
    ) -> None:
        """Keep the latest report of `task` (from its handler: any thread)."""
        if self._unsupported:
            task.progress = Progress(done, total, note, _wall())
            return
        with self._lock:
            self._pending[task.id] = (queue, task, done, total, note, _wall())
            idle = self._idle
            self._idle = False
        if idle:
            if threading.get_ident() == self._thread:
                self._wake.unpark_all()
            elif self._token is not None:
                self._token.run_sync_soon(self._wake.unpark_all)

    async def run(self) -> None:
        """Publish reports until cancelled: at once after a quiet spell, then at most once
        per `PUBLISH_EVERY` seconds."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        while True:
            with self._lock:
                batch = self._pending
                self._pending = {}
                self._idle = not batch
            if not batch:
                await self._wake.park()
                continue
            await self.publish(batch)
            await trio.sleep(PUBLISH_EVERY)

    async def publish(
        self, batch: dict[str, tuple[QueueInfo, Task, float, float | None, str | None, float]]
    ) -> None:
        async with self._publishing:
            await self._publish(batch)

    async def _publish(
        self, batch: dict[str, tuple[QueueInfo, Task, float, float | None, str | None, float]]
    ) -> None:
        by_queue: dict[str, tuple[QueueInfo, list[tuple[Task, Progress]]]] = {}
        for queue, task, done, total, note, at in batch.values():
            progress = Progress(done, total, note, at)
            task.progress = progress  # the record this process holds
            items = by_queue.setdefault(queue.name, (queue, []))[1]
            items.append((task, progress))
            if task.run is not None:
                # A pipeline's stage: its run's receipt shows it too, naming the stage.
                run = Task(task.run, queue_of(task.run), None, 0.0)
                items.append((run, Progress(done, total, note, at, queue.name)))
        self.published.unpark_all()
        if self._unsupported:
            return
        for queue, items in by_queue.values():
            try:
                await self.broker.store_progress(queue, items)
            except NotImplementedError as exc:
                self._unsupported = True
                log.warning("task progress stays in this process: %s", exc)
                return
            except BrokerError as exc:  # the next report publishes again
                task = items[0][0]
                log.warning(
                    "progress of %d task(s) of %r not published: %s",
                    len(items),
                    queue.name,
                    exc,
                    extra=task_fields(task),
                )

    @property
    def waiting(self) -> bool:
        """Whether reports wait to be published (a quick look, for the outcome paths)."""
        return bool(self._pending)

    async def settling(self, task: Task) -> None:
        """`task` is about to get its outcome: publish its last report first, so that
        whoever sees the outcome sees that report with it."""
        with self._lock:
            entry = self._pending.pop(task.id, None)
        if entry is not None:
            await self.publish({task.id: entry})
        elif self._publishing.locked():
            # A publish under way may carry this task's last report: the outcome waits
            # until it has landed.
            async with self._publishing:
                pass

    async def read(self, task: Task) -> Progress | None:
        """The latest progress of `task` this process knows (a receipt's status): a report
        made here and not published yet, else the latest published."""
        with self._lock:
            pending = self._pending.get(task.id)
        if pending is not None:
            await trio.lowlevel.checkpoint()
            return Progress(*pending[2:])
        if not self.shared:
            await trio.lowlevel.checkpoint()
            return getattr(task, "progress", None)
        try:
            found = await self.broker.read_progress([task.id])
        except NotImplementedError:
            return getattr(task, "progress", None)
        return found.get(task.id)


class ProgressActor(Actor):
    """The actor that runs `ProgressBoard.run` (in a system that serves queues)."""

    def __init__(self, board: ProgressBoard) -> None:
        self.board = board
        self._scope: trio.CancelScope | None = None

    async def run(self) -> None:
        with trio.CancelScope() as self._scope:
            await self.board.run()

    def on_stop_requested(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

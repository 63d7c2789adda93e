"""Task priorities in process: the waiting tasks of a queue that uses them, by priority.

A queue starts without one: its ready tasks go straight to its buffer (an `actors.Mailbox`,
FIFO), the fastest path. The first task submitted to it with a priority above the lowest
switches the queue over for the rest of the system's life: its waiting tasks (those in the
buffer too, in order) move to a `Ranked` store, one FIFO per priority level, and the
dispatcher hands its workers the highest-priority task each time one asks for work
(`Mailbox.wait_for_demand`: the pull model is unchanged, no busy worker holds a task).

A queue with `retry_ahead` switches the same way at its first due retry, to a
`RetriesAhead` store: one more FIFO per level, of due retries, read before the level's
new tasks.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from ._task import MAX_PRIORITY, MIN_PRIORITY, Task, priority_of

if TYPE_CHECKING:
    from actors import Mailbox

_LEVELS = MAX_PRIORITY - MIN_PRIORITY + 1


class Ranked:
    """Waiting tasks by priority: the highest level first, FIFO within a level."""

    __slots__ = ("_arrived", "count", "levels")

    def __init__(self) -> None:
        self.levels: list[deque[Task]] = [deque() for _ in range(_LEVELS)]
        self.count = 0
        self._arrived = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return self.count

    def push(self, task: Task) -> None:
        """Queue a task behind those of its priority."""
        self.levels[priority_of(task) - MIN_PRIORITY].append(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def push_first(self, task: Task) -> None:
        """Queue a task ahead of those of its priority (a task handed back by a worker)."""
        self.levels[priority_of(task) - MIN_PRIORITY].appendleft(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def pop(self) -> Task:
        """The next task to run: the oldest of the highest level that has one."""
        for level in reversed(self.levels):
            if level:
                self.count -= 1
                return level.popleft()
        raise IndexError("no task waits")

    def take_from(self, buffer: Mailbox) -> None:
        """Move the tasks waiting in `buffer` here, in their order (at the switch)."""
        while True:
            try:
                task = buffer.get_nowait()
            except trio.WouldBlock:
                return
            self.push(task)

    async def feed(self, buffer: Mailbox) -> None:
        """Hand the highest-priority waiting tasks to the workers that ask for work, until
        cancelled (the dispatcher runs this for a queue once it uses priorities)."""
        while True:
            await buffer.wait_for_demand()
            while not self.count:
                await self._arrived.park()
            for _ in range(min(buffer.demand, self.count)):
                buffer.put_nowait(self.pop())
            # (`wait_for_demand` checkpoints: this loop yields once per round.)


class RetriesAhead(Ranked):
    """`Ranked`, with due retries ahead of the new tasks of their level (`retry_ahead`):
    per level, a task handed back by a crashed worker first, then retries in the order
    they became due, then the tasks never tried, in their order."""

    __slots__ = ("retries",)

    def __init__(self) -> None:
        super().__init__()
        self.retries: list[deque[Task]] = [deque() for _ in range(_LEVELS)]

    def push_retry(self, task: Task) -> None:
        """Queue a due retry behind the retries of its priority, ahead of its new tasks."""
        self.retries[priority_of(task) - MIN_PRIORITY].append(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def push_first(self, task: Task) -> None:
        self.retries[priority_of(task) - MIN_PRIORITY].appendleft(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def pop(self) -> Task:
        for level in range(_LEVELS - 1, -1, -1):
            retries = self.retries[level]
            if retries:
                self.count -= 1
                return retries.popleft()
            waiting = self.levels[level]
            if waiting:
                self.count -= 1
                return waiting.popleft()
        raise IndexError("no task waits")

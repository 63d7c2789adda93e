"""Asks in flight: the slot a reply goes to, and the one task that enforces their deadlines."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import outcome
import trio

from ._exceptions import AskTimeout


class _Ask:
    """An ask in flight: the message and the slot its reply goes to."""

    __slots__ = ("actor", "deadline", "message", "result", "task", "timeout")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.task: trio.lowlevel.Task | None = None
        self.result: outcome.Outcome[Any] | None = None
        self.deadline = math.inf
        self.timeout = 0.0
        self.actor = ""

    def _resolve(self, result: outcome.Outcome[Any]) -> None:
        if self.result is not None:
            return
        self.result = result
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task, result)

    def _fail(self, error: BaseException) -> None:
        self._resolve(outcome.Error(error))

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.task = None  # cancelled from outside: a late reply or the timer finds no task
        return trio.lowlevel.Abort.SUCCEEDED


class _AskTimer:
    """Deadlines of the asks in flight in one system, enforced by one task.

    A CancelScope per ask costs as much as the rest of the round trip, so asks instead
    wait without one and this timer fails those whose deadline passed. Asks with the same
    timeout have deadlines in the order they were made, so each timeout value gets a FIFO;
    answered asks leave the front at once, which keeps the FIFOs short.
    """

    __slots__ = ("_fifos", "_lot", "_scope", "_wake_at", "running")

    def __init__(self) -> None:
        self._scope = trio.CancelScope()
        self._fifos: dict[float, deque[_Ask]] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._wake_at = math.inf
        self.running = False

    def add(self, pending: _Ask, timeout: float, actor: str) -> deque[_Ask]:
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        pending.deadline = deadline = trio.current_time() + timeout
        pending.timeout = timeout
        pending.actor = actor
        fifo.append(pending)
        if deadline < self._wake_at and self._lot:
            self._lot.unpark_all()  # sooner than the timer planned to look again
        return fifo

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            with self._scope:
                await self._run()
        finally:
            self.running = False

    def stop(self) -> None:
        """Stop enforcing deadlines (the system has stopped: no ask is left to time)."""
        self._scope.cancel()

    async def _run(self) -> None:
        while True:
            now = trio.current_time()
            earliest = math.inf
            for fifo in self._fifos.values():
                while fifo:
                    head = fifo[0]
                    if head.result is None and head.deadline > now:
                        earliest = min(earliest, head.deadline)
                        break
                    fifo.popleft()
                    if head.result is None:
                        name = type(head.message).__name__
                        head._fail(AskTimeout(head.actor, name, head.timeout))
            self._wake_at = earliest
            with trio.CancelScope(deadline=earliest):
                await self._lot.park()

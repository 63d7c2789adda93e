"""`Receipt`: the acknowledgment of a submitted task, and the way to its result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from . import _fastpath
from ._convert import AS_ANY
from ._exceptions import ResultTimeout, TaskCancelled, TaskExpired, TaskFailed, TaskLost
from ._results import Waiter
from ._task import Task, TaskState, TaskStatus
from ._validate import seconds, wait_timeout

if TYPE_CHECKING:
    from ._system import QueueSystem

R = TypeVar("R")
#: Seconds between two looks of `Receipt.watch` at a task run by another process.
WATCH_EVERY = 0.25
_SUCCEEDED = TaskState.SUCCEEDED
_due = _fastpath.due
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_current_time = trio.current_time
_FAILURES: dict[TaskState, type[TaskFailed]] = {
    TaskState.CANCELLED: TaskCancelled,
    TaskState.EXPIRED: TaskExpired,
    TaskState.LOST: TaskLost,
}


class Receipt(Generic[R]):
    """The acknowledgment of an accepted task: its id now, its result later.

    `await receipt` (or `await receipt.result(timeout=...)`) returns the result or raises
    `TaskFailed` (`TaskCancelled`, `TaskExpired` are subclasses). Keep `receipt.id` to find
    it again from anywhere with `system.receipt(id)` while the result's TTL lasts.

    A receipt is typed by its handler's result where that is known: submitting to a
    `Queue[R]` object gives a `Receipt[R]`. `system.submit()`, `system.submit_many()` and
    `system.receipt(id)` hand out receipts; you never make one yourself.
    """

    __slots__ = ("_checked", "_system", "_task")

    def __init__(self, task: Task, system: QueueSystem, *, checked: bool = True) -> None:
        self._task = task
        self._system = system
        # False for a receipt found by id with a shared broker: the first await asks the
        # broker whether the task exists.
        self._checked = checked

    @property
    def id(self) -> str:
        """The task id: unique, and a reference for later (`system.receipt(id)`)."""
        return self._task.id

    @property
    def queue(self) -> str:
        """The queue or pipeline the task was submitted to."""
        return self._task.queue

    def __repr__(self) -> str:
        if not self._checked:  # found by id: its state is the broker's, read at first await
            return f"<Receipt {self._task.id} (not looked up yet)>"
        return f"<Receipt {self._task.id} {self._task.state.value}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Receipt) and other._task.id == self._task.id

    def __hash__(self) -> int:
        return hash(self._task.id)

    def __await__(self) -> Generator[Any, None, R]:
        task = self._task
        state = task.state
        # A receipt found by id is not checked yet (`_checked`) while its record is a
        # placeholder, whose state is PENDING: a final state is a checked receipt's.
        if state is _SUCCEEDED or state.final:
            # The outcome is here: skip result()'s coroutine (one per receipt awaited).
            # `yield from` a coroutine's __await__ is awaiting it (this is __await__ itself).
            yield from _checkpoint_if_cancelled().__await__()
            if _due():
                yield from _cancel_shielded_checkpoint().__await__()
            system = self._system
            if state is _SUCCEEDED:
                value = task.result
                as_is = system._as_is.get(task.queue)
                if as_is is not None and (type(value) is as_is or as_is is AS_ANY):
                    return value  # type: ignore[no-any-return]
            return system._unwrap(task)  # type: ignore[no-any-return]
        return (yield from self.result().__await__())

    def done(self) -> bool:
        """Whether the task has its outcome (as far as this process knows)."""
        return self._task.state.final

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the outcome; return the result or raise why there is none.

        Args:
            timeout: seconds to wait; None waits as long as it takes.

        Raises:
            ResultTimeout: no outcome within `timeout` (the task goes on).
            TaskCancelled: it was cancelled.
            TaskExpired: it was not started before its deadline.
            TaskLost: the broker lost its record (its fate is unknown).
            TaskFailed: it failed or was dead-lettered (`.error`, `.attempts`, `.stage`).
            UnknownTask: no task has this id (a receipt found by id).
            ValueError: `timeout` is negative or NaN (`TypeError`: not a number). 0 looks
                once, without waiting.
        """
        if timeout is not None:
            wait_timeout(timeout)
        task = self._task
        if not self._checked:
            await self._system._check(self)
        if task.state.final:
            await _fastpath.checkpoint()
        else:
            waiter = task._waiter
            if waiter is None:
                waiter = task._waiter = Waiter()
            self._system._usable()
            if timeout is None:
                await waiter.wait()
            else:
                # The deadline as `trio.move_on_after(timeout)` sets it, kept by the
                # run's one timer of receipts (`Waiter.wait_until`), not a scope each.
                await waiter.wait_until(_current_time() + timeout)
            if not task.state.final:
                self._system._usable()  # woken as the system closed
                if timeout is not None:
                    raise ResultTimeout(task.id, timeout)
        return self._system._unwrap(task)  # type: ignore[no-any-return]

    async def status(self) -> TaskStatus:
        """A snapshot: state, attempts, deliveries, times, the last error.

        Raises:
            UnknownTask: no task has this id (a receipt found by id).
        """
        return await self._system._status(self)

    def watch(self, interval: float = WATCH_EVERY) -> AsyncIterator[TaskStatus]:
        """Follow the task live: a new `TaskStatus` each time its state, attempts or
        progress change, ending with the one that carries its outcome.

        `async for status in receipt.watch(): print(status.progress)`. In the process that
        runs the task it wakes at each publish of its progress; elsewhere it looks again
        every `interval` seconds (and at once when the outcome comes). Leaving the loop
        early (`break`) leaves nothing behind.

        Raises:
            UnknownTask: no task has this id (a receipt found by id; at the first step).
            InvalidQueue: `interval` is not a number of seconds > 0.
        """
        seconds("interval", interval)
        return _Watch(self, interval)

    async def cancel(self) -> bool:
        """Cancel the task: a pending one is never run, a running one is cancelled.

        Returns:
            True if this call cancelled it, False if it already had an outcome.
        """
        return await self._system._cancel(self)


class _Watch:
    """`Receipt.watch`'s iterator: a plain object, not an async generator, so that a loop
    left early leaves no suspended frame for the garbage collector to finalize."""

    __slots__ = ("_done", "_interval", "_receipt", "_seen")

    def __init__(self, receipt: Receipt[Any], interval: float) -> None:
        self._receipt = receipt
        self._interval = interval
        self._seen: tuple[Any, ...] | None = None
        self._done = False

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> TaskStatus:
        receipt = self._receipt
        while not self._done:
            if self._seen is not None:
                await receipt._system._wait_change(receipt, self._interval)
            status = await receipt.status()
            now = (status.state, status.attempts, status.progress)
            self._done = status.state.final
            if now != self._seen:
                self._seen = now
                return status
        raise StopAsyncIteration


def failure(task: Task, stage: str | None) -> TaskFailed:
    """The exception a receipt raises for a task that ended without a result."""
    error = task.error
    cls = _FAILURES.get(task.state, TaskFailed)
    return cls(
        task.id,
        task.queue,
        task.state,
        error_type=error.type if error else "",
        error=error.message if error else "",
        attempts=task.attempts,
        stage=stage,
    )

"""`Receipt`: the acknowledgment of a submitted task, and the way to its result."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import trio

from . import _fastpath
from ._convert import AS_ANY
from ._exceptions import ResultTimeout, TaskCancelled, TaskExpired, TaskFailed
from ._task import Envelope, TaskState, TaskStatus

if TYPE_CHECKING:
    from ._system import QueueSystem

_SUCCEEDED = TaskState.SUCCEEDED


class Receipt(Envelope):
    """The acknowledgment of an accepted task: its id now, its result later.

    `await receipt` (or `await receipt.result(timeout=...)`) returns the result or raises
    `TaskFailed` (`TaskCancelled`, `TaskExpired` are subclasses). Keep `receipt.id` to find
    it again from anywhere with `system.receipt(id)` while the result's TTL lasts.

    Attributes:
        id: the task id (unique; a reference for later).
        queue: the queue or pipeline the task was submitted to.

    `system.submit()`, `system.submit_many()` and `system.receipt(id)` hand out receipts;
    you never make one yourself. A receipt is the task's own record in this process (one
    object per task, not two): its other attributes are internal and may change in any
    release.
    """

    __slots__ = ()
    _system: QueueSystem  # set for every receipt handed out (the base class allows None)

    def __repr__(self) -> str:
        return f"<Receipt {self.id} {self.queue} {self.state.value}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Receipt) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __await__(self) -> Generator[Any, None, Any]:
        if self.state.final and self.entry != "?":
            # The outcome is here: skip result()'s coroutine (a third of awaiting a receipt).
            # `yield from` a coroutine's __await__ is awaiting it (this is __await__ itself).
            yield from trio.lowlevel.checkpoint_if_cancelled().__await__()  # noqa: ASYNC105
            if _fastpath.due():
                yield from trio.lowlevel.cancel_shielded_checkpoint().__await__()  # noqa: ASYNC105
            if self.state is _SUCCEEDED:
                value = self.value
                as_is = self._system._as_is.get(self.queue)
                if as_is is not None and (type(value) is as_is or as_is is AS_ANY):
                    return value  # plain data its queue declares (or Any): nothing to convert
            return self._system._unwrap(self)
        return (yield from self.result().__await__())

    def done(self) -> bool:
        """Whether the task has its outcome."""
        return self.state.final

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the outcome; return the result or raise why there is none.

        Args:
            timeout: seconds to wait; None waits as long as it takes.

        Raises:
            ResultTimeout: no outcome within `timeout` (the task goes on).
            TaskCancelled: it was cancelled.
            TaskExpired: it was not started before its deadline.
            TaskFailed: it failed or was dead-lettered (`.error`, `.attempts`, `.stage`).
        """
        if self.entry == "?":
            await self._system._broker.watch(self)  # found by id: does it exist?
        if self.state.final:
            await _fastpath.checkpoint()
        else:
            event = self.event
            if event is None:
                event = self.event = trio.Event()
            if timeout is None:
                await event.wait()
            else:
                with trio.move_on_after(timeout):
                    await event.wait()
                if not self.state.final:
                    raise ResultTimeout(self.id, timeout)
        return self._system._unwrap(self)

    async def status(self) -> TaskStatus:
        """A snapshot: state, attempts, deliveries, times, the last error."""
        if self.entry == "?":
            await self._system._broker.watch(self)
        await _fastpath.checkpoint()
        return self._system._status(self)

    async def cancel(self) -> bool:
        """Cancel the task: a pending one is never run, a running one is cancelled.

        Returns:
            True if this call cancelled it, False if it already had an outcome.
        """
        return await self._system._broker.cancel(self)


class PipelineReceipt(Receipt):
    """A receipt (or a worker's record) of a pipeline run or of one of its stage tasks."""

    __slots__ = ("fanned", "path", "pipeline", "route", "stage")

    def __init__(
        self,
        id: str,
        queue: str,
        payload: Any,
        submitted_at: float,
        submitted_clock: float,
        expires_at: float | None = None,
        system: Any = None,
        *,
        pipeline: str | None = None,
        route: str | None = None,
        stage: int = 0,
        path: tuple[int, ...] = (),
    ) -> None:
        super().__init__(id, queue, payload, submitted_at, submitted_clock, expires_at, system)
        self.pipeline = pipeline
        self.route = route
        self.stage = stage
        self.path = path
        self.fanned = False


def failure(env: Envelope, stage: str | None) -> TaskFailed:
    error = env.error
    cls = {TaskState.CANCELLED: TaskCancelled, TaskState.EXPIRED: TaskExpired}.get(
        env.state, TaskFailed
    )
    return cls(
        env.id,
        env.queue,
        env.state,
        error_type=error.type if error else "",
        error=error.message if error else "",
        attempts=env.attempts,
        stage=stage,
    )

"""`Receipt`: the acknowledgment of a submitted task, and the way to its result."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import trio

from . import _fastpath
from ._exceptions import ResultTimeout, TaskCancelled, TaskExpired, TaskFailed
from ._task import Envelope, TaskState, TaskStatus

if TYPE_CHECKING:
    from ._system import QueueSystem


class Receipt:
    """The acknowledgment of an accepted task: its id now, its result later.

    `await receipt` (or `await receipt.result(timeout=...)`) returns the result or raises
    `TaskFailed` (`TaskCancelled`, `TaskExpired` are subclasses). Keep `receipt.id` to find
    it again from anywhere with `system.receipt(id)` while the result's TTL lasts.
    """

    __slots__ = ("_env", "_system")

    def __init__(self, system: QueueSystem, env: Envelope) -> None:
        self._system = system
        self._env = env

    @property
    def id(self) -> str:
        """The task id (unique; a reference for later)."""
        return self._env.id

    @property
    def queue(self) -> str:
        """The queue or pipeline the task was submitted to."""
        return self._env.queue

    def __repr__(self) -> str:
        return f"<Receipt {self._env.id} {self._env.queue} {self._env.state.value}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Receipt) and other._env.id == self._env.id

    def __hash__(self) -> int:
        return hash(self._env.id)

    def __await__(self) -> Generator[Any, None, Any]:
        env = self._env
        if env.state.final and env.entry != "?":
            # The outcome is here: skip result()'s coroutine (a third of awaiting a receipt).
            # `yield from` a coroutine's __await__ is awaiting it (this is __await__ itself).
            yield from trio.lowlevel.checkpoint_if_cancelled().__await__()  # noqa: ASYNC105
            if _fastpath.due():
                yield from trio.lowlevel.cancel_shielded_checkpoint().__await__()  # noqa: ASYNC105
            return self._system._unwrap(env)
        return (yield from self.result().__await__())

    def done(self) -> bool:
        """Whether the task has its outcome."""
        return self._env.state.final

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
        env = self._env
        if env.entry == "?":
            await self._system._broker.watch(env)  # found by id: does it exist?
        if env.state.final:
            await _fastpath.checkpoint()
        else:
            if env.done is None:
                env.done = trio.Event()
            if timeout is None:
                await env.done.wait()
            else:
                with trio.move_on_after(timeout):
                    await env.done.wait()
                if not env.state.final:
                    raise ResultTimeout(env.id, timeout)
        return self._system._unwrap(env)

    async def status(self) -> TaskStatus:
        """A snapshot: state, attempts, deliveries, times, the last error."""
        if self._env.entry == "?":
            await self._system._broker.watch(self._env)
        await _fastpath.checkpoint()
        return self._system._status(self._env)

    async def cancel(self) -> bool:
        """Cancel the task: a pending one is never run, a running one is cancelled.

        Returns:
            True if this call cancelled it, False if it already had an outcome.
        """
        return await self._system._broker.cancel(self._env)


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

"""`Worker`: the actor that handles one queue's tasks, and the pool that supervises them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from actors import Actor, Supervisor
from actors._actor import ActorState, _Cell

from ._task import Envelope

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import QueueRuntime

log = logging.getLogger("queueing")


class Worker(Actor):
    """Subclass this and implement `handle`; each instance runs one task at a time.

    - `async def handle(self, payload)` returns the task's result. The payload arrives
      structured as the type its annotation names (an attrs class, a dataclass, plain data).
    - A plain `def handle` (blocking or CPU work) runs in a worker thread, bounded by the
      queue's `threads`.
    - An exception from `handle` is a *task* failure: the queue's `RetryPolicy` decides.
    - An exception listed in `fatal` (or one from `on_start`) is a *worker* failure: the
      worker crashes, its supervisor restarts it, and its task is delivered again (up to
      the queue's `max_deliveries`, then dead-lettered as poison).
    """

    #: Exceptions that mean the worker itself is broken (a lost connection it holds, say).
    fatal: ClassVar[tuple[type[BaseException], ...]] = ()

    _task: Envelope | None = None
    _scope: trio.CancelScope | None = None

    async def handle(self, payload: Any) -> Any:
        """Process one task's payload and return its result."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    @property
    def task_id(self) -> str | None:
        """The id of the task being handled (for idempotency keys, logs), else None."""
        return self._task.id if self._task is not None else None

    @property
    def attempt(self) -> int:
        """Which attempt of the current task this is (1 for the first)."""
        return self._task.attempts if self._task is not None else 0

    async def receive(self, message: Any) -> Any:
        log.warning("worker %r ignored a %s message", self.name, type(message).__name__)

    async def _main(self, cell: _Cell) -> None:
        child = cell.child
        assert child is not None
        pool = child.supervisor
        assert isinstance(pool, _Pool)
        await self.on_start()
        cell.state = ActorState.RUNNING
        await pool.engine.work(self, cell, pool.runtime)

    def _stop_requested(self) -> None:
        # An idle worker stops now; a busy one finishes its task first.
        if self._task is None and self._scope is not None:
            self._scope.cancel()


class _Pool(Supervisor):
    """The supervisor of one queue's workers."""

    def __init__(self, children: Any, *, engine: Engine, runtime: QueueRuntime, **options: Any):
        super().__init__(children, **options)
        self.engine = engine
        self.runtime = runtime

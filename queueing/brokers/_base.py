"""The interface every broker implements (memory:// now; redis:// next)."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .._task import TaskState

if TYPE_CHECKING:
    from .._queue import Full
    from .._receipt import PipelineReceipt
    from .._runtime import QueueRuntime
    from .._task import DeadLetter, Envelope, ErrorInfo


class Broker(abc.ABC):
    """Holds accepted tasks until they reach exactly one outcome.

    A broker enforces `maxsize` at submit, hands ready tasks to the local `QueueRuntime`s
    (only as many as there are idle workers), delays retries without holding a worker,
    records each task's outcome once (first wins), and keeps dead letters.
    """

    #: Whether accepted tasks survive the process (the memory broker's do not).
    durable: bool = False
    #: The clock that delays, deadlines and latencies are measured on.
    clock: Callable[[], float]
    #: True while outcomes wait to be written; workers then `relieve()` before going on.
    congested: bool = False

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Hold the broker's connections open (and check them) for the system's life."""
        yield

    def wake_drain(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """A cancelled handler has unwound: `drain()` may be able to return now."""

    async def flush(self) -> None:
        """At shutdown: wait until every outcome has been written."""
        await trio.lowlevel.checkpoint()

    async def relieve(self) -> None:
        """Wait until the broker has caught up on writing outcomes."""
        await trio.lowlevel.checkpoint()

    async def watch(self, env: Envelope) -> None:
        """Before a receipt found by id is read: make sure the task exists (UnknownTask)."""
        await trio.lowlevel.checkpoint()

    @abc.abstractmethod
    def attach(self, runtimes: dict[str, QueueRuntime]) -> None:
        """Bind the queues this process serves."""

    @abc.abstractmethod
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (promoting delayed tasks...), until cancelled."""

    def submit_nowait(self, rt: QueueRuntime, env: Envelope) -> bool:
        """Accept a ready task at once if that needs no I/O and there is room; False
        means "use `submit`" (the default for brokers that talk to a server)."""
        return False

    @abc.abstractmethod
    async def submit(
        self,
        rt: QueueRuntime,
        env: Envelope,
        when_full: Full,
        timeout: float | None,
        delay: float | None = None,
    ) -> None:
        """Accept a task, enforcing the queue's `maxsize` (wait or raise `QueueFull`);
        with `delay`, it becomes ready only after that many seconds."""

    @abc.abstractmethod
    def finish(
        self,
        rt: QueueRuntime | None,
        env: Envelope,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        """Record the outcome; False if the task already had one (first wins)."""

    def succeed(self, rt: QueueRuntime, env: Envelope, result: Any) -> None:
        """A running task of no pipeline succeeded (the hot path: brokers may override)."""
        self.finish(rt, env, TaskState.SUCCEEDED, result)

    @abc.abstractmethod
    def schedule(self, rt: QueueRuntime, env: Envelope, delay: float) -> None:
        """Hand the task back to the queue after `delay` seconds (a retry backoff)."""

    @abc.abstractmethod
    def redeliver(self, rt: QueueRuntime, env: Envelope) -> None:
        """Hand a task whose worker crashed to the next free worker."""

    @abc.abstractmethod
    def dead_letter(
        self, rt: QueueRuntime, env: Envelope, state: TaskState, error: ErrorInfo | None
    ) -> None:
        """Record the final state and keep the task among the queue's dead letters."""

    # -- pipeline runs: a run is a task of its own, resolved when its last branch ends --

    @abc.abstractmethod
    async def start_run(
        self,
        rt: QueueRuntime,
        stage: Envelope,
        run: PipelineReceipt,
        when_full: Full,
        timeout: float | None,
        delay: float | None = None,
    ) -> None:
        """Accept a pipeline submission: the run (findable by id) and its first stage task."""

    @abc.abstractmethod
    def run_ended(self, stage: Envelope) -> bool:
        """Whether the run of this stage task has an outcome already (skip the task)."""

    @abc.abstractmethod
    async def advance(self, stage: Envelope, children: int, fanned: bool) -> None:
        """A stage succeeded and hands `children` payloads to the next stage (idempotent)."""

    @abc.abstractmethod
    def branch_done(self, stage: Envelope, data: Any) -> None:
        """A last-stage task succeeded with `data`; the run ends when no branch is left."""

    @abc.abstractmethod
    def fail_run(self, stage: Envelope, state: TaskState, error: ErrorInfo | None) -> None:
        """A stage task ended without a result: so does its run (first outcome wins)."""

    @abc.abstractmethod
    def lookup(self, task_id: str) -> Envelope | None:
        """The task with that id, if its outcome has not expired."""

    @abc.abstractmethod
    async def cancel(self, env: Envelope) -> bool:
        """Cancel a pending or running task; False if it had an outcome already."""

    @abc.abstractmethod
    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        """The newest dead letters of a queue, oldest first."""

    @abc.abstractmethod
    async def take_dead_letters(self, queue: str, ids: list[str] | None) -> list[DeadLetter]:
        """Remove and return dead letters (all of the queue's if `ids` is None)."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until no task is outstanding."""

    @abc.abstractmethod
    def outstanding(self, queue: str) -> int:
        """Accepted tasks of `queue` without an outcome yet."""

    @abc.abstractmethod
    def abandon(self, reason: str) -> int:
        """At shutdown: give every unfinished task an outcome (CANCELLED); returns how many."""

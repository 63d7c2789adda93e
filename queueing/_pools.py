"""The actors of a queue system: who is spawned at start-up, and the order they stop in.

root (actors.Supervisor)
├── queueing.broker       runs the broker's background work (`Broker.run`)
├── queueing.receipts     shared brokers: outcomes stored elsewhere reach receipts
├── queueing.dispatcher   owns the queues' buffers and fills them
└── <queue>.pool          a Supervisor per served queue
    └── <queue>.worker-N  Workers: pull a task from the buffer when idle, run it
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import tenacity
import trio

from actors import Actor, ChildSpec, Supervisor

from ._dispatcher import Dispatcher, release
from ._results import ReceiptsActor

if TYPE_CHECKING:
    from actors import ActorRef

    from ._engine import Engine
    from ._queue import Queue
    from ._runtime import QueueRuntime
    from ._system import QueueSystem
    from ._worker import Worker
    from .brokers._contract import Broker

log = logging.getLogger("queueing")

#: A worker's own mailbox: workers get tasks from their queue's buffer, not by message.
WORKER_MAILBOX = 16
#: Seconds the broker's background work gets to end at shutdown.
BROKER_STOP = 1.0


class BrokerActor(Actor):
    """Runs the broker's background work under supervision, until stopped."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._scope: trio.CancelScope | None = None

    async def run(self) -> None:
        with trio.CancelScope() as self._scope:
            await self.broker.run()

    def on_stop_requested(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


def _make_worker(queue: Queue[Any], rt: QueueRuntime, engine: Engine) -> Worker[Any, Any]:
    worker = queue.worker(*queue.worker_args, **queue.worker_kwargs)
    worker._queue = rt
    worker._engine = engine
    return worker


def _pool_backoff() -> Any:
    # Not wait_exponential_jitter(initial=...): deprecated in tenacity 9.2.
    return tenacity.wait_exponential(multiplier=0.1, max=5.0) + tenacity.wait_random(0, 0.1)


class Actors:
    """The system's actors, spawned by `start` and stopped by `stop`."""

    def __init__(self) -> None:
        self.broker: ActorRef | None = None
        self.receipts: ActorRef | None = None
        self.dispatcher: ActorRef | None = None

    async def start(self, system: QueueSystem, *, serve: bool) -> None:
        asys = system.actors
        engine = system._engine
        broker = system._broker
        self.broker = await asys.spawn(
            ChildSpec(BrokerActor, args=(broker,), name="queueing.broker")
        )
        if broker.shared:
            self.receipts = await asys.spawn(
                ChildSpec(
                    ReceiptsActor,
                    args=(system._results, system._refresh_figures),
                    name="queueing.receipts",
                )
            )
        if not serve:
            return
        runtimes = system._runtimes
        for rt in runtimes.values():
            rt.buffer = Dispatcher.buffer_for(rt, broker.shared)
        self.dispatcher = await asys.spawn(
            ChildSpec(Dispatcher, args=(engine, runtimes), name="queueing.dispatcher")
        )
        for name, rt in runtimes.items():
            queue = rt.spec
            workers = [
                ChildSpec(
                    queue.worker,
                    name=f"{name}.worker-{i}",
                    shutdown=system.shutdown_timeout,
                    mailbox_size=WORKER_MAILBOX,
                    factory=partial(_make_worker, queue, rt, engine),
                )
                for i in range(queue.workers)
            ]
            rt.pool = await asys.spawn(
                Supervisor.spec(
                    workers,
                    name=f"{name}.pool",
                    max_restarts=queue.max_restarts,
                    within=queue.within,
                    backoff=_pool_backoff(),
                )
            )

    async def stop(self, system: QueueSystem) -> int:
        """Stop taking work, let the workers finish (up to the shutdown timeout), hand back
        what was never started, and end what is left; returns how many tasks were left
        unfinished."""
        engine = system._engine
        timeout = system.shutdown_timeout
        engine.stopping = True
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for rt in system._runtimes.values():
                    if rt.pool is not None and rt.pool.is_alive:
                        nursery.start_soon(partial(rt.pool.stop, timeout=timeout))
        if self.dispatcher is not None and self.dispatcher.is_alive:
            await self.dispatcher.stop(timeout=BROKER_STOP)
        with trio.move_on_after(timeout):
            await release(engine, system._runtimes)
        unfinished = await engine.abandon("the system shut down before the task finished")
        with trio.move_on_after(timeout):
            await system._broker.flush()
        for ref in (self.receipts, self.broker):
            if ref is not None and ref.is_alive:
                await ref.stop(timeout=BROKER_STOP)
        if unfinished and system._broker.durable:
            log.warning(
                "shutdown left %d task(s) unfinished; they stay in the broker and run when "
                "a worker takes them",
                unfinished,
            )
        elif unfinished:
            log.warning(
                "shutdown left %d task(s) unfinished; their receipts report CANCELLED "
                "(the memory broker is not durable)",
                unfinished,
            )
        return unfinished

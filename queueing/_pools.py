"""The actors of a queue system: who is spawned at start-up, and the order they stop in.

root (actors.Supervisor)
├── queueing.broker       runs the broker's background work (`Broker.run`)
├── queueing.receipts     shared brokers: outcomes stored elsewhere reach receipts
├── queueing.dispatcher   owns the queues' buffers and fills them
├── queueing.progress     publishes the progress handlers report (`Worker.progress`)
└── <queue>.pool          a Supervisor per served queue
    └── <queue>.worker-N  Workers: pull a task from the buffer when idle, run it
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from actors import Actor, ChildSpec, Supervisor

from ._dispatcher import Dispatcher, release
from ._progress import ProgressActor
from ._results import ReceiptsActor
from ._schedule import Schedule, Scheduler

if TYPE_CHECKING:
    from actors import ActorRef

    from ._engine import Engine
    from ._queue import Queue
    from ._runtime import QueueRuntime
    from ._system import QueueSystem
    from ._worker import Worker
    from .brokers._contract import Broker

log = logging.getLogger("queueing")

#: A pool supervisor's name is its queue's name and this.
POOL_SUFFIX = ".pool"
#: A worker's own mailbox: workers get tasks from their queue's buffer, not by message.
WORKER_MAILBOX = 16
#: Restarts of the system's own actors (broker, receipts, dispatcher) tolerated within
#: `SERVICE_WITHIN` seconds before the system stops.
SERVICE_RESTARTS = 5
SERVICE_WITHIN = 10.0
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


class Actors:
    """The system's actors, spawned by `start` and stopped by `stop`."""

    def __init__(self) -> None:
        self.broker: ActorRef | None = None
        self.receipts: ActorRef | None = None
        self.dispatcher: ActorRef | None = None

    async def start(
        self, system: QueueSystem, *, serve: bool, schedules: tuple[Schedule, ...] = ()
    ) -> None:
        asys = system.actors
        engine = system._engine
        broker = system._broker
        # The system's own actors under one supervisor that may restart them a few times
        # (a broker's background work failing now and then); the root itself gives up at
        # the first failure of a child (this one, or a pool that gave up): the system stops
        # with the cause, rather than cycling through restarts of a hopeless pool.
        services = [ChildSpec(BrokerActor, args=(broker,), name="queueing.broker")]
        if broker.shared:
            services.append(
                ChildSpec(
                    ReceiptsActor,
                    args=(system._results, system._refresh_figures),
                    name="queueing.receipts",
                )
            )
        runtimes = system._runtimes
        if serve:
            for rt in runtimes.values():
                rt.buffer = Dispatcher.buffer_for(rt, broker.shared)
            services.append(
                ChildSpec(Dispatcher, args=(engine, runtimes), name="queueing.dispatcher")
            )
            services.append(
                ChildSpec(ProgressActor, args=(engine.progress,), name="queueing.progress")
            )
            if schedules:
                services.append(
                    ChildSpec(
                        Scheduler,
                        args=(schedules, system.submit, system._kept_for),
                        name="queueing.scheduler",
                    )
                )
        await asys.spawn(
            Supervisor.spec(
                services,
                name="queueing.services",
                max_restarts=SERVICE_RESTARTS,
                within=SERVICE_WITHIN,
            )
        )
        self.broker = asys.lookup("queueing.broker")
        self.receipts = asys.lookup("queueing.receipts") if broker.shared else None
        if not serve:
            return
        self.dispatcher = asys.lookup("queueing.dispatcher")
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
                    name=f"{name}{POOL_SUFFIX}",
                    max_restarts=queue.restart_limit,
                    within=queue.within,
                    backoff=queue.restart_backoff,
                    reset_after=queue.reset_after,
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

"""The entry points: `open_system`, `run_system` and `connect`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import cattrs
import trio

import actors

from ._asyncio import asyncio_loop, needs_loop
from ._convert import make_converter
from ._exceptions import InvalidQueue, QueueingError, WorkersCrashed
from ._pools import POOL_SUFFIX
from ._queue import Pipeline, Queue
from ._schedule import Schedule
from ._system import QueueSystem
from ._urls import broker_from_url
from ._worker import Worker
from .brokers._contract import Broker

T = TypeVar("T")
#: Seconds a `connect()` client gets to finish its writes when it closes.
CLIENT_CLOSE = 5.0


def _collect(
    specs: tuple[Queue[Any] | Pipeline | Schedule, ...],
) -> tuple[dict[str, Queue[Any]], dict[str, Pipeline], tuple[Schedule, ...]]:
    queues: dict[str, Queue[Any]] = {}
    pipelines: dict[str, Pipeline] = {}
    schedules: dict[str, Schedule] = {}

    def add_queue(queue: Queue[Any]) -> None:
        other = queues.get(queue.name)
        if other is not None and other is not queue:
            raise InvalidQueue(f"two different queues are named {queue.name!r}; rename one")
        queues[queue.name] = queue

    for spec in specs:
        if isinstance(spec, Queue):
            add_queue(spec)
        elif isinstance(spec, Pipeline):
            if spec.name in pipelines:
                raise InvalidQueue(f"two pipelines are named {spec.name!r}; rename one")
            pipelines[spec.name] = spec
            for stage in spec.stages:
                add_queue(stage)
        elif isinstance(spec, Schedule):
            if spec.name in schedules:
                raise InvalidQueue(f"two schedules are named {spec.name!r}; rename one")
            schedules[spec.name] = spec
        else:
            raise InvalidQueue(f"expected Queue, Pipeline or Schedule objects, got {spec!r}")
    for name in pipelines:
        if name in queues:
            raise InvalidQueue(f"a queue and a pipeline are both named {name!r}; rename one")
    for schedule in schedules.values():
        if schedule.queue not in queues and schedule.queue not in pipelines:
            known = ", ".join(sorted([*queues, *pipelines])) or "none"
            raise InvalidQueue(
                f"schedule {schedule.name!r} submits to {schedule.queue!r}, which is not a "
                f"queue or pipeline of this system (known: {known}); pass it to the system too"
            )
    return queues, pipelines, tuple(schedules.values())


@asynccontextmanager
async def open_system(
    *specs: Queue[Any] | Pipeline | Schedule,
    broker: str | Broker | None = None,
    converter: cattrs.Converter | None = None,
    shutdown_timeout: float = 10.0,
    max_results: int = 100_000,
    max_dead_letters: int = 10_000,
) -> AsyncIterator[QueueSystem]:
    """Run the queues and pipelines for the duration of the `async with` block.

    On exit: no new tasks are accepted, workers finish their current task (up to
    `shutdown_timeout`), and tasks left unfinished are reported (`system.unfinished`);
    with `memory://` they resolve as CANCELLED, a durable broker keeps them.

    Args:
        specs: the `Queue`s and `Pipeline`s to serve (a pipeline brings its stages), and
            the `Schedule`s whose tasks this process submits.
        broker: "memory://" (in process), "sqlite:///path.db" (a file that the processes
            of one machine share), "redis://host:port/db" or "rediss://..." (TLS), or a
            `Broker`. Default: the `QUEUEING_BROKER` environment variable, else
            "memory://".
        converter: the cattrs converter for payloads and results (default: a strict JSON
            converter from `queueing.make_converter()`).
        shutdown_timeout: seconds in-flight tasks get to finish at shutdown.
        max_results: the most finished outcomes kept for lookup by id (memory broker).
        max_dead_letters: the most dead letters kept per queue.
    """
    queues, pipelines, schedules = _collect(specs)
    if not queues:
        raise InvalidQueue("open_system() needs at least one Queue or Pipeline")
    the_broker = broker_from_url(broker, max_results=max_results, max_dead_letters=max_dead_letters)
    if hasattr(the_broker, "workers"):  # a broker that publishes a heartbeat says how many
        the_broker.workers = sum(queue.workers for queue in queues.values())
    try:
        async with (
            asyncio_loop(needs_loop(queues.values())),
            actors.open_system(
                name="queueing", shutdown_timeout=2 * shutdown_timeout + 5, max_restarts=0
            ) as asys,
        ):
            system = QueueSystem(
                asys, the_broker, queues, pipelines, converter or make_converter(), shutdown_timeout
            )
            infos = {name: rt.info for name, rt in system._runtimes.items()}
            async with the_broker.connect(infos, serve=True):
                if pipelines:
                    await the_broker.declare_pipelines(
                        {name: [stage.name for stage in p.stages] for name, p in pipelines.items()}
                    )
                await system._start(serve=True, schedules=schedules)
                try:
                    yield system
                finally:
                    await system._stop()
    except actors.SupervisorGaveUp as exc:
        crashed = _crashed_pool(exc, queues)
        if crashed is None:
            raise
        raise crashed from crashed.cause


def _crashed_pool(
    exc: BaseException | None, queues: dict[str, Queue[Any]]
) -> WorkersCrashed | None:
    """The queue whose pool gave up, somewhere in a chain of supervisors giving up."""
    while exc is not None:
        if isinstance(exc, actors.SupervisorGaveUp) and exc.supervisor.endswith(POOL_SUFFIX):
            queue = queues.get(exc.supervisor[: -len(POOL_SUFFIX)])
            if queue is not None:
                return WorkersCrashed(queue.name, exc.max_restarts, exc.within, exc.__cause__)
        exc = exc.__cause__
    return None


class _Remote(Worker[Any, Any]):
    """Stands for a queue whose workers run in other processes (see `connect`)."""

    async def handle(self, payload: Any) -> Any:
        raise QueueingError("this queue is served by other processes")


@asynccontextmanager
async def connect(
    url: str | None = None,
    *specs: Queue[Any] | Pipeline,
    converter: cattrs.Converter | None = None,
    connect_timeout: float = 5.0,
) -> AsyncIterator[QueueSystem]:
    """A client of queues served by worker processes elsewhere: it submits and waits.

    Queues are known from what workers declared in the broker; pass the same `Queue`
    objects as `specs` to validate payloads against their handlers' types before sending.

    Args:
        url: the broker URL; default: the `QUEUEING_BROKER` environment variable.
        connect_timeout: seconds to reach the broker before `BrokerError`.
    """
    url = url or os.environ.get("QUEUEING_BROKER")
    if not url:
        raise InvalidQueue("connect() needs a broker URL, or QUEUEING_BROKER set to one")
    broker = broker_from_url(
        url, max_results=0, max_dead_letters=10_000, connect_timeout=connect_timeout
    )
    if not broker.shared:
        raise InvalidQueue(
            f"connect() needs a shared broker (sqlite:///path.db, redis:// or rediss://), "
            f"got {url!r}; "
            "with memory:// use open_system(), which runs the workers in this process"
        )
    queues, pipelines, _ = _collect(specs)
    async with broker.connect({}, serve=False):
        for name, info in (await broker.declared()).items():
            if name not in queues:
                queues[name] = Queue(
                    name, _Remote, maxsize=info.maxsize, max_payload=info.max_payload
                )
        for name, stages in (await broker.declared_pipelines()).items():
            if name not in pipelines and name not in queues and all(s in queues for s in stages):
                pipelines[name] = Pipeline(name, [queues[stage] for stage in stages])
        async with actors.open_system(name="queueing-client", max_restarts=0) as asys:
            system = QueueSystem(
                asys, broker, queues, pipelines, converter or make_converter(), CLIENT_CLOSE
            )
            await system._start(serve=False)
            try:
                yield system
            finally:
                with trio.move_on_after(CLIENT_CLOSE):
                    await broker.flush()
                await system._stop()


async def _run(
    main: Callable[[QueueSystem], Awaitable[T]] | None, specs: Any, options: Any
) -> T | None:
    return await actors.run_with_signals(partial(open_system, *specs, **options), main)


def run_system(
    *specs: Queue[Any] | Pipeline | Schedule,
    main: Callable[[QueueSystem], Awaitable[T]] | None = None,
    clock: trio.abc.Clock | None = None,
    **options: Any,
) -> T | None:
    """Run the queues until `main(system)` returns (or until SIGINT/SIGTERM if no `main`).

    Blocks: it calls `trio.run`. A signal stops `main` (no new work); in-flight tasks get
    `shutdown_timeout` to finish; a second signal stops at once. Options are those of
    `open_system()`.

    Returns:
        What `main` returned (None if stopped by a signal).
    """
    if main is not None and not callable(main):
        raise QueueingError(f"main must be an async function taking the system, got {main!r}")
    return trio.run(partial(_run, main, specs, options), clock=clock)

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

from ._convert import make_converter
from ._exceptions import InvalidQueue, QueueingError
from ._queue import Pipeline, Queue
from ._system import QueueSystem
from ._urls import broker_from_url
from ._worker import Worker
from .brokers._contract import Broker

T = TypeVar("T")
#: Seconds a `connect()` client gets to finish its writes when it closes.
CLIENT_CLOSE = 5.0


def _collect(
    specs: tuple[Queue[Any] | Pipeline, ...],
) -> tuple[dict[str, Queue[Any]], dict[str, Pipeline]]:
    queues: dict[str, Queue[Any]] = {}
    pipelines: dict[str, Pipeline] = {}

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
        else:
            raise InvalidQueue(f"expected Queue or Pipeline objects, got {spec!r}")
    for name in pipelines:
        if name in queues:
            raise InvalidQueue(f"a queue and a pipeline are both named {name!r}; rename one")
    return queues, pipelines


@asynccontextmanager
async def open_system(
    *specs: Queue[Any] | Pipeline,
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
        specs: the `Queue`s and `Pipeline`s to serve (a pipeline brings its stages).
        broker: "memory://" (in process), "redis://host:port/db" or "rediss://..." (TLS),
            "amqp://user:password@host:5672/vhost?results=redis://host:6379/0"
            (RabbitMQ), or a `Broker`. Default: the `QUEUEING_BROKER` environment variable, else
            "memory://".
        converter: the cattrs converter for payloads and results (default: a strict JSON
            converter from `queueing.make_converter()`).
        shutdown_timeout: seconds in-flight tasks get to finish at shutdown.
        max_results: the most finished outcomes kept for lookup by id (memory broker).
        max_dead_letters: the most dead letters kept per queue.
    """
    queues, pipelines = _collect(specs)
    if not queues:
        raise InvalidQueue("open_system() needs at least one Queue or Pipeline")
    the_broker = broker_from_url(broker, max_results=max_results, max_dead_letters=max_dead_letters)
    async with actors.open_system(
        name="queueing", shutdown_timeout=2 * shutdown_timeout + 5
    ) as asys:
        system = QueueSystem(
            asys, the_broker, queues, pipelines, converter or make_converter(), shutdown_timeout
        )
        infos = {name: rt.info for name, rt in system._runtimes.items()}
        async with the_broker.connect(infos, serve=True):
            await system._start(serve=True)
            try:
                yield system
            finally:
                await system._stop()


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
            f"connect() needs a shared broker (redis://, rediss:// or amqp://), got {url!r}; "
            "with memory:// use open_system(), which runs the workers in this process"
        )
    queues, pipelines = _collect(specs)
    async with broker.connect({}, serve=False):
        for name, info in (await broker.declared()).items():
            if name not in queues:
                queues[name] = Queue(
                    name, _Remote, maxsize=info.maxsize, max_payload=info.max_payload
                )
        async with actors.open_system(name="queueing-client") as asys:
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
    *specs: Queue[Any] | Pipeline,
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

"""The entry points: `open_system`, `run_system`, and `connect` under trio (`connect`
itself, which also serves asyncio, is in `_clients.py`)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import cattrs
import outcome
import trio

import actors
from actors import Overflow

from ._asyncio import asyncio_loop, needs_loop
from ._convert import make_converter
from ._describe import Published, describe, read
from ._exceptions import BrokerError, InvalidQueue, QueueingError, WorkersCrashed
from ._libraries import not_in_asyncio, trio_only
from ._pools import POOL_SUFFIX
from ._queue import Pipeline, Queue
from ._receipt import Receipt
from ._schedule import Schedule
from ._system import QueueSystem
from ._urls import broker_from_url
from ._validate import positive_int, seconds
from ._worker import Worker
from .brokers._contract import Broker

log = logging.getLogger("queueing")
T = TypeVar("T")
#: Seconds a `connect()` client gets to finish its writes when it closes.
CLIENT_CLOSE = 5.0
#: A `connect()` client's default `broker_timeout`: seconds one submit waits for a stalled
#: or unreachable broker before `BrokerError` (short: a request handler should answer 503).
BROKER_TIMEOUT = 2.0


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
            raise InvalidQueue(_not_a_spec(spec))
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
            of one machine share), "redis://host:port/db" or "rediss://..." (TLS),
            "redis+cluster://host:port,host:port" (Redis Cluster),
            "redis+sentinel://host:26379,host:26380/service" (Redis Sentinel),
            "amqp://user:password@host:5672/vhost?results=redis://host:6379/0" (RabbitMQ),
            or a `Broker`. Default: the `QUEUEING_BROKER` environment variable, else
            "memory://".
        converter: the cattrs converter for payloads and results (default: a strict JSON
            converter from `queueing.make_converter()`).
        shutdown_timeout: seconds in-flight tasks get to finish at shutdown.
        max_results: the most finished outcomes kept for lookup by id (memory broker;
            what each costs: docs/concepts/receipts.md, bench/results_memory_bench.py).
        max_dead_letters: the most dead letters kept per queue.
    """
    trio_only("open_system()")
    _check_converter(converter)
    seconds("shutdown_timeout", shutdown_timeout, zero=True)
    positive_int("max_results", max_results, 0)
    positive_int("max_dead_letters", max_dead_letters)
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
                if the_broker.shared:  # for clients without the Queue objects (_describe.py)
                    types = {
                        # A converter of the caller's may have hooks of its own: no check.
                        name: describe(rt.payload_codec.type if converter is None else Any)
                        for name, rt in system._runtimes.items()
                    }
                    warn_of_other_types(types, await the_broker.declared_payload_types())
                    await the_broker.declare_payload_types(types)
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


def _check_converter(converter: object) -> None:
    """None, or a cattrs converter (`queueing.make_converter()`, with hooks of yours)."""
    if converter is not None and not isinstance(converter, cattrs.BaseConverter):
        raise InvalidQueue(
            f"converter must be a cattrs converter, got {converter!r:.80}: start from "
            "queueing.make_converter() and register your hooks on it (or pass None)"
        )


def warn_of_other_types(ours: dict[str, str], published: dict[str, str]) -> None:
    """Log a warning for each queue whose payload type, as published on the broker by the
    process that started before this one, differs from this process's: while processes of
    both versions serve the queue, a task one of them accepts may not convert in the
    other's workers (it is dead-lettered there)."""
    for name, text in ours.items():
        before = published.get(name)
        if before is None or before == text:
            continue
        theirs, mine = (
            found[0] if found else "any (not checked)" for found in map(read, (before, text))
        )
        if theirs == mine:
            theirs = f"another {mine}, whose fields differ"
        log.warning(
            "queue %r: this process's workers take payloads of type %s, but the type "
            "published for it before was %s (by a process of another version, running or "
            "gone): while both serve or submit to the queue, a payload of one type that "
            "the other does not take is dead-lettered with a PayloadError, 'payload "
            "conversion failed in the worker' (docs/concepts/queues.md"
            "#two-versions-of-a-payload-type)",
            name,
            mine,
            theirs,
            extra={"queue": name},
        )


def _not_a_spec(spec: Any) -> str:
    """What is wrong with an argument that is no Queue, Pipeline or Schedule."""
    if isinstance(spec, list | tuple | set | frozenset):
        return (
            f"queues, pipelines and schedules are passed one by one, got a "
            f"{type(spec).__name__} of {len(spec)}: unpack it (open_system(*specs), "
            "run_system(*specs), connect(url, *specs))"
        )
    shown = repr(spec)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if isinstance(spec, type) and issubclass(spec, Worker):
        return (
            f"{shown} is a Worker class, not a Queue: a worker runs the tasks of a queue, so "
            f"pass the queue (Queue('name', {spec.__name__}))"
        )
    return f"expected Queue, Pipeline or Schedule objects, got {shown}"


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


class _Attempt:
    """One bounded submit, run as a task of the client's own nursery: the Redis broker
    shields a sent write from its caller's cancellation (so that an accepted task is
    reported), so only a caller that stops waiting can give up on a stalled broker."""

    __slots__ = ("done", "fn", "outcome", "scope")

    def __init__(self, fn: Callable[[], Awaitable[Receipt[Any]]]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.outcome: outcome.Outcome[Receipt[Any]] | None = None
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            try:
                value = await self.fn()
            except Exception as exc:  # the caller's to see (a Cancelled is not)
                self.outcome = outcome.Error(exc)
            else:
                self.outcome = outcome.Value(value)
            self.done.set()


class ClientSystem(QueueSystem):
    """The `QueueSystem` of a `connect()` client: its submits are bounded in time when the
    broker stalls (`broker_timeout`)."""

    #: Seconds a submit waits for the broker's answer, past any wait for room; None: no bound.
    broker_timeout: float | None = None
    #: Where bounded submits run (open while the client is).
    _attempts: trio.Nursery | None = None

    def submit(
        self,
        name: str | Queue[Any] | Pipeline,
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> Coroutine[Any, Any, Receipt[Any]]:
        """As `QueueSystem.submit`; also raises `BrokerError` when the broker did not answer
        within `broker_timeout` seconds (plus the wait for room the queue allows)."""
        # Not a coroutine itself: it picks the coroutine to await, so that an unbounded
        # submit (the common case) is `QueueSystem.submit`'s alone, one layer less.
        bound = self._bound(name, timeout)
        if bound is None or self._attempts is None:
            return QueueSystem.submit(
                self,
                name,
                payload,
                delay=delay,
                expires=expires,
                timeout=timeout,
                key=key,
                priority=priority,
                tenant=tenant,
            )
        fn = partial(
            QueueSystem.submit,
            self,
            name,
            payload,
            delay=delay,
            expires=expires,
            timeout=timeout,
            key=key,
            priority=priority,
            tenant=tenant,
        )
        return self._bounded(name, fn, bound)

    async def _bounded(
        self,
        name: str | Queue[Any] | Pipeline,
        fn: Callable[[], Awaitable[Receipt[Any]]],
        bound: float,
    ) -> Receipt[Any]:
        """A submit (`fn`) run in the client's nursery, waited for at most `bound` seconds."""
        assert self._attempts is not None
        attempt = _Attempt(fn)
        self._attempts.start_soon(attempt.run)
        try:
            with trio.move_on_after(bound):
                await attempt.done.wait()
        except BaseException:  # the caller was cancelled: so is its submit
            attempt.scope.cancel()
            raise
        if attempt.outcome is not None:
            return attempt.outcome.unwrap()
        attempt.scope.cancel()  # it goes on only as long as the broker shields a sent write
        where = name if isinstance(name, str) else name.name
        raise BrokerError(
            f"submit to {where!r}: the broker did not answer within {self.broker_timeout:g}s "
            "(connect(broker_timeout=...)); the task may or may not have been accepted: "
            "submitting again with the same key= is safe"
        )

    def _bound(self, name: str | Queue[Any] | Pipeline, timeout: float | None) -> float | None:
        """broker_timeout plus the longest this submit may wait for room (None: unbounded)."""
        if self.broker_timeout is None:
            return None
        if isinstance(name, Queue | Pipeline):
            name = name.name
        elif not isinstance(name, str):
            return self.broker_timeout  # InvalidQueue, raised at once
        spec = self._queues.get(name)
        if spec is None:
            pipeline = self._pipelines.get(name)
            if pipeline is None:
                return self.broker_timeout  # UnknownQueue, raised at once
            spec = pipeline.stages[0]
        if spec.when_full is Overflow.REJECT:
            return self.broker_timeout
        room = spec.full_timeout if timeout is None else timeout
        if room is None:
            return None  # Overflow.WAIT without a timeout: waits for room as long as it takes
        return self.broker_timeout + room


@asynccontextmanager
async def connect_trio(
    url: str | None = None,
    *specs: Queue[Any] | Pipeline,
    converter: cattrs.Converter | None = None,
    connect_timeout: float = 5.0,
    broker_timeout: float | None = BROKER_TIMEOUT,
) -> AsyncIterator[QueueSystem]:
    """`connect()` under trio: the client runs in the caller's trio run."""
    trio_only("connect()")
    url = url or os.environ.get("QUEUEING_BROKER")
    if not url:
        raise InvalidQueue("connect() needs a broker URL, or QUEUEING_BROKER set to one")
    seconds("broker_timeout", broker_timeout, optional=True)
    seconds("connect_timeout", connect_timeout)
    _check_converter(converter)
    broker = broker_from_url(
        url, max_results=0, max_dead_letters=10_000, connect_timeout=connect_timeout
    )
    if not broker.shared:
        raise InvalidQueue(
            f"connect() needs a shared broker (sqlite:///path.db, redis://, rediss:// or "
            f"amqp://), "
            f"got {url!r}; "
            "with memory:// use open_system(), which runs the workers in this process"
        )
    queues, pipelines, _ = _collect(specs)
    remote: list[str] = []
    async with broker.connect({}, serve=False):
        for name, info in (await broker.declared()).items():
            if name not in queues:
                queues[name] = Queue(
                    name,
                    _Remote,
                    maxsize=info.maxsize,
                    max_payload=info.max_payload,
                    shards=info.shards,
                    # The declared tenant limits: a client's submit is refused or waits
                    # past tenant_maxsize as the serving processes' own would.
                    tenant_concurrency=info.tenant_concurrency,
                    tenant_maxsize=(
                        info.tenant_maxsize
                        if info.tenant_maxsize is None or info.tenant_maxsize <= info.maxsize
                        else None
                    ),
                )
                remote.append(name)
        for name, stages in (await broker.declared_pipelines()).items():
            if name not in pipelines and name not in queues and all(s in queues for s in stages):
                pipelines[name] = Pipeline(name, [queues[stage] for stage in stages])
        async with actors.open_system(name="queueing-client", max_restarts=0) as asys:
            system = ClientSystem(
                asys, broker, queues, pipelines, converter or make_converter(), CLIENT_CLOSE
            )
            system.broker_timeout = broker_timeout
            published: Published | None = None
            if remote:  # queues known by name only: check payloads as their workers publish
                published = Published(
                    {name: system._runtimes[name] for name in remote}, system.converter
                )
                published.apply(await broker.declared_payload_types())
            await system._start(serve=False)
            # The first figures before the caller's first stats() (then every few seconds).
            with trio.move_on_after(connect_timeout):
                await system._refresh_figures()
            try:
                async with trio.open_nursery() as system._attempts:
                    if published is not None:
                        system._attempts.start_soon(published.follow, broker)
                    try:
                        yield system
                    finally:
                        system._attempts.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # Only the block can fail (an attempt hands its error to its caller): the
                # caller's own exception, not wrapped by the nursery.
                if len(group.exceptions) != 1:
                    raise
                only = group.exceptions[0]
                raise only from only.__cause__
            finally:
                system._attempts = None
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
    not_in_asyncio("run_system()")
    if main is not None and not callable(main):
        raise QueueingError(f"main must be an async function taking the system, got {main!r}")
    return trio.run(partial(_run, main, specs, options), clock=clock)

"""The queueing system a user launches: `open_system`, `run_system`, and `QueueSystem`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import cattrs
import tenacity
import trio

import actors
from actors import Actor, ChildSpec
from actors._actor import ActorState, _Cell
from actors._system import run_with_signals

from . import _fastpath
from ._convert import make_converter
from ._engine import Engine
from ._exceptions import (
    InvalidQueue,
    QueueingError,
    SystemStopping,
    UnknownQueue,
    UnknownTask,
)
from ._queue import Pipeline, Queue
from ._receipt import Receipt, failure
from ._runtime import QueueRuntime
from ._stats import QueueStats
from ._task import DeadLetter, Envelope, TaskState, TaskStatus
from ._worker import Worker, _Pool
from .brokers import Broker, MemoryBroker, RedisBroker

log = logging.getLogger("queueing")
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
T = TypeVar("T")


def _collect(specs: tuple[Queue | Pipeline, ...]) -> tuple[dict[str, Queue], dict[str, Pipeline]]:
    queues: dict[str, Queue] = {}
    pipelines: dict[str, Pipeline] = {}

    def add_queue(queue: Queue) -> None:
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


def _make_broker(broker: str | Broker | None, options: dict[str, Any]) -> Broker:
    if broker is None:
        broker = os.environ.get("QUEUEING_BROKER") or "memory://"
    if isinstance(broker, Broker):
        return broker
    if not isinstance(broker, str):
        raise InvalidQueue(f"broker must be a URL string or a Broker, got {broker!r}")
    if broker == "memory://" or broker.startswith("memory:"):
        return MemoryBroker(**options)
    scheme = broker.split(":", 1)[0]
    if scheme in ("redis", "rediss", "unix"):
        return RedisBroker(broker, max_dead_letters=options["max_dead_letters"])
    raise InvalidQueue(
        f"unsupported broker URL {broker!r} (scheme {scheme!r}); use 'memory://', "
        "'redis://host:port/db' or 'rediss://...' (TLS)"
    )


class _BrokerRunner(Actor):
    """Runs the broker's background work (promoting delayed retries) under supervision."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._scope: trio.CancelScope | None = None

    async def receive(self, message: Any) -> None:
        return None

    async def _main(self, cell: _Cell) -> None:
        cell.state = ActorState.RUNNING
        with trio.CancelScope() as self._scope:
            await self._broker.run()

    def _stop_requested(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class QueueSystem:
    """A running processing-queue system. Get one from `open_system()` or `run_system()`."""

    def __init__(
        self,
        actor_system: actors.ActorSystem,
        broker: Broker,
        queues: dict[str, Queue],
        pipelines: dict[str, Pipeline],
        converter: cattrs.Converter,
        shutdown_timeout: float,
        *,
        serve: bool = True,
    ) -> None:
        self.actors = actor_system
        self.converter = converter
        self.shutdown_timeout = shutdown_timeout
        self.unfinished = 0
        self._serve = serve
        self._broker = broker
        self._queues = queues
        self._pipelines = pipelines
        self._runtimes = {name: QueueRuntime(q, converter) for name, q in queues.items()}
        broker.attach(self._runtimes)
        self._engine = Engine(broker, self._runtimes, pipelines, self)
        self._accept = broker.submit_nowait
        # Per queue, the results that need no structuring (Codec.as_is), for `await receipt`.
        self._as_is = {
            name: rt.result_codec.as_is
            for name, rt in self._runtimes.items()
            if rt.result_codec.as_is is not None
        }
        self._runner: actors.ActorRef | None = None

    @property
    def names(self) -> list[str]:
        """The queues and pipelines this system serves."""
        return [*self._queues, *self._pipelines]

    async def _start(self) -> None:
        self._runner = await self.actors.spawn(
            ChildSpec(_BrokerRunner, args=(self._broker,), name="broker")
        )
        for name, queue in self._queues.items() if self._serve else ():
            rt = self._runtimes[name]
            workers = [
                ChildSpec(
                    queue.worker,
                    args=queue.worker_args,
                    kwargs=queue.worker_kwargs,
                    name=f"{name}.worker-{i}",
                    shutdown=self.shutdown_timeout,
                    mailbox_size=16,
                )
                for i in range(queue.workers)
            ]
            rt.pool = await self.actors.spawn(
                ChildSpec(
                    _Pool,
                    args=(workers,),
                    kwargs={
                        "engine": self._engine,
                        "runtime": rt,
                        "max_restarts": queue.max_restarts,
                        "within": queue.restart_within,
                        # Not wait_exponential_jitter(initial=...): deprecated in tenacity 9.2.
                        "backoff": tenacity.wait_exponential(multiplier=0.1, max=5.0)
                        + tenacity.wait_random(0, 0.1),
                    },
                    name=f"{name}.pool",
                    shutdown=math.inf,
                )
            )

    async def _stop(self) -> None:
        self._engine.stopping = True
        with trio.move_on_after(self.shutdown_timeout):
            async with trio.open_nursery() as nursery:
                for rt in self._runtimes.values():
                    if rt.pool is not None and rt.pool.is_alive:
                        nursery.start_soon(partial(rt.pool.stop, timeout=self.shutdown_timeout))
        self.unfinished = self._broker.abandon("the system shut down before the task finished")
        with trio.move_on_after(self.shutdown_timeout):
            await self._broker.flush()
        if self._runner is not None and self._runner.is_alive:
            await self._runner.stop(timeout=1.0)
        if self.unfinished:
            durable = "" if self._broker.durable else " (the memory broker is not durable)"
            log.warning(
                "shutdown left %d task(s) unfinished; their receipts report CANCELLED%s",
                self.unfinished,
                durable,
            )

    # -- the client API --------------------------------------------------------------------

    async def submit(
        self,
        name: str,
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
    ) -> Receipt:
        """Hand a task to a queue or pipeline; returns its receipt once it is accepted.

        Args:
            name: a queue's or a pipeline's name.
            payload: an attrs instance, dataclass or plain data the converter handles.
            delay: seconds before it may start.
            expires: seconds from now by which it must have started, else it expires.
            timeout: with `Full.WAIT`, the longest to wait for room (overrides the queue's
                `full_timeout`).

        Raises:
            UnknownQueue: no such queue or pipeline.
            PayloadTooLarge: over the queue's `max_payload`.
            PayloadError: the converter cannot handle the payload (names field and type).
            QueueFull: `maxsize` reached and the queue would not wait (longer).
            SystemStopping: the system is shutting down.
        """
        if delay is not None or expires is not None or timeout is not None:
            _check_seconds(delay=delay, expires=expires, timeout=timeout)
        engine = self._engine
        rt = self._runtimes.get(name)
        if rt is None or delay or engine.stopping:
            return await engine.submit(name, payload, delay=delay, expires=expires, timeout=timeout)
        # The common case (this runs once per task): accepted now if there is room. A
        # cancelled caller is refused first: once accepted, the receipt must reach it.
        await _checkpoint_if_cancelled()
        env = engine.task(rt, payload, expires)
        if not self._accept(rt, env):
            await engine.enqueue(rt, env, timeout)
        if _fastpath.due():
            await _cancel_shielded_checkpoint()
        return env

    async def submit_many(
        self,
        name: str,
        payloads: Iterable[Any],
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
    ) -> list[Receipt]:
        """Submit many tasks to one queue or pipeline; returns their receipts, in order.

        Cheaper than a `submit` per task: with a remote broker the submissions share round
        trips. Options are those of `submit`, for every task.

        Raises:
            QueueFull: a submission was refused (`Full.REJECT`, or `full_timeout` ran out);
                `.accepted` holds the receipts of the tasks that were accepted (they run).
                In memory, those are the ones before the refused one; with a remote broker,
                submissions run concurrently and any of the others may have been accepted.
            PayloadError, PayloadTooLarge, UnknownQueue: checked for each task before it is
                sent, with `.accepted` as above.
        """
        items = list(payloads)
        _check_seconds(delay=delay, expires=expires, timeout=timeout)
        engine = self._engine
        rt = self._runtimes.get(name)
        broker = self._broker
        if (
            isinstance(broker, MemoryBroker)
            and rt is not None
            and not delay
            and not engine.stopping
        ):
            return await self._submit_batch(broker, rt, items, expires, timeout)
        receipts: list[Receipt | None] = [None] * len(items)
        try:
            if isinstance(self._broker, MemoryBroker):
                for index, payload in enumerate(items):
                    receipts[index] = await engine.submit(
                        name, payload, delay=delay, expires=expires, timeout=timeout
                    )
            else:
                # Concurrent submissions share the broker's round trips. A refusal does not
                # cancel the others: every accepted task keeps its receipt.
                limiter = trio.CapacityLimiter(500)
                refused: list[tuple[int, QueueingError]] = []

                async def one(index: int, payload: Any) -> None:
                    async with limiter:
                        try:
                            receipts[index] = await engine.submit(
                                name, payload, delay=delay, expires=expires, timeout=timeout
                            )
                        except QueueingError as exc:
                            refused.append((index, exc))

                async with trio.open_nursery() as nursery:
                    for index, payload in enumerate(items):
                        nursery.start_soon(one, index, payload)
                if refused:
                    raise min(refused, key=lambda pair: pair[0])[1]
        except QueueingError as exc:
            exc.accepted = [r for r in receipts if r is not None]  # type: ignore[attr-defined]
            raise
        return [r for r in receipts if r is not None]

    async def _submit_batch(
        self,
        broker: MemoryBroker,
        rt: QueueRuntime,
        items: list[Any],
        expires: float | None,
        timeout: float | None,
    ) -> list[Receipt]:
        """submit_many to a queue of this process: validated, then accepted in chunks
        (whatever fits at once; the rest waits for room one by one)."""
        engine = self._engine
        await trio.lowlevel.checkpoint_if_cancelled()
        accepted: list[Receipt] = []
        for start in range(0, len(items), _CHUNK):
            if start:
                await trio.lowlevel.cancel_shielded_checkpoint()  # let workers start
            envs, problem = engine.tasks(rt, items[start : start + _CHUNK], expires)
            taken = 0 if engine.stopping else broker.submit_many_nowait(rt, envs)
            accepted += envs[:taken]
            try:
                if engine.stopping:
                    raise SystemStopping("the system is shutting down and accepts no new tasks")
                for env in envs[taken:]:
                    await engine.enqueue(rt, env, timeout)
                    accepted.append(env)
                if problem is not None:
                    raise problem
            except QueueingError as exc:
                exc.accepted = accepted  # type: ignore[attr-defined]
                raise
        await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

    def receipt(self, task_id: str) -> Receipt:
        """The receipt of a task submitted earlier (by anyone), while its result is kept.

        Raises:
            UnknownTask: no such task, or its result's TTL ran out.
        """
        env = self._broker.lookup(task_id)
        if not isinstance(env, Receipt):
            raise UnknownTask(task_id)
        if env._system is None:
            env._system = self  # found by id: a record this broker made for the lookup
        return env

    def stats(self) -> dict[str, QueueStats]:
        """Figures per queue: depth, in flight, outcomes, retries, restarts, latency."""
        result = {}
        for name, rt in self._runtimes.items():
            outstanding = self._broker.outstanding(name)
            result[name] = QueueStats(
                name=name,
                depth=outstanding - rt.in_flight,
                scheduled=rt.scheduled,
                in_flight=rt.in_flight,
                outstanding=outstanding,
                maxsize=rt.spec.maxsize,
                submitted=rt.submitted,
                succeeded=rt.succeeded,
                failed=rt.failed,
                retried=rt.retried,
                dead_lettered=rt.dead_lettered,
                cancelled=rt.cancelled,
                expired=rt.expired,
                restarts=rt.restarts(),
                workers=rt.spec.workers,
                p50=rt.latency.percentile(50),
                p99=rt.latency.percentile(99),
            )
        return result

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queue is empty and idle (no task outstanding).

        Raises:
            TimeoutError: still busy after `timeout` seconds.
        """
        if timeout is None:
            await self._broker.drain()
            return
        with trio.move_on_after(timeout):
            await self._broker.drain()
            return
        raise TimeoutError(f"queues still busy after {timeout:g}s: {self._busy()}")

    def _busy(self) -> str:
        return ", ".join(
            f"{name}={self._broker.outstanding(name)}"
            for name in self._runtimes
            if self._broker.outstanding(name)
        )

    def _runtime(self, queue: str) -> QueueRuntime:
        rt = self._runtimes.get(queue)
        if rt is None:
            raise UnknownQueue(queue, list(self._runtimes))
        return rt

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead letters of `queue`, oldest first."""
        self._runtime(queue)
        return await self._broker.dead_letters(queue, limit)

    async def requeue(self, queue: str, ids: list[str] | None = None) -> list[Receipt]:
        """Submit dead letters again (all of the queue's, or those with `ids`) as new
        tasks; returns their new receipts. The old ids keep their failed outcome.

        A letter leaves the store only once its new task is accepted: if a submit is
        refused (`QueueFull`...), that letter and the rest stay. Entries that never were
        tasks (dead-lettered as unreadable, with an empty id) are not requeued.
        """
        self._runtime(queue)
        wanted = None if ids is None else set(ids)
        receipts = []
        for letter in await self._broker.dead_letters(queue, 1 << 30):
            if not letter.id or (wanted is not None and letter.id not in wanted):
                continue
            receipts.append(await self.submit(queue, letter.payload))
            await self._broker.take_dead_letters(queue, [letter.id])
        return receipts

    async def purge_dead_letters(self, queue: str) -> int:
        """Delete the queue's dead letters; returns how many there were."""
        self._runtime(queue)
        return len(await self._broker.take_dead_letters(queue, None))

    # -- for receipts ------------------------------------------------------------------------

    def _stage_name(self, env: Envelope) -> str | None:
        pipeline = self._pipelines.get(env.queue)
        if pipeline is None:
            return None
        return pipeline.stages[env.stage].name

    def _unwrap(self, env: Envelope) -> Any:
        if env.state is not TaskState.SUCCEEDED:
            raise failure(env, self._stage_name(env))
        if env.pipeline is not None:
            # A stage task of a pipeline run (found by id): its result went on to the next
            # stage (or into the run's result), so its own receipt resolves to None.
            return None
        rt = self._runtimes.get(env.queue)
        if rt is not None:
            return rt.result_codec.structure(env.value)
        pipeline = self._pipelines.get(env.queue)
        last = self._runtimes.get(pipeline.stages[-1].name) if pipeline is not None else None
        if last is None:
            # A task of a queue or pipeline this client was not given (found by id): its
            # result as plain data, since the declared type is not known here.
            return env.value
        if env.fanned:
            return [last.result_codec.structure(item) for item in env.value]
        return last.result_codec.structure(env.value)

    def _status(self, env: Envelope) -> TaskStatus:
        return TaskStatus(
            id=env.id,
            queue=env.queue,
            state=env.state,
            attempts=env.attempts,
            deliveries=env.deliveries,
            submitted_at=env.submitted_at,
            finished_at=env.finished_at,
            error=env.error,
            stage=self._stage_name(env)
            if env.state.final and env.state is not TaskState.SUCCEEDED
            else None,
        )


_CHUNK = 1024  # submit_many accepts this many tasks between two yields to the scheduler


def _check_seconds(**options: float | None) -> None:
    for what, value in options.items():
        if value is not None and (
            not isinstance(value, int | float) or math.isnan(value) or value < 0
        ):
            raise InvalidQueue(f"{what} must be a number of seconds >= 0, got {value!r}")


@asynccontextmanager
async def open_system(
    *specs: Queue | Pipeline,
    broker: str | Broker | None = None,
    converter: cattrs.Converter | None = None,
    shutdown_timeout: float = 10.0,
    max_results: int = 100_000,
    max_dead_letters: int = 10_000,
) -> AsyncIterator[QueueSystem]:
    """Run the queues and pipelines for the duration of the `async with` block.

    On exit: no new tasks are accepted, workers finish their current task (up to
    `shutdown_timeout`), and tasks left unfinished are reported (`system.unfinished`)
    and resolve as CANCELLED.

    Args:
        specs: the `Queue`s and `Pipeline`s to serve (a pipeline brings its stages).
        broker: "memory://" (in process), "redis://host:port/db" or "rediss://..." (TLS),
            or a `Broker`. Default: the `QUEUEING_BROKER` environment variable, else
            "memory://".
        converter: the cattrs converter for payloads and results (default: a strict JSON
            converter from `queueing.make_converter()`).
        shutdown_timeout: seconds in-flight tasks get to finish at shutdown.
        max_results: the most finished outcomes kept for lookup by id (memory broker).
        max_dead_letters: the most dead letters kept per queue (memory broker).
    """
    queues, pipelines = _collect(specs)
    if not queues:
        raise InvalidQueue("open_system() needs at least one Queue or Pipeline")
    the_broker = _make_broker(
        broker, {"max_results": max_results, "max_dead_letters": max_dead_letters}
    )
    async with actors.open_system(
        name="queueing", shutdown_timeout=2 * shutdown_timeout + 5
    ) as asys:
        system = QueueSystem(
            asys, the_broker, queues, pipelines, converter or make_converter(), shutdown_timeout
        )
        async with the_broker.connected():
            await system._start()
            try:
                yield system
            finally:
                await system._stop()


class _Remote(Worker):
    """Stands for a queue whose workers run in other processes (see `connect`)."""

    async def handle(self, payload: Any) -> Any:
        raise QueueingError("this queue is served by other processes")


@asynccontextmanager
async def connect(
    url: str | None = None,
    *specs: Queue | Pipeline,
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
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidQueue(
            f"connect() needs a shared broker (redis:// or rediss://), got {url!r}; "
            "with memory:// use open_system(), which runs the workers in this process"
        )
    broker = RedisBroker(url, connect_timeout=connect_timeout)
    broker.serving = False
    queues, pipelines = _collect(specs)
    async with broker.connected():
        for name, config in (await broker.queue_configs()).items():
            if name not in queues:
                queues[name] = Queue(
                    name,
                    _Remote,
                    maxsize=int(config.get("maxsize", 10_000)),
                    max_payload=int(config.get("max_payload", 1024 * 1024)),
                )
        async with actors.open_system(name="queueing-client") as asys:
            system = QueueSystem(
                asys, broker, queues, pipelines, converter or make_converter(), 5.0, serve=False
            )
            await system._start()
            try:
                yield system
            finally:
                with trio.move_on_after(5.0):
                    await broker.flush()
                if system._runner is not None and system._runner.is_alive:
                    await system._runner.stop(timeout=1.0)


async def _run(
    main: Callable[[QueueSystem], Awaitable[T]] | None, specs: Any, options: Any
) -> T | None:
    return await run_with_signals(partial(open_system, *specs, **options), main)


def run_system(
    *specs: Queue | Pipeline,
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

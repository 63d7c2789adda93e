"""What happens to a task: submit, run, succeed, retry, fail, continue down a pipeline."""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING, Any

import trio

from . import _fastpath
from ._convert import AS_ANY, PRIMITIVE_TYPES, encoded_size
from ._exceptions import (
    PayloadError,
    PayloadTooLarge,
    QueueingError,
    SystemStopping,
    TaskTimeout,
    UnknownQueue,
)
from ._queue import FanOut, Full, Pipeline
from ._receipt import PipelineReceipt, Receipt
from ._task import Envelope, ErrorInfo, TaskState

if TYPE_CHECKING:
    from actors._actor import _Cell

    from ._runtime import QueueRuntime
    from ._worker import Worker
    from .brokers import Broker

log = logging.getLogger("queueing")
_wall = time.time
BIG_INT = 10**22  # ints within this print in at most 24 bytes
_BATCH = 64


class Engine:
    """The broker-independent rules of the processing queue."""

    def __init__(
        self,
        broker: Broker,
        runtimes: dict[str, QueueRuntime],
        pipelines: dict[str, Pipeline],
        system: Any = None,
    ) -> None:
        self.system = system  # the QueueSystem whose receipts the tasks are
        self.broker = broker
        self.runtimes = runtimes
        self.pipelines = pipelines
        self.clock = broker.clock
        self.stopping = False
        self.prefix = secrets.token_hex(5) + "-"  # ids: prefix + a count
        self.ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{self.prefix}{next(self.ids)}"

    # -- submit ----------------------------------------------------------------------------

    def validate(self, rt: QueueRuntime, payload: Any) -> Any:
        """The payload as plain data, checked against the queue's type and `max_payload`."""
        kind = type(payload)
        if (kind is int and rt.direct_int and -BIG_INT < payload < BIG_INT) or (
            kind is str and len(payload) <= rt.direct_str
        ):
            return payload  # plain data the queue takes as it is, well within max_payload
        data = rt.payload_codec.check(payload)
        limit = rt.spec.max_payload
        try:
            size = encoded_size(data, limit)
        except ValueError as exc:  # an int past Python's 4300-digit str() limit, say
            raise PayloadError(rt.name, f"the payload does not serialize to JSON: {exc}") from exc
        if size > limit:
            raise PayloadTooLarge(rt.name, size, limit)
        return data

    def task(self, rt: QueueRuntime, payload: Any, expires: float | None) -> Receipt:
        """A new task for queue `rt`, validated; its receipt is its record."""
        data = self.validate(rt, payload)
        now = self.clock()
        return Receipt(
            f"{self.prefix}{next(self.ids)}",  # new_id(), inlined: this runs once per task
            rt.name,
            data,
            _wall(),
            now,
            None if expires is None else now + expires,
            self.system,
        )

    def tasks(
        self, rt: QueueRuntime, payloads: list[Any], expires: float | None
    ) -> tuple[list[Receipt], QueueingError | None]:
        """New tasks for queue `rt` (see `task`), up to the first payload that fails
        validation; that one's error comes second."""
        now = self.clock()
        wall = _wall()
        expires_at = None if expires is None else now + expires
        prefix = self.prefix
        ids = self.ids
        name = rt.name
        system = self.system
        validate = self.validate
        envs: list[Receipt] = []
        append = envs.append
        try:
            for payload in payloads:
                data = validate(rt, payload)
                task_id = f"{prefix}{next(ids)}"
                append(Receipt(task_id, name, data, wall, now, expires_at, system))
        except QueueingError as exc:
            return envs, exc
        return envs, None

    async def submit(
        self,
        name: str,
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
    ) -> Receipt:
        if self.stopping:
            raise SystemStopping("the system is shutting down and accepts no new tasks")
        rt = self.runtimes.get(name)
        if rt is None:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                raise UnknownQueue(name, [*self.runtimes, *self.pipelines])
            return await self._submit_pipeline(pipeline, payload, delay, expires, timeout)
        await trio.lowlevel.checkpoint_if_cancelled()  # before accepting: see QueueSystem
        env = self.task(rt, payload, expires)
        if delay or not self.broker.submit_nowait(rt, env):
            await self.enqueue(rt, env, timeout, delay)
        if _fastpath.due():
            await trio.lowlevel.cancel_shielded_checkpoint()
        return env

    async def enqueue(
        self, rt: QueueRuntime, env: Envelope, timeout: float | None, delay: float | None = None
    ) -> None:
        """Hand a new task to the broker, waiting for room as the queue's `when_full` says."""
        spec = rt.spec
        await self.broker.submit(
            rt, env, spec.when_full, spec.full_timeout if timeout is None else timeout, delay
        )

    async def _submit_pipeline(
        self,
        pipeline: Pipeline,
        payload: Any,
        delay: float | None,
        expires: float | None,
        timeout: float | None,
    ) -> Receipt:
        await trio.lowlevel.checkpoint_if_cancelled()  # before accepting: see QueueSystem
        first = self.runtimes[pipeline.stages[0].name]
        data = self.validate(first, payload)
        now = self.clock()
        wall = time.time()
        expires_at = None if expires is None else now + expires
        system = self.system
        run_env = PipelineReceipt(self.new_id(), pipeline.name, data, wall, now, expires_at, system)
        stage_env = PipelineReceipt(
            f"{run_env.id}.s",
            first.name,
            data,
            wall,
            now,
            expires_at,
            system,
            pipeline=run_env.id,
            route=pipeline.name,
        )
        spec = first.spec
        await self.broker.start_run(
            first,
            stage_env,
            run_env,
            spec.when_full,
            spec.full_timeout if timeout is None else timeout,
            delay,
        )
        if _fastpath.due():
            await trio.lowlevel.cancel_shielded_checkpoint()
        return run_env

    # -- running ---------------------------------------------------------------------------

    async def work(self, worker: Worker, cell: _Cell, rt: QueueRuntime) -> None:
        """A worker's loop: take a ready task when free, run it, record what happened.

        Tasks run inside one cancel scope that lives across many tasks (entering a scope
        per task would cost more than a no-op task); cancelling the running task (receipt
        cancel, timeout) ends that scope, and the loop opens a new one.
        """
        try:
            while not cell.stop_requested:
                with trio.CancelScope() as scope:
                    worker._scope = scope
                    await self._batch(worker, cell, rt, scope)
                worker._scope = None
                env = worker._task
                if env is not None:
                    worker._task = None
                    env.scope = None
                    self.broker.wake_drain()
                    if env.state is TaskState.RUNNING:
                        timeout = rt.spec.timeout or 0.0
                        self.failed(
                            rt,
                            env,
                            TaskTimeout(f"task ran longer than its timeout of {timeout:g}s"),
                        )
        except BaseException:
            env = worker._task
            if env is not None and env.state is TaskState.RUNNING:
                # Cancelled from outside (shutdown deadline): hand it to another worker.
                self.broker.redeliver(rt, env)
            raise

    async def _batch(
        self, worker: Worker, cell: _Cell, rt: QueueRuntime, scope: trio.CancelScope
    ) -> None:
        broker = self.broker
        ready = rt.ready
        clock = self.clock
        spec = rt.spec
        timeout = spec.timeout
        max_deliveries = spec.max_deliveries
        structure = rt.payload_codec.structure
        as_is = rt.payload_codec.as_is  # payloads that need no structuring
        handle = worker.handle
        fatal = type(worker).fatal
        limiter = rt.limiter
        pending = TaskState.PENDING
        running = TaskState.RUNNING
        result_any = rt.result_codec.as_is is not None
        since = 0
        while not cell.stop_requested:
            if not ready:
                if rt.hungry:
                    rt.hungry.unpark_all()
                rt.parked += 1
                try:
                    await rt.idle.park()
                finally:
                    rt.parked -= 1
                rt.waking -= 1
                since = 0
                continue
            env = ready.popleft()
            if ready and not rt.waking and rt.parked:
                rt.wake()  # the next in the chain
            if env.state is not pending:
                continue  # cancelled while it waited
            if env.pipeline is not None and broker.run_ended(env):
                broker.finish(rt, env, TaskState.CANCELLED, None, _PIPELINE_ENDED)
                continue
            now = clock()
            if env.expires_at is not None and now > env.expires_at:
                error = ErrorInfo("TaskExpired", "not started before its deadline")
                broker.finish(rt, env, TaskState.EXPIRED, None, error)
                self._end_run(env, TaskState.EXPIRED, error, rt)
                continue
            env.deliveries += 1
            if env.deliveries > max_deliveries:
                error = ErrorInfo(
                    "Poison",
                    f"its worker crashed {env.deliveries - 1} time(s) while handling it "
                    f"(max_deliveries={max_deliveries})",
                )
                broker.dead_letter(rt, env, TaskState.DEAD_LETTERED, error)
                self._end_run(env, TaskState.DEAD_LETTERED, error, rt)
                continue
            env.state = running
            env.attempts += 1
            if env.first_started is None:
                env.first_started = now
            if timeout is not None:
                scope.deadline = trio.current_time() + timeout
            env.scope = scope
            worker._task = env
            rt.in_flight += 1
            failure: Exception | None = None
            result: Any = None
            try:
                payload = env.payload
                if as_is is not AS_ANY and type(payload) is not as_is:
                    payload = structure(payload)
                if limiter is None:
                    result = await handle(payload)
                else:
                    result = await trio.to_thread.run_sync(
                        handle, payload, limiter=limiter, abandon_on_cancel=True
                    )
            except fatal:
                rt.in_flight -= 1
                worker._task = None
                env.scope = None
                env.state = pending
                broker.redeliver(rt, env)
                raise
            except Exception as exc:  # a PayloadError too: told apart below
                failure = exc
            except BaseException:
                rt.in_flight -= 1
                raise  # our scope's (timeout, cancel) or from outside: see work()
            rt.in_flight -= 1
            worker._task = None
            env.scope = None
            if timeout is not None:
                scope.deadline = math.inf
            if env.state is not running:
                pass  # cancelled through its receipt: the outcome is recorded already
            elif failure is None:
                if env.pipeline is None and type(result) in PRIMITIVE_TYPES and result_any:
                    broker.succeed(rt, env, result)  # the common case
                else:
                    await self.succeeded(rt, env, result)
            elif type(failure) is PayloadError:
                error = ErrorInfo.from_exception(failure)
                broker.dead_letter(rt, env, TaskState.DEAD_LETTERED, error)
                self._end_run(env, TaskState.DEAD_LETTERED, error, rt)
            else:
                self.failed(rt, env, failure)
            if broker.congested:
                await broker.relieve()  # a remote broker is behind on writing outcomes
            since += 1
            if since >= _BATCH:
                since = 0
                await trio.lowlevel.checkpoint()
        if ready and not rt.waking and rt.parked:
            rt.wake()  # stopping (woken just now, maybe): the next worker takes over

    def failed(self, rt: QueueRuntime, env: Envelope, exc: Exception) -> None:
        decision = rt.spec.retry.decide(exc, env.attempts, env.first_started or 0.0, self.clock())
        error = ErrorInfo.from_exception(exc)
        if decision is False or decision is None:
            state = TaskState.FAILED if decision is False else TaskState.DEAD_LETTERED
            self.broker.dead_letter(rt, env, state, error)
            self._end_run(env, state, error, rt)
            return
        env.error = error
        rt.retried += 1
        # A retry is a new delivery (a new stream entry on Redis): max_deliveries bounds
        # the crashes of one attempt, not the attempts the retry policy allows.
        env.deliveries = 0
        self.broker.schedule(rt, env, float(decision))

    async def succeeded(self, rt: QueueRuntime, env: Envelope, result: Any) -> None:
        broker = self.broker
        if env.pipeline is None:
            try:
                data = rt.result_codec.unstructure(result)
            except PayloadError as exc:
                self.failed(rt, env, exc)
                return
            broker.finish(rt, env, TaskState.SUCCEEDED, data)
            return
        pipeline = self.pipelines.get(env.route or "")
        if pipeline is None:
            self.failed(
                rt, env, PayloadError(rt.name, f"unknown pipeline {env.route!r} in this process")
            )
            return
        stages = pipeline.stages
        if env.stage + 1 >= len(stages):
            try:
                data = rt.result_codec.unstructure(result)
            except PayloadError as exc:
                self.failed(rt, env, exc)
                return
            broker.branch_done(env, data)
            broker.finish(rt, env, TaskState.SUCCEEDED, None)
            return
        nxt = self.runtimes[stages[env.stage + 1].name]
        fanned = type(result) is FanOut
        items = result.items if fanned else (result,)
        try:
            datas = [self.validate(nxt, item) for item in items]
        except (PayloadError, PayloadTooLarge) as exc:
            problem = PayloadError(rt.name, f"its result cannot feed {nxt.name!r}: {exc}")
            self.failed(rt, env, problem)
            return
        await broker.advance(env, len(datas), fanned)
        now = self.clock()
        for index, data in enumerate(datas):
            child = PipelineReceipt(
                f"{env.id}.{index}",  # the same ids if a crash makes this stage run again
                nxt.name,
                data,
                time.time(),
                now,
                env.expires_at,
                self.system,
                pipeline=env.pipeline,
                route=env.route,
                stage=env.stage + 1,
                path=(*env.path, index) if fanned else env.path,
            )
            # Backpressure crosses stages: wait for room in the next stage.
            await broker.submit(nxt, child, Full.WAIT, None, None)
        broker.finish(rt, env, TaskState.SUCCEEDED, None)

    def _end_run(
        self, env: Envelope, state: TaskState, error: ErrorInfo | None, rt: QueueRuntime
    ) -> None:
        """A stage task ended without a result: so does its pipeline run (first wins)."""
        if env.pipeline is not None:
            self.broker.fail_run(env, state, error)


_PIPELINE_ENDED = ErrorInfo("Cancelled", "its pipeline run had already ended")

"""`Worker`: the actor that handles one queue's tasks, pulling them when it is idle."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import trio

import actors
from actors import Actor

from ._asyncio import ASYNCIO_METHODS, bridge, explain
from ._convert import AS_ANY
from ._engine import _LEAST_INT, DIRECT_INT, PLAIN_RESULTS
from ._exceptions import InvalidQueue, PayloadError, QueueingError
from ._logs import current_worker
from ._observe import PENDING
from ._progress import checked
from ._rate_gate import may_start
from ._task import ErrorInfo, Task, TaskState

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import QueueRuntime

log = logging.getLogger("queueing")
P = TypeVar("P")
R = TypeVar("R")
#: Tasks a worker runs back to back (when its queue is never empty) between two yields
#: to the scheduler.
BATCH = 64
_PENDING = TaskState.PENDING
_RUNNING = TaskState.RUNNING
_SUCCEEDED = TaskState.SUCCEEDED


class Worker(Actor, Generic[P, R]):
    """Subclass this and implement `handle`; each instance runs one task at a time.

    - `async def handle(self, payload)` returns the task's result. The payload arrives
      structured as the type its annotation names (an attrs class, a dataclass, plain data).
    - A plain `def handle` (blocking or CPU work) runs in a worker thread, bounded by the
      queue's `threads`.
    - An exception from `handle` is a *task* failure: the queue's `RetryPolicy` decides.
    - An exception listed in `fatal` (or one from `on_start`) is a *worker* failure: the
      worker crashes, its supervisor restarts it, and its task is delivered again (up to
      the queue's `max_deliveries`, then dead-lettered as poison).

    `Worker[P, R]` types the payload and the result (`class Fetch(Worker[Page, bytes])`),
    so that a `Queue` of it gives `Receipt[R]`s. `on_start` and `on_stop` are the worker's
    own hooks; `run` (the loop that feeds `handle`) is not to be overridden.
    """

    #: Exceptions that mean the worker itself is broken (a lost connection it holds, say).
    fatal: ClassVar[tuple[type[BaseException], ...]] = ()

    _queue: QueueRuntime
    _engine: Engine
    _task: Task | None = None
    _scope: trio.CancelScope | None = None
    _stop = False  # set by on_stop_requested: read per task, cheaper than `stopping`

    #: True: `handle`, `on_start` and `on_stop` are asyncio code (asyncpg, aiohttp...); they
    #: run on an asyncio loop inside the system's trio loop (trio-asyncio, the `asyncio`
    #: extra). See the docs' asyncio libraries page.
    asyncio: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("run", "on_stop_requested", "receive"):
            if name in vars(cls):
                raise InvalidQueue(
                    f"{cls.__name__} overrides Worker.{name}, which feeds tasks to handle(): "
                    "do the work in handle(), set up in on_start() and clean up in on_stop()"
                )
        if cls.asyncio:
            for name in ASYNCIO_METHODS:
                method = vars(cls).get(name)
                if method is not None and not getattr(method, "__queueing_asyncio__", False):
                    setattr(cls, name, bridge(cls, name, method))

    async def handle(self, payload: P) -> R:
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

    def progress(self, done: float, total: float | None = None, note: str | None = None) -> None:
        """Report how far the current task got: its receipt's `status().progress` and
        `watch()` see it, in this process and in any other.

        Cheap and safe in a tight loop: only the latest report is kept, and published at
        most every few tenths of a second (from a sync handler's thread too).

        Args:
            done: how much is done, in the handler's own units (pages, bytes, rows).
            total: how much there is in all, if known.
            note: a short word on where it stands ("resizing", a file name).

        Raises:
            QueueingError: called while no task is being handled (outside `handle`).
            TypeError, ValueError: an argument a report cannot carry (the message says).
        """
        task = self._task
        if task is None:
            raise QueueingError(
                f"{type(self).__name__}.progress() reports on the task being handled: call "
                "it from handle()"
            )
        checked(done, total, note)
        self._engine.progress.report(self._queue.info, task, done, total, note)

    async def receive(self, message: Any) -> Any:
        log.warning("worker %r ignored a %s message", self.name, type(message).__name__)

    def on_stop_requested(self) -> None:
        # An idle worker stops now; a busy one finishes its task first.
        self._stop = True
        if self._task is None and self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Take the next task from the queue's buffer whenever idle, and run it.

        Tasks run inside one cancel scope that lives across many tasks (entering a scope
        per task would cost more than a no-op task); cancelling the running task (its
        receipt, its timeout) ends that scope, and the loop opens a new one.
        """
        rt = self._queue
        engine = self._engine
        current_worker.set(self)  # for TaskFields, in this trio task (set once per worker)
        try:
            while not self.stopping:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    await self._serve(scope)
                self._scope = None
                task = self._task
                if task is not None:
                    self._task = None
                    task._scope = None
                    if task.state is _RUNNING:
                        await engine.timed_out(rt, task)
                    else:
                        engine.unwound()  # cancelled: drain() may be able to return now
        except BaseException:
            task = self._task
            if task is not None and task.state is _RUNNING and not engine.shared:
                # Cancelled from outside (the shutdown deadline): it goes back first in the
                # queue if there is room; else the broker still has it (and ends it). A
                # shared broker's task stays held: it was delivered, and another process
                # reclaims it when its lease runs out (a delivery that counts).
                task.state = _PENDING
                assert rt.buffer is not None
                with contextlib.suppress(trio.WouldBlock, QueueingError, actors.ActorError):
                    rt.buffer.put_first_nowait(task)
            raise

    async def _serve(self, scope: trio.CancelScope) -> None:
        rt = self._queue
        engine = self._engine
        buffer = rt.buffer
        assert buffer is not None
        get_nowait = buffer.get_nowait
        clock = engine.clock
        spec = rt.spec
        timeout = spec.timeout
        max_deliveries = spec.max_deliveries
        structure = rt.payload_codec.received
        as_is = rt.payload_codec.as_is  # payloads of this type need no structuring
        structured = as_is is not AS_ANY  # False: no payload does
        handle = self.handle
        fatal = type(self).fatal
        limiter = rt.limiter
        # The types of result `Engine.succeeded`'s common case takes as they are (plain
        # data of the declared type), recorded here without a coroutine: in process only.
        result_as_is = rt.result_codec.as_is
        direct = (
            frozenset()
            if not engine.nowait
            else PLAIN_RESULTS
            if result_as_is is AS_ANY
            else PLAIN_RESULTS & {result_as_is}
        )
        settle_nowait = engine.broker.settle_nowait
        long_str = rt.direct_result_str
        least, most = _LEAST_INT, DIRECT_INT  # an int past them is checked (4300 digits)
        add_latency = rt.latency.add
        info = rt.info
        starting = rt.starting  # observers' hooks (see _observe.py): empty lists by default
        ended = rt.ended
        rated = info.rate_limit is not None
        timings = rt.timings  # the metrics' lists (see _observe.Timings), or None
        # Its two lists, read where `timings` is (after each wait and each batch): a list's
        # own `append` is inlined by the interpreter (a bound one would be a call).
        durations: list[float] = _NONE
        waits: list[float] = _NONE
        if timings is not None:
            durations, waits = timings.durations, timings.waits
        ended_at: float | None = None  # the clock read of a success in process, for `timings`
        since = 0
        while not self._stop:
            try:
                task = get_nowait()
            except trio.WouldBlock:
                store = rt.ranked
                if store is not None and store.count:
                    # A queue by priority or tenant (`_ranked.py`): take its next task
                    # here and now, as the dispatcher's feed would hand it over.
                    # (No checkpoint: `since` counts on to the next batch's.)
                    try:
                        task = store.pop()
                    except IndexError:  # only cancelled ones were left
                        continue
                else:
                    if timings is not None and (
                        len(timings.durations) >= PENDING or len(timings.waits) >= PENDING
                    ):
                        timings.fold()
                    task = await buffer.get()  # idle: this is the worker's pull
                    if self._stop:
                        # Asked to stop while it was idle (its scope is cancelled): the
                        # task it was woken with goes back, for the next worker or for
                        # `release` to hand back, rather than into a handler cancelled
                        # at its first checkpoint (which would run it twice).
                        with contextlib.suppress(trio.WouldBlock, actors.ActorError):
                            buffer.put_first_nowait(task)
                            break
                    since = 0
                    timings = rt.timings  # read again after each wait and each batch
                    if timings is not None:
                        durations, waits = timings.durations, timings.waits
                    ended_at = None
            if task.state is not _PENDING:
                continue  # cancelled while it waited
            # A pipeline run's stage task: read once (on a plain Task, a class attribute,
            # which is slower to read through an instance than a slot).
            run = None if type(task) is Task else task.run
            if run is not None and await engine.skip_ended_run(rt, task):
                continue
            if rated and not await may_start(engine, rt, task):
                continue
            now = clock()
            if task.expires_at is not None and now > task.expires_at:
                error = ErrorInfo("TaskExpired", "not started before its deadline")
                await engine.end(rt, task, TaskState.EXPIRED, error)
                continue
            task.deliveries += 1
            if task.deliveries > max_deliveries:
                error = ErrorInfo(
                    "Poison",
                    f"its worker crashed {task.deliveries - 1} time(s) while handling it "
                    f"(max_deliveries={max_deliveries})",
                )
                await engine.dead_letter(rt, task, TaskState.DEAD_LETTERED, error)
                continue
            task.state = _RUNNING
            task.attempts += 1
            if task.first_started is None:
                task.first_started = now
            if timeout is not None:
                scope.deadline = trio.current_time() + timeout
            task._scope = scope
            self._task = task
            rt.in_flight += 1
            if run is not None:
                engine.stage_started(task)
            if starting:
                for begin in starting:
                    begin(task)
            failure: Exception | None = None
            result: Any = None
            try:
                payload = task.payload
                if structured and type(payload) is not as_is:
                    payload = structure(payload)
                if limiter is None:
                    result = await handle(payload)
                else:
                    result = await trio.to_thread.run_sync(
                        handle, payload, limiter=limiter, abandon_on_cancel=True
                    )
            except fatal as exc:
                if ended:
                    for hook in ended:
                        hook(task, now, exc)
                if rt.timings is not None:
                    rt.timings.record(task, now, clock())
                if run is not None:
                    engine.stage_stopped(task)
                rt.in_flight -= 1
                self._task = None
                task._scope = None
                if task.state is _RUNNING:  # not settled meanwhile (cancelled, say)
                    await engine.hand_back(rt, task)
                raise
            except Exception as exc:  # a PayloadError too: told apart below
                failure = explain(exc)
            except BaseException as exc:
                if ended:
                    for hook in ended:
                        hook(task, now, exc)
                if rt.timings is not None:
                    rt.timings.record(task, now, clock())
                if run is not None:
                    engine.stage_stopped(task)
                rt.in_flight -= 1
                raise  # our scope's (timeout, cancel) or from outside: see run()
            if run is not None:
                engine.stage_stopped(task)
            rt.in_flight -= 1
            self._task = None
            task._scope = None
            if timeout is not None:
                scope.deadline = math.inf
            try:
                if task.state is not _RUNNING:
                    pass  # cancelled through its receipt: the outcome is recorded already
                elif failure is None:
                    kind = type(result)
                    if (
                        run is None
                        and kind in direct
                        # A str not all ASCII may hold a lone surrogate, which no broker
                        # stores, and a long one may be over max_result: Engine.succeeded
                        # checks them (and fails the task).
                        and (kind is not str or (result.isascii() and len(result) <= long_str))
                        and (kind is not int or least <= result <= most)
                    ):
                        # Engine.succeeded's common case, without a coroutine per call (in
                        # process), then Engine.settled's for a success in process,
                        # inlined: this runs once per task. tests/queueing/test_fast_paths.py
                        # runs both paths on the same inputs and compares the figures.
                        if settle_nowait(info, task, _SUCCEEDED, result):
                            rt.succeeded += 1
                            ended_at = clock()
                            add_latency(ended_at - task._born)
                            rt.outstanding -= 1
                            fair = rt.fair
                            if fair is not None:
                                fair.done(task)  # its tenant runs one task fewer
                            if not rt.outstanding and engine.drained and engine.total == 0:
                                engine.drained.unpark_all()
                            waiter = task._waiter
                            if waiter is not None:
                                waiter.set()
                    else:
                        await engine.succeeded(rt, task, result)
                elif type(failure) is PayloadError:
                    # The payload does not structure as the handler's type: no retry helps.
                    error = ErrorInfo.from_exception(failure)
                    await engine.dead_letter(rt, task, TaskState.DEAD_LETTERED, error)
                else:
                    await engine.failed(rt, task, failure)
            except Exception:
                # Recording the outcome failed (a bug of ours or of a hook, a broker's
                # error): the task must not stay RUNNING with nobody to end it. Handed
                # back, it is delivered again (and counted: past max_deliveries it is
                # dead-lettered); the worker then crashes, for its supervisor to restart.
                if task.state is _RUNNING:
                    with trio.CancelScope(shield=True):
                        await engine.hand_back(rt, task)
                raise
            finally:
                if ended:  # after the outcome: a pipeline's next stage was sent within it
                    for hook in ended:
                        hook(task, now, failure)
                if timings is not None:  # Timings.record, inlined: once per task
                    # `ended_at`: this attempt's success read the clock already.
                    durations.append((clock() if ended_at is None else ended_at) - now)
                    ended_at = None
                    if task.attempts == 1:
                        waits.append(now - task._born)  # a fold clamps at zero
            since += 1
            if since >= BATCH:
                since = 0
                timings = rt.timings
                ended_at = None
                if timings is not None:
                    durations, waits = timings.durations, timings.waits
                    if len(durations) >= PENDING or len(waits) >= PENDING:
                        timings.fold()
                await trio.lowlevel.checkpoint()


#: The worker loop's `durations` and `waits` with no `Timings` (never appended to: the loop
#: checks for one first).
_NONE: list[float] = []

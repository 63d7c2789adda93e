"""`QueueSystem`: what a client of the queues calls (submit, receipts, figures, dead
letters). `open_system`, `run_system` and `connect` (in `_open.py`) hand one out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, overload

import cattrs
import trio

import actors

from . import _fastpath
from ._engine import Engine
from ._exceptions import (
    BrokerError,
    BrokerOutOfMemory,
    DrainTimeout,
    InvalidQueue,
    QueueFull,
    QueueingError,
    SystemStopping,
    UnknownQueue,
    UnknownTask,
)
from ._hints import DrainMeter, retry_after
from ._observe import send_ended, send_started
from ._pools import Actors
from ._queue import Pipeline, Queue
from ._receipt import Receipt, failure
from ._report import ProcessReport
from ._results import Results, Waiter, copy_outcome
from ._runtime import QueueRuntime
from ._schedule import Schedule
from ._stats import QueueStats
from ._task import (
    DeadLetter,
    PipelineTask,
    Task,
    TaskState,
    TaskStatus,
    priority_of,
    tenant_of,
)
from ._validate import MAX_DELAY, payload_list, positive_int, seconds, wait_timeout
from ._validate import priority as check_priority
from ._validate import tenant as check_tenant
from .brokers._contract import Admission, TenantFigures, queue_of, run_of

if TYPE_CHECKING:
    from .brokers._contract import Broker

log = logging.getLogger("queueing")
R = TypeVar("R")
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_due = _fastpath.due
_new = object.__new__
#: submit_many accepts this many tasks between two yields to the scheduler (in process).
CHUNK = 1024
#: Figures that describe a queue's state now (not totals of what happened).
_GAUGES = frozenset(("outstanding", "in_flight", "scheduled"))
#: submit_many's concurrent submissions to a shared broker (they share round trips).
CONCURRENT_SUBMITS = 500
#: Seconds a shared broker's drain() waits between two looks at the queues.
DRAIN_POLL = 0.05
_ACCEPTED = Admission.ACCEPTED
_FULL = Admission.FULL
_EXISTS = Admission.EXISTS


def _utf8(text: str) -> bool:
    """Whether UTF-8 holds `text` (no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class QueueSystem:
    """A running processing-queue system. Get one from `open_system()`, `run_system()`
    or (a client of worker processes elsewhere) `connect()`."""

    def __init__(
        self,
        actor_system: actors.ActorSystem,
        broker: Broker,
        queues: dict[str, Queue[Any]],
        pipelines: dict[str, Pipeline],
        converter: cattrs.Converter,
        shutdown_timeout: float,
    ) -> None:
        self.actors = actor_system
        self.converter = converter
        self.shutdown_timeout = shutdown_timeout
        #: After shutdown: how many tasks were left unfinished.
        self.unfinished = 0
        #: True once shut down: a shared broker is no longer connected.
        self.closed = False
        self._broker = broker
        self._queues = queues
        self._pipelines = pipelines
        self._runtimes = {name: QueueRuntime(q, converter) for name, q in queues.items()}
        self._results = Results(broker)
        #: The keyed submits under way in this process, by task id (`_one_submit_per_id`).
        self._keyed: dict[str, trio.Event] = {}
        self._engine = Engine(broker, self._runtimes, pipelines, self._results)
        self._actors = Actors()
        # Per queue, the results that need no structuring (Codec.as_is), for `await receipt`.
        self._as_is = {
            name: rt.result_codec.as_is
            for name, rt in self._runtimes.items()
            if rt.result_codec.as_is is not None
        }
        #: Figures per queue as last read from a shared broker (`stats()`).
        self._remote: dict[str, dict[str, int]] = {}
        self._serving = True
        #: Per queue, its recent drain rate (for `QueueFull.retry_after`).
        self._meters = {name: DrainMeter() for name in queues}
        #: What this process serves, for the dashboards (None in a client).
        self._report: ProcessReport | None = None

    def _kept_for(self, name: str) -> float:
        """Seconds a finished task of queue or pipeline `name` stays known (a pipeline's:
        its shortest stage's `result_ttl`)."""
        rt = self._runtimes.get(name)
        if rt is not None:
            return rt.spec.result_ttl
        return min(stage.result_ttl for stage in self._pipelines[name].stages)

    @property
    def names(self) -> list[str]:
        """The queues and pipelines this system knows."""
        return [*self._queues, *self._pipelines]

    async def _start(self, *, serve: bool, schedules: tuple[Schedule, ...] = ()) -> None:
        self._serving = serve
        if serve:
            self._report = ProcessReport(self, schedules)
            if hasattr(self._broker, "report"):  # a broker that publishes it with heartbeats
                self._broker.report = self._report.report
        self._engine.start()
        await self._actors.start(self, serve=serve, schedules=schedules)

    async def _stop(self) -> None:
        try:
            self.unfinished = await self._actors.stop(self)
        finally:
            self.closed = True
            self._results.close()  # who still awaits a receipt hears that it is closed

    def _usable(self) -> None:
        """Refuse a call that needs the broker once the system is closed, on every broker
        alike. What this process holds stays readable: the outcome (`result()`, `status()`)
        of a task that ended here or whose result came here."""
        if self.closed:
            if not self._broker.shared:
                raise SystemStopping(
                    "the system is closed (its open_system() block has ended), and the "
                    "records of an in-process broker (memory://) end with it: read dead "
                    "letters and the like inside the block (a receipt of a task that ended "
                    "stays readable: await receipt, receipt.status())"
                )
            raise SystemStopping(
                "the system is closed (its open_system() or connect() block has ended), so "
                "its broker is no longer connected: ask an open system or client "
                "(system.receipt(id) finds a task again); a receipt whose outcome came "
                "here stays readable (await receipt, receipt.status())"
            )

    # -- submitting ------------------------------------------------------------------------

    @overload
    async def submit(
        self,
        name: Queue[R],
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> Receipt[R]: ...

    @overload
    async def submit(
        self,
        name: str | Pipeline,
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> Receipt[Any]: ...

    async def submit(
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
    ) -> Receipt[Any]:
        """Hand a task to a queue or pipeline; returns its receipt once it is accepted.

        Args:
            name: a queue's or a pipeline's name, or the `Queue`/`Pipeline` itself (a
                `Queue[R]` gives a `Receipt[R]`).
            payload: an attrs instance, dataclass or plain data the converter handles.
            delay: seconds before it may start (at most `MAX_DELAY`, ten years).
            expires: seconds from now by which it must have started, else it expires (at
                most `MAX_DELAY`).
            timeout: with `Overflow.WAIT`, the longest to wait for room (overrides the
                queue's `full_timeout`).
            key: makes the task unique: while a task submitted to this queue with the same
                key is known (waiting, running, or its outcome kept for `result_ttl`), a
                submit with that key returns that task's receipt and submits nothing. A
                retried submit (after a lost connection, an unknown outcome) is then safe.
            priority: from 0 (the default, lowest) to 9 (highest): while tasks wait for a
                worker, those of higher priority start first, in submission order within
                one priority (docs/concepts/priorities.md). It counts toward `maxsize` as
                any task, and never interrupts a running one. A pipeline run's stage tasks
                all have it.
            tenant: the client (customer, account) the task is for: waiting tasks of a
                priority are shared out fairly between tenants, round-robin (weighted by
                `Queue(tenant_weights=)`), FIFO within one; `Queue(tenant_concurrency=)`
                and `Queue(tenant_maxsize=)` bound one tenant's running and outstanding
                tasks (docs/concepts/fair-share.md). None: the queue's `tenant` function's
                answer, if it has one; else the default tenant. A pipeline run's stage
                tasks all have it.

        Raises:
            UnknownQueue: no such queue or pipeline.
            PayloadTooLarge: over the queue's `max_payload`.
            PayloadError: the converter cannot handle the payload (names field and type).
            QueueFull: `maxsize` reached (or the task's tenant's `tenant_maxsize`: the
                error's `tenant` says so) and the queue would not wait (longer).
            SystemStopping: the system is shutting down.
            InvalidQueue: a bad option (`priority` not an int from 0 to 9, say).
        """
        if type(name) is not str:
            name = _name_of(name)
        if delay is not None or expires is not None or timeout is not None:
            _check_seconds(delay=delay, expires=expires, timeout=timeout)
        if priority or type(priority) is not int:
            check_priority(priority)
        if tenant is not None:
            check_tenant(tenant)
        engine = self._engine
        if engine.stopping:
            raise SystemStopping("the system is shutting down and accepts no new tasks")
        rt = self._runtimes.get(name)
        # A cancelled caller is refused before anything is accepted: once a task is
        # accepted, its receipt must reach the caller.
        await _checkpoint_if_cancelled()
        if rt is None:
            pipeline = self._pipelines.get(name)
            if pipeline is None:
                raise UnknownQueue(name, self.names)
            run, first = engine.run_task(pipeline, payload, expires, key, 0, priority, tenant)
            try:
                if key is not None and engine.shared:
                    async with self._one_submit_per_id(run.id):
                        run = await engine.launch(run, first, delay, timeout)
                else:
                    run = await engine.launch(run, first, delay, timeout)
            except QueueFull as exc:
                raise self._hint(exc) from None
            except BrokerError as exc:
                exc.unknown = [self._unknown_receipt(run.id)]
                raise
            return Receipt(run, self)
        task = engine.task(rt, payload, expires, key, priority, tenant)
        observed = rt.sending  # observers' hooks (traces): an empty list by default
        if observed:
            ends = send_started(rt, task)
        try:
            # In process, a ready task is accepted without a coroutine per call (the common
            # case: there is room); anything else takes the general path, `Engine.accept`.
            admission = engine.admit_nowait(rt, task) if engine.nowait and not delay else _FULL
            if admission is None:  # accepted, but its buffer is full
                admission = _ACCEPTED
                await engine.deliver_later(rt, task)
            elif admission is not _ACCEPTED and admission is not _EXISTS:
                # FULL, TENANT_FULL, or not tried yet
                spec = rt.spec
                when_full = spec.when_full
                wait = spec.full_timeout if timeout is None else timeout
                try:
                    if key is not None and engine.shared:
                        async with self._one_submit_per_id(task.id):
                            admission = await engine.accept(rt, task, when_full, wait, delay)
                            if admission is _EXISTS:
                                task = engine.existing(task)
                    else:
                        admission = await engine.accept(rt, task, when_full, wait, delay)
                except QueueFull as exc:
                    raise self._hint(exc) from None
                except BrokerOutOfMemory as exc:
                    exc.rejected = [payload]  # certainly not stored
                    raise
                except BrokerError as exc:
                    exc.unknown = [self._unknown_receipt(task.id)]
                    raise
        except BaseException as exc:
            if observed:
                send_ended(ends, exc)
            raise
        if observed:
            send_ended(ends, None)
        if admission is _EXISTS and (key is None or not engine.shared):
            task = engine.existing(task)
        if _due():
            await _cancel_shielded_checkpoint()
        # Receipt(task, self) without the class call's dispatch (`type.__call__`, then
        # `__init__` looked up and called from C), which costs more than the stores
        # themselves (bench/per_task_cost.py); tests/queueing/test_receipts.py checks that
        # this receipt equals, and reads as, one made by `Receipt.__init__`.
        receipt = _new(Receipt)
        receipt._task = task
        receipt._system = self
        receipt._checked = True
        return receipt

    @asynccontextmanager
    async def _one_submit_per_id(self, task_id: str) -> AsyncIterator[None]:
        """Over a shared broker, the submits of one key (one task id) in this process, one
        at a time, each until its receipt has its record: a submit that finds the key taken
        (`Admission.EXISTS`) then hands out the record the first one watches for its
        outcome. Racing, the later one could watch a record of its own in its place, and
        the earlier receipts never got the outcome (or got None)."""
        while (busy := self._keyed.get(task_id)) is not None:
            await busy.wait()
        done = self._keyed[task_id] = trio.Event()
        try:
            yield
        finally:
            del self._keyed[task_id]
            done.set()

    async def submit_many(
        self,
        name: str | Queue[Any] | Pipeline,
        payloads: Iterable[Any],
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: Callable[[Any], str] | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> list[Receipt[Any]]:
        """Submit many tasks to one queue or pipeline; returns their receipts, in order.

        Cheaper than a `submit` per task: tasks of a queue are validated and handed to the
        broker in chunks (`Broker.accept_many`: one round trip per chunk with a shared
        broker); pipeline runs and delayed tasks are submitted concurrently and share round
        trips. Options are those of `submit`, for every task; `key` is a function of the
        payload giving each task's key (see `submit`), which makes submitting the same
        payloads again safe after an error (those tasks are submitted concurrently, like
        delayed ones; every key is computed first, and a key repeated in `payloads` is
        submitted once, by its first payload, whose receipt its later ones get).

        Raises:
            QueueFull: a submission was refused (`Overflow.REJECT`, or `full_timeout` ran
                out). For a queue, the tasks before the refused one were accepted; for
                pipeline runs, delayed or keyed tasks with a shared broker, submissions run
                concurrently and any of the others may have been accepted.
            PayloadError, PayloadTooLarge, UnknownQueue: checked for each task before it is
                sent.
            BrokerError: the broker failed; some tasks' acceptance may be unknown.

        Every error it raises carries `.accepted` (receipts: those run), `.unknown`
        (receipts of tasks the broker may or may not have accepted) and `.rejected`
        (payloads certainly not accepted), which together account for every payload.
        """
        if type(name) is not str:
            name = _name_of(name)
        items = payload_list(payloads)
        _check_seconds(delay=delay, expires=expires, timeout=timeout)
        check_priority(priority)
        if tenant is not None:
            check_tenant(tenant)
        rt = self._runtimes.get(name)
        engine = self._engine
        if rt is not None and not delay and key is None and not engine.stopping:
            return await self._submit_chunks(rt, items, expires, timeout, priority, tenant)
        receipts: list[Receipt[Any] | None] = [None] * len(items)
        errors: dict[int, QueueingError] = {}
        limiter = trio.CapacityLimiter(1 if not engine.shared else CONCURRENT_SUBMITS)
        # Every key before anything is submitted (a key function that raises submits
        # nothing); a key repeated in the batch is submitted once, by its first payload,
        # and its later ones get that receipt, as submitting them one by one would.
        if key is not None and not callable(key):
            raise InvalidQueue(
                f"submit_many's key is a function of each payload giving its key (key=lambda "
                f"order: order.number), got {key!r:.80}; submit(key=...) takes a key itself"
            )
        keys: list[Any] = [None] * len(items) if key is None else [key(p) for p in items]
        first_of: dict[Any, int] = {}
        repeats: dict[int, int] = {}
        for index, task_key in enumerate(keys):
            if type(task_key) is str:
                earliest = first_of.setdefault(task_key, index)
                if earliest != index:
                    repeats[index] = earliest

        async def one(index: int, payload: Any) -> None:
            async with limiter:
                if errors and not engine.shared:
                    return  # in process, the ones after a refusal are not submitted
                try:
                    receipts[index] = await self.submit(
                        name,
                        payload,
                        delay=delay,
                        expires=expires,
                        timeout=timeout,
                        key=keys[index],
                        priority=priority,
                        tenant=tenant,
                    )
                except QueueingError as exc:
                    errors[index] = exc

        async with trio.open_nursery() as nursery:
            for index, payload in enumerate(items):
                if index not in repeats:
                    nursery.start_soon(one, index, payload)
        for index, earliest in repeats.items():
            receipts[index] = receipts[earliest]  # None if that one was not accepted
        if errors:
            # A refusal does not cancel the others: every accepted task keeps its receipt.
            first = errors[min(errors)]
            unknown: list[Receipt[Any]] = []
            rejected: list[Any] = []
            for index, payload in enumerate(items):
                if receipts[index] is not None:
                    continue
                exc = errors.get(index)
                if exc is not None and exc.unknown:
                    unknown.extend(exc.unknown)
                else:
                    rejected.append(payload)
            raise _partial(first, [r for r in receipts if r is not None], unknown, rejected)
        return [r for r in receipts if r is not None]

    async def _submit_chunks(
        self,
        rt: QueueRuntime,
        items: list[Any],
        expires: float | None,
        timeout: float | None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> list[Receipt[Any]]:
        """submit_many to a queue, without delay: validated, then accepted in chunks
        (whatever fits at once; the rest waits for room one by one)."""
        engine = self._engine
        broker = self._broker
        spec = rt.spec
        await _checkpoint_if_cancelled()
        accepted: list[Receipt[Any]] = []
        for start in range(0, len(items), CHUNK):
            if start:
                await _cancel_shielded_checkpoint()  # let workers start
            tasks, problem = engine.tasks(
                rt, items[start : start + CHUNK], expires, priority, tenant
            )
            sent: list[Task] = []  # sent to the broker, no answer yet
            try:
                if engine.stopping:
                    raise SystemStopping("the system is shutting down and accepts no new tasks")
                sent = tasks
                if rt.sending:
                    taken = await self._accept_many_observed(rt, tasks)
                else:
                    taken = await broker.accept_many(rt.info, tasks)
                if engine.shared:
                    engine.accepted_ready(rt, tasks[:taken])
                    accepted += [Receipt(task, self) for task in tasks[:taken]]
                else:
                    for task in tasks[:taken]:
                        if not engine.accepted(rt, task, False):
                            await engine.deliver_later(rt, task)
                        accepted.append(Receipt(task, self))
                for task in tasks[taken:]:
                    sent = [task]
                    await engine.accept(
                        rt,
                        task,
                        spec.when_full,
                        spec.full_timeout if timeout is None else timeout,
                    )
                    accepted.append(Receipt(task, self))
                sent = []
                if problem is not None:
                    raise problem
            except QueueingError as exc:
                if isinstance(exc, QueueFull):
                    self._hint(exc)
                unknown = []
                if isinstance(exc, BrokerError) and not isinstance(exc, BrokerOutOfMemory):
                    unknown = [self._unknown_receipt(task.id) for task in sent]
                _partial(exc, accepted, unknown, items[len(accepted) + len(unknown) :])
                raise
        await _cancel_shielded_checkpoint()
        return accepted

    async def _accept_many_observed(self, rt: QueueRuntime, tasks: list[Task]) -> int:
        """`Broker.accept_many` with the observers' `sending` hooks around it, per task."""
        ends = [send_started(rt, task) for task in tasks]
        try:
            taken = await self._broker.accept_many(rt.info, tasks)
        except BaseException as exc:
            for one in ends:
                send_ended(one, exc)
            raise
        # Those not taken at once wait for room one by one (`Engine.accept`), outside.
        for one in ends:
            send_ended(one, None)
        return taken

    def _unknown_receipt(self, task_id: str) -> Receipt[Any]:
        """The receipt of a task the broker may or may not have accepted: its first await
        asks the broker (`UnknownTask` if it never got in)."""
        self._results.unwatch(task_id)
        return self.receipt(task_id)

    # -- receipts --------------------------------------------------------------------------

    def receipt(self, task_id: str) -> Receipt[Any]:
        """The receipt of a task submitted earlier (by anyone), while its result is kept.

        The same on every broker: an id no task has (or whose outcome is no longer kept)
        raises `UnknownTask` at the receipt's first await (`result()`, `status()`,
        `cancel()`, `await`), where a shared broker is asked; only an id that is not a
        str raises (`InvalidQueue`) at once.
        """
        if not isinstance(task_id, str):
            raise InvalidQueue(
                f"a task id is a str (as receipt.id gave it), got {task_id!r:.80} "
                f"({type(task_id).__name__})"
            )
        broker = self._broker
        if not broker.shared:
            task = broker.lookup_nowait(task_id)
            if task is not None:
                return Receipt(task, self)
            return Receipt(Task(task_id, queue_of(task_id), None, 0.0), self, checked=False)
        mine = self._results.watched(task_id)
        if mine is not None:
            return Receipt(mine, self)
        queue = queue_of(task_id)
        run = run_of(task_id)
        placeholder: Task
        if run is not None:  # a stage task of a pipeline run
            placeholder = PipelineTask(task_id, queue, None, 0.0, run=run, route=queue_of(run))
        elif queue in self._pipelines:  # a pipeline run
            placeholder = PipelineTask(task_id, queue, None, 0.0, route=queue)
        else:
            placeholder = Task(task_id, queue, None, 0.0)
        return Receipt(placeholder, self, checked=False)

    async def _check(self, receipt: Receipt[Any]) -> None:
        """A receipt found by id with a shared broker: does the task exist? (at its first
        await). Copies what is stored onto the receipt's record."""
        self._usable()
        task = receipt._task
        if not task.id.isascii() and not _utf8(task.id):
            # No task has it (every id is UTF-8 text), and no broker could be asked (over
            # Redis, the command would not encode).
            raise UnknownTask(
                task.id, expired=False, why="no task ever had this id: it is not UTF-8 text"
            )
        record = await self._broker.lookup(task.id)
        if record is None:
            raise self._unknown(task.id)
        receipt._checked = True
        task.submitted_at = record.submitted_at
        task.queue = record.queue
        if priority_of(record):
            task.priority = record.priority
        tenant = tenant_of(record)
        if tenant is not None:
            task.tenant = tenant
        if isinstance(task, PipelineTask) and isinstance(record, PipelineTask):
            task.route = record.route
            task.run = record.run
        copy_outcome(record, task)
        task.state = record.state
        if not task.state.final:
            self._results.watch(task)

    def _unknown(self, task_id: str) -> UnknownTask:
        """Why an id is not found, where this process can tell: an id it minted is one
        whose outcome is no longer kept; in process, an id of no queue, or of a queue but
        not minted here (nor by a key), never was a task. Over a shared broker, another
        process's id reads the same whether it was wrong or its outcome expired."""
        run = run_of(task_id)
        unique = (run or task_id).partition(":")[2]
        if unique.startswith(self._engine.prefix):
            return UnknownTask(
                task_id,
                expired=True,
                why="it was submitted here and its outcome is no longer kept (its queue's "
                "result_ttl ran out, or max_results newer outcomes pushed it out)",
            )
        if self._broker.shared:
            return UnknownTask(task_id)
        queue = queue_of(task_id)
        if queue not in self._queues and queue not in self._pipelines:
            where = f"names queue {queue!r}, none of this system's" if queue else "names no queue"
            return UnknownTask(
                task_id,
                expired=False,
                why=f"no task ever had this id: it {where} (ids are '<queue>:<unique>', "
                "as receipt.id gave them)",
            )
        if unique.startswith("key-"):
            return UnknownTask(task_id)  # a key's task, maybe expired: no way to tell
        return UnknownTask(
            task_id,
            expired=False,
            why="no task ever had this id: this system never gave it out (a typo, or an id "
            "from an earlier run of an in-process system)",
        )

    async def _status(self, receipt: Receipt[Any]) -> TaskStatus:
        task = receipt._task
        # Once closed, a receipt answers from what this process holds: the outcome of a
        # task that ended here or whose result came here; anything else needs the broker.
        known = receipt._checked and task.state.final
        if not known:
            self._usable()
        if not receipt._checked:
            await self._check(receipt)
        elif self._broker.shared and not task.state.final:
            record = await self._broker.lookup(task.id)  # where it stands now
            # The outcome may have come meanwhile (its notice read while the lookup was
            # under way): a record read before it must not take the task back from final,
            # or its receipt would never be woken again.
            if record is not None and not task.state.final:
                task.state = record.state
                task.attempts = record.attempts
                task.deliveries = record.deliveries
                task.error = record.error
                if record.state.final:
                    self._results.deliver(record)
        if known and self.closed:
            progress = getattr(task, "progress", None)
        else:
            progress = await self._engine.progress.read(task)
        await _fastpath.checkpoint()
        return TaskStatus(
            id=task.id,
            queue=task.queue,
            state=task.state,
            attempts=task.attempts,
            deliveries=task.deliveries,
            submitted_at=task.submitted_at,
            finished_at=task.finished_at,
            error=task.error,
            stage=self._stage_name(task)
            if task.state.final and task.state is not TaskState.SUCCEEDED
            else None,
            progress=progress,
            priority=priority_of(task),
            tenant=tenant_of(task),
        )

    async def _wait_change(self, receipt: Receipt[Any], timeout: float) -> None:
        """Wait until the receipt's task may have changed (its outcome came, or progress
        was published in this process), or `timeout` seconds."""
        self._usable()
        task = receipt._task
        waiter = task._waiter
        if waiter is None:
            waiter = task._waiter = Waiter()
        if task.state.final:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:

                async def first(wait: Any) -> None:
                    await wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(first, waiter.wait)
                nursery.start_soon(first, self._engine.progress.published.park)

    async def _cancel(self, receipt: Receipt[Any]) -> bool:
        self._usable()
        if not receipt._checked:
            await self._check(receipt)
        return await self._engine.cancel(receipt._task.id)

    def _stage_name(self, task: Task) -> str | None:
        pipeline = self._pipelines.get(task.queue)
        if pipeline is None or not 0 <= task.stage < len(pipeline.stages):
            return None
        return pipeline.stages[task.stage].name

    def _unwrap(self, task: Task) -> Any:
        if task.state is not TaskState.SUCCEEDED:
            raise failure(task, self._stage_name(task))
        if task.run is not None:
            # A stage task of a pipeline run (found by id): its result went on to the next
            # stage (or into the run's result), so its own receipt resolves to None.
            return None
        rt = self._runtimes.get(task.queue)
        if rt is not None:
            return rt.result_codec.structure(task.result)
        pipeline = self._pipelines.get(task.queue)
        last = self._runtimes.get(pipeline.stages[-1].name) if pipeline is not None else None
        if last is None:
            # A task of a queue or pipeline this client was not given (found by id): its
            # result as plain data, since the declared type is not known here.
            return task.result
        if task.fanned:
            return [last.result_codec.structure(item) for item in task.result]
        return last.result_codec.structure(task.result)

    # -- figures ---------------------------------------------------------------------------

    def stats(self) -> dict[str, QueueStats]:
        """Figures per queue: depth, in flight, outcomes, retries, restarts, latency.

        In process, exact. With a shared broker, `outstanding`, `in_flight` and `scheduled`
        are the queue's (every process's) as last read from the broker, every few seconds;
        the totals are this process's in a system that serves queues, and every process's
        in a `connect()` client (the same figures as `queueing status`). `restarts` and the
        latencies are this process's."""
        shared = self._broker.shared
        result = {}
        for name, rt in self._runtimes.items():
            local = {
                "outstanding": rt.outstanding if not shared else 0,
                "in_flight": rt.in_flight,
                "scheduled": rt.scheduled,
                "submitted": rt.submitted,
                "succeeded": rt.succeeded,
                "failed": rt.failed,
                "retried": rt.retried,
                "dead_lettered": rt.dead_lettered,
                "cancelled": rt.cancelled,
                "expired": rt.expired,
            }
            figures = local
            remote = self._remote.get(name, {})
            if shared and not self._serving:
                figures = {**local, **remote}  # a client: the broker's figures, all processes
            elif shared:
                # Serving: this process's counts; the queue's state from the broker.
                figures = {**local, **{k: v for k, v in remote.items() if k in _GAUGES}}
            outstanding = figures["outstanding"]
            result[name] = QueueStats(
                name=name,
                depth=max(0, outstanding - figures["in_flight"]),
                scheduled=figures["scheduled"],
                in_flight=figures["in_flight"],
                outstanding=outstanding,
                maxsize=rt.spec.maxsize,
                submitted=figures["submitted"],
                succeeded=figures["succeeded"],
                failed=figures["failed"],
                retried=figures["retried"],
                dead_lettered=figures["dead_lettered"],
                cancelled=figures["cancelled"],
                expired=figures["expired"],
                restarts=rt.restarts(),
                workers=rt.spec.workers if self._serving else 0,  # a client runs none
                p50=rt.latency.percentile(50),
                p99=rt.latency.percentile(99),
            )
        return result

    async def tenants(self, queue: str, limit: int = 10) -> list[TenantFigures]:
        """The busiest tenants of `queue` (`submit(tenant=)`): those with the most tasks
        waiting, then running, at most `limit`, each with its counts now ("" names the
        default tenant, the tasks without one). Over every process with a shared broker;
        [] for a queue that never had a task with a tenant (in process).
        See docs/concepts/fair-share.md."""
        self._usable()
        rt = self._runtime(queue)
        positive_int("limit", limit)
        await _checkpoint_if_cancelled()
        found = await self._broker.tenant_figures(queue, limit)
        if found is not None:
            return found
        return tenant_counts(rt, limit)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queue is empty and idle (no task outstanding).

        Raises:
            DrainTimeout: still busy after `timeout` seconds (a `TimeoutError`).
            ValueError: `timeout` is negative or NaN (`TypeError`: not a number).
        """
        wait_timeout(timeout)
        self._usable()
        if timeout is None:
            await self._drain()
            return
        with trio.move_on_after(timeout):
            await self._drain()
            return
        raise DrainTimeout(timeout, await self._busy())

    async def _drain(self) -> None:
        engine = self._engine
        if not engine.shared:
            runtimes = self._runtimes.values()
            while engine.total > 0 or any(rt.in_flight for rt in runtimes):
                await engine.drained.park()
            await trio.lowlevel.checkpoint()
            return
        broker = self._broker
        while True:
            await broker.flush()
            busy = [rt for rt in self._runtimes.values() if await broker.outstanding(rt.name)]
            if not busy:
                break
            await broker.wait_room(busy[0].info, DRAIN_POLL)
        await self._results.wait_idle()  # and every outcome has reached its receipt
        # stats() reads the queue's gauges as last read from the broker (every few
        # seconds): read them now, so that they say what drain found, not what was.
        await self._refresh_figures()

    async def _busy(self) -> dict[str, int]:
        busy = {}
        for name, rt in self._runtimes.items():
            count = (
                rt.outstanding if not self._broker.shared else await self._broker.outstanding(name)
            )
            if count:
                busy[name] = count
        return busy

    async def _refresh_figures(self) -> None:
        """Read the queues' figures from a shared broker (for `stats()`, and the drain
        rates of `QueueFull.retry_after`)."""
        for name, rt in self._runtimes.items():
            figures = await self._broker.figures(name)
            if figures is None:
                figures = {"outstanding": await self._broker.outstanding(name)}
            self._remote[name] = figures
            outstanding = figures.get("outstanding", 0)
            self._meters[name].sample(trio.current_time(), outstanding, rt.submitted)

    def _hint(self, exc: QueueFull) -> QueueFull:
        """Set a refusal's `retry_after` from its queue's recent drain rate."""
        rt = self._runtimes.get(exc.queue)
        if rt is None:
            return exc
        now = trio.current_time()
        # Over a shared broker, the refusal says where the queue stands: full.
        outstanding = rt.spec.maxsize if self._broker.shared else rt.outstanding
        meter = self._meters[rt.name]
        rate = meter.rate(now, outstanding, rt.submitted)
        meter.sample(now, outstanding, rt.submitted)
        if rate is None and not self._broker.shared:
            # None measured yet: Little's law, from the queue's recent latency.
            latency = rt.latency.percentile(50)
            if latency:
                rate = outstanding / latency
        exc.drain_rate = rate
        exc.retry_after = retry_after(rt.spec.maxsize, rate)
        return exc

    def _runtime(self, queue: str) -> QueueRuntime:
        rt = self._runtimes.get(queue)
        if rt is None:
            raise UnknownQueue(queue, list(self._runtimes))
        return rt

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead letters of `queue`, oldest first."""
        self._usable()
        self._runtime(queue)
        positive_int("limit", limit)
        await _checkpoint_if_cancelled()
        return await self._broker.dead_letters(queue, limit)

    async def requeue(self, queue: str, ids: list[str] | None = None) -> list[Receipt[Any]]:
        """Submit dead letters again (all of the queue's, or those with `ids`) as new
        tasks; returns their new receipts. The old ids keep their failed outcome. The dead
        letter of a pipeline's stage goes on down its pipeline: a new run starts at that
        stage, and its receipt resolves with the last stage's result.

        A letter leaves the store only once its new task is accepted: if a submit is
        refused (`QueueFull`...), that letter and the rest stay. Entries that never were
        tasks (dead-lettered as unreadable, with an empty id) are not requeued.

        Raises:
            UnknownTask: an id in `ids` is not among the queue's dead letters (a typo, or
                already requeued or purged); nothing is requeued. The message names them.
        """
        self._usable()
        self._runtime(queue)
        if isinstance(ids, str):
            raise InvalidQueue(
                f"requeue takes a list of task ids, got the str {ids!r:.80}: pass [{ids!r:.80}]"
            )
        wanted = None if ids is None else set(ids)
        letters = await self._broker.dead_letters(queue, 1 << 30)
        if wanted:
            kept = {letter.id for letter in letters}
            missing = [i for i in dict.fromkeys(ids or ()) if i not in kept]
            if missing:
                also = ", ".join(repr(i) for i in missing[1:MISSING_SHOWN])
                if len(missing) > MISSING_SHOWN:
                    also += f" and {len(missing) - MISSING_SHOWN} more"
                raise UnknownTask(
                    missing[0],
                    why=f"it is not among the dead letters of {queue!r}"
                    f"{f' (nor are {also})' if also else ''}; nothing was requeued "
                    f"(system.dead_letters({queue!r}) lists them)",
                )
        receipts = []
        for letter in letters:
            if not letter.id or (wanted is not None and letter.id not in wanted):
                continue
            receipts.append(await self._resubmit(queue, letter))
            await self._broker.take_dead_letters(queue, [letter.id])
        return receipts

    async def _resubmit(self, queue: str, letter: DeadLetter) -> Receipt[Any]:
        """A dead letter as a new task; a pipeline stage's goes on down its pipeline (a new
        run from that stage, whose receipt resolves with the last stage's result)."""
        run = run_of(letter.id)
        pipeline = self._pipelines.get(queue_of(run)) if run is not None else None
        stages = [stage.name for stage in pipeline.stages] if pipeline is not None else []
        if pipeline is None or queue not in stages:
            return await self.submit(
                queue, letter.payload, priority=letter.priority, tenant=letter.tenant
            )
        await _checkpoint_if_cancelled()
        record = await self._engine.start_run(
            pipeline,
            letter.payload,
            delay=None,
            expires=None,
            timeout=None,
            stage=stages.index(queue),
            priority=letter.priority,
            tenant=letter.tenant,
        )
        return Receipt(record, self)

    async def purge_dead_letters(self, queue: str) -> int:
        """Delete the queue's dead letters; returns how many there were."""
        self._usable()
        self._runtime(queue)
        await _checkpoint_if_cancelled()
        return len(await self._broker.take_dead_letters(queue, None))


#: Unknown ids a refused `requeue` names in its message.
MISSING_SHOWN = 5


def tenant_counts(rt: QueueRuntime, limit: int) -> list[TenantFigures]:
    """The busiest tenants of a queue as this process counts them: in process, all of
    them (its fair store's); with a shared broker that does not count them, only the
    tasks this process runs."""
    fair = rt.fair
    if fair is not None:
        return [TenantFigures(name or "", w, r) for name, w, r in fair.figures(limit)]
    running: dict[str, int] = {}
    for task in rt.held.values():
        name = tenant_of(task) or ""
        running[name] = running.get(name, 0) + 1
    if set(running) == {""}:
        return []  # no task with a tenant here
    busiest = sorted(running.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [TenantFigures(name, 0, count) for name, count in busiest]


def _name_of(spec: object) -> str:
    """The name of the `Queue` or `Pipeline` given to `submit` instead of a name."""
    if isinstance(spec, Queue | Pipeline):
        return spec.name
    raise InvalidQueue(
        f"submit takes a queue's or pipeline's name (a str) or the Queue or Pipeline itself, "
        f"got {spec!r:.80} ({type(spec).__name__})"
    )


def _check_seconds(delay: float | None, expires: float | None, timeout: float | None) -> None:
    # A due time past MAX_DELAY is one no broker stores (Redis and RabbitMQ keep integer
    # milliseconds); an infinite wait for room (`timeout`) is only a long wait.
    seconds("delay", delay, optional=True, zero=True, most=MAX_DELAY)
    seconds("expires", expires, optional=True, zero=True, most=MAX_DELAY)
    seconds("timeout", timeout, optional=True, zero=True)


def _partial(
    exc: QueueingError,
    accepted: list[Receipt[Any]],
    unknown: list[Receipt[Any]],
    rejected: list[Any],
) -> QueueingError:
    """`exc`, raised by `submit_many`, with what became of every payload."""
    exc.accepted = accepted
    exc.unknown = unknown
    exc.rejected = rejected
    if unknown:
        exc.add_note(
            f"submit_many: {len(accepted)} accepted, {len(unknown)} unknown (the broker may "
            f"have accepted them: see .unknown), {len(rejected)} not accepted (.rejected)"
        )
    return exc

"""The rules of a task's life, on every broker alike: accepted, run, succeeded, retried,
failed, dead-lettered, cancelled, continued down a pipeline.

The engine is what the actors call: clients' `submit` (through the system), workers when a
handler returns or raises, the dispatcher when it fills a buffer. It talks to the broker
only through the storage contract, records every figure (brokers record none), and hands
each outcome to the receipt side.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from actors import Overflow

from ._convert import AS_ANY, encoded_size
from ._exceptions import (
    InvalidQueue,
    PayloadError,
    PayloadTooLarge,
    QueueFull,
    QueueingError,
    SystemStopping,
    TaskTimeout,
)
from ._logs import task_fields
from ._observe import sending
from ._progress import ProgressBoard
from ._queue import FanOut, Pipeline
from ._ranked import Fair, Ranked, RetriesAhead
from ._task import (
    ErrorInfo,
    PipelineTask,
    Task,
    TaskState,
    new_task,
    priority_of,
    tenant_of,
)
from ._validate import tenant as check_tenant
from .brokers._contract import Admission

if TYPE_CHECKING:
    from ._results import Results
    from ._runtime import QueueRuntime
    from .brokers._contract import Broker

log = logging.getLogger("queueing")
_wall = time.time
_ACCEPTED = Admission.ACCEPTED
_FULL = Admission.FULL
_TENANT_FULL = Admission.TENANT_FULL
_SUCCEEDED = TaskState.SUCCEEDED
_PENDING = TaskState.PENDING
#: Ints submit takes as they are (no converter, no size count): within +-(2**30 - 1), which
#: print in fewer bytes of JSON than any `max_payload` that admits ints directly (24), and
#: which CPython compares without a generic call (one-digit ints). Larger ints take the
#: general path.
DIRECT_INT = 2**30 - 1
_LEAST_INT = -DIRECT_INT  # a constant: `-DIRECT_INT` would make a new long per call
#: Results that are their own JSON (no converter call).
PLAIN_RESULTS = frozenset((int, str, bool, type(None)))
_PIPELINE_ENDED = ErrorInfo("Cancelled", "its pipeline run had already ended")
_CANCELLED = ErrorInfo("Cancelled", "cancelled through its receipt")
#: The longest `key=` of a submit.
MAX_KEY = 200


def key_id(queue: str, key: str) -> str:
    """The id of the task submitted to `queue` with `key`: the same for every submit of that
    key (so a repeated submit finds the first), of safe characters whatever the key is."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidQueue(
            f"key must be a non-empty string of at most {MAX_KEY} characters, got {key!r:.80}"
        )
    try:
        raw = key.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: no broker stores it either
        raise InvalidQueue(f"key must be text UTF-8 can hold, got {key!r:.80}: {exc}") from exc
    digest = hashlib.blake2b(raw, digest_size=KEY_DIGEST).hexdigest()
    return f"{queue}:key-{digest}"


#: Bytes of a key's digest in its task id.
KEY_DIGEST = 16
_RUN_ENDED = ErrorInfo("Cancelled", "its pipeline run ended at another stage, or was cancelled")


class Engine:
    """The broker-independent rules of the processing queue."""

    def __init__(
        self,
        broker: Broker,
        runtimes: dict[str, QueueRuntime],
        pipelines: dict[str, Pipeline],
        results: Results,
    ) -> None:
        self.broker = broker
        self.runs = broker.runs
        self.shared = broker.shared
        self.nowait = broker.nowait and not broker.shared
        # In process: the broker's `accept_nowait` (a bound method kept, for `admit_nowait`).
        self.accept_nowait = broker.accept_nowait
        self.runtimes = runtimes
        self.pipelines = pipelines
        self.results = results
        self.clock = broker.clock
        self.stopping = False
        self.prefix = secrets.token_hex(5) + "-"  # ids: queue, ":", prefix, a count
        self.ids = itertools.count(1)
        for rt in runtimes.values():
            rt.id_prefix = f"{rt.name}:{self.prefix}"
        # In process: `drain()` callers waiting (for `total` to reach 0).
        self.drained = trio.lowlevel.ParkingLot()
        #: Pipeline stage tasks running in this process, by run id: stopped when their
        #: run ends (a failure at another stage, a cancel).
        self.running_stages: dict[str, set[Task]] = {}
        #: Progress reported by handlers, published by its actor (`_progress.py`).
        self.progress = ProgressBoard(broker)

    @property
    def total(self) -> int:
        """In process: tasks outstanding over every queue (each queue counts its own: one
        counter per task accepted and settled, not two)."""
        return sum(rt.outstanding for rt in self.runtimes.values())

    def start(self) -> None:
        """The broker is connected: read its clock (an in-process one follows trio's)."""
        self.clock = self.broker.clock

    # -- new tasks -------------------------------------------------------------------------

    def validate(self, rt: QueueRuntime, payload: Any) -> Any:
        """The payload as plain data, checked against the queue's type and `max_payload`."""
        kind = type(payload)
        if (kind is int and rt.direct_int and _LEAST_INT <= payload <= DIRECT_INT) or (
            kind is str and len(payload) <= rt.direct_str and payload.isascii()
        ):
            return payload  # plain data the queue takes as it is, well within max_payload
        data = rt.payload_codec.check(payload)
        limit = rt.spec.max_payload
        try:
            size = encoded_size(data, limit)
        except ValueError as exc:  # an int past Python's 4300-digit str() limit, a lone
            # surrogate ("\ud800": no UTF-8 holds it), say
            raise PayloadError(rt.name, f"the payload does not serialize to JSON: {exc}") from exc
        if size > limit:
            raise PayloadTooLarge(rt.name, size, limit)
        return data

    def task(
        self,
        rt: QueueRuntime,
        payload: Any,
        expires: float | None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> Task:
        """A new task for queue `rt`, validated; with `key`, its id is the key's own. Its
        tenant: `tenant`, else the queue's `tenant` function's (of `payload`), if any."""
        data = self.validate(rt, payload)
        clock = self.clock  # an attribute, not a method: `self.clock()` is a slow lookup
        now = clock()
        task = new_task(
            f"{rt.id_prefix}{next(self.ids)}" if key is None else key_id(rt.name, key),
            rt.name,
            data,
            _wall(),
            None if expires is None else now + expires,
            now,
        )
        if priority:
            self.prioritize(rt, task, priority)
        if tenant is not None or rt.spec.tenant is not None:
            self.assign_tenant(rt, task, payload, tenant)
        return task

    def assign_tenant(self, rt: QueueRuntime, task: Task, payload: Any, tenant: str | None) -> None:
        """Give a new task its tenant: `tenant` (checked by the caller), else the one the
        queue's `tenant` function names for `payload` (checked here)."""
        if tenant is None:
            try:
                tenant = rt.spec.tenant(payload)
            except Exception as exc:
                raise InvalidQueue(
                    f"Queue({rt.name!r}) tenant function raised {type(exc).__name__}: {exc}"
                ) from exc
            if tenant is None:
                return
            check_tenant(tenant)
        task.tenant = tenant
        if rt.fair is None and not self.shared and rt.buffer is not None:
            self.share(rt)

    def prioritize(self, rt: QueueRuntime, task: Task, priority: int) -> None:
        """Give a new task its priority; in process, the first one switches its queue to
        handing out waiting tasks by priority (`_ranked.py`)."""
        task.priority = priority
        if rt.ranked is None and not self.shared and rt.buffer is not None:
            self.rank(rt)

    def rank(self, rt: QueueRuntime) -> Ranked:
        """In process: switch a queue to handing out its waiting tasks by priority (and,
        with `retry_ahead`, due retries first within one), once; its store."""
        ranked = rt.ranked
        if ranked is None:
            assert rt.buffer is not None
            ranked = rt.ranked = RetriesAhead() if rt.info.retry_ahead else Ranked()
            ranked.take_from(rt.buffer)
            rt.ranking.set()
        return ranked

    def share(self, rt: QueueRuntime) -> Fair:
        """In process: switch a queue to sharing its waiting tasks out between tenants
        (priorities first; `_ranked.Fair`), once, at its first task with a tenant; its
        store. The tasks waiting so far (in the buffer, or in its `Ranked` store) move
        there in their order, as the default tenant's."""
        fair = rt.fair
        if fair is None:
            assert rt.buffer is not None
            old = rt.ranked
            fair = Fair(rt.info, None if old is None else old._arrived)
            if old is None:
                fair.take_from(rt.buffer)
            else:
                fair.take_store(old)
            rt.ranked = rt.fair = fair
            rt.ranking.set()
        return fair

    def tasks(
        self,
        rt: QueueRuntime,
        payloads: Sequence[Any],
        expires: float | None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> tuple[list[Task], QueueingError | None]:
        """New tasks for queue `rt` (see `task`), up to the first payload that fails
        validation; that one's error comes second."""
        tasks: list[Task] = []
        try:
            for payload in payloads:
                tasks.append(self.task(rt, payload, expires, None, priority, tenant))
        except QueueingError as exc:
            return tasks, exc
        return tasks, None

    def run_task(
        self,
        pipeline: Pipeline,
        payload: Any,
        expires: float | None,
        key: str | None = None,
        stage: int = 0,
        priority: int = 0,
        tenant: str | None = None,
    ) -> tuple[PipelineTask, PipelineTask]:
        """A pipeline submission: the run's record and its first stage task (the pipeline's
        first stage, or `stage`: a run that starts half-way, for a requeued dead letter)."""
        first = self.runtimes[pipeline.stages[stage].name]
        data = self.validate(first, payload)
        now = self.clock()
        wall = _wall()
        expires_at = None if expires is None else now + expires
        run_id = (
            f"{pipeline.name}:{self.prefix}{next(self.ids)}"
            if key is None
            else key_id(pipeline.name, key)
        )
        run = PipelineTask(run_id, pipeline.name, data, wall, expires_at, route=pipeline.name)
        task = PipelineTask(
            f"{first.name}:{run_id}.s",
            first.name,
            data,
            wall,
            expires_at,
            run=run_id,
            route=pipeline.name,
            stage=stage,
        )
        run._born = task._born = now
        if priority:
            run.priority = priority
            self.prioritize(first, task, priority)
        if tenant is not None or first.spec.tenant is not None:
            self.assign_tenant(first, task, payload, tenant)
            if task.tenant is not None:
                run.tenant = task.tenant
        return run, task

    # -- accepting -------------------------------------------------------------------------

    async def accept(
        self,
        rt: QueueRuntime,
        task: Task,
        when_full: Overflow,
        timeout: float | None,
        delay: float | None = None,
    ) -> Admission:
        """Hand a new task to the broker, waiting for room as `when_full` says; once it is
        accepted it is counted and (in process, ready) handed to the queue's workers.
        EXISTS: a task with that id (its key) was accepted before; nothing was done."""
        due = None if not delay else self.clock() + delay
        admission = await self.broker.accept(rt.info, task, due=due)
        if admission is _FULL or admission is _TENANT_FULL:
            admission = await self._wait_for_room(
                rt,
                task,
                admission,
                when_full,
                timeout,
                lambda: self.broker.accept(rt.info, task, due=due),
            )
        if admission is _ACCEPTED and not self.accepted(rt, task, due is not None):
            await self.deliver_later(rt, task)
        return admission

    def accepted_ready(self, rt: QueueRuntime, tasks: list[Task]) -> None:
        """With a shared broker: `accepted` for these ready tasks, all at once."""
        rt.submitted += len(tasks)
        self.results.watch_many(tasks)

    def admit_nowait(self, rt: QueueRuntime, task: Task) -> Admission | None:
        """In process, a ready task: `accept`'s common case without a coroutine. The broker
        takes it or not (`accept_nowait`); taken, it is counted and handed to the workers
        (`accepted`'s in-process case for a ready task, inlined: this runs once per submit;
        tests/queueing/test_fast_paths.py runs both paths on the same inputs). None: taken,
        but its buffer had no room (then `deliver_later`)."""
        accept_nowait = self.accept_nowait  # an attribute: `self.accept_nowait()` is slower
        admission = accept_nowait(rt.info, task)
        if admission is not _ACCEPTED:
            return admission
        rt.submitted += 1
        rt.outstanding += 1
        ranked = rt.ranked
        if ranked is not None:
            ranked.push(task)
            return admission
        buffer = rt.buffer
        assert buffer is not None
        try:
            buffer.put_nowait(task)
        except trio.WouldBlock:
            return None
        return admission

    def accepted(self, rt: QueueRuntime, task: Task, scheduled: bool) -> bool:
        """Count a task the broker accepted; in process, a ready one goes to the workers.
        False if its queue's buffer had no room for it (then `deliver_later`)."""
        rt.submitted += 1
        if scheduled:
            rt.scheduled += 1
            task.state = TaskState.SCHEDULED
        if self.shared:
            self.results.watch(task)
            return True
        rt.outstanding += 1
        if scheduled:
            return True
        ranked = rt.ranked
        if ranked is not None:
            ranked.push(task)
            return True
        buffer = rt.buffer
        assert buffer is not None
        try:
            buffer.put_nowait(task)
        except trio.WouldBlock:
            return False
        return True

    async def deliver_later(self, rt: QueueRuntime, task: Task) -> None:
        """Tasks cancelled while queued sit in the buffer until a worker skips them, so it
        can be full: wait for room there (the task is accepted either way)."""
        assert rt.buffer is not None
        if rt.ranked is not None:
            rt.ranked.push(task)  # no wait: a store without a bound (maxsize bounds it)
            return
        with trio.CancelScope(shield=True):
            await rt.buffer.put(task)

    async def _wait_for_room(
        self,
        rt: QueueRuntime,
        task: Task,
        admission: Admission,
        when_full: Overflow,
        timeout: float | None,
        retry: Any,
    ) -> Admission:
        """A task refused FULL (or TENANT_FULL: its tenant holds `tenant_maxsize`): wait
        for room and try again (`retry`) as `when_full` and `timeout` say, or raise
        `QueueFull` naming the limit (and the tenant)."""
        if when_full is Overflow.REJECT:
            raise self._full(rt, task, admission, None)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            left = deadline - trio.current_time()
            if left <= 0:
                raise self._full(rt, task, admission, timeout)
            rt.room_waiters += 1
            try:
                await self.broker.wait_room(rt.info, left)
            finally:
                rt.room_waiters -= 1
            if self.stopping:
                raise SystemStopping("the system shut down while this submit waited for room")
            admission = await retry()
            if admission is not _FULL and admission is not _TENANT_FULL:
                return admission

    @staticmethod
    def _full(
        rt: QueueRuntime, task: Task, admission: Admission, waited: float | None
    ) -> QueueFull:
        if admission is _TENANT_FULL:
            limit = rt.spec.tenant_maxsize
            assert limit is not None
            return QueueFull(rt.name, limit, waited, tenant=tenant_of(task) or "")
        return QueueFull(rt.name, rt.spec.maxsize, waited)

    async def start_run(
        self,
        pipeline: Pipeline,
        payload: Any,
        *,
        delay: float | None,
        expires: float | None,
        timeout: float | None,
        key: str | None = None,
        stage: int = 0,
        priority: int = 0,
        tenant: str | None = None,
    ) -> PipelineTask:
        """Accept a pipeline submission; returns the run's record (with `key`, the record
        of the run submitted with that key before, if there is one). `stage`: start the run
        at that stage (a requeued dead letter of it)."""
        run, stage_task = self.run_task(pipeline, payload, expires, key, stage, priority, tenant)
        return await self.launch(run, stage_task, delay, timeout)

    async def launch(
        self,
        run: PipelineTask,
        stage: PipelineTask,
        delay: float | None,
        timeout: float | None,
    ) -> PipelineTask:
        """Accept a pipeline run made by `run_task` (see `start_run`)."""
        rt = self.runtimes[stage.queue]
        due = None if not delay else self.clock() + delay
        if self.shared:
            known = self.results.watched(run.id)
            if known is not None and known is not run:
                # A run of this key submitted here before, still waiting for its outcome:
                # watching this one instead would leave the earlier receipts without it.
                assert isinstance(known, PipelineTask)
                return known
            self.results.watch(run)  # before: its outcome may arrive before this resumes
        with sending(rt, stage):
            admission = await self.runs.start(run, rt.info, stage, due=due)
            if admission is _FULL or admission is _TENANT_FULL:
                admission = await self._wait_for_room(
                    rt,
                    stage,
                    admission,
                    rt.spec.when_full,
                    rt.spec.full_timeout if timeout is None else timeout,
                    lambda: self.runs.start(run, rt.info, stage, due=due),
                )
        if admission is _ACCEPTED and not self.accepted(rt, stage, due is not None):
            await self.deliver_later(rt, stage)
        if admission is Admission.EXISTS:
            found = self.existing(run)
            assert isinstance(found, PipelineTask)
            return found
        return run

    def existing(self, task: Task) -> Task:
        """The record to hand out for a task whose id (its key) was accepted before."""
        if not self.shared:
            found = self.broker.lookup_nowait(task.id)
            if found is not None:
                return found
        else:
            mine = self.results.watched(task.id)  # submitted (or awaited) here already
            if mine is not None:
                return mine
            self.results.watch(task)  # its stored outcome comes as for any other
        return task

    # -- outcomes (called by workers) ------------------------------------------------------

    async def succeeded(self, rt: QueueRuntime, task: Task, result: Any) -> None:
        """The handler returned `result`."""
        if self.progress.waiting:
            await self.progress.settling(task)
        if task.run is not None:
            await self._advance(rt, task, result)
            return
        codec = rt.result_codec
        kind = type(result)
        if (
            codec.as_is is not AS_ANY
            or kind not in PLAIN_RESULTS
            or (kind is str and not result.isascii())  # a lone surrogate: no broker holds it
            or (kind is str and len(result) > rt.direct_result_str)  # maybe over max_result
            # An int past 4300 digits has no JSON (Python's int-to-str limit): checked.
            or (kind is int and not _LEAST_INT <= result <= DIRECT_INT)
        ):
            try:
                # Checked against `handle`'s declared return type, and as JSON.
                result = codec.check(result)
            except PayloadError as exc:
                # A result that cannot be stored, or not of the declared type: the retry
                # policy decides, as for any error (a PayloadError is not retried by
                # default).
                await self.failed(rt, task, exc)
                return
        if await self.broker.settle(rt.info, task, _SUCCEEDED, result):
            self.settled(rt, task)

    async def failed(self, rt: QueueRuntime, task: Task, exc: Exception) -> None:
        """The handler raised `exc`: retry later or end, as the queue's policy decides."""
        if self.progress.waiting:
            await self.progress.settling(task)
        error = ErrorInfo.from_exception(exc)
        decision = rt.spec.retry.decide(exc, task.attempts, task.first_started or 0.0, self.clock())
        if decision is False or decision is None:
            state = TaskState.FAILED if decision is False else TaskState.DEAD_LETTERED
            await self.dead_letter(rt, task, state, error)
            return
        task.error = error
        # A retry is a new delivery: max_deliveries bounds the crashes of one attempt, not
        # the attempts the retry policy allows.
        task.deliveries = 0
        rt.retried += 1
        rt.scheduled += 1
        if self.shared:
            rt.held.pop(task.id, None)
        elif rt.fair is not None:
            rt.fair.done(task)  # its tenant runs one task fewer while it waits
        if log.isEnabledFor(logging.INFO):
            log.info(
                "task %s of %r failed on attempt %d (%s: %s); retrying in %.3gs",
                task.id,
                rt.name,
                task.attempts,
                error.type,
                error.message,
                float(decision),
                extra=task_fields(task),
            )
        await self.broker.retry_at(rt.info, task, self.clock() + float(decision))

    async def hand_back(self, rt: QueueRuntime, task: Task) -> None:
        """A worker crashed while running `task`: it goes back first in the queue, for the
        next free worker (delivered again, at least once). If the buffer is full (tasks
        cancelled while queued sit there until skipped), the broker makes it ready again."""
        task.state = _PENDING
        assert rt.buffer is not None
        if rt.ranked is not None:
            rt.ranked.push_first(task)
            return
        try:
            rt.buffer.put_first_nowait(task)
        except trio.WouldBlock:
            rt.scheduled += 1
            if self.shared:
                rt.held.pop(task.id, None)
            with trio.CancelScope(shield=True):
                await self.broker.retry_at(rt.info, task, self.clock())

    async def timed_out(self, rt: QueueRuntime, task: Task) -> None:
        timeout = rt.spec.timeout or 0.0
        await self.failed(
            rt, task, TaskTimeout(f"task ran longer than its timeout of {timeout:g}s")
        )

    async def dead_letter(
        self, rt: QueueRuntime, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> None:
        """End a task without a result, keeping it among the dead letters."""
        if self.progress.waiting:
            await self.progress.settling(task)
        if await self.broker.dead_letter(rt.info, task, state, error):
            log.warning(
                "task %s of %r ended %s after %d attempt(s)%s",
                task.id,
                rt.name,
                state.value,
                task.attempts,
                f": {error.type}: {error.message}" if error is not None else "",
                extra=task_fields(task),
            )
            self.settled(rt, task)
            if task.run is not None:
                await self.end_run(task, state, error)

    async def end(
        self, rt: QueueRuntime, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> None:
        """End a task without a result and without a dead letter (expired, skipped)."""
        if await self.broker.settle(rt.info, task, state, None, error):
            self.settled(rt, task)
            if task.run is not None and state is not TaskState.CANCELLED:
                await self.end_run(task, state, error)

    async def skip_ended_run(self, rt: QueueRuntime, task: Task) -> bool:
        """A stage task whose run has an outcome already is not run: True if skipped."""
        assert task.run is not None
        if not await self.runs.ended(task.run):
            return False
        await self.end(rt, task, TaskState.CANCELLED, _PIPELINE_ENDED)
        return True

    def unwound(self) -> None:
        """A cancelled handler has unwound (no longer in flight): wake `drain()`."""
        if self.drained and self.total == 0:
            self.drained.unpark_all()

    def settled(self, rt: QueueRuntime, task: Task) -> None:
        """After the broker recorded an outcome: the figures, and the receipt."""
        state = task.state
        if state is _SUCCEEDED:
            rt.succeeded += 1
            clock = self.clock  # an attribute, not a method: `self.clock()` is a slow lookup
            rt.latency.add(clock() - task._born)
        elif state is TaskState.FAILED:
            rt.failed += 1
        elif state is TaskState.DEAD_LETTERED:
            rt.dead_lettered += 1
        elif state is TaskState.CANCELLED:
            rt.cancelled += 1
        else:
            rt.expired += 1
        if self.shared:
            # The receipt (maybe in another process) gets the outcome once it is stored,
            # from the receipt side: a write may still be on its way (batched).
            rt.held.pop(task.id, None)
            return
        rt.outstanding -= 1
        fair = rt.fair
        if fair is not None:
            fair.done(task)  # its tenant runs one task fewer
        if not rt.outstanding and self.drained and self.total == 0:
            self.drained.unpark_all()
        waiter = task._waiter  # Results.deliver, in process (the receipt's own record)
        if waiter is not None:
            waiter.set()

    # -- pipelines -------------------------------------------------------------------------

    async def _advance(self, rt: QueueRuntime, task: Task, result: Any) -> None:
        assert task.run is not None
        pipeline = self.pipelines.get(task.route or "")
        if pipeline is None:
            problem = PayloadError(rt.name, f"unknown pipeline {task.route!r} in this process")
            await self.failed(rt, task, problem)
            return
        stages = pipeline.stages
        if task.stage + 1 >= len(stages):
            try:
                data = rt.result_codec.check(result)
            except PayloadError as exc:
                await self.failed(rt, task, exc)
                return
            run = await self.runs.branch_done(task.run, task.path, data)
            if await self.broker.settle(rt.info, task, _SUCCEEDED, None):
                self.settled(rt, task)
            if run is not None:
                self.results.deliver(run)
            return
        if await self.runs.ended(task.run):
            await self.end(rt, task, TaskState.CANCELLED, _PIPELINE_ENDED)
            return  # the run ended meanwhile: nothing goes on to the next stage
        nxt = self.runtimes[stages[task.stage + 1].name]
        fanned = type(result) is FanOut
        items = result.items if fanned else (result,)
        try:
            datas = [self.validate(nxt, item) for item in items]
        except (PayloadError, PayloadTooLarge) as exc:
            problem = PayloadError(rt.name, f"its result cannot feed {nxt.name!r}: {exc}")
            await self.failed(rt, task, problem)
            return
        run = await self.runs.advance(task.run, task.id, len(datas), fanned)
        if run is not None:
            self.results.deliver(run)  # a fan-out to nothing: the run is complete
        now = self.clock()
        rest = task.id.partition(":")[2]
        priority = priority_of(task)  # the run's: each stage's tasks keep it
        tenant = tenant_of(task)  # the run's too
        for index, data in enumerate(datas):
            child = PipelineTask(
                f"{nxt.name}:{rest}.{index}",  # the same ids if a crash makes this run again
                nxt.name,
                data,
                _wall(),
                task.expires_at,
                run=task.run,
                route=task.route,
                stage=task.stage + 1,
                path=(*task.path, index) if fanned else task.path,
            )
            child._born = now
            if priority:
                self.prioritize(nxt, child, priority)
            if tenant is not None:
                child.tenant = tenant
                if nxt.fair is None and not self.shared and nxt.buffer is not None:
                    self.share(nxt)
            await self._accept_stage_task(nxt, child)
        if await self.broker.settle(rt.info, task, _SUCCEEDED, None):
            self.settled(rt, task)

    async def _accept_stage_task(self, rt: QueueRuntime, task: PipelineTask) -> None:
        """Hand a stage's result on to the next stage, waiting for room there (backpressure
        crosses stages) unless the run ends meanwhile: then it is not needed."""
        assert task.run is not None
        run_id = task.run

        async def attempt() -> Admission:
            if await self.runs.ended(run_id):
                return Admission.EXISTS  # not needed: nothing to accept
            return await self.broker.accept(rt.info, task)

        with sending(rt, task):
            admission = await attempt()
            if admission is _FULL or admission is _TENANT_FULL:
                admission = await self._wait_for_room(
                    rt, task, admission, Overflow.WAIT, None, attempt
                )
        if admission is _ACCEPTED and not self.accepted(rt, task, False):
            await self.deliver_later(rt, task)

    async def end_run(self, stage: Task, state: TaskState, error: ErrorInfo | None) -> None:
        """A stage task ended without a result: so does its run (first outcome wins)."""
        assert stage.run is not None
        assert isinstance(stage, PipelineTask)
        run = await self.runs.end(stage.run, stage, state, error)
        if run is not None:
            self.results.deliver(run)
        await self.stop_stages(stage.run)

    def stage_started(self, task: Task) -> None:
        assert task.run is not None
        running = self.running_stages.get(task.run)
        if running is None:
            running = self.running_stages[task.run] = set()
        running.add(task)

    def stage_stopped(self, task: Task) -> None:
        assert task.run is not None
        running = self.running_stages.get(task.run)
        if running is not None:
            running.discard(task)
            if not running:
                del self.running_stages[task.run]

    async def stop_stages(self, run_id: str) -> None:
        """The run ended: its stage tasks running here stop, CANCELLED (those waiting are
        skipped when a worker takes them)."""
        for task in list(self.running_stages.get(run_id, ())):
            rt = self.runtimes.get(task.queue)
            if (
                rt is not None
                and task.state is TaskState.RUNNING
                and await self.broker.settle(rt.info, task, TaskState.CANCELLED, None, _RUN_ENDED)
            ):
                self.settled(rt, task)
            if task._scope is not None:
                task._scope.cancel()

    # -- cancel and shutdown ---------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task or a pipeline run: True if this call cancelled it."""
        before = None if self.shared else self.broker.lookup_nowait(task_id)
        waiting = before is not None and before.state is TaskState.SCHEDULED
        record = await self.broker.cancel(task_id, _CANCELLED)
        if record is None:
            return False
        rt = self.runtimes.get(record.queue)
        # The record this process runs it from, if it does: the broker's own in process,
        # the one claimed from a shared broker.
        running = rt.held.get(task_id) if self.shared and rt is not None else record
        if rt is not None and not record.is_run:
            if waiting:
                rt.scheduled -= 1  # it will not come back from the broker's delayed tasks
            self.settled(rt, record)
        if self.shared or rt is None or record.is_run:
            self.results.deliver(record)  # stored now (not batched): the receipt has it
        if running is not None and running._scope is not None:
            if running is not record:
                running.state = TaskState.CANCELLED  # its worker must not retry it
            running._scope.cancel()  # running in this process
        if record.run is not None:
            await self.end_run(record, TaskState.CANCELLED, _CANCELLED)
        elif record.is_run:
            await self.stop_stages(record.id)
        return True

    async def abandon(self, reason: str) -> int:
        """At shutdown: what an in-process broker held ends CANCELLED; returns how many
        tasks of the queues were left unfinished."""
        count = 0
        for task in await self.broker.abandon(reason):
            rt = self.runtimes.get(task.queue)
            if rt is not None and not task.is_run:
                self.settled(rt, task)
                count += 1
            else:
                self.results.deliver(task)
        if self.shared:
            count += sum(len(rt.held) for rt in self.runtimes.values())
        else:
            for rt in self.runtimes.values():
                rt.scheduled = 0  # every task ended
        return count

"""The in-process broker (`memory://`): fastest, and not durable."""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._task import (
    DeadLetter,
    ErrorInfo,
    PipelineTask,
    Progress,
    Task,
    TaskState,
    priority_of,
    progress_of,
    tenant_of,
)
from ._contract import Admission, Broker, QueueInfo, RunStore

_wall = time.time
_SCHEDULED = TaskState.SCHEDULED
_PENDING = TaskState.PENDING
_ACCEPTED = Admission.ACCEPTED
_FULL = Admission.FULL
_TENANT_FULL = Admission.TENANT_FULL
#: Seconds a pipeline run's outcome stays retrievable by id.
RUN_TTL = 3600.0


class _Queue:
    """One queue's storage."""

    __slots__ = (
        "dead",
        "delayed",
        "due",
        "finished",
        "info",
        "maxsize",
        "outstanding",
        "room",
        "room_waiters",
        "tenant_maxsize",
        "tenants",
        "ttl",
    )

    def __init__(self, info: QueueInfo, finished: deque[Task]) -> None:
        self.info = info
        #: The broker's FIFO of kept outcomes for this queue's `result_ttl` (one per TTL).
        self.finished = finished
        self.maxsize = info.maxsize
        self.ttl = info.result_ttl
        self.outstanding = 0
        # With `tenant_maxsize`: the outstanding tasks of each tenant that has some (None:
        # the default tenant); else None, and nothing is counted per tenant.
        self.tenant_maxsize = info.tenant_maxsize or 0
        self.tenants: dict[str | None, int] | None = {} if info.tenant_maxsize else None
        self.room = trio.lowlevel.ParkingLot()
        self.room_waiters = 0
        # Delayed and retried tasks by due time, and the dispatcher's claim waiting for one.
        self.delayed: list[tuple[float, int, Task]] = []
        self.due = trio.lowlevel.ParkingLot()
        self.dead: deque[DeadLetter] = deque()


class MemoryBroker(Broker):
    """Tasks, outcomes and dead letters in this process's memory.

    Everything is bounded: outstanding tasks by each queue's `maxsize`, outcomes by
    `max_results` and each queue's `result_ttl`, dead letters by `max_dead_letters` per
    queue (the oldest are dropped, and counted). Nothing survives the process.
    """

    durable = False
    shared = False
    nowait = True

    def __init__(
        self,
        *,
        max_results: int = 100_000,
        max_dead_letters: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.max_results = max_results
        self.max_dead_letters = max_dead_letters
        self._own_clock = clock
        if clock is not None:
            self.clock = clock
        self.dead_dropped = 0
        self._queues: dict[str, _Queue] = {}
        self._tasks: dict[str, Task] = {}
        # Finished outcomes by expiry, one FIFO per TTL (a queue's TTL is fixed, so each
        # FIFO is in expiry order): cheaper than a heap on the hot path. A kept task's
        # `handle` is the clock time it may be forgotten at.
        self._finished: dict[float, deque[Task]] = {}
        self._kept = 0
        self._seq = 0
        self._settled = trio.lowlevel.ParkingLot()
        self._settle_waiters = 0
        self.runs: MemoryRuns = MemoryRuns(self)

    @asynccontextmanager
    async def connect(self, queues: Mapping[str, QueueInfo], *, serve: bool) -> AsyncIterator[None]:
        if self._own_clock is None:
            # The run's clock itself (a MockClock in tests). trio's default clock is
            # perf_counter plus a constant offset: perf_counter measures the same durations
            # and is a C function, cheaper to call.
            clock = trio.lowlevel.current_clock()
            kind = type(clock)
            if kind.__name__ == "SystemClock" and kind.__module__.startswith("trio."):
                self.clock = time.perf_counter
            else:
                self.clock = clock.current_time
        for name, info in queues.items():
            self._queues[name] = _Queue(info, self._finished.setdefault(info.result_ttl, deque()))
        yield

    # -- the client side -------------------------------------------------------------------

    async def accept(self, queue: QueueInfo, task: Task, *, due: float | None = None) -> Admission:
        admission = self.accept_nowait(queue, task)
        if due is not None and admission is _ACCEPTED:
            self._delay(self._queues[queue.name], task, due)
        return admission

    def accept_nowait(self, queue: QueueInfo, task: Task) -> Admission:
        tasks = self._tasks
        task_id = task.id
        if tasks.setdefault(task_id, task) is not task:  # one probe of a big dict
            return Admission.EXISTS
        q = self._queues[queue.name]
        if q.outstanding >= q.maxsize:
            del tasks[task_id]
            return _FULL
        counts = q.tenants
        if counts is not None:
            tenant = tenant_of(task)
            count = counts.get(tenant, 0)
            if count >= q.tenant_maxsize:
                del tasks[task_id]
                return _TENANT_FULL
            counts[tenant] = count + 1
        q.outstanding += 1
        return _ACCEPTED

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        q = self._queues[queue.name]
        if q.tenants is not None:
            taken = 0  # counted per tenant: one at a time
            for task in tasks:
                admission = self.accept_nowait(queue, task)
                if admission is _FULL or admission is _TENANT_FULL:
                    break
                taken += 1
            return taken
        room = q.maxsize - q.outstanding
        taken = 0
        known = self._tasks
        for task in tasks:
            if task.id not in known:
                if room <= 0:
                    break
                room -= 1
                known[task.id] = task
            taken += 1
        q.outstanding = q.maxsize - room
        return taken

    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        q = self._queues[queue.name]
        per_tenant = q.tenants is not None
        if q.outstanding < q.maxsize and not per_tenant:
            # (With `tenant_maxsize` the caller may wait for its tenant's room, which only
            # an outcome makes: it waits for the next one.)
            await trio.lowlevel.checkpoint()
            return
        q.room_waiters += 1
        try:
            if math.isinf(timeout):
                await q.room.park()
            else:
                with trio.move_on_after(timeout):
                    await q.room.park()
        finally:
            q.room_waiters -= 1
        if q.room_waiters and q.outstanding < q.maxsize and not per_tenant:
            # Woken for room: pass a wake-up on, in case this caller does not take it (a
            # pipeline stage's task no longer needed); the next one retries and waits again
            # if there is none left.
            q.room.unpark()

    async def lookup(self, task_id: str) -> Task | None:
        return self.lookup_nowait(task_id)

    def lookup_nowait(self, task_id: str) -> Task | None:
        now = self.clock()
        if any(fifo and fifo[0].handle <= now for fifo in self._finished.values()):
            self._evict(now)  # a TTL may have run out with no task finishing since
        return self._tasks.get(task_id)

    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        deadline = trio.current_time() + timeout
        while True:
            tasks = self._tasks
            done = [t for i in task_ids if (t := tasks.get(i)) is not None and t.state.final]
            if done or trio.current_time() >= deadline:
                await trio.lowlevel.checkpoint()
                return done
            self._settle_waiters += 1
            try:
                with trio.move_on_at(deadline):
                    await self._settled.park()
            finally:
                self._settle_waiters -= 1

    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        task = self.lookup_nowait(task_id)
        if task is None or task.state.final:
            return None
        if task.is_run:
            return await self.runs.cancel(task, error)
        # A delayed one stays in its heap until due, and is dropped then (state CANCELLED).
        await self.settle(self._queues[task.queue].info, task, TaskState.CANCELLED, None, error)
        return task

    # -- the worker side -------------------------------------------------------------------

    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        q = self._queues[queue.name]
        deadline = trio.current_time() + wait
        while True:
            now = self.clock()
            delayed = q.delayed
            ready: list[Task] = []
            while delayed and delayed[0][0] <= now and len(ready) < n:
                _, _, task = heapq.heappop(delayed)
                if task.state is _SCHEDULED:  # else: cancelled while it waited
                    task.state = _PENDING
                    ready.append(task)
            if ready:
                await trio.lowlevel.checkpoint()
                return ready
            until = delayed[0][0] - now if delayed else math.inf
            left = deadline - trio.current_time()
            if left <= 0:
                await trio.lowlevel.checkpoint()
                return ready
            with trio.move_on_after(min(until, left)):
                await q.due.park()

    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        return self.settle_nowait(queue, task, state, result, error)

    def settle_nowait(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        if task.state.final:
            return False
        task.state = state
        task.result = result
        task.error = error
        task.finished_at = _wall()
        q = self._queues[task.queue]
        q.outstanding -= 1
        counts = q.tenants
        if counts is not None:
            tenant = tenant_of(task)
            count = counts.get(tenant, 0) - 1
            if count > 0:
                counts[tenant] = count
            else:
                counts.pop(tenant, None)
            if q.room_waiters:
                q.room.unpark_all()  # each retries: the room may be any tenant's
        elif q.room_waiters:
            q.room.unpark()
        # _keep(task, queue.result_ttl), inlined: this runs once per task. The queue's FIFO
        # is the one _keep would find for its TTL.
        ttl = q.ttl
        fifo = q.finished
        clock = self.clock  # an attribute, not a method: `self.clock()` is a slow lookup
        now = clock()
        task.handle = now + ttl
        fifo.append(task)
        self._kept += 1
        if self._kept > self.max_results or fifo[0].handle <= now:
            self._evict(now)
        if self._settle_waiters:
            self._settled.unpark_all()
        return True

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        self._delay(self._queues[queue.name], task, due)

    async def dead_letter(
        self, queue: QueueInfo, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        if not self.settle_nowait(queue, task, state, None, error):
            return False
        store = self._queues[queue.name].dead
        if len(store) >= self.max_dead_letters:
            store.popleft()
            self.dead_dropped += 1
        store.append(
            DeadLetter(
                id=task.id,
                queue=queue.name,
                payload=task.payload,
                state=state,
                error=error,
                attempts=task.attempts,
                deliveries=task.deliveries,
                submitted_at=task.submitted_at,
                failed_at=task.finished_at or _wall(),
                priority=priority_of(task),
                tenant=tenant_of(task),
            )
        )
        return True

    def _delay(self, q: _Queue, task: Task, due: float) -> None:
        task.state = _SCHEDULED
        self._seq += 1
        heapq.heappush(q.delayed, (due, self._seq, task))
        if q.delayed[0][2] is task:
            q.due.unpark_all()  # due sooner than the claim planned to look again

    # -- outcomes kept for lookups ---------------------------------------------------------

    def _keep(self, task: Task, ttl: float) -> None:
        """Keep an outcome for lookup by id until its TTL runs out, or until max_results
        newer ones are; and wake whoever waits for outcomes. (`settle_nowait` has this
        inlined; tests/queueing/test_fast_paths.py runs both.)"""
        now = self.clock()
        fifo = self._finished.get(ttl)
        if fifo is None:
            fifo = self._finished[ttl] = deque()
        task.handle = now + ttl
        fifo.append(task)
        self._kept += 1
        if self._kept > self.max_results or fifo[0].handle <= now:
            self._evict(now)
        if self._settle_waiters:
            self._settled.unpark_all()

    def _evict(self, now: float) -> None:
        tasks = self._tasks
        fifos = [fifo for fifo in self._finished.values() if fifo]
        while fifos:
            # The oldest expiry among the FIFOs' heads goes first (one FIFO per TTL).
            fifo = fifos[0] if len(fifos) == 1 else min(fifos, key=lambda f: f[0].handle)
            if not (self._kept > self.max_results or fifo[0].handle <= now):
                break
            task = fifo.popleft()
            self._kept -= 1
            if tasks.get(task.id) is task:
                del tasks[task.id]
            if not fifo:
                fifos.remove(fifo)

    # -- dead letters, figures, shutdown ---------------------------------------------------

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        store = self._queues[queue].dead
        return list(store)[-limit:] if limit < len(store) else list(store)

    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        q = self._queues[queue]
        if ids is None:
            taken = list(q.dead)
            q.dead.clear()
            return taken
        wanted = set(ids)
        taken = [letter for letter in q.dead if letter.id in wanted]
        q.dead = deque(letter for letter in q.dead if letter.id not in wanted)
        return taken

    async def outstanding(self, queue: str) -> int:
        return self._queues[queue].outstanding

    # -- progress --------------------------------------------------------------------------

    async def store_progress(
        self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]
    ) -> None:
        # On the record itself (the one the engine holds, in process): it goes with it.
        for task, progress in updates:
            record = self._tasks.get(task.id, task)
            record.progress = progress
            task.progress = progress
        await trio.lowlevel.checkpoint()

    async def read_progress(self, task_ids: Collection[str]) -> dict[str, Progress]:
        found = {}
        for task_id in task_ids:
            record = self.lookup_nowait(task_id)
            progress = progress_of(record) if record is not None else None
            if progress is not None:
                found[task_id] = progress
        await trio.lowlevel.checkpoint()
        return found

    def figures_nowait(self, queue: str) -> dict[str, int]:
        """The queue's figures that only the broker knows: `dead_letters` kept."""
        return {"dead_letters": len(self._queues[queue].dead)}

    async def abandon(self, reason: str) -> list[Task]:
        error = ErrorInfo("SystemStopping", reason)
        ended = []
        for task in list(self._tasks.values()):
            if task.state.final:
                continue
            if task.is_run:
                self.runs.forget(task)
                task.settle(TaskState.CANCELLED, None, error, _wall())
                self._keep(task, RUN_TTL)
            else:
                info = self._queues[task.queue].info
                await self.settle(info, task, TaskState.CANCELLED, None, error)
            ended.append(task)
        for q in self._queues.values():
            q.room.unpark_all()  # submits waiting for room: the engine refuses them now
        return ended


class _Run:
    """A pipeline run in flight: branches still running and results so far."""

    __slots__ = ("advanced", "pending", "record", "results")

    def __init__(self, record: PipelineTask) -> None:
        self.record = record
        self.pending = 1
        self.results: dict[tuple[int, ...], Any] = {}
        self.advanced: set[str] = set()  # stage tasks counted already (a re-run repeats)


class MemoryRuns(RunStore):
    """Pipeline runs in this process's memory."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._runs: dict[str, _Run] = {}

    async def start(
        self, run: PipelineTask, queue: QueueInfo, first: PipelineTask, *, due: float | None
    ) -> Admission:
        admission = await self._broker.accept(queue, first, due=due)
        if admission is _ACCEPTED:
            self._runs[run.id] = _Run(run)
            self._broker._tasks[run.id] = run
        return admission

    async def ended(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        return run is None or run.record.state.final

    async def advance(
        self, run_id: str, stage_task_id: str, children: int, fanned: bool
    ) -> PipelineTask | None:
        run = self._runs.get(run_id)
        if run is None or stage_task_id in run.advanced:
            return None
        run.advanced.add(stage_task_id)
        run.record.fanned = run.record.fanned or fanned
        run.pending += children - 1
        return self._complete(run) if run.pending <= 0 else None

    async def branch_done(
        self, run_id: str, path: tuple[int, ...], result: Any
    ) -> PipelineTask | None:
        run = self._runs.get(run_id)
        if run is None or path in run.results:
            return None
        run.results[path] = result
        run.pending -= 1
        return self._complete(run) if run.pending <= 0 else None

    def _complete(self, run: _Run) -> PipelineTask:
        results = run.results
        record = run.record
        value = [results[key] for key in sorted(results)] if record.fanned else results.get(())
        self._runs.pop(record.id, None)
        record.settle(TaskState.SUCCEEDED, value, None, _wall())
        self._broker._keep(record, RUN_TTL)
        return record

    async def end(
        self, run_id: str, stage: PipelineTask, state: TaskState, error: ErrorInfo | None
    ) -> PipelineTask | None:
        run = self._runs.pop(run_id, None)
        if run is None or run.record.state.final:
            return None
        record = run.record
        record.stage = stage.stage
        record.attempts = stage.attempts
        record.deliveries = stage.deliveries
        record.settle(state, None, error, _wall())
        self._broker._keep(record, RUN_TTL)
        return record

    async def cancel(self, record: Task, error: ErrorInfo) -> Task | None:
        """A run cancelled through its receipt (`Broker.cancel`)."""
        self._runs.pop(record.id, None)
        record.settle(TaskState.CANCELLED, None, error, _wall())
        self._broker._keep(record, RUN_TTL)
        return record

    def forget(self, record: Task) -> None:
        self._runs.pop(record.id, None)

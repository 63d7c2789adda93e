"""The in-process broker (`memory://`): fastest, and not durable."""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .._exceptions import QueueFull, SystemStopping
from .._queue import Full
from .._receipt import PipelineReceipt
from .._runtime import QueueRuntime
from .._task import DeadLetter, Envelope, ErrorInfo, TaskState
from ._base import Broker

_wall = time.time
_SCHEDULED = TaskState.SCHEDULED
_SUCCEEDED = TaskState.SUCCEEDED


class _Run:
    """A pipeline submission in flight: branches still running and results so far."""

    __slots__ = ("env", "fanned", "pending", "results", "stages")

    def __init__(self, env: PipelineReceipt) -> None:
        self.env = env
        self.pending = 1
        self.fanned = False
        self.results: dict[tuple[int, ...], Any] = {}
        # Its stage tasks without an outcome yet, by identity (a stage run again after a
        # crash makes children with the same ids).
        self.stages: dict[int, Envelope] = {}


class MemoryBroker(Broker):
    """Tasks, outcomes and dead letters in this process's memory.

    Everything is bounded: outstanding tasks by each queue's `maxsize`, outcomes by
    `max_results` and each queue's `result_ttl`, dead letters by `max_dead_letters` per
    queue (the oldest are dropped, and counted). Nothing survives the process.
    """

    durable = False

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
        self.clock = clock or trio.current_time
        self.dead_dropped = 0
        self._runtimes: dict[str, QueueRuntime] = {}
        self._tasks: dict[str, Envelope] = {}
        self._room: dict[str, trio.lowlevel.ParkingLot] = {}
        self._total = 0  # outstanding tasks of every queue (drain waits for 0)
        self._drained = trio.lowlevel.ParkingLot()
        # Finished outcomes by expiry, one FIFO per TTL (a queue's TTL is fixed, so each FIFO
        # is in expiry order): cheaper than a heap on the hot path.
        self._finished: dict[float, deque[Envelope]] = {}
        self._kept = 0
        self._delayed: list[tuple[float, int, Envelope]] = []
        self._seq = 0
        self._abandoned = False
        self._wake = trio.lowlevel.ParkingLot()
        self._dead: dict[str, deque[DeadLetter]] = {}
        self._runs: dict[str, _Run] = {}

    def attach(self, runtimes: dict[str, QueueRuntime]) -> None:
        if self._own_clock is None:
            # The run's clock itself (a MockClock in tests): cheaper than trio.current_time.
            # trio's default clock is perf_counter plus a constant offset: perf_counter
            # measures the same durations, and is a C function (a third of the cost).
            clock = trio.lowlevel.current_clock()
            kind = type(clock)
            if kind.__name__ == "SystemClock" and kind.__module__.startswith("trio."):
                self.clock = time.perf_counter
            else:
                self.clock = clock.current_time
        self._runtimes = runtimes
        for name in runtimes:
            self._room[name] = trio.lowlevel.ParkingLot()
            self._dead[name] = deque()

    # -- submit ----------------------------------------------------------------------------

    def submit_nowait(self, rt: QueueRuntime, env: Envelope) -> bool:
        """Accept a ready task if there is room now (the hot path); False if full."""
        if rt.outstanding >= rt.maxsize:
            return False
        rt.outstanding += 1
        self._total += 1
        self._tasks[env.id] = env
        rt.submitted += 1
        rt.ready.append(env)  # rt.push(env), inlined
        if rt.parked and not rt.waking:
            rt.wake()
        return True

    def submit_many_nowait(self, rt: QueueRuntime, envs: Sequence[Envelope]) -> int:
        """Accept ready tasks, in order, as many as there is room for now; how many."""
        room = rt.maxsize - rt.outstanding
        if room <= 0 or not envs:
            return 0
        if len(envs) > room:
            envs = envs[:room]
        taken = len(envs)
        rt.outstanding += taken
        self._total += taken
        tasks = self._tasks
        for env in envs:
            tasks[env.id] = env
        rt.submitted += taken
        rt.ready.extend(envs)
        if rt.parked and not rt.waking:
            rt.wake()
        return taken

    async def submit(
        self,
        rt: QueueRuntime,
        env: Envelope,
        when_full: Full,
        timeout: float | None,
        delay: float | None = None,
    ) -> None:
        name = rt.name
        maxsize = rt.maxsize
        if rt.outstanding >= maxsize:
            if when_full is Full.REJECT:
                raise QueueFull(name, maxsize)
            deadline = math.inf if timeout is None else trio.current_time() + timeout
            with trio.CancelScope(deadline=deadline) as scope:
                while rt.outstanding >= maxsize:
                    rt.room_waiters += 1
                    try:
                        await self._room[name].park()
                    finally:
                        rt.room_waiters -= 1
            if scope.cancelled_caught:
                raise QueueFull(name, maxsize, timeout)
            if self._abandoned:
                # Woken by the shutdown: accepted now, the task would never run or resolve.
                raise SystemStopping("the system shut down while this submit waited for room")
        if env.pipeline is not None and env.pipeline not in self._runs:
            # A later stage's task whose run has ended (maybe while it waited): not needed.
            # If it was woken for room, that wake-up goes to the next waiter instead.
            if rt.room_waiters and rt.outstanding < maxsize:
                self._room[name].unpark()
            return
        rt.outstanding += 1
        self._total += 1
        self._tasks[env.id] = env
        rt.submitted += 1
        if env.pipeline is not None:
            run = self._runs.get(env.pipeline)
            if run is not None:
                run.stages[id(env)] = env
        if delay:
            self.schedule(rt, env, delay)
        else:
            rt.push(env)

    # -- pipeline runs ----------------------------------------------------------------------

    async def start_run(
        self,
        rt: QueueRuntime,
        stage: Envelope,
        run: PipelineReceipt,
        when_full: Full,
        timeout: float | None,
        delay: float | None = None,
    ) -> None:
        self._runs[run.id] = _Run(run)
        try:
            await self.submit(rt, stage, when_full, timeout, delay)
        except BaseException:
            del self._runs[run.id]
            raise
        self._tasks[run.id] = run

    def run_ended(self, stage: Envelope) -> bool:
        run = self._runs.get(stage.pipeline or "")
        if run is not None and not run.env.state.final:
            return False
        self._runs.pop(stage.pipeline or "", None)
        return True

    async def advance(self, stage: Envelope, children: int, fanned: bool) -> None:
        run = self._runs.get(stage.pipeline or "")
        if run is None:
            return
        run.fanned = run.fanned or fanned
        run.pending += children - 1
        if run.pending <= 0:
            self._complete(run)

    def branch_done(self, stage: Envelope, data: Any) -> None:
        run = self._runs.get(stage.pipeline or "")
        if run is None:
            return
        run.results[stage.path] = data
        run.pending -= 1
        if run.pending <= 0:
            self._complete(run)

    def _complete(self, run: _Run) -> None:
        results = run.results
        value = [results[key] for key in sorted(results)] if run.fanned else results.get(())
        run.env.fanned = run.fanned
        self._runs.pop(run.env.id, None)
        self.finish(None, run.env, TaskState.SUCCEEDED, value)

    def fail_run(self, stage: Envelope, state: TaskState, error: ErrorInfo | None) -> None:
        run = self._runs.pop(stage.pipeline or "", None)
        if run is None:
            return
        run.env.stage = stage.stage
        run.env.attempts = stage.attempts
        run.env.deliveries = stage.deliveries
        self.finish(None, run.env, state, None, error)
        self._cancel_stages(run, "its pipeline run failed at another stage")

    def _cancel_stages(self, run: _Run, why: str) -> None:
        """The run has its outcome: its other stage tasks stop (pending ones never run)."""
        error = ErrorInfo("Cancelled", why)
        for stage in list(run.stages.values()):
            running = stage.state is TaskState.RUNNING
            self.finish(self._runtimes.get(stage.queue), stage, TaskState.CANCELLED, None, error)
            if running and stage.scope is not None:
                stage.scope.cancel()
        run.stages.clear()

    # -- outcomes --------------------------------------------------------------------------

    def finish(
        self,
        rt: QueueRuntime | None,
        env: Envelope,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        old = env.state
        if old.final:
            return False
        if old is _SCHEDULED and rt is not None:
            rt.scheduled -= 1
        if env.pipeline is not None:
            run = self._runs.get(env.pipeline)
            if run is not None:
                run.stages.pop(id(env), None)
        if rt is not None and state is _SUCCEEDED:
            self.succeed(rt, env, result)
            return True
        now = self.clock()
        env.state = state
        env.value = result
        env.error = error
        env.finished_at = _wall()
        if rt is not None:
            if state is TaskState.FAILED:
                rt.failed += 1
            elif state is TaskState.DEAD_LETTERED:
                rt.dead_lettered += 1
            elif state is TaskState.CANCELLED:
                rt.cancelled += 1
            else:
                rt.expired += 1
        self._settle(rt, env, now)
        return True

    def succeed(self, rt: QueueRuntime, env: Envelope, result: Any) -> None:
        """`finish(rt, env, SUCCEEDED, result)` for a running task of no pipeline: the
        common case, without the branches it cannot take."""
        now = self.clock()
        env.state = _SUCCEEDED
        env.value = result
        env.error = None
        env.finished_at = _wall()
        rt.succeeded += 1
        rt.latency.add(now - env.submitted_clock)
        self._settle(rt, env, now)

    def _settle(self, rt: QueueRuntime | None, env: Envelope, now: float) -> None:
        """After an outcome: room for the queue, wake whoever waits, keep the outcome."""
        if rt is not None:
            rt.outstanding -= 1
            self._total -= 1
            if rt.room_waiters:
                self._room[rt.name].unpark()
            if self._total == 0 and self._drained:
                self._drained.unpark_all()
            ttl = rt.ttl
        else:
            ttl = 3600.0  # a pipeline run's outcome
        if env.event is not None:
            env.event.set()
        # Kept for lookup by id until its TTL runs out, or until max_results newer ones
        # are: a FIFO per TTL is in expiry order (cheaper than one heap for all).
        fifo = self._finished.get(ttl)
        if fifo is None:
            fifo = self._finished[ttl] = deque()
        env.kept_until = now + ttl
        fifo.append(env)
        self._kept += 1
        if self._kept > self.max_results or fifo[0].kept_until <= now:
            self._evict(now)

    def _evict(self, now: float) -> None:
        tasks = self._tasks
        if len(self._finished) == 1:
            # One TTL for every queue (the common case): its FIFO is in eviction order.
            # Past max_results this runs once per finished task, so it stays lean.
            for fifo in self._finished.values():
                limit = self.max_results
                while fifo and (self._kept > limit or fifo[0].kept_until <= now):
                    env = fifo.popleft()
                    self._kept -= 1
                    if tasks.get(env.id) is env:
                        del tasks[env.id]
            return
        fifos = [fifo for fifo in self._finished.values() if fifo]
        while fifos:
            # The oldest expiry among the FIFOs' heads goes first.
            fifo = min(fifos, key=lambda f: f[0].kept_until)
            if not (self._kept > self.max_results or fifo[0].kept_until <= now):
                break
            env = fifo.popleft()
            self._kept -= 1
            if tasks.get(env.id) is env:
                del tasks[env.id]
            if not fifo:
                fifos.remove(fifo)

    def dead_letter(
        self, rt: QueueRuntime, env: Envelope, state: TaskState, error: ErrorInfo | None
    ) -> None:
        if not self.finish(rt, env, state, None, error):
            return
        store = self._dead[rt.name]
        if len(store) >= self.max_dead_letters:
            store.popleft()
            self.dead_dropped += 1
        store.append(
            DeadLetter(
                id=env.id,
                queue=rt.name,
                payload=env.payload,
                state=state,
                error=error,
                attempts=env.attempts,
                deliveries=env.deliveries,
                submitted_at=env.submitted_at,
                failed_at=env.finished_at or time.time(),
            )
        )

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        store = self._dead[queue]
        return list(store)[-limit:] if limit < len(store) else list(store)

    async def take_dead_letters(self, queue: str, ids: list[str] | None) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        store = self._dead[queue]
        if ids is None:
            taken = list(store)
            store.clear()
            return taken
        wanted = set(ids)
        taken = [letter for letter in store if letter.id in wanted]
        self._dead[queue] = deque(letter for letter in store if letter.id not in wanted)
        return taken

    # -- retries and redelivery -----------------------------------------------------------

    def schedule(self, rt: QueueRuntime, env: Envelope, delay: float) -> None:
        env.state = TaskState.SCHEDULED
        rt.scheduled += 1
        self._seq += 1
        due = self.clock() + delay
        heapq.heappush(self._delayed, (due, self._seq, env))
        if self._delayed[0][2] is env:
            self._wake.unpark_all()

    def redeliver(self, rt: QueueRuntime, env: Envelope) -> None:
        env.state = TaskState.PENDING
        rt.push_front(env)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Promote due retries to their queues; sleeps until the next due time."""
        task_status.started()
        delayed = self._delayed
        while True:
            now = self.clock()
            while delayed and delayed[0][0] <= now:
                _, _, env = heapq.heappop(delayed)
                if env.state is TaskState.SCHEDULED:
                    rt = self._runtimes[env.queue]
                    rt.scheduled -= 1
                    env.state = TaskState.PENDING
                    rt.push(env)
            wait = delayed[0][0] - now if delayed else math.inf
            with trio.move_on_after(wait):
                await self._wake.park()

    # -- lookups, cancel, drain -----------------------------------------------------------

    def lookup(self, task_id: str) -> Envelope | None:
        now = self.clock()
        if any(fifo and fifo[0].kept_until <= now for fifo in self._finished.values()):
            self._evict(now)  # a TTL may have run out with no task finishing since
        return self._tasks.get(task_id)

    async def cancel(self, env: Envelope) -> bool:
        await trio.lowlevel.checkpoint()
        if env.state.final:
            return False
        running = env.state is TaskState.RUNNING
        rt = self._runtimes.get(env.queue)
        error = ErrorInfo("Cancelled", "cancelled through its receipt")
        self.finish(rt, env, TaskState.CANCELLED, None, error)
        if running and env.scope is not None:
            env.scope.cancel()
        run = self._runs.pop(env.id, None)
        if run is not None:  # a pipeline run: stop its stage tasks too
            self._cancel_stages(run, "its pipeline run was cancelled")
        elif env.pipeline is not None:
            # One stage task of a run (found by id): the run cannot complete without it.
            self.fail_run(env, TaskState.CANCELLED, error)
        return True

    def outstanding(self, queue: str) -> int:
        return self._runtimes[queue].outstanding

    async def drain(self) -> None:
        runtimes = self._runtimes.values()
        while self._total > 0 or any(rt.in_flight for rt in runtimes):
            await self._drained.park()
        await trio.lowlevel.checkpoint()

    def wake_drain(self) -> None:
        if self._total == 0 and self._drained:
            self._drained.unpark_all()

    def abandon(self, reason: str) -> int:
        self._abandoned = True
        for room in self._room.values():
            room.unpark_all()  # submits waiting for room: refused, see submit()
        count = 0
        error = ErrorInfo("SystemStopping", reason)
        for env in list(self._tasks.values()):
            if not env.state.final and env.queue in self._runtimes:
                self.finish(self._runtimes[env.queue], env, TaskState.CANCELLED, None, error)
                count += 1
        for env in list(self._tasks.values()):
            if not env.state.final:
                self.finish(None, env, TaskState.CANCELLED, None, error)
        return count

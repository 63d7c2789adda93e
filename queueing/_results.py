"""The receipt side: each outcome reaches the receipt that waits for it."""

from __future__ import annotations

import heapq
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import outcome
import trio

from actors import Actor

from ._task import Task

if TYPE_CHECKING:
    from .brokers._contract import Broker

#: Seconds one `wait_settled` call waits before the receipts' loop asks again (with the
#: tasks watched since).
SETTLED_WAIT = 1.0
_current_task = trio.lowlevel.current_task
_reschedule = trio.lowlevel.reschedule
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_checkpoint = trio.lowlevel.checkpoint
_current_time = trio.current_time
_ABORTED = trio.lowlevel.Abort.SUCCEEDED
_heappush = heapq.heappush
_heappop = heapq.heappop
#: Made at each expiry (an outcome is unwrapped once) for what a timed wait is woken
#: with when its deadline passed: False (`set` wakes it with None).
_Value = outcome.Value


class Waiter:
    """Who waits for one task's outcome (`Task._waiter`): `trio.Event`'s `set`, `is_set`
    and `wait`, for the one caller a task's outcome usually has.

    The first caller to wait is kept in a slot and woken directly, with a bound method as
    its abort function: three objects for the collector while it waits (this waiter, the
    `wait` coroutine, the bound method), where an Event's wait holds seven (the Event, its
    set of tasks, its coroutine, a closure with its two cells and their tuple). Every
    receipt awaited before its outcome came makes one (tests/redis/test_client_objects.py
    counts what a waiting caller holds). Others waiting at the same time go to a set, each
    with a closure, as with an Event's callers.
    """

    __slots__ = ("_entry", "_first", "_flag", "_others")

    def __init__(self) -> None:
        self._flag = False
        self._first: trio.lowlevel.Task | None = None
        self._others: set[trio.lowlevel.Task] | None = None
        #: The first caller's entry in the `Timer`, while it waits with a deadline.
        self._entry: list[Any] | None = None

    def is_set(self) -> bool:
        """Whether `set` was called."""
        return self._flag

    def set(self) -> None:
        """Wake every caller of `wait`, now and later (idempotent)."""
        if self._flag:
            return
        self._flag = True
        first = self._first
        if first is not None:
            self._first = None
            _reschedule(first)
        others = self._others
        if others:
            self._others = None
            for task in others:
                _reschedule(task)

    async def wait(self) -> None:
        """Until `set` (a checkpoint if it was set already). Cancellable."""
        if self._flag:
            await _checkpoint()
        elif self._first is None:
            self._first = _current_task()
            await _wait_task_rescheduled(self._abort_first)
        else:
            # (Its own coroutine: the closure's variables would be cells, two more objects,
            # in every call of `wait`.)
            await self._wait_among_others()

    async def _wait_among_others(self) -> None:
        task = _current_task()
        others = self._others
        if others is None:
            others = self._others = set()
        others.add(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            others.discard(task)
            return _ABORTED

        await _wait_task_rescheduled(abort)

    def _abort_first(self, _: Any) -> trio.lowlevel.Abort:
        self._first = None  # cancelled: `set` must not wake it
        entry = self._entry
        if entry is not None:  # a timed wait: its deadline goes too
            self._entry = None
            timer().discard(entry)
        return _ABORTED

    async def wait_until(self, deadline: float) -> bool:
        """`wait`, until `deadline` at the latest (trio's clock): whether it was `set`
        (False: the deadline passed first; a deadline already passed looks once, after a
        checkpoint). Cancellable, as `wait`.

        The deadline is kept by the `Timer` (one for every timed wait of this trio run),
        not by a cancel scope of its own: trio keeps each scope's deadline in a heap that
        it clears of ended scopes only in bulk (once it holds 1,000 more entries than
        twice the live ones), so every `result(timeout=...)` left a scope and its heap
        entry alive for about a thousand more waits, long enough for the collector to
        move them to its oldest generation (docs/scale.md). The timer's entry goes when
        the wait ends."""
        if self._flag:
            await _checkpoint()
            return True
        if deadline <= _current_time():
            await _checkpoint()
            return self._flag
        task = _current_task()
        if self._first is not None:
            return await self._wait_among_others_until(task, deadline)
        self._first = task
        entry = self._entry = timer().add(deadline, task, self)
        woken = await _wait_task_rescheduled(self._abort_first)
        if woken is None:  # set: the deadline is of no use any more
            self._entry = None
            timer().discard(entry)
            return True
        return False

    async def _wait_among_others_until(self, task: trio.lowlevel.Task, deadline: float) -> bool:
        others = self._others
        if others is None:
            others = self._others = set()
        others.add(task)
        entry = timer().add(deadline, task, self)

        def abort(_: Any) -> trio.lowlevel.Abort:
            others.discard(task)
            timer().discard(entry)
            return _ABORTED

        woken = await _wait_task_rescheduled(abort)
        if woken is None:
            timer().discard(entry)
            return True
        return False

    def _expired(self, task: trio.lowlevel.Task) -> bool:
        """The `Timer`: `task`'s deadline passed. Whether it still waits here (else `set`
        woke it already, in the same turn of the scheduler: it is not to be woken twice)."""
        if self._first is task:
            self._first = None
            self._entry = None
            return True
        others = self._others
        if others is not None and task in others:
            others.discard(task)
            return True
        return False


class _Expiring(Protocol):
    """What a task waits on with a deadline of the `Timer` (a `Waiter`, a `Lot`)."""

    def _expired(self, task: trio.lowlevel.Task) -> bool: ...


class Lot:
    """`trio.lowlevel.ParkingLot`'s `park` and `unpark_all`, with a deadline kept by the
    run's `Timer` (`park_until`) instead of a cancel scope around each park: for a loop
    that parks once per wake-up, as the Redis receipts' `wait_settled` does once per read
    of notices."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        #: The parked tasks, and the `Timer` entry of each (None: no deadline).
        self._tasks: dict[trio.lowlevel.Task, list[Any] | None] = {}

    def __bool__(self) -> bool:
        """Whether a task is parked."""
        return bool(self._tasks)

    def unpark_all(self) -> None:
        """Wake every parked task."""
        tasks = self._tasks
        if tasks:
            self._tasks = {}
            for task in tasks:
                _reschedule(task)

    async def park_until(self, deadline: float = math.inf) -> bool:
        """Until `unpark_all` (True) or `deadline` (False, trio's clock; one already passed
        is a checkpoint). Cancellable."""
        if deadline <= _current_time():
            await _checkpoint()
            return False
        task = _current_task()
        entry = None if deadline == math.inf else timer().add(deadline, task, self)
        self._tasks[task] = entry

        def abort(_: Any) -> trio.lowlevel.Abort:
            parked = self._tasks.pop(task, None)
            if parked is not None:
                timer().discard(parked)
            return _ABORTED

        woken = await _wait_task_rescheduled(abort)
        if woken is None:
            if entry is not None:
                timer().discard(entry)
            return True
        return False

    def _expired(self, task: trio.lowlevel.Task) -> bool:
        """The `Timer`: `task`'s deadline passed (see `Waiter._expired`)."""
        if task in self._tasks:
            del self._tasks[task]
            return True
        return False


class Timer:
    """The deadlines of the timed waits for outcomes (`Waiter.wait_until`, `Lot`) of one
    trio run, in a heap of their own, and one system task that sleeps until the earliest.

    An entry is `[deadline, sequence, task, waiter]`, its task None once its wait ended
    (woken, cancelled or expired); ended entries leave the heap as they reach its top, and
    all at once when they are more than twice the live ones. The sleeper's deadline is
    moved earlier when an earlier wait comes, and is otherwise left as it is: when it
    passes with no wait due (the earliest ended meanwhile), the sleeper sleeps again until
    the next. Each wait's deadline is exact: it is woken at that time of trio's clock, as
    a cancel scope's deadline would (tests with `MockClock` see the same times)."""

    __slots__ = ("_heap", "_live", "_scope", "_sequence", "_target")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._live = 0
        self._sequence = 0
        #: When the sleeper wakes next (trio's clock), and its cancel scope.
        self._target = math.inf
        self._scope: trio.CancelScope | None = None

    def add(self, deadline: float, task: trio.lowlevel.Task, waiter: _Expiring) -> list[Any]:
        """Wake `task` (waiting on `waiter`) at `deadline`; its entry, to `discard` it."""
        self._sequence += 1
        entry = [deadline, self._sequence, task, waiter]
        _heappush(self._heap, entry)
        self._live += 1
        if deadline < self._target:
            self._target = deadline
            if self._scope is not None:
                self._scope.deadline = deadline
        return entry

    def discard(self, entry: list[Any]) -> None:
        """The wait of `entry` ended: its deadline is of no use any more."""
        if entry[2] is None:
            return
        entry[2] = entry[3] = None
        self._live -= 1
        heap = self._heap
        while heap and heap[0][2] is None:
            _heappop(heap)
        if len(heap) > 2 * self._live + 64:
            self._heap = heap = [live for live in heap if live[2] is not None]
            heapq.heapify(heap)

    async def run(self) -> None:
        """Until the run ends: wake each wait whose deadline passed."""
        while True:
            with trio.CancelScope(deadline=self._target) as self._scope:
                await trio.sleep_forever()
            self._scope = None
            self._expire()

    def _expire(self) -> None:
        now = _current_time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = _heappop(heap)
            task = entry[2]
            if task is None:
                continue
            waiter = entry[3]
            entry[2] = entry[3] = None
            self._live -= 1
            if waiter._expired(task):
                _reschedule(task, _Value(False))
        while heap and heap[0][2] is None:
            _heappop(heap)
        self._target = heap[0][0] if heap else math.inf


_TIMER: trio.lowlevel.RunVar[Timer] = trio.lowlevel.RunVar("queueing.receipt_timer")


def timer() -> Timer:
    """This trio run's `Timer` (made, and its sleeper started, at its first use)."""
    try:
        return _TIMER.get()
    except LookupError:
        made = Timer()
        _TIMER.set(made)
        trio.lowlevel.spawn_system_task(made.run, name="queueing receipt timer")
        return made


def copy_outcome(source: Task, target: Task) -> None:
    """Copy what a broker's record says of the outcome onto a local record."""
    target.state = source.state
    target.result = source.result
    target.error = source.error
    target.attempts = source.attempts
    target.deliveries = source.deliveries
    target.finished_at = source.finished_at
    if source.queue:
        target.queue = source.queue
    if target.route is not None:  # a pipeline's record: which stage ended it, and how
        target.stage = source.stage  # type: ignore[misc]
        target.fanned = source.fanned  # type: ignore[misc]


class Results:
    """Hands outcomes to receipts.

    In process, a worker's record of a task is its receipt's own: `deliver` wakes whoever
    awaits it. With a shared broker, outcomes are recorded by other processes: this one
    watches the tasks it submitted or looked up (weakly: a receipt nobody holds is not
    watched), and `run` asks the broker for the stored outcomes of those still open,
    copying each onto the local record. The stored outcome is what counts, so a lost
    notice never leaves a receipt waiting.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.shared = broker.shared
        # The tasks watched, by id, weakly (a receipt nobody holds is not watched). Its keys
        # are the live set handed to `wait_settled`: new ids are seen without a new call.
        self._refs: dict[str, _Ref] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        # The references' callback, bound once: `self._gone` makes a new bound method at
        # each use, one more object for the collector per task watched.
        self._on_gone: Callable[[_Ref], None] = self._gone
        if self.shared:
            broker.on_outcome(self.deliver_watched)

    def watch(self, task: Task) -> None:
        """Get `task`'s outcome from the broker when it has one (shared brokers)."""
        self._refs[task.id] = _ref(task, self._on_gone)
        if self._lot:
            self._lot.unpark_all()

    def watch_many(self, tasks: list[Task]) -> None:
        """`watch` each of these tasks."""
        refs, gone = self._refs, self._on_gone
        for task in tasks:
            ref = _Ref(task, gone)
            ref.key = key = task.id
            refs[key] = ref
        if self._lot:
            self._lot.unpark_all()

    def watched(self, task_id: str) -> Task | None:
        """The local record of a watched task."""
        ref = self._refs.get(task_id)
        return None if ref is None else ref()

    def unwatch(self, task_id: str) -> None:
        """Stop watching a task (one whose acceptance is unknown: its receipt asks the
        broker again instead)."""
        self._refs.pop(task_id, None)
        if not self._refs and self._idle:
            self._idle.unpark_all()

    def _gone(self, ref: _Ref) -> None:
        key = ref.key
        if self._refs.get(key) is ref:
            del self._refs[key]

    def deliver(self, record: Task) -> None:
        """`record` has its outcome: the local receipt of that task has it too, now."""
        if self.shared and self.deliver_watched(record):
            return
        waiter = record._waiter
        if waiter is not None:
            waiter.set()
        if not self._refs and self._idle:
            self._idle.unpark_all()

    def deliver_watched(self, record: Task) -> bool:
        """`deliver` a broker's record if its task is watched here; whether it was (a
        shared broker's hook, once per notice; `deliver`'s shared case)."""
        refs = self._refs
        ref = refs.pop(record.id, None)
        if ref is None:
            return False
        local = ref()
        if local is None or local is record:
            local = record
        else:
            copy_outcome(record, local)
        waiter = local._waiter
        if waiter is not None:
            waiter.set()
        if not refs and self._idle:
            self._idle.unpark_all()
        return True

    def close(self) -> None:
        """The system is closed: wake whoever awaits a watched task (its receipt then says
        the system is closed); no outcome will come through this system any more."""
        for ref in list(self._refs.values()):
            task = ref()
            if task is not None and task._waiter is not None:
                task._waiter.set()
        self._refs.clear()

    async def wait_idle(self) -> None:
        """Wait until every watched task's outcome has reached its receipt."""
        while self._refs:
            with trio.move_on_after(SETTLED_WAIT):
                await self._idle.park()
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        """Until cancelled: deliver the outcomes of the watched tasks as they are stored."""
        ids = self._refs.keys()  # live: tasks watched meanwhile are seen by the same call
        while True:
            if not ids:
                await self._lot.park()
                continue
            for record in await self.broker.wait_settled(ids, SETTLED_WAIT):
                if record.state.final:
                    self.deliver(record)


class _Ref(weakref.ref[Task]):
    """A weak reference that knows its key (as the standard library's KeyedRef). Made
    with `weakref.ref`'s own constructor and its key set after (`_ref`): overriding
    `__new__` and `__init__`, as KeyedRef does, made each one several times dearer."""

    __slots__ = ("key",)
    key: str


def _ref(task: Task, callback: Callable[[_Ref], None]) -> _Ref:
    ref = _Ref(task, callback)
    ref.key = task.id
    return ref


#: Seconds between two reads of a shared broker's figures (for `stats()`).
FIGURES_EVERY = 2.0


class ReceiptsActor(Actor):
    """The actor on the receipt side of a shared broker: runs `Results.run`, and keeps the
    system's figures of the broker fresh."""

    def __init__(self, results: Results, refresh: Callable[[], Awaitable[None]]) -> None:
        self.results = results
        self.refresh = refresh
        self._scope: trio.CancelScope | None = None

    async def run(self) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.results.run)
                while True:
                    await self.refresh()
                    await trio.sleep(FIGURES_EVERY)

    def on_stop_requested(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

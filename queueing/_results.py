"""The receipt side: each outcome reaches the receipt that waits for it."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

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
_ABORTED = trio.lowlevel.Abort.SUCCEEDED


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

    __slots__ = ("_first", "_flag", "_others")

    def __init__(self) -> None:
        self._flag = False
        self._first: trio.lowlevel.Task | None = None
        self._others: set[trio.lowlevel.Task] | None = None

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
        return _ABORTED


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

"""Timers owned by an actor (`send_after`, `send_every`) and the receive timeout message."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._exceptions import ActorStopped, InvalidConfig
from ._notices import _Notice

if TYPE_CHECKING:
    from ._actor import Actor, _Cell
    from ._system import ActorSystem


# Cancelled timers left in the heap before it is worth compacting it.
_COMPACT_AT = 64


@attrs.frozen
class ReceiveTimeout:
    """The message an actor receives when its mailbox stayed empty for `seconds`
    (see `Actor.set_receive_timeout`)."""

    seconds: float


def check_delay(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidConfig(f"{what} must be a number of seconds, got {value!r}")
    if value < 0 or math.isinf(value):
        raise InvalidConfig(f"{what} must be >= 0 and finite, got {value!r}")


class Timer:
    """A message an actor scheduled for itself with `send_after` or `send_every`.

    Cancel it with `cancel()`; it is cancelled anyway when the incarnation that made it
    ends (a stop or a restart), so a timer never reaches an instance that did not ask for
    it.
    """

    __slots__ = (
        "_cell",
        "_key",
        "_owner",
        "_service",
        "active",
        "interval",
        "message",
        "skipped",
    )

    def __init__(
        self,
        cell: _Cell,
        owner: Actor[Any],
        message: Any,
        key: Hashable,
        interval: float | None,
    ) -> None:
        self._cell = cell
        self._owner = owner
        self._key = key
        self._service: _TimerService | None = None  # while in the service's heap
        self.message = message
        self.interval = interval
        self.active = True
        # Ticks of a periodic timer that found the mailbox full and were left out.
        self.skipped = 0

    def cancel(self) -> None:
        """Cancel the timer: its message is not sent (again). Harmless if done already."""
        if self.active:
            self.active = False
            if self._service is not None:
                self._service.cancelled()
            timers = _timers_of(self._owner)
            if timers.get(self._key) is self:
                del timers[self._key]

    def __repr__(self) -> str:
        kind = f"every {self.interval:g}s" if self.interval is not None else "once"
        state = "active" if self.active else "done"
        return f"<Timer {type(self.message).__name__} {kind} for {self._cell.name!r}, {state}>"

    def _fire(self, now: float) -> bool:
        """Deliver the message; True if the timer is to fire again."""
        cell = self._cell
        self._service = None  # out of the heap, until added again
        if not self.active or cell.instance is not self._owner:
            self.active = False  # its incarnation has ended
            return False
        box = cell.mailbox
        periodic = self.interval is not None
        if len(box) < box.capacity:
            try:
                box.put_nowait(self.message)
            except ActorStopped:
                self.active = False
                return False
        elif periodic:
            self.skipped += 1
        else:
            # Full: a single timer's message goes ahead of the queue rather than wait or
            # be lost (one per timer, so the mailbox stays bounded).
            box.put_system(_Notice(self.message))
        if periodic:
            return True
        self.cancel()
        return False


def _timers_of(actor: Actor[Any]) -> dict[Hashable, Timer]:
    timers: dict[Hashable, Timer] | None = actor.__dict__.get("_timers")
    if timers is None:
        timers = actor.__dict__["_timers"] = {}
    return timers


def start(
    actor: Actor[Any], delay: float, message: Any, *, key: Hashable | None, interval: float | None
) -> Timer:
    check_delay("delay", delay)
    if interval is not None:
        check_delay("interval", interval)
        if interval == 0:
            raise InvalidConfig("a periodic timer's interval must be > 0")
    cell = actor._cell
    timers = _timers_of(actor)
    timer = Timer(cell, actor, message, key, interval)
    if key is None:
        timer._key = timer
    else:
        old = timers.get(key)
        if old is not None:
            old.cancel()
    timers[timer._key] = timer
    _service(cell.system).add(timer, trio.current_time() + delay)
    return timer


def cancel_all(actor: Actor[Any]) -> None:
    """Cancel the timers of an incarnation that has ended."""
    timers: dict[Hashable, Timer] | None = actor.__dict__.get("_timers")
    if timers:
        for timer in list(timers.values()):
            timer.cancel()


def _service(system: ActorSystem) -> _TimerService:
    service = system._timers
    if service is None:
        service = system._timers = _TimerService()
        system._nursery.start_soon(service.run, name="actors timers")
    return service


class _TimerService:
    """Fires the timers of one system: one task and a heap, whatever the number of timers.
    Started by the first timer; stopped with the system."""

    __slots__ = ("_dead", "_heap", "_lot", "_scope", "_seq", "_wake_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        # Cancelled timers still in the heap: dropped all at once when they are most of it
        # (an actor that pushes a timeout back on every message cancels one per message).
        self._dead = 0
        self._seq = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()
        self._scope = trio.CancelScope()
        self._wake_at = math.inf

    def add(self, timer: Timer, when: float) -> None:
        timer._service = self
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if when < self._wake_at:
            self._lot.unpark_all()

    def cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > _COMPACT_AT and 2 * self._dead > len(heap):
            heap[:] = [entry for entry in heap if entry[2].active]
            heapq.heapify(heap)
            self._dead = 0

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            heap = self._heap
            while True:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    _, _, timer = heapq.heappop(heap)
                    if not timer.active:
                        self._dead = max(0, self._dead - 1)
                    if timer._fire(now):
                        assert timer.interval is not None
                        self.add(timer, now + timer.interval)
                while heap and not heap[0][2].active:
                    heapq.heappop(heap)  # cancelled: no need to wake up for it
                    self._dead = max(0, self._dead - 1)
                self._wake_at = heap[0][0] if heap else math.inf
                with trio.CancelScope(deadline=self._wake_at):
                    await self._lot.park()

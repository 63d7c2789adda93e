"""`Schedule`: periodic tasks (cron expressions or fixed intervals), and the actor that
submits them."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import trio

from actors import Actor

from ._exceptions import InvalidQueue, QueueingError
from ._validate import priority as check_priority
from ._validate import seconds
from ._validate import tenant as check_tenant

log = logging.getLogger("queueing")

#: Seconds after which the scheduler reads the wall clock again (its sleeps run on trio's
#: clock, which does not follow changes of the wall clock).
REANCHOR_EVERY = 3600.0


def _check_name(name: object) -> None:
    from ._queue import _check_name as check

    check("schedule", name)


@attrs.frozen
class Schedule:
    """A task submitted on a schedule: by a cron expression, or every so many seconds.

    Pass it to `run_system()` / `open_system()` with the queues. Every process that serves
    the queues runs the schedule; each tick is submitted once all the same (its task's
    `key=` is the schedule's name and the tick's time), as long as the queue keeps the
    outcome (`result_ttl`). A tick missed while no process ran is skipped, unless
    `catch_up=True`.

    Args:
        name: the schedule's name (letters, digits, `_`, `.`, `-`).
        queue: the queue or pipeline that gets the task.
        cron: a cron expression (`"0 3 * * *"`: at 03:00), in `timezone`.
        every: seconds between two ticks, aligned on the epoch (so every process agrees on
            the ticks): `every=60` ticks at each whole minute.
        payload: the payload of every task (validated as any submit's).
        timezone: an IANA time zone name for `cron` ("Europe/Paris"); default UTC.
        priority: the priority of every task (`submit(priority=)`: 0, the default, to 9).
        tenant: the tenant of every task (`submit(tenant=)`; None: the queue's default
            one, or its `tenant` function's), for fair share (docs/concepts/fair-share.md).
        catch_up: when a process starts, submit the most recent tick that is due (only
            that one, however many were missed while no process ran). It is submitted with
            that tick's key, so it runs once whether it ran already or N processes start
            together; a tick older than the queue's `result_ttl` is skipped (logged), as
            its task's record, which tells whether it ran, may be gone.
    """

    name: str
    queue: str
    cron: str | None = None
    every: float | None = None
    payload: Any = None
    timezone: str = "UTC"
    priority: int = 0
    catch_up: bool = False
    tenant: str | None = None
    _zone: ZoneInfo = attrs.field(init=False, repr=False, eq=False, default=None)

    def __attrs_post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.queue, str) or not self.queue:
            raise InvalidQueue(
                f"Schedule({self.name!r}) needs the name of a queue, got {self.queue!r}"
            )
        if (self.cron is None) == (self.every is None):
            raise InvalidQueue(
                f"Schedule({self.name!r}) takes one of cron= (an expression such as "
                "'*/5 * * * *') or every= (seconds)"
            )
        if self.every is not None:
            seconds("every", self.every)
        check_priority(self.priority)
        if self.tenant is not None:
            check_tenant(self.tenant)
        if not isinstance(self.catch_up, bool):
            raise InvalidQueue(
                f"Schedule({self.name!r}): catch_up must be True or False, got {self.catch_up!r}"
            )
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise InvalidQueue(
                f"Schedule({self.name!r}): unknown timezone {self.timezone!r} (use an IANA "
                "name such as 'UTC' or 'Europe/Paris')"
            ) from exc
        if self.cron is not None:
            croniter = _croniter(self.name)
            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise InvalidQueue(
                    f"Schedule({self.name!r}): {self.cron!r} is not a cron expression "
                    "(five fields: minute hour day-of-month month day-of-week)"
                )
        object.__setattr__(self, "_zone", zone)

    def next_tick(self, after: float) -> float:
        """The first tick strictly after `after` (wall-clock seconds)."""
        if self.every is not None:
            return (math.floor(after / self.every) + 1) * self.every
        croniter = _croniter(self.name)
        assert self.cron is not None
        ticks = croniter(self.cron, datetime.fromtimestamp(after, self._zone))
        tick = float(ticks.get_next(float))
        while self._repeated(tick):
            tick = float(ticks.get_next(float))
        return tick

    def last_tick(self, at: float) -> float:
        """The latest tick at or before `at` (wall-clock seconds)."""
        if self.every is not None:
            return math.floor(at / self.every) * self.every
        croniter = _croniter(self.name)
        assert self.cron is not None
        start = datetime.fromtimestamp(at, self._zone)
        if (
            croniter.match(self.cron, start)
            and start.second == 0
            and not start.microsecond
            and not self._repeated(at)
        ):
            return at
        ticks = croniter(self.cron, start)
        tick = float(ticks.get_prev(float))
        while self._repeated(tick):
            tick = float(ticks.get_prev(float))
        return tick

    def _repeated(self, tick: float) -> bool:
        """Whether `tick` is the second pass of a wall-clock time that repeats when the
        clocks go back (02:30 on a fall-back day), for an expression with fixed hours: that
        time's job ran at its first pass (as cron does: a job whose hour field is `*`, or
        `*/n`, runs at both)."""
        assert self.cron is not None
        fields = self.cron.split()
        hours = fields[1] if len(fields) >= 5 else "*" if fields == ["@hourly"] else "0"
        if hours.startswith("*"):
            return False
        return datetime.fromtimestamp(tick, self._zone).fold == 1

    def key(self, tick: float) -> str:
        """The submit key of one tick (the same in every process)."""
        return f"schedule:{self.name}:{tick:.3f}"


class Scheduler(Actor):
    """Submits the schedules' tasks at their ticks."""

    def __init__(
        self,
        schedules: tuple[Schedule, ...],
        submit: Callable[..., Awaitable[Any]],
        kept_for: Callable[[str], float] | None = None,
    ) -> None:
        self.schedules = schedules
        self.submit = submit
        #: Seconds a queue (or pipeline) keeps a task's record: how far back `catch_up`
        #: can tell whether a tick ran.
        self.kept_for = kept_for
        self._scope: trio.CancelScope | None = None

    async def run(self) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                for schedule in self.schedules:
                    nursery.start_soon(self._keep, schedule, name=f"schedule {schedule.name}")

    def on_stop_requested(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _keep(self, schedule: Schedule) -> None:
        clock = _WallClock()
        now = clock.now()
        tick = schedule.next_tick(now)
        if schedule.catch_up:
            await self._catch_up(schedule, schedule.last_tick(now), now)
        while True:
            await trio.sleep(max(0.0, tick - clock.now()))
            await self._fire(schedule, tick)
            tick = schedule.next_tick(max(tick, clock.now()))

    async def _catch_up(self, schedule: Schedule, missed: float, now: float) -> None:
        """Submit the latest tick due (its key makes it once, if it ran or another process
        submits it too), unless it is too old for its record to tell."""
        kept = self.kept_for(schedule.queue) if self.kept_for is not None else math.inf
        if now - missed > kept:
            log.warning(
                "schedule %r: the tick of %s is not caught up: it is older than the "
                "queue's result_ttl (%g s), so whether it ran cannot be told",
                schedule.name,
                datetime.fromtimestamp(missed).isoformat(),
                kept,
            )
            return
        await self._fire(schedule, missed)

    async def _fire(self, schedule: Schedule, tick: float) -> None:
        try:
            await self.submit(
                schedule.queue,
                schedule.payload,
                key=schedule.key(tick),
                priority=schedule.priority,
                tenant=schedule.tenant,
            )
        except QueueingError as exc:
            log.warning(
                "schedule %r: the task of %s was not submitted: %s",
                schedule.name,
                datetime.fromtimestamp(tick).isoformat(),
                exc,
            )


class _WallClock:
    """Wall-clock time that moves with trio's clock (so virtual time in tests moves it),
    read again from the wall clock every `REANCHOR_EVERY` seconds."""

    def __init__(self) -> None:
        self._anchor()

    def _anchor(self) -> None:
        self.wall = time.time()
        self.trio = trio.current_time()

    def now(self) -> float:
        elapsed = trio.current_time() - self.trio
        real = type(trio.lowlevel.current_clock()).__name__ == "SystemClock"
        if elapsed > REANCHOR_EVERY and real:
            self._anchor()
            elapsed = 0.0
        return self.wall + elapsed


def _croniter(name: str) -> Any:
    """The cron expression parser (the `cron` extra), or a clear error without it."""
    try:
        from croniter import croniter  # type: ignore[import-untyped]
    except ImportError as exc:
        raise InvalidQueue(
            f"Schedule({name!r}, cron=...) needs the croniter package: "
            "pip install 'trio-queueing[cron]' (or use every= seconds)"
        ) from exc
    return croniter

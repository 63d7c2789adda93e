"""`RateLimit`: at most `count` task starts per `per` seconds, and its parser.

The algorithm is GCRA (the generic cell rate algorithm) with bookings: a queue's (or a
key's) limit keeps one time, the next free start (its "theoretical arrival time"). Starts
are spread evenly, one every `per / count` seconds, as Celery's `rate_limit` spreads them;
a worker that asks books the next free start if it is due soon enough and waits for it;
a task of a `rate_key` is booked its key's next start however far off, and deferred to it
(the booking is kept under its id until it comes back). `LocalRates` is the in-process
form (the memory broker's, and the contract's default); shared brokers keep the same
times in their storage and book in one atomic step (a Lua script on Redis, a transaction
on SQLite).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from ._exceptions import InvalidQueue

#: The units a rate limit string takes, in seconds.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_FORMS = (
    '"<count>/s", "<count>/m" or "<count>/h" (e.g. "100/s"), RateLimit(100, per=1.0), or '
    "a (count, timedelta) pair"
)
_TEXT = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
#: Per-key times kept in process before the stale ones (start due in the past) are dropped.
LOCAL_KEYS = 10_000


@attrs.frozen
class RateLimit:
    """At most `count` task starts per `per` seconds, spread evenly (one every
    `per / count` seconds). `Queue(rate_limit=)` takes one, or `"100/s"` (`/m`, `/h`),
    or a `(count, timedelta)` pair.

    Args:
        count: starts per period, an int >= 1.
        per: the period in seconds (> 0).
    """

    count: int
    per: float = 1.0

    def __attrs_post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidQueue(
                f"rate_limit: the count must be an int >= 1, got {self.count!r}; "
                f"rate_limit takes {_FORMS}"
            )
        per = self.per
        if (
            isinstance(per, bool)
            or not isinstance(per, int | float)
            or not math.isfinite(per)
            or per <= 0
        ):
            raise InvalidQueue(
                f"rate_limit: per must be a number of seconds > 0, got {per!r}; "
                f"rate_limit takes {_FORMS}"
            )

    @property
    def interval(self) -> float:
        """Seconds between two starts."""
        return self.per / self.count

    @property
    def slack(self) -> float:
        """Seconds a start of a key with bookings may come early after late ones (see
        `SLACK_SHARE`)."""
        return max(self.interval, self.per * SLACK_SHARE)

    def __str__(self) -> str:
        for unit, seconds in UNITS.items():
            if self.per == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.per:g}s"


def rate_limit(value: Any) -> RateLimit | None:
    """`Queue(rate_limit=)` as a `RateLimit` (None stays None); raises `InvalidQueue` naming
    the field and the accepted forms."""
    if value is None or isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        match = _TEXT.match(value)
        if match is None or int(match.group(1)) < 1:
            raise InvalidQueue(f"rate_limit {value!r} is not a rate: it takes {_FORMS}")
        return RateLimit(int(match.group(1)), UNITS[match.group(2)])
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], timedelta):
        return RateLimit(value[0], value[1].total_seconds())
    raise InvalidQueue(f"rate_limit {value!r} is not a rate: it takes {_FORMS}")


def rate_key(value: Any) -> Callable[[Any], Any] | None:
    """`Queue(rate_key=)`: None or a function of the payload."""
    if value is not None and not callable(value):
        raise InvalidQueue(
            f"rate_key must be a function of the payload (e.g. lambda job: job.customer), "
            f"got {value!r}"
        )
    return value  # type: ignore[no-any-return]


#: Starts of a key with bookings (`rate_key`) also pass a strict limiter of the starts
#: actually made, which lets a start come this share of the limit's period (or one
#: interval, if longer) early: a task that came back late for its booked start then starts
#: at once rather than losing it, without bunching up with the starts booked after it. So
#: a period holds at most 5 % more starts than the limit (one more, under 20 a period).
SLACK_SHARE = 0.05
#: Seconds a booking is kept past its time for its task to come back (later, it books anew).
BOOKING_KEEP = 3600.0


def take_for_task(
    booked: float | None,
    booked_at: float | None,
    started_at: float | None,
    now: float,
    limit: RateLimit,
    within: float,
) -> tuple[float, float | None, float | None, float | None]:
    """The booking step of `take_start` with a task id (one key), on plain numbers:
    `booked` is the task's booking (None: none yet), `booked_at` the key's next free
    booking, `started_at` the key's next free start by the starts actually made. Returns
    `(wait, booked, booked_at, started_at)`, the three as they are to be stored: the task's
    booking None once it is used (`wait` at most `within`: the start is taken then)."""
    if booked is None:
        booked = now if booked_at is None or booked_at < now else booked_at
        booked_at = booked + limit.interval
    due = booked if started_at is None else max(booked, started_at - limit.slack)
    wait = due - now
    if wait > within:
        return wait, booked, booked_at, started_at
    at = max(due, now)
    started_at = at + limit.interval if started_at is None else max(started_at, at) + limit.interval
    return max(wait, 0.0), None, booked_at, started_at


class LocalRates:
    """Rate limits kept in this process (`Broker.take_start`'s default): exact for an
    in-process broker, per process for a shared one that keeps none of its own."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        #: Per (queue, key): the next free booking (or start, without bookings).
        self._next: dict[tuple[str, str], float] = {}
        #: Per (queue, key) with bookings: the next free start by the starts made.
        self._started: dict[tuple[str, str], float] = {}
        #: Starts booked for deferred tasks, by (queue, task id).
        self._booked: dict[tuple[str, str], float] = {}
        #: Per queue: [limit, its period, window number, starts in it, in the one before,
        #: all starts] (see `figures`).
        self._figures: dict[str, list[Any]] = {}

    def take(
        self, queue: str, limit: RateLimit, key: str, within: float, task_id: str | None
    ) -> float:
        """`Broker.take_start`: see there."""
        now = self.clock()
        slot = (queue, key)
        if task_id is not None:
            wait, booked, next_booking, started_at = take_for_task(
                self._booked.pop((queue, task_id), None),
                self._next.get(slot),
                self._started.get(slot),
                now,
                limit,
                within,
            )
            if next_booking is not None:
                self._next[slot] = next_booking
            if started_at is not None:
                self._started[slot] = started_at
            if booked is None:
                self._count(queue, limit, now)
            else:
                self._booked[(queue, task_id)] = booked
            self._prune(now)
            return wait
        start = max(self._next.get(slot, now), now)
        wait = start - now
        if wait <= within:
            self._next[slot] = start + limit.interval
            self._count(queue, limit, now)
            self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        if len(self._next) > LOCAL_KEYS:
            self._next = {s: t for s, t in self._next.items() if t > now}
            self._started = {s: t for s, t in self._started.items() if t > now}
        if len(self._booked) > LOCAL_KEYS:
            self._booked = {s: t for s, t in self._booked.items() if t > now - BOOKING_KEEP}

    def _count(self, queue: str, limit: RateLimit, now: float) -> None:
        window = math.floor(now / limit.per)
        found = self._figures.get(queue)
        if found is None:
            found = self._figures[queue] = [str(limit), limit.per, window, 0, 0, 0]
        if found[2] != window:
            found[4] = found[3] if found[2] == window - 1 else 0
            found[2], found[3] = window, 0
        found[3] += 1
        found[5] += 1

    def figures(self) -> dict[str, dict[str, Any]]:
        """`Broker.rate_figures` of the limits kept here."""
        now = self.clock()
        found = {}
        for queue, (limit, per, window, cur, prev, started) in self._figures.items():
            current = math.floor(now / per)
            last = prev if window == current else cur if window == current - 1 else 0
            found[queue] = {"limit": limit, "last_period": last, "started": started}
        return found

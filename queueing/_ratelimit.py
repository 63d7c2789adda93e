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
    def late(self) -> float:
        """Seconds a task may come back after its booked start and still use it."""
        return max(self.interval, self.per * LATE_SHARE)

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


#: A task that comes back for its booked start later than this share of the limit's
#: period (or one interval, if longer) books anew: started that late, it could bunch up
#: with the starts booked after it. So any period holds at most 5 % more starts than the
#: limit (one more, for a limit under 20 a period), however late tasks come back.
LATE_SHARE = 0.05
#: Seconds a booking is kept past the latest it may be used (then it is dropped).
BOOKING_MARGIN = 1.0


class LocalRates:
    """Rate limits kept in this process (`Broker.take_start`'s default): exact for an
    in-process broker, per process for a shared one that keeps none of its own."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._next: dict[tuple[str, str], float] = {}
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
        if task_id is not None:
            booked = self._booked.pop((queue, task_id), None)
            if booked is not None:
                wait = booked - now
                if wait > within:
                    self._booked[(queue, task_id)] = booked  # not yet: kept
                    return wait
                if -wait <= limit.late:
                    self._count(queue, limit, now)
                    return max(wait, 0.0)
                # Too late to use: it books anew, below.
        slot = (queue, key)
        start = max(self._next.get(slot, now), now)
        wait = start - now
        if wait <= within or task_id is not None:
            self._next[slot] = start + limit.interval
            if wait <= within:
                self._count(queue, limit, now)
            else:
                assert task_id is not None
                self._booked[(queue, task_id)] = start
            if len(self._next) > LOCAL_KEYS:
                self._next = {s: t for s, t in self._next.items() if t > now}
            if len(self._booked) > LOCAL_KEYS:
                stale = now - limit.late - BOOKING_MARGIN
                self._booked = {s: t for s, t in self._booked.items() if t > stale}
        return wait

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

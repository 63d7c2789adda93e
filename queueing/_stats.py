"""Counters and latency percentiles for `system.stats()`."""

from __future__ import annotations

import attrs

_RING = 4096


class Latency:
    """The last few thousand latencies in a ring: flat memory, percentiles on demand."""

    __slots__ = ("_i", "_ring")

    def __init__(self) -> None:
        self._ring: list[float] = []
        self._i = 0

    def add(self, seconds: float) -> None:
        ring = self._ring
        if len(ring) < _RING:
            ring.append(seconds)
        else:
            ring[self._i] = seconds
            self._i = (self._i + 1) % _RING

    def percentile(self, p: float) -> float | None:
        if not self._ring:
            return None
        ordered = sorted(self._ring)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]


@attrs.frozen
class QueueStats:
    """One queue's figures. Counts are totals since the system started.

    `depth` is tasks waiting (ready or scheduled for a retry), `in_flight` tasks running;
    `outstanding` = depth + in_flight (bounded by `maxsize`). Latencies are submit to
    success, in seconds, over the last few thousand tasks (None before the first).
    """

    name: str
    depth: int
    scheduled: int
    in_flight: int
    outstanding: int
    maxsize: int
    submitted: int
    succeeded: int
    failed: int
    retried: int
    dead_lettered: int
    cancelled: int
    expired: int
    restarts: int
    workers: int
    p50: float | None
    p99: float | None

    @property
    def finished(self) -> int:
        """Tasks that reached an outcome: succeeded + failed + dead-lettered + cancelled +
        expired."""
        return self.succeeded + self.failed + self.dead_lettered + self.cancelled + self.expired

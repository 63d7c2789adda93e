"""Counters and latency percentiles for `system.stats()`."""

from __future__ import annotations

import attrs

_RING = 4096  # a power of two
_MASK = _RING - 1
#: How many latencies a `Latency` keeps (the newest).
RING = _RING


class Latency:
    """The last few thousand latencies in a ring: flat memory, percentiles on demand."""

    __slots__ = ("_count", "_ring")

    def __init__(self) -> None:
        self._ring: list[float] = [0.0] * _RING
        self._count = 0

    def add(self, seconds: float) -> None:
        count = self._count
        self._ring[count & _MASK] = seconds
        self._count = count + 1

    @property
    def count(self) -> int:
        """Latencies added so far (the ring keeps the newest `RING` of them)."""
        return self._count

    def newest(self, n: int) -> list[float]:
        """The newest `n` latencies, oldest first (at most the ring's `RING`)."""
        count = self._count
        n = min(n, count, _RING)
        return [self._ring[i & _MASK] for i in range(count - n, count)]

    def percentile(self, p: float) -> float | None:
        if not self._count:
            return None
        ordered = sorted(self._ring[: min(self._count, _RING)])
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]


@attrs.frozen
class QueueStats:
    """One queue's figures. Counts are totals since the system started.

    `depth` is tasks waiting (ready or scheduled for a retry), `in_flight` tasks running;
    `outstanding` = depth + in_flight (bounded by `maxsize`). Latencies are submit to
    success, in seconds, over the last few thousand tasks (None before the first).
    `workers` is how many workers this process runs for the queue (0 in a `connect()`
    client, which runs none: `queueing status` lists every process's).
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

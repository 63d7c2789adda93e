"""Counters and latency percentiles for `system.stats()`."""

from __future__ import annotations

import itertools
from collections import deque

import attrs

#: How many latencies a `Latency` keeps (the newest).
RING = 4096


class Latency(deque[float]):
    """The last few thousand latencies, oldest first: bounded memory, percentiles on demand.

    `add(seconds)` is `deque.append` itself (the oldest drops out past `RING`): a call into
    C with no Python frame, for what runs once per task. How many were added in all is the
    queue's `succeeded` count (the engine adds one latency per success).
    """

    __slots__ = ()

    add = deque.append

    def __init__(self) -> None:
        super().__init__((), RING)

    def newest(self, n: int) -> list[float]:
        """The newest `n` latencies, oldest first (at most the ring's `RING`)."""
        n = min(n, len(self))
        return list(itertools.islice(self, len(self) - n, None))

    def percentile(self, p: float) -> float | None:
        if not self:
            return None
        ordered = sorted(self)
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

"""`QueueFull.retry_after`: when a refused caller should come back, from the queue's recent
drain rate (an HTTP handler turns it into a `Retry-After` header)."""

from __future__ import annotations

from collections import deque

#: The hint is the time the queue needs to drain this share of its maxsize.
RETRY_SHARE = 0.1
#: Bounds of the hint (seconds): never "now", never so long a client gives up.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0
#: The hint when no drain rate is known yet (seconds).
DEFAULT_RETRY_AFTER = MIN_RETRY_AFTER
#: Samples older than this (seconds) no longer count as recent.
WINDOW = 30.0
#: A rate needs samples at least this far apart (seconds), and takes one sample per gap.
MIN_SPAN = 0.5
_SAMPLES = int(WINDOW / MIN_SPAN) + 1


class DrainMeter:
    """The recent drain rate of one queue (tasks that left it, per second).

    Each sample is (time, outstanding, accepted): `outstanding` as last known, `accepted`
    this process's count of accepted submissions. Tasks drained between two samples are
    `outstanding_then - outstanding_now + accepted_since`: exact in process; over a shared
    broker, submissions by other processes are not counted, so the rate is this process's
    share of the drain (and the hint errs long, the safe side).
    """

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=_SAMPLES)

    def sample(self, now: float, outstanding: int, accepted: int) -> None:
        """Record where the queue stands (at most one sample per `MIN_SPAN`)."""
        samples = self._samples
        if not samples or now - samples[-1][0] >= MIN_SPAN:
            samples.append((now, outstanding, accepted))

    def rate(self, now: float, outstanding: int, accepted: int) -> float | None:
        """Tasks drained per second since the oldest recent sample; None if unknown."""
        samples = self._samples
        while samples and now - samples[0][0] > WINDOW:
            samples.popleft()
        if not samples:
            return None
        then, was_outstanding, was_accepted = samples[0]
        span = now - then
        drained = was_outstanding - outstanding + accepted - was_accepted
        if span < MIN_SPAN or drained <= 0:
            return None
        return drained / span


def retry_after(maxsize: int, rate: float | None) -> float:
    """Seconds to wait before submitting again to a full queue of `maxsize` that drains at
    `rate` tasks a second: the time to drain `RETRY_SHARE` of it, within bounds."""
    if rate is None or rate <= 0:
        return DEFAULT_RETRY_AFTER
    return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, RETRY_SHARE * maxsize / rate))

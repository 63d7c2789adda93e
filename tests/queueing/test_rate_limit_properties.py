"""The rate limit's bookings (`LocalRates`, the steps every broker takes), on any arrivals:
every task starts once, and no period holds more starts than the limit allows, however
late tasks come back for their bookings."""

from __future__ import annotations

import heapq
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from queueing import RateLimit
from queueing._ratelimit import LocalRates

SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
#: Seconds ahead a worker without `rate_key` books (as the engine does).
AHEAD = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def most_in_a_period(starts: list[float], per: float) -> int:
    """The most starts in any half-open window of `per` seconds."""
    ordered = sorted(starts)
    most = 0
    for i, first in enumerate(ordered):
        end = first + per - 1e-9
        most = max(most, sum(1 for t in ordered[i:] if t < end))
    return most


def run(
    limit: RateLimit, arrivals: list[float], lateness: list[float], keyed: bool
) -> dict[int, float]:
    """Each task asks at its arrival; refused, it comes back when told, plus its lateness
    (the time its broker and workers take to hand it back). Returns each task's start."""
    clock = Clock()
    rates = LocalRates(clock)
    events = [(at, n) for n, at in enumerate(arrivals)]
    heapq.heapify(events)
    started: dict[int, float] = {}
    while events:
        clock.now, n = heapq.heappop(events)
        late = lateness[n % len(lateness)]
        if keyed:
            wait = rates.take("q", limit, "k", 0.0, f"task-{n}")
            if wait <= 0:
                started[n] = clock.now
            else:
                heapq.heappush(events, (clock.now + wait + late, n))
        else:
            wait = rates.take("q", limit, "", AHEAD, None)
            if wait <= AHEAD:
                started[n] = clock.now + wait  # its worker sleeps until its start
            else:
                heapq.heappush(events, (clock.now + wait - AHEAD + late, n))
    return started


arrivals = st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60)
limits = st.builds(RateLimit, st.integers(1, 30), st.sampled_from([0.5, 1.0, 60.0]))
lateness = st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=8)


@SETTINGS
@given(limits, arrivals, lateness)
# Tasks booked for 1, 2, 3 and 4 s that all come back at 4 s must not all start then.
@example(RateLimit(1, 1.0), [0.0] * 5, [0.0, 3.0, 2.0, 1.0, 0.0])
def test_a_key_with_bookings_never_exceeds_its_limit_plus_its_slack(
    limit: RateLimit, arrivals: list[float], lateness: list[float]
) -> None:
    started = run(limit, arrivals, lateness, keyed=True)
    assert sorted(started) == list(range(len(arrivals)))  # every task starts, once
    allowed = limit.count + math.floor(limit.slack / limit.interval + 1e-9) + 1
    assert most_in_a_period(list(started.values()), limit.per) <= allowed


@SETTINGS
@given(limits, arrivals, lateness)
def test_the_queue_as_a_whole_never_exceeds_its_limit(
    limit: RateLimit, arrivals: list[float], lateness: list[float]
) -> None:
    started = run(limit, arrivals, lateness, keyed=False)
    assert sorted(started) == list(range(len(arrivals)))
    assert most_in_a_period(list(started.values()), limit.per) <= limit.count


@SETTINGS
@given(limits, st.integers(1, 60))
def test_a_backlog_of_one_key_runs_at_its_limit_when_tasks_come_back_on_time(
    limit: RateLimit, tasks: int
) -> None:
    started = run(limit, [0.0] * tasks, [0.0], keyed=True)
    times = sorted(started.values())
    assert all(math.isclose(t, n * limit.interval, abs_tol=1e-9) for n, t in enumerate(times))

"""`Queue(rate_limit=, rate_key=)`: at most N task starts per period, on every broker.

Over a shared broker the limit is kept in the storage (Redis's clock on Redis and RabbitMQ,
the file on SQLite), so the starts measured here on trio's clock carry a little jitter:
the bounds below allow `JITTER` for it, and a start made late (by its process, or a task
that came back late for its booked start) may come up to an interval closer to the next
one (so n + 1 starts span at least n - 1 intervals). In memory (MockClock) the starts fall
exactly one interval apart.
"""

from __future__ import annotations

from typing import Any

import tenacity
import trio
from contract_workers import Gated, Probe, outcome_of, serve

from queueing import Queue, RetryPolicy, Transient, Worker

#: Seconds a start measured in the test's process may be off its booked time.
JITTER = 0.03


def spans(times: list[float], step: int) -> list[float]:
    """The time between each start and the one `step` starts later."""
    ordered = sorted(times)
    return [b - a for a, b in zip(ordered, ordered[step:], strict=False)]


async def test_starts_are_spread_at_the_limit(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    probe.gate.set()
    queue = Queue("rated", Gated, workers=4, rate_limit="20/s", worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        receipts = await system.submit_many("rated", list(range(12)))
        assert [await outcome_of(r) for r in receipts] == list(range(12))
    # 20/s is one start every 0.05 s (booked exactly; a start late by its process's
    # scheduling may come closer to the next): five starts span at least three intervals,
    # twelve at least ten.
    assert min(spans(probe.started_at, 4)) >= 3 * 0.05 - JITTER
    assert max(probe.started_at) - min(probe.started_at) >= 10 * 0.05 - JITTER


async def test_a_retry_counts_as_a_start(broker: str, clock: trio.abc.Clock | None) -> None:
    starts: list[float] = []

    class Twice(Worker):
        async def handle(self, payload: Any) -> int:
            starts.append(trio.current_time())
            if self.attempt < 3:
                raise Transient("not yet")
            return self.attempt

    retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())
    queue = Queue("rated", Twice, rate_limit="10/s", retry=retry)
    async with serve(broker, queue) as system:
        receipt = await system.submit("rated", "x")
        assert await outcome_of(receipt) == 3
    assert len(starts) == 3
    assert starts[2] - starts[0] >= 0.1 - JITTER  # three starts: at least an interval


async def test_each_key_has_its_own_budget_and_waits_for_no_other(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    queue = Queue(
        "rated",
        Gated,
        workers=2,
        rate_limit="5/s",
        rate_key=lambda job: job[0],
        worker_kwargs={"probe": probe},
    )
    jobs = [f"{key}{n}" for key in "ab" for n in range(4)]  # every "a" task first
    async with serve(broker, queue) as system:
        receipts = await system.submit_many("rated", jobs)
        assert sorted([await outcome_of(r) for r in receipts]) == sorted(jobs)
    at = dict(zip(probe.started, probe.started_at, strict=True))
    for key in "ab":
        mine = [when for job, when in at.items() if job.startswith(key)]
        # 5/s per key; a task that comes back a little late for its booked start may start
        # up to an interval after it (so three starts span at least an interval).
        assert min(spans(mine, 2)) >= 0.2 - JITTER
    # The "b" tasks, submitted behind every "a" task, did not wait for them: the first
    # "b" started before the last "a" (which waits 0.6 s for its start).
    assert at["b0"] < at["a3"]


async def test_the_broker_counts_the_starts(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    probe.gate.set()
    queue = Queue("rated", Gated, workers=2, rate_limit="50/s", worker_kwargs={"probe": probe})
    free = Queue("free", Gated, worker_kwargs={"probe": probe})
    async with serve(broker, queue, free) as system:
        receipts = await system.submit_many("rated", list(range(5)))
        receipts += await system.submit_many("free", list(range(5)))
        for receipt in receipts:
            await outcome_of(receipt)
        # What `queueing status` shows (over every process sharing the broker).
        rates = await system._broker.rate_figures()
    assert set(rates) == {"rated"}
    assert rates["rated"]["limit"] == "50/s"
    assert rates["rated"]["started"] == 5
    assert 0 <= rates["rated"]["last_period"] <= 50


async def test_a_backlog_of_one_key_starts_at_its_limit(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    queue = Queue(
        "rated",
        Gated,
        workers=4,
        rate_limit="20/s",
        rate_key=lambda job: job.split("-")[0],
        worker_kwargs={"probe": probe},
    )
    jobs = [f"hot-{n:02}" for n in range(16)]
    async with serve(broker, queue) as system:
        receipts = await system.submit_many("rated", jobs)
        assert [await outcome_of(r) for r in receipts] == jobs
    # Each deferred task came back for the start booked for it (or, late, for a start
    # soon after it: never bunched up), one every 0.05 s: five starts span at least three
    # intervals, and all of them at least fourteen.
    assert sorted(probe.started) == jobs
    assert min(spans(probe.started_at, 4)) >= 3 * 0.05 - JITTER
    assert max(probe.started_at) - min(probe.started_at) >= 14 * 0.05 - JITTER

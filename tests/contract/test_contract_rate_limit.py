"""`Queue(rate_limit=, rate_key=)`: at most N task starts per period, on every broker.

The limit books starts one interval apart, the first no earlier than the submit: so the
n-th start (in order) never comes before `n` intervals after the submit (`early`). That
holds at any load: a start made late by its process (a loaded machine) only comes later.
Over a shared broker the limit is kept in the storage (Redis's clock on Redis and RabbitMQ,
the file on SQLite), so the starts measured here on trio's clock carry a little jitter:
the bounds allow `JITTER` for it. The spacing between two starts is checked in memory
(MockClock), where the starts fall exactly one interval apart; in real time a start late
by its process (or a task that came back late for its booked start) comes closer to the
next one by as much as it was late, which a loaded machine does not bound.
"""

from __future__ import annotations

from typing import Any

import pytest
import tenacity
import trio
from contract_workers import Gated, Probe, outcome_of, serve

from queueing import Queue, RetryPolicy, Transient, Worker

#: Seconds a start measured in the test's process may be off its booked time.
JITTER = 0.03


def early(times: list[float], submitted: float, interval: float) -> list[tuple[int, float]]:
    """The starts (their rank, their time after the submit) that came before their
    booking: the n-th start (from 0) at least `n` intervals after `submitted`."""
    ordered = sorted(times)
    return [
        (n, round(at - submitted, 3))
        for n, at in enumerate(ordered)
        if at < submitted + n * interval - JITTER
    ]


def spans(times: list[float], step: int) -> list[float]:
    """The time between each start and the one `step` starts later."""
    ordered = sorted(times)
    return [b - a for a, b in zip(ordered, ordered[step:], strict=False)]


async def test_starts_are_spread_at_the_limit(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    probe.gate.set()
    queue = Queue("rated", Gated, workers=4, rate_limit="20/s", worker_kwargs={"probe": probe})
    async with serve(broker, queue) as system:
        submitted = trio.current_time()
        receipts = await system.submit_many("rated", list(range(12)))
        assert [await outcome_of(r) for r in receipts] == list(range(12))
    # 20/s is one start every 0.05 s.
    assert early(probe.started_at, submitted, 0.05) == []
    if clock is not None:  # in memory, exactly one interval apart
        assert spans(probe.started_at, 1) == pytest.approx([0.05] * (len(probe.started_at) - 1))


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
        submitted = trio.current_time()
        receipt = await system.submit("rated", "x")
        assert await outcome_of(receipt) == 3
    assert len(starts) == 3
    assert early(starts, submitted, 0.1) == []  # every attempt waits for its own start


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
        submitted = trio.current_time()
        receipts = await system.submit_many("rated", jobs)
        assert sorted([await outcome_of(r) for r in receipts]) == sorted(jobs)
    at = dict(zip(probe.started, probe.started_at, strict=True))
    for key in "ab":
        mine = [when for job, when in at.items() if job.startswith(key)]
        assert early(mine, submitted, 0.2) == []  # 5/s per key
        if clock is not None:  # in memory, exactly one interval apart
            assert spans(mine, 1) == pytest.approx([0.2] * (len(mine) - 1))
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
        submitted = trio.current_time()
        receipts = await system.submit_many("rated", jobs)
        assert [await outcome_of(r) for r in receipts] == jobs
    # Each deferred task came back for the start booked for it, one every 0.05 s.
    assert sorted(probe.started) == jobs
    assert early(probe.started_at, submitted, 0.05) == []
    if clock is not None:  # in memory, exactly one interval apart
        assert spans(probe.started_at, 1) == pytest.approx([0.05] * (len(probe.started_at) - 1))

"""`Queue(rate_limit=, rate_key=)` in process, in virtual time: exact counts per period."""

from __future__ import annotations

import collections
import itertools
import math
from datetime import timedelta
from typing import Any

import pytest
import tenacity
import trio

from queueing import (
    InvalidQueue,
    Queue,
    RateLimit,
    RetryPolicy,
    Transient,
    Worker,
    open_system,
)


class Stamp(Worker):
    """Records when each task started, and what it was."""

    def __init__(self, starts: list[tuple[float, Any]]) -> None:
        self.starts = starts

    async def handle(self, payload: Any) -> None:
        self.starts.append((trio.current_time(), payload))


def per_second(starts: list[tuple[float, Any]], since: float) -> dict[int, int]:
    return dict(collections.Counter(math.floor(at - since) for at, _ in starts))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("100/s", RateLimit(100, 1.0)),
        ("30/m", RateLimit(30, 60.0)),
        (" 5 / h ", RateLimit(5, 3600.0)),
        (RateLimit(3, per=0.5), RateLimit(3, 0.5)),
        ((10, timedelta(minutes=1)), RateLimit(10, 60.0)),
    ],
)
def test_rate_limit_takes_a_string_a_rate_limit_or_a_pair(given: Any, expected: RateLimit) -> None:
    assert Queue("q", Stamp, rate_limit=given).rate_limit == expected


@pytest.mark.parametrize("bad", ["100/x", "0/s", "-1/s", "abc", "1.5/s", 100, (0, timedelta(1))])
def test_a_bad_rate_limit_names_the_field_and_the_accepted_forms(bad: Any) -> None:
    with pytest.raises(InvalidQueue, match="rate_limit") as info:
        Queue("q", Stamp, rate_limit=bad)
    assert "/s" in str(info.value)


def test_rate_key_needs_a_rate_limit_and_a_function() -> None:
    with pytest.raises(InvalidQueue, match="rate_key but no rate_limit"):
        Queue("q", Stamp, rate_key=str)
    with pytest.raises(InvalidQueue, match="rate_key must be a function"):
        Queue("q", Stamp, rate_limit="1/s", rate_key="customer")


def test_a_rate_limit_reads_back_as_its_string() -> None:
    assert str(RateLimit(100, 1.0)) == "100/s"
    assert str(RateLimit(5, 3600)) == "5/h"
    assert str(RateLimit(3, 0.5)) == "3/0.5s"


async def test_a_queue_starts_exactly_its_limit_in_each_period(autojump_clock: Any) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue("q", Stamp, workers=4, rate_limit="8/s", worker_kwargs={"starts": starts})
    async with open_system(queue) as system:
        t0 = trio.current_time()
        receipts = await system.submit_many("q", list(range(40)))
        for receipt in receipts:
            await receipt
    assert per_second(starts, t0) == {0: 8, 1: 8, 2: 8, 3: 8, 4: 8}
    gaps = {round(b[0] - a[0], 9) for a, b in itertools.pairwise(starts)}
    assert gaps == {0.125}  # spread evenly, never a burst


async def test_the_limit_is_shared_by_every_worker_and_a_slow_limit_holds(
    autojump_clock: Any,
) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue("q", Stamp, workers=8, rate_limit="2/m", worker_kwargs={"starts": starts})
    async with open_system(queue) as system:
        t0 = trio.current_time()
        receipts = await system.submit_many("q", list(range(5)))
        for receipt in receipts:
            await receipt
    assert [round(at - t0, 6) for at, _ in starts] == [0, 30, 60, 90, 120]


async def test_a_retry_counts_as_a_start(autojump_clock: Any) -> None:
    starts: list[tuple[float, Any]] = []

    class Flaky(Stamp):
        async def handle(self, payload: Any) -> None:
            await super().handle(payload)
            if len([p for _, p in self.starts if p == payload]) < 3:
                raise Transient("again")

    retry = RetryPolicy(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_none())
    queue = Queue(
        "q", Flaky, workers=2, rate_limit="4/s", retry=retry, worker_kwargs={"starts": starts}
    )
    async with open_system(queue) as system:
        t0 = trio.current_time()
        receipts = await system.submit_many("q", list(range(4)))
        for receipt in receipts:
            await receipt
    assert len(starts) == 12  # three attempts each
    assert per_second(starts, t0) == {0: 4, 1: 4, 2: 4}


async def test_each_key_gets_the_whole_limit(autojump_clock: Any) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue(
        "q",
        Stamp,
        workers=4,
        rate_limit="2/s",
        rate_key=lambda job: job["customer"],
        worker_kwargs={"starts": starts},
    )
    jobs = [{"customer": c, "n": n} for n in range(6) for c in ("a", "b")]
    async with open_system(queue) as system:
        t0 = trio.current_time()
        receipts = await system.submit_many("q", jobs)
        for receipt in receipts:
            await receipt
    for customer in ("a", "b"):
        mine = [(at, job) for at, job in starts if job["customer"] == customer]
        assert per_second(mine, t0) == {0: 2, 1: 2, 2: 2}


async def test_a_limited_key_does_not_hold_back_other_keys(autojump_clock: Any) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue(
        "q",
        Stamp,
        workers=1,
        rate_limit="1/m",
        rate_key=lambda job: job.split("-")[0],
        worker_kwargs={"starts": starts},
    )
    async with open_system(queue) as system:
        t0 = trio.current_time()
        busy = await system.submit_many("q", ["hot-1", "hot-2", "hot-3"])
        others = await system.submit_many("q", ["cold-1", "warm-1"])
        for receipt in others:
            await receipt
        assert trio.current_time() - t0 < 1  # behind two waiting hot tasks, not a minute
        for receipt in busy:
            await receipt
    hot = [round(at - t0) for at, job in starts if job.startswith("hot")]
    assert hot == [0, 60, 120]


async def test_a_rate_key_that_raises_dead_letters_the_task(autojump_clock: Any) -> None:
    from queueing import TaskFailed

    queue = Queue(
        "q",
        Stamp,
        rate_limit="1/s",
        rate_key=lambda job: job["customer"],
        worker_kwargs={"starts": []},
    )
    async with open_system(queue) as system:
        receipt = await system.submit("q", {"n": 1})
        with pytest.raises(TaskFailed, match="rate_key"):
            await receipt
        assert [letter.id for letter in await system.dead_letters("q", 10)] == [receipt.id]


async def test_a_task_cancelled_while_waiting_for_its_start_never_starts(
    autojump_clock: Any,
) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue("q", Stamp, rate_limit="1/m", worker_kwargs={"starts": starts})
    async with open_system(queue) as system:
        first, second = await system.submit_many("q", [1, 2])
        await first
        await trio.sleep(5)  # the second waits for its start, a minute after the first
        assert await second.cancel()
        await trio.sleep(120)
    assert [payload for _, payload in starts] == [1]


async def test_a_queue_without_a_rate_limit_starts_at_once(autojump_clock: Any) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue("q", Stamp, workers=2, worker_kwargs={"starts": starts})
    async with open_system(queue) as system:
        t0 = trio.current_time()
        for receipt in await system.submit_many("q", list(range(100))):
            await receipt
    assert {at for at, _ in starts} == {t0}


async def test_a_task_waiting_for_its_start_at_shutdown_ends_cancelled(
    autojump_clock: Any,
) -> None:
    from queueing import TaskCancelled

    starts: list[tuple[float, Any]] = []
    queue = Queue("q", Stamp, rate_limit="1/h", worker_kwargs={"starts": starts})
    async with open_system(queue) as system:
        first, second = await system.submit_many("q", [1, 2])
        await first
        await trio.sleep(5)  # the second waits for its start, an hour after the first
    with pytest.raises(TaskCancelled):
        await second
    assert [payload for _, payload in starts] == [1]


async def test_a_backlog_of_one_key_runs_in_order_at_its_limit_with_one_booking_each(
    autojump_clock: Any,
) -> None:
    starts: list[tuple[float, Any]] = []
    queue = Queue(
        "q",
        Stamp,
        workers=4,
        rate_limit="8/s",  # an interval a float holds exactly: exact counts
        rate_key=lambda job: job.split("-")[0],
        worker_kwargs={"starts": starts},
    )
    async with open_system(queue) as system:
        broker = system._broker
        calls = 0
        take = broker.take_start

        async def counted(*args: Any, **kwargs: Any) -> float:
            nonlocal calls
            calls += 1
            return await take(*args, **kwargs)

        broker.take_start = counted  # type: ignore[method-assign]
        t0 = trio.current_time()
        jobs = [f"hot-{n}" for n in range(40)]
        for receipt in await system.submit_many("q", jobs):
            await receipt
    assert [job for _, job in starts] == jobs  # in order
    assert per_second(starts, t0) == {0: 8, 1: 8, 2: 8, 3: 8, 4: 8}
    # A task deferred to the start booked for it finds that booking when it comes back:
    # at most two calls per task, never one per waiting task per start.
    assert calls <= 2 * len(jobs)


async def test_tasks_of_a_key_that_come_back_late_do_not_bunch_up(autojump_clock: Any) -> None:
    starts: list[tuple[float, Any]] = []

    class Slow(Stamp):
        async def handle(self, payload: Any) -> None:
            await super().handle(payload)
            if payload.startswith("b"):
                await trio.sleep(3)  # the only worker is busy while "a" tasks come due

    queue = Queue(
        "q",
        Slow,
        rate_limit="1/s",
        rate_key=lambda job: job[0],
        worker_kwargs={"starts": starts},
    )
    async with open_system(queue) as system:
        t0 = trio.current_time()
        for receipt in await system.submit_many("q", ["a1", "a2", "a3", "a4", "b1"]):
            await receipt
    mine = sorted(at - t0 for at, job in starts if job.startswith("a"))
    # a2, a3 and a4 (booked for 1, 2 and 3 s) all come back at 3 s, when b1 ends: a2, too
    # late for its start, books anew (4 s), so no 1 s window holds more than one start more
    # than the limit.
    assert mine == [0, 3, 3, 4]


async def test_a_task_past_its_deadline_takes_no_start(autojump_clock: Any) -> None:
    from queueing import TaskExpired

    starts: list[tuple[float, Any]] = []
    queue = Queue("q", Stamp, rate_limit="1/m", worker_kwargs={"starts": starts})
    async with open_system(queue) as system:
        t0 = trio.current_time()
        first = await system.submit("q", "first")
        late = await system.submit("q", "late", expires=10)  # waits for 60 s: expires
        last = await system.submit("q", "last")
        await first
        with pytest.raises(TaskExpired):
            await late
        await last
    assert [(round(at - t0), job) for at, job in starts] == [(0, "first"), (60, "last")]

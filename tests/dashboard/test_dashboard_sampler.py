"""The snapshot sampler behind `queueing top` and the web dashboard, on an in-process
system with virtual time: rates over the window, latency percentiles, slots, failures,
schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from dash_helpers import naps, refusals

from queueing import QueueingError, Schedule, connect, open_system
from queueing._report import BUCKET_GROWTH
from queueing.dashboard import Sampler, Snapshot

#: A percentile read from the histogram is within half a bucket of the exact one.
HALF_BUCKET = BUCKET_GROWTH**0.5


def near(value: float | None, exact: float) -> bool:
    return value is not None and exact / HALF_BUCKET <= value <= exact * HALF_BUCKET


async def test_rates_in_and_out_over_the_window(autojump_clock: Any) -> None:
    async with open_system(naps(workers=2)) as system:
        sampler = Sampler(system, window=10)
        first = await sampler.sample()
        assert first.queue("naps").rate_in is None  # one reading: no rate yet
        for _ in range(10):
            await system.submit("naps", 1.0)
        await trio.sleep(10)  # two at a time, a second each: all done after 5 s
        snapshot = await sampler.sample()
    naps_view = snapshot.queue("naps")
    assert snapshot.window == pytest.approx(10)
    assert naps_view.rate_in == pytest.approx(1.0)  # 10 tasks in 10 s
    assert naps_view.rate_out == pytest.approx(1.0)
    assert (naps_view.submitted, naps_view.succeeded) == (10, 10)


async def test_the_window_slides_and_an_idle_queue_drops_to_zero(autojump_clock: Any) -> None:
    async with open_system(naps(workers=5)) as system:
        sampler = Sampler(system, every=1, window=5)
        async with trio.open_nursery() as nursery:
            await nursery.start(sampler.run)
            for _ in range(5):
                await system.submit("naps", 1.0)
            await trio.sleep(3.5)
            busy = sampler.snapshot
            await trio.sleep(10)
            idle = sampler.snapshot
            nursery.cancel_scope.cancel()
    assert busy is not None
    assert idle is not None
    assert busy.queue("naps").rate_out == pytest.approx(5 / 3)  # 5 done within 3 s
    assert near(busy.queue("naps").p50, 1.0)
    assert idle.window == pytest.approx(5)
    assert idle.queue("naps").rate_in == 0
    assert idle.queue("naps").rate_out == 0
    assert idle.queue("naps").p50 is None  # nothing succeeded in the window


async def test_latency_percentiles_of_submit_to_success(autojump_clock: Any) -> None:
    async with open_system(naps(workers=100)) as system:
        sampler = Sampler(system, window=60)
        await sampler.sample()
        for _ in range(98):
            await system.submit("naps", 2.0)
        for _ in range(2):
            await system.submit("naps", 30.0)
        await trio.sleep(40)
        view = (await sampler.sample()).queue("naps")
    assert near(view.p50, 2.0)
    assert near(view.p99, 30.0)


async def test_queue_time_counts_in_the_latency(autojump_clock: Any) -> None:
    async with open_system(naps(workers=1)) as system:
        sampler = Sampler(system, window=60)
        await sampler.sample()
        for _ in range(4):
            await system.submit("naps", 5.0)  # one worker: they end at 5, 10, 15, 20 s
        await trio.sleep(30)
        view = (await sampler.sample()).queue("naps")
    assert near(view.p50, 10.0)
    assert near(view.p99, 20.0)


async def test_depth_in_flight_and_busy_slots(autojump_clock: Any) -> None:
    async with open_system(naps(workers=2, maxsize=50)) as system:
        for _ in range(5):
            await system.submit("naps", 10.0)
        await trio.sleep(1)
        snapshot = await Sampler(system).sample()
    view = snapshot.queue("naps")
    assert (view.depth, view.in_flight, view.outstanding, view.maxsize) == (3, 2, 5, 50)
    assert (view.workers, view.busy) == (2, 2)
    (process,) = snapshot.processes
    assert process.slots == {"naps": [2, 2]}
    assert (process.workers, process.busy) == (2, 2)
    assert snapshot.source == "memory:// (this process)"


async def test_failures_are_the_newest_dead_letters_with_their_tracebacks(
    autojump_clock: Any,
) -> None:
    async with open_system(refusals(), naps()) as system:
        for order in range(3):
            await system.submit("refusals", order)
            await trio.sleep(1)
        snapshot = await Sampler(system).sample()
    assert [f.id for f in snapshot.failures] == [
        f.id for f in sorted(snapshot.failures, key=lambda f: -f.failed_at)
    ]
    newest = snapshot.failures[0]
    assert (newest.queue, newest.state, newest.payload) == ("refusals", "failed", 2)
    assert newest.error_type == "ValueError"
    assert newest.message == "order 2 is refused"
    assert 'raise ValueError(f"order {order} is refused")' in newest.traceback
    view = snapshot.queue("refusals")
    assert (view.failed, view.dead_letters) == (3, 3)


async def test_schedules_are_listed_with_their_next_tick(autojump_clock: Any) -> None:
    tick = Schedule("tick", queue="naps", every=60, payload=0.0)
    async with open_system(naps(), tick) as system:
        snapshot = await Sampler(system).sample()
    (schedule,) = snapshot.schedules
    assert (schedule.name, schedule.queue, schedule.every) == ("tick", "naps", 60)
    assert schedule.next_at % 60 == 0
    assert schedule.next_at > snapshot.taken_at - 60


async def test_a_snapshot_travels_as_json_and_back(autojump_clock: Any) -> None:
    async with open_system(naps(), refusals()) as system:
        await system.submit("refusals", 1)
        await system.submit("naps", 1.0)
        sampler = Sampler(system)
        await sampler.sample()
        await trio.sleep(2)
        snapshot = await sampler.sample()
    assert Snapshot.from_doc(snapshot.to_doc()) == snapshot
    assert [point.to_doc()["queues"]["naps"][1] for point in sampler.history][-1] == 0.5


async def test_the_sampler_refuses_an_empty_interval() -> None:
    async with open_system(naps()) as system:
        with pytest.raises(QueueingError, match="every > 0"):
            Sampler(system, every=0)


async def test_over_sqlite_the_figures_are_the_files_without_latencies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/queues.db"
    async with open_system(naps(workers=3), refusals(), broker=url) as system:
        receipts = [await system.submit("naps", 0.01) for _ in range(3)]
        for receipt in receipts:
            await receipt
        await system.submit("refusals", 5)
        await system.drain()
        snapshot = await Sampler(system).sample()
    view = snapshot.queue("naps")
    assert (view.submitted, view.succeeded, view.outstanding) == (3, 3, 0)
    assert snapshot.queue("refusals").dead_letters == 1
    assert [f.payload for f in snapshot.failures] == [5]
    # Its processes publish no report: no slots per queue, no latencies.
    (process,) = snapshot.processes
    assert process.slots == {}
    assert (view.workers, view.p50) == (None, None)
    assert snapshot.source == url


async def test_a_schedule_shows_its_last_tick_and_outcome(autojump_clock: Any) -> None:
    tick = Schedule("tick", queue="naps", every=60, payload=0.0)
    async with open_system(naps(), tick) as system:
        before = await Sampler(system).sample()
        await trio.sleep(61)  # one tick has come, and its task ran
        after = await Sampler(system).sample()
    (first,) = before.schedules
    assert first.last_outcome is None  # no tick yet since the system started
    (schedule,) = after.schedules
    assert schedule.last_outcome == "succeeded"
    assert schedule.last_at == schedule.next_at - 60


@pytest.mark.redis
async def test_over_redis_a_client_sees_a_schedules_last_outcome(redis_url: str) -> None:
    # The serving process's heartbeat carries no outcome: the reader looks the tick's task
    # up, as `queueing status` does.
    tick = Schedule("tick", queue="naps", every=1, payload=0.0)
    async with open_system(naps(), tick, broker=redis_url) as system:
        async with connect(redis_url) as client:
            with trio.fail_after(30):
                while True:
                    snapshot = await Sampler(client).sample()
                    views = snapshot.schedules
                    if views and views[0].last_outcome == "succeeded":
                        break
                    await trio.sleep(0.2)
        await system.drain()
    (schedule,) = views
    assert schedule.name == "tick"
    assert schedule.last_at is not None

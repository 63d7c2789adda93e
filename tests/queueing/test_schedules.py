"""`Schedule`: tasks submitted by cron expression or at fixed intervals, in virtual time."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from queueing import InvalidQueue, Queue, Schedule, Worker, open_system


class Log(Worker):
    def __init__(self, seen: list[tuple[float, Any]]) -> None:
        self.seen = seen

    async def handle(self, payload: Any) -> str:
        self.seen.append((trio.current_time(), payload))
        return "ok"


def log_queue(seen: list[tuple[float, Any]]) -> Queue:
    return Queue("log", Log, worker_kwargs={"seen": seen})


async def test_every_submits_a_task_at_each_tick(autojump_clock: Any) -> None:
    seen: list[tuple[float, Any]] = []
    tick = Schedule("tick", queue="log", every=10, payload="beat")
    async with open_system(log_queue(seen), tick):
        await trio.sleep(30)  # the first tick comes within 10 s: three ticks, whatever the phase
    assert [payload for _, payload in seen] == ["beat"] * 3
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert all(gap == pytest.approx(10, abs=0.01) for gap in gaps)


async def test_a_cron_schedule_ticks_at_its_minutes(autojump_clock: Any) -> None:
    seen: list[tuple[float, Any]] = []
    every_minute = Schedule("minutely", queue="log", cron="* * * * *", payload={"n": 1})
    async with open_system(log_queue(seen), every_minute):
        await trio.sleep(60 * 3)  # the first tick comes within a minute: exactly three
    assert len(seen) == 3
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert all(gap == pytest.approx(60, abs=0.01) for gap in gaps)


async def test_two_processes_running_a_schedule_submit_each_tick_once(
    autojump_clock: Any,
) -> None:
    # In memory the two systems do not share a broker: this checks the key each tick gets,
    # the same in both, which a shared broker turns into one task.
    tick = Schedule("tick", queue="log", every=5)
    assert tick.key(1_700_000_005.0) == Schedule("tick", queue="log", every=5).key(1_700_000_005.0)
    assert tick.next_tick(1_700_000_001.0) == 1_700_000_005.0


async def test_a_tick_refused_by_a_full_queue_is_logged_and_the_schedule_goes_on(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate = trio.Event()

    class Stuck(Worker):
        async def handle(self, payload: Any) -> None:
            await gate.wait()

    from queueing import Overflow

    queue = Queue("stuck", Stuck, maxsize=1, when_full=Overflow.REJECT)
    async with open_system(queue, Schedule("tick", queue="stuck", every=1)) as system:
        await trio.sleep(3.5)
        gate.set()
        await trio.sleep(1)
        stats = system.stats()["stuck"]
    assert stats.submitted >= 2
    assert "was not submitted" in caplog.text


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "one of cron= .* or every="),
        ({"cron": "* * * * *", "every": 5}, "one of cron="),
        ({"cron": "not a cron"}, "is not a cron expression"),
        ({"every": 0}, "every must be a number of seconds > 0"),
        ({"every": 5, "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every": 5, "priority": 10}, "priority must be from 0"),
        ({"every": 5, "priority": True}, "priority must be an int"),
        ({"every": 5, "catch_up": "yes"}, "catch_up must be True or False"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_reason(options: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidQueue, match=match):
        Schedule("bad", queue="log", **options)


class Slow(Worker):
    """Takes a second per task, logging each start."""

    def __init__(self, seen: list[tuple[float, Any]]) -> None:
        self.seen = seen

    async def handle(self, payload: Any) -> None:
        self.seen.append((trio.current_time(), payload))
        await trio.sleep(1)


async def test_a_schedule_with_a_priority_overtakes_the_waiting_tasks(autojump_clock: Any) -> None:
    seen: list[tuple[float, Any]] = []
    queue = Queue("log", Slow, worker_kwargs={"seen": seen}, workers=1)
    urgent = Schedule("urgent", queue="log", every=10, payload="tick", priority=9)
    async with open_system(queue, urgent) as system:
        await system.submit_many("log", [f"low-{i}" for i in range(30)])
        await trio.sleep(12)  # the first tick comes within 10 s, while 20 or more wait
        started = [payload for _, payload in seen]
        assert "tick" in started
        # It started as soon as the worker was free after the tick, ahead of the backlog.
        tick_at, _ = seen[started.index("tick")]
        previous_at, _ = seen[started.index("tick") - 1]
        assert tick_at - previous_at == pytest.approx(1, abs=0.01)
        assert started.index("tick") <= 11
        assert len(started) < 30


async def test_a_schedule_for_an_unknown_queue_is_refused() -> None:
    seen: list[tuple[float, Any]] = []
    with pytest.raises(InvalidQueue, match="not a queue or pipeline of this system"):
        async with open_system(log_queue(seen), Schedule("s", queue="nope", every=1)):
            pass


def test_a_cron_schedule_without_croniter_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "croniter", None)  # as if not installed
    with pytest.raises(InvalidQueue, match=r"pip install 'trio-queueing\[cron\]'"):
        Schedule("nightly", queue="reports", cron="0 3 * * *", payload="x")
    Schedule("often", queue="reports", every=60, payload="x")  # every= needs nothing


# -- missed ticks: catch_up -------------------------------------------------------------------

#: A wall-clock time 30 s past a whole minute (1_699_999_980 is one).
HALF_PAST = 1_700_000_010.0


@pytest.fixture
def wall_at(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the wall-clock time the schedules start from (virtual time moves it on)."""
    from types import SimpleNamespace

    import queueing._schedule as schedule_module

    def set_wall(at: float) -> None:
        monkeypatch.setattr(schedule_module, "time", SimpleNamespace(time=lambda: at))

    return set_wall


async def test_a_missed_tick_is_skipped_by_default(autojump_clock: Any, wall_at: Any) -> None:
    wall_at(HALF_PAST)
    seen: list[tuple[float, Any]] = []
    async with open_system(log_queue(seen), Schedule("m", queue="log", every=60, payload="t")):
        await trio.sleep(45)
    assert [at for at, _ in seen] == [pytest.approx(30, abs=0.01)]  # the next whole minute


async def test_catch_up_submits_the_latest_missed_tick_once_at_start(
    autojump_clock: Any, wall_at: Any
) -> None:
    wall_at(HALF_PAST + 5)
    seen: list[tuple[float, Any]] = []
    # Ticks every 10 s; the one 5 s ago (and those before) were missed: only the latest is
    # made up for, at once, then the ticks come as planned.
    schedule = Schedule("m", queue="log", every=10, payload="t", catch_up=True)
    async with open_system(log_queue(seen), schedule) as system:
        await trio.sleep(20)
        first = await system.submit("log", "again", key=schedule.key(HALF_PAST))
        status = await first.status()
        await trio.sleep(1)
    assert [round(at, 2) for at, _ in seen] == [0, 5, 15]
    assert [payload for _, payload in seen] == ["t"] * 3  # "again" found the tick's task
    assert status.state.value == "succeeded"


async def test_catch_up_skips_a_tick_older_than_the_queues_result_ttl(
    autojump_clock: Any, wall_at: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wall_at(HALF_PAST)
    seen: list[tuple[float, Any]] = []
    queue = Queue("log", Log, worker_kwargs={"seen": seen}, result_ttl=10)
    hourly = Schedule("h", queue="log", every=3600, payload="t", catch_up=True)
    async with open_system(queue, hourly):
        await trio.sleep(5)
    assert seen == []  # the tick was more than 10 s ago: whether it ran cannot be told
    assert "is not caught up" in caplog.text
    assert "result_ttl" in caplog.text


def test_last_tick_is_the_latest_at_or_before() -> None:
    every = Schedule("e", queue="log", every=60)
    assert every.last_tick(HALF_PAST) == HALF_PAST - 30
    assert every.last_tick(HALF_PAST - 30) == HALF_PAST - 30
    cron = Schedule("c", queue="log", cron="*/5 * * * *")
    ten_past = 1_699_999_800.0  # 2023-11-14 22:10 UTC
    assert cron.last_tick(HALF_PAST) == ten_past
    assert cron.last_tick(ten_past) == ten_past
    assert cron.last_tick(ten_past - 1) == ten_past - 300


# -- time zones and DST ---------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


async def test_a_0230_job_on_the_spring_forward_day_runs_once_at_0300(
    autojump_clock: Any, wall_at: Any
) -> None:
    # 2024-03-31 in Berlin: at 02:00 the clocks jump to 03:00, so 02:30 does not exist.
    start = datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN)
    wall_at(start.timestamp())
    seen: list[tuple[float, Any]] = []
    nightly = Schedule("n", queue="log", cron="30 2 * * *", timezone="Europe/Berlin")
    async with open_system(log_queue(seen), nightly):
        await trio.sleep(4 * 3600)
    ran = [datetime.fromtimestamp(start.timestamp() + at, BERLIN) for at, _ in seen]
    assert [f"{t:%H:%M %Z}" for t in ran] == ["03:00 CEST"]  # an hour of real time later


async def test_a_0230_job_on_the_fall_back_day_runs_once(autojump_clock: Any, wall_at: Any) -> None:
    # 2024-10-27 in Berlin: at 03:00 CEST the clocks go back to 02:00 CET: 02:30 happens
    # twice; the job runs at the first.
    start = datetime(2024, 10, 27, 1, 0, tzinfo=BERLIN)
    wall_at(start.timestamp())
    seen: list[tuple[float, Any]] = []
    nightly = Schedule("n", queue="log", cron="30 2 * * *", timezone="Europe/Berlin")
    async with open_system(log_queue(seen), nightly):
        await trio.sleep(5 * 3600)
    ran = [datetime.fromtimestamp(start.timestamp() + at, BERLIN) for at, _ in seen]
    assert [f"{t:%H:%M %Z}" for t in ran] == ["02:30 CEST"]


def test_on_the_fall_back_day_a_job_of_every_hour_runs_in_both_passes() -> None:
    # An hour field of `*` is elapsed time, as cron has it: 02:00 and 02:30 run twice.
    half_hourly = Schedule("h", queue="log", cron="*/30 * * * *", timezone="Europe/Berlin")
    tick = datetime(2024, 10, 27, 1, 50, tzinfo=BERLIN).timestamp()
    ticks = []
    for _ in range(6):
        tick = half_hourly.next_tick(tick)
        ticks.append(f"{datetime.fromtimestamp(tick, BERLIN):%H:%M %Z}")
    assert ticks == [
        "02:00 CEST", "02:30 CEST", "02:00 CET", "02:30 CET", "03:00 CET", "03:30 CET"
    ]  # fmt: skip


def test_the_last_tick_of_a_fall_back_night_is_the_first_pass() -> None:
    nightly = Schedule("n", queue="log", cron="30 2 * * *", timezone="Europe/Berlin")
    second_pass = datetime(2024, 10, 27, 2, 40, fold=1, tzinfo=BERLIN).timestamp()
    last = datetime.fromtimestamp(nightly.last_tick(second_pass), BERLIN)
    assert f"{last:%H:%M %Z}" == "02:30 CEST"

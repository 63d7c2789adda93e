"""Chaos over Redis, the server itself: stopped (SIGSTOP) past the per-call limit, killed
(kill -9) with and without persistence, and flushed (FLUSHALL) mid-run. Each scenario has
a private redis-server; the machine's own Redis is never touched."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from chaos_helpers import (
    Memory,
    Outcomes,
    Submitter,
    duplicated,
    raw_redis,
    serving,
    start_worker,
    stop,
    struck,
    succeeded,
    wait_for,
)
from chaos_tasks import LONG, queue

from queueing import connect

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(300)]

TASKS = 3000
#: How long one call waits for Redis: a claim's blocking read (2 s) and 10 s of grace.
PER_CALL_LIMIT = 12.0
#: Longer than the per-call limit (a claim's 2 s block + 10 s of grace), shorter than the
#: default lease (30 s), as in issue 9.
STALL = 15.0
#: Tasks that run 25 s each, started before the stall and running across it (their leases
#: must be renewed as soon as Redis answers again: idle 15 s and more, of a 30 s lease).
LONG_TASKS = range(LONG + 25_000, LONG + 25_004)
#: Workers x slots: the most tasks in flight at one moment.
IN_FLIGHT = 2 * 8
#: Every receipt resolves within this after a fault (a lost record: a sweep after the
#: reconnect, a second look 2 s later), with room for a loaded machine.
RESOLVE_BOUND = 30.0


async def serving_all(client: Any, url: str, workers: list[Any]) -> bool:
    assert all(w.poll() is None for w in workers), "a worker died at start"
    return await serving(client, url) == len(workers)


async def at_least(client: Any, url: str, count: int) -> bool:
    return await succeeded(client, url) >= count


STALLS = {
    # (seconds stopped, lease): past the per-call limit, within the default lease; and
    # past a short lease (what a stall longer than the lease costs).
    "within-lease": (STALL, 30.0),
    "past-lease": (8.0, 3.0),
}


@pytest.mark.parametrize("case", STALLS, ids=STALLS.keys())
async def test_sigstop_of_redis(
    make_redis_server: Any, tmp_path: Path, scenario: Any, case: str
) -> None:
    stall, lease = STALLS[case]
    within = stall < lease
    long_tasks = LONG_TASKS if within else range(0)
    scenario.scenario = (
        f"SIGSTOP redis-server {stall:g} s (per-call limit {PER_CALL_LIMIT:g} s, lease {lease:g} s)"
    )
    scenario.broker = "redis"
    if stall > PER_CALL_LIMIT:
        accounted = (
            "0 lost; every failed submit_many accounts for each payload (accepted, unknown, "
            "rejected) and a retry with key= runs nothing twice; "
        )
    else:
        accounted = "0 lost; submits wait the stall out; "
    if within:
        scenario.promise = accounted + (
            f"no task of a healthy worker reclaimed, not even {len(LONG_TASKS)} running "
            "across the stall (0 duplicated); recovery: SIGCONT to the next outcome"
        )
    else:
        scenario.promise = accounted + (
            "longer than the lease, it costs the tasks in flight: they may be reclaimed "
            f"and run again (duplicated at most the {IN_FLIGHT} in flight), one outcome "
            "each; recovery: SIGCONT to the next outcome"
        )
    server = make_redis_server()
    url = server.url_with(prefix="chaos", lease=lease)
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = [start_worker(url, tmp_path, runs, seconds=0.01) for _ in range(2)]
    memory = Memory()
    memory.watch("worker", workers[0].pid)
    memory.watch("redis", server.process.pid)
    memory.watch("client", os.getpid())
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                long = Submitter(system)
                await long.run(long_tasks)  # they run across the stall: leases renewed
                submitter = Submitter(system)
                async with trio.open_nursery() as inner:
                    inner.start_soon(submitter.run, range(TASKS))

                    async def a_third_submitted() -> bool:  # and submitting on
                        return len(submitter.pairs) >= TASKS // 3

                    await wait_for(a_third_submitted, 120, 0.01)
                    os.kill(server.process.pid, signal.SIGSTOP)
                    await trio.sleep(stall)
                    done_before = await at_least_now(client, url, server)
                    resumed_at = time.monotonic()
                    await wait_for(lambda: at_least(client, url, done_before + 1), 60)
                    scenario.recovery = time.monotonic() - resumed_at
                outcomes = await Outcomes().gather(submitter.pairs + long.pairs, timeout=120)
            nursery.cancel_scope.cancel()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        stop(workers)
    twice, _ = duplicated(runs)
    expected = TASKS + len(long_tasks)
    scenario.tasks = expected
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    if stall > PER_CALL_LIMIT:
        assert submitter.errors > 0, "no submit failed: the stall was not seen"
    assert submitter.unaccounted == []
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (expected, 0, 0), outcomes.failed
    if within:
        assert twice == set()
    else:
        assert len(twice) <= IN_FLIGHT
    assert [w.returncode for w in workers] == [0, 0]


async def at_least_now(client: Any, url: str, server: Any) -> int:
    """SIGCONT the server; what had succeeded by then."""
    os.kill(server.process.pid, signal.SIGCONT)
    with trio.fail_after(30):
        while (done := await succeeded(client, url)) < 0:  # noqa: ASYNC110 - polls Redis
            await trio.sleep(0.05)
    return done


PERSISTENCE = {
    "aof-always": ("--appendonly", "yes", "--appendfsync", "always"),
    "aof-everysec": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "none": (),
}
PROMISES = {
    "aof-always": f"0 lost; duplicated at most the {IN_FLIGHT} tasks in flight at the kill",
    "aof-everysec": (
        "every receipt resolves: a task whose last second of writes was lost ends TaskLost"
    ),
    "none": "every receipt resolves: each task not finished at the kill ends TaskLost",
}


@pytest.mark.parametrize("persistence", PERSISTENCE, ids=PERSISTENCE.keys())
async def test_kill_9_of_redis_mid_run(
    make_redis_server: Any, tmp_path: Path, scenario: Any, persistence: str
) -> None:
    scenario.scenario = f"kill -9 redis-server, restarted ({persistence})"
    scenario.broker = "redis"
    scenario.promise = (
        f"{PROMISES[persistence]}; recovery: restart to every receipt resolved "
        f"(< {RESOLVE_BOUND:g} s)"
    )
    server = make_redis_server(*PERSISTENCE[persistence])
    await fault_mid_run(server, tmp_path, scenario, persistence)


async def test_flushall_mid_run(make_redis_server: Any, tmp_path: Path, scenario: Any) -> None:
    scenario.scenario = "FLUSHALL mid-run"
    scenario.broker = "redis"
    scenario.promise = (
        "every receipt resolves: each task not finished at the flush ends TaskLost; new "
        f"submits run; recovery: flush to every receipt resolved (< {RESOLVE_BOUND:g} s)"
    )
    server = make_redis_server()
    await fault_mid_run(server, tmp_path, scenario, "flushall")


async def fault_mid_run(server: Any, tmp_path: Path, scenario: Any, fault: str) -> None:
    """2 workers, a client submitting; at a third done, the fault; then every receipt."""
    url = server.url_with(prefix="chaos", lease=5)
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = [start_worker(url, tmp_path, runs, seconds=0.01) for _ in range(2)]
    memory = Memory()
    memory.watch("worker", workers[0].pid)
    memory.watch("redis", server.process.pid)
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                submitter = Submitter(system)
                async with trio.open_nursery() as inner:
                    inner.start_soon(submitter.run, range(TASKS), 50, 0.005)
                    await wait_for(lambda: at_least(client, url, TASKS // 3), 120)
                    if fault == "flushall":
                        await client.flushall()
                    else:
                        server.process.kill()
                        server.process.wait()
                        server.process = None
                        await trio.sleep(1.0)
                        server.start()
                        memory.watch("redis", server.process.pid)
                    restarted_at = time.monotonic()
                outcomes = await Outcomes().gather(submitter.pairs, timeout=RESOLVE_BOUND * 3)
                scenario.recovery = outcomes.last_at - restarted_at
                after = Submitter(system)
                await after.run(range(TASKS, TASKS + 100))
                later = await Outcomes().gather(after.pairs, timeout=60)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, _ = duplicated(runs)
    scenario.tasks = TASKS + 100
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    assert submitter.unaccounted == []
    assert outcomes.unresolved == 0
    assert outcomes.wrong == 0
    assert outcomes.failed == []
    assert outcomes.ok + outcomes.lost == TASKS
    if fault == "aof-always":
        assert outcomes.lost == 0
        assert len(twice) <= IN_FLIGHT
    if fault in ("none", "flushall"):
        struck(outcomes.lost > 0, "nothing was lost: the fault struck no task")
    assert scenario.recovery < RESOLVE_BOUND
    assert later.ok == 100, later.failed
    assert [w.returncode for w in workers] == [0, 0]

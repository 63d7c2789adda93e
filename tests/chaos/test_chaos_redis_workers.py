"""Chaos over Redis, worker processes: one SIGKILLed mid-run, one SIGSTOPped past its
lease and then continued. Real `queueing worker` processes on a private redis-server."""

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
    duplicated,
    held_by,
    raw_redis,
    serving,
    start_worker,
    stop,
    struck,
    submit_numbers,
    succeeded,
    wait_for,
)
from chaos_tasks import queue

from queueing import connect

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(300)]

TASKS = 3000
LEASE = 2.0
#: Reclaimed once idle a lease, checked every lease/3; plus scheduling on a loaded machine.
RECLAIM_BOUND = LEASE + LEASE / 3 + 3.0


async def test_sigkill_of_a_worker_mid_run(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = "SIGKILL a worker mid-run"
    scenario.broker = "redis"
    scenario.promise = (
        "0 lost; duplicates only among the killed worker's tasks; they are reclaimed "
        f"within lease + lease/3 + 3 s of scheduling slack ({RECLAIM_BOUND:.1f} s with a "
        f"{LEASE:g} s lease; recovery: kill to reclaimed)"
    )
    server = make_redis_server()
    url = server.url_with(prefix="chaos", lease=LEASE)
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = [start_worker(url, tmp_path, runs, seconds=0.01) for _ in range(2)]
    victim = workers[0]
    memory = Memory()
    memory.watch("worker", workers[1].pid)
    memory.watch("redis", server.process.pid)
    memory.watch("client", os.getpid())
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                pairs = await submit_numbers(system, TASKS)
                await wait_for(lambda: at_least(client, url, TASKS // 3), 120)
                held = await held_by(client, url, victim.pid)
                victim.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                victim.wait()

                async def reclaimed() -> bool:
                    return await held_by(client, url, victim.pid) == 0

                await wait_for(reclaimed, 60)
                scenario.recovery = time.monotonic() - killed_at
                outcomes = await Outcomes().gather(pairs, timeout=120)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, by_process = duplicated(runs)
    scenario.tasks = TASKS
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    struck(held > 0, "the killed worker held nothing: the scenario proves nothing")
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (TASKS, 0, 0), outcomes.failed
    assert twice <= by_process.get(victim.pid, set())
    assert scenario.recovery < RECLAIM_BOUND
    assert workers[1].returncode == 0


async def test_sigstop_of_a_worker_past_its_lease_then_sigcont(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = "SIGSTOP a worker past its lease, then SIGCONT"
    scenario.broker = "redis"
    scenario.promise = (
        "0 lost; one result per task; duplicates only among the stopped worker's tasks; "
        f"reclaimed within {RECLAIM_BOUND:.1f} s, as a dead worker's (recovery: stop to "
        "reclaimed); the stopped worker serves again after SIGCONT"
    )
    server = make_redis_server()
    url = server.url_with(prefix="chaos", lease=LEASE)
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = [start_worker(url, tmp_path, runs, seconds=0.02) for _ in range(2)]
    victim = workers[0]
    memory = Memory()
    memory.watch("worker", victim.pid)
    memory.watch("redis", server.process.pid)
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                pairs = await submit_numbers(system, TASKS)
                await wait_for(lambda: at_least(client, url, TASKS // 4), 120)
                held = await held_by(client, url, victim.pid)
                victim.send_signal(signal.SIGSTOP)
                stopped_at = time.monotonic()

                async def reclaimed() -> bool:
                    return await held_by(client, url, victim.pid) == 0

                await wait_for(reclaimed, 60)
                scenario.recovery = time.monotonic() - stopped_at
                await trio.sleep(LEASE)  # stopped well past its lease
                victim.send_signal(signal.SIGCONT)
                ran_before = len(duplicated(runs)[1].get(victim.pid, ()))
                outcomes = await Outcomes().gather(pairs, timeout=120)
                more = await submit_numbers(system, 500, first=TASKS)
                await Outcomes().gather(more, timeout=60)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, by_process = duplicated(runs)
    scenario.tasks = TASKS + 500
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    struck(held > 0, "the stopped worker held nothing: the scenario proves nothing")
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (TASKS, 0, 0), outcomes.failed
    assert twice <= by_process.get(victim.pid, set())
    assert scenario.recovery < RECLAIM_BOUND
    assert len(by_process[victim.pid]) > ran_before, "it did not serve again after SIGCONT"
    assert [w.returncode for w in workers] == [0, 0]


async def serving_all(client: Any, url: str, workers: list[Any]) -> bool:
    assert all(w.poll() is None for w in workers), "a worker died at start"
    return await serving(client, url) == len(workers)


async def at_least(client: Any, url: str, count: int) -> bool:
    return await succeeded(client, url) >= count

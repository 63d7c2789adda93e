"""Chaos over Redis, the network: one worker's link to Redis silent (every packet dropped)
for longer than its lease, then back; every link lagging 50-200 ms each way; and a
client's link cut while it waits for its receipts. The links go through a loopback TCP
proxy of the test's own (`chaos_helpers.Proxy`) to a private redis-server."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from chaos_helpers import (
    Memory,
    Outcomes,
    Proxy,
    duplicated,
    first_started,
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
from chaos_tasks import LONG, queue

from queueing import connect

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(300)]

TASKS = 3000
LEASE = 2.0
#: Three leases: the cut-off worker's tasks are reclaimed while it is cut off, and it is
#: back well within the per-call limit (a claim's 2 s block + 10 s of grace).
PARTITION = 3 * LEASE
#: Reclaimed once idle a lease, checked every lease/3; plus scheduling on a loaded machine.
RECLAIM_BOUND = LEASE + LEASE / 3 + 3.0
#: Seconds each chunk of bytes waits in each direction (uniform in this range).
LAG = (0.05, 0.2)
#: Tasks longer than the lease, run while every link lags: their leases must be renewed.
LAGGED_LONG_TASKS = range(LONG + 3 * int(LEASE * 1000), LONG + 3 * int(LEASE * 1000) + 4)
#: How long the client's link stays cut (connections reset, new ones refused).
CLIENT_OUTAGE = 5.0
#: From the client's link back to its last receipt resolved: its reads resume at once.
CLIENT_RECOVERY = 15.0


def proxied(proxy: Proxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0?prefix=chaos&lease={LEASE:g}"


def started_since(directory: Path, pid: int, since: float) -> bool:
    """Whether the process `pid` started a task after `since` (wall-clock time)."""
    path = directory / f"{pid}.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return any(float(line.split()[1]) > since for line in lines)


async def serving_all(client: Any, url: str, workers: list[Any]) -> bool:
    assert all(w.poll() is None for w in workers), "a worker died at start"
    return await serving(client, url) == len(workers)


async def at_least(client: Any, url: str, count: int) -> bool:
    return await succeeded(client, url) >= count


async def test_a_worker_cut_off_from_redis_past_its_lease(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = (
        f"a worker's link to Redis silent {PARTITION:g} s (lease {LEASE:g} s), then back "
        "(TCP proxy drops every byte, no reset)"
    )
    scenario.broker = "redis"
    scenario.promise = (
        "0 lost; one outcome per task; duplicates only among the cut-off worker's tasks "
        f"started before the cut; reclaimed within {RECLAIM_BOUND:.1f} s as a dead worker's; "
        "it serves again once back; recovery: link back to its next task run"
    )
    server = make_redis_server()
    url = server.url_with(prefix="chaos", lease=LEASE)
    proxy = Proxy(server.port)
    ran_in = tmp_path / "runs"
    ran_in.mkdir()
    workers: list[Any] = []
    memory = Memory()
    memory.watch("redis", server.process.pid)
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            nursery.start_soon(memory.sample_loop)
            workers = [
                start_worker(proxied(proxy), tmp_path, ran_in, seconds=0.01),
                start_worker(url, tmp_path, ran_in, seconds=0.01),
            ]
            victim = workers[0]
            memory.watch("worker", victim.pid)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                pairs = await submit_numbers(system, TASKS)
                await wait_for(lambda: at_least(client, url, TASKS // 3), 120)
                held = await held_by(client, url, victim.pid)
                proxy.partition()
                cut_at = time.time()
                cut_started = time.monotonic()

                async def reclaimed() -> bool:
                    return await held_by(client, url, victim.pid) == 0

                await wait_for(reclaimed, 60)
                reclaimed_after = time.monotonic() - cut_started
                await trio.sleep_until(trio.current_time() + PARTITION - reclaimed_after)
                proxy.heal()
                back_at = time.time()
                # More work after it is back: the cut-off worker must take some.
                more = await submit_numbers(system, 1000, first=TASKS)

                async def serving_again() -> bool:
                    return started_since(ran_in, victim.pid, back_at)

                await wait_for(serving_again, 60)
                scenario.recovery = time.time() - back_at
                outcomes = await Outcomes().gather(pairs + more, timeout=120)
            total = await succeeded(client, url)
            # While the proxy runs (and forwards: not blocked here), for their goodbyes.
            await trio.to_thread.run_sync(stop, workers)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, by_process = duplicated(ran_in)
    first = first_started(ran_in)
    expected = TASKS + 1000
    scenario.tasks = expected
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    struck(held > 0, "the cut-off worker held nothing: the scenario proves nothing")
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (expected, 0, 0), outcomes.failed
    assert twice <= by_process.get(victim.pid, set())
    assert all(first[task_id] <= cut_at for task_id in twice)
    assert reclaimed_after < RECLAIM_BOUND
    assert total == expected  # one outcome per task, whatever ran twice
    assert [w.returncode for w in workers] == [0, 0]


async def test_every_link_to_redis_lagging(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    low, high = (int(s * 1000) for s in LAG)
    scenario.scenario = (
        f"every link to Redis lagging {low}-{high} ms each way (lease {LEASE:g} s, TCP proxy)"
    )
    scenario.broker = "redis"
    scenario.promise = (
        f"every task completes, 0 lost; no task reclaimed while its lease is renewed, not "
        f"even {len(LAGGED_LONG_TASKS)} of {LAGGED_LONG_TASKS[0] - LONG:,} ms (0 duplicated); "
        "one outcome per task"
    )
    tasks = 200
    server = make_redis_server()
    url = server.url_with(prefix="chaos", lease=LEASE)
    proxy = Proxy(server.port, lag=LAG)
    ran_in = tmp_path / "runs"
    ran_in.mkdir()
    workers: list[Any] = []
    memory = Memory()
    memory.watch("redis", server.process.pid)
    memory.watch("client", os.getpid())
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            nursery.start_soon(memory.sample_loop)
            workers = [start_worker(proxied(proxy), tmp_path, ran_in, seconds=0.01)]
            workers.append(start_worker(proxied(proxy), tmp_path, ran_in, seconds=0.01))
            memory.watch("worker", workers[0].pid)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(proxied(proxy), queue) as system:
                got = await system.submit_many("chaos", LAGGED_LONG_TASKS)
                long = list(zip(LAGGED_LONG_TASKS, got, strict=True))
                pairs = await submit_numbers(system, tasks)
                outcomes = await Outcomes().gather(pairs + long, timeout=180)
            total = await succeeded(client, url)
            # While the proxy runs (and forwards: not blocked here), for their goodbyes.
            await trio.to_thread.run_sync(stop, workers)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, _ = duplicated(ran_in)
    expected = tasks + len(LAGGED_LONG_TASKS)
    scenario.tasks = expected
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (expected, 0, 0), outcomes.failed
    assert twice == set()
    assert total == expected
    assert [w.returncode for w in workers] == [0, 0]


async def test_a_client_cut_off_while_it_waits_for_its_receipts(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    tasks = 1000
    scenario.scenario = (
        f"a client's link to Redis cut {CLIENT_OUTAGE:g} s (reset, refused) while it waits "
        f"for {tasks:,} receipts"
    )
    scenario.broker = "redis"
    scenario.promise = (
        "every receipt resolves from the stored outcomes (the tasks finished while it was cut "
        f"off), 0 lost, 0 duplicated; recovery: link back to the last receipt resolved "
        f"(< {CLIENT_RECOVERY:g} s)"
    )
    server = make_redis_server()
    url = server.url_with(prefix="chaos", lease=LEASE)
    proxy = Proxy(server.port)
    ran_in = tmp_path / "runs"
    ran_in.mkdir()
    workers = [start_worker(url, tmp_path, ran_in, seconds=0.01) for _ in range(2)]
    memory = Memory()
    memory.watch("worker", workers[0].pid)
    memory.watch("redis", server.process.pid)
    memory.watch("client", os.getpid())
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(proxied(proxy), queue) as system:
                pairs = await submit_numbers(system, tasks)
                proxy.refusing = True
                proxy.cut()
                done_at_cut = await succeeded(client, url)
                await wait_for(lambda: at_least(client, url, tasks), 60)
                done_while_cut = await succeeded(client, url)
                await trio.sleep(CLIENT_OUTAGE)
                proxy.refusing = False
                back_at = time.monotonic()
                outcomes = await Outcomes().gather(pairs, timeout=60)
                scenario.recovery = outcomes.last_at - back_at
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, _ = duplicated(ran_in)
    scenario.tasks = tasks
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    struck(done_at_cut < tasks, "every task was done before the cut: it cut off no wait")
    assert done_while_cut == tasks
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (tasks, 0, 0), outcomes.failed
    assert twice == set()
    assert scenario.recovery < CLIENT_RECOVERY
    assert [w.returncode for w in workers] == [0, 0]

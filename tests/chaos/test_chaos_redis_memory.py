"""Chaos over Redis, its memory limit: a Redis that reaches `maxmemory` under
`maxmemory-policy noeviction` (it refuses writes), and one with an evicting policy
(`allkeys-lru`: it deletes keys to make room). Each scenario has a private redis-server
with a small `maxmemory`; the machine's own Redis is never touched."""

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
    duplicated,
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

from queueing import BrokerOutOfMemory, connect

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(300)]

#: Room for a few thousand tasks of the scenarios.
MAXMEMORY = "8mb"
#: Submits refused for memory before the scenario stops submitting.
REFUSALS = 3
#: Every receipt of the evicting Redis resolves within this after the last submit: a read
#: shows a gap in the replies, a sweep (every 15 s) finds records gone, with room for a
#: loaded machine.
RESOLVE_BOUND = 45.0


def silent(logs: Path, warning: str) -> list[str]:
    """The processes' logs in `logs` that do not say `warning`."""
    return [log.name for log in logs.glob("process-*.log") if warning not in log.read_text()]


async def serving_all(client: Any, url: str, workers: list[Any]) -> bool:
    assert all(w.poll() is None for w in workers), "a worker died at start"
    return await serving(client, url) == len(workers)


async def test_redis_out_of_memory_noeviction(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = f"Redis reaches maxmemory {MAXMEMORY} (noeviction) mid-run"
    scenario.broker = "redis"
    scenario.promise = (
        "each refused submit_many raises BrokerOutOfMemory naming maxmemory and the fix, its "
        "payloads all .rejected (none unknown); 0 lost; workers finish every task accepted "
        "while Redis stays full, none run twice; after maxmemory is raised, submits run; "
        "recovery: first refusal to the last accepted task resolved"
    )
    server = make_redis_server("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction")
    url = server.url_with(prefix="chaos")
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = [start_worker(url, tmp_path, runs, seconds=0.02) for _ in range(2)]
    memory = Memory()
    memory.watch("worker", workers[0].pid)
    memory.watch("redis", server.process.pid)
    memory.watch("client", os.getpid())
    refusals: list[BrokerOutOfMemory] = []
    pairs: list[tuple[int, Any]] = []
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                number = 0
                while len(refusals) < REFUSALS and number < 1_000_000:
                    part = range(number, number + 100)
                    number += 100
                    try:
                        got = await system.submit_many("chaos", part)
                    except BrokerOutOfMemory as exc:
                        if not refusals:
                            refused_at = time.monotonic()
                        refusals.append(exc)
                        pairs += zip(part, exc.accepted, strict=False)
                        continue
                    pairs += zip(part, got, strict=True)
                struck(bool(refusals), f"Redis took {number:,} tasks: maxmemory never reached")
                outcomes = await Outcomes().gather(pairs, timeout=120)
                scenario.recovery = outcomes.last_at - refused_at
                still_full = await client.info("memory")
                await client.config_set({"maxmemory": "0"})
                later = await Outcomes().gather(
                    await submit_numbers(system, 200, first=number), timeout=60
                )
            total = await succeeded(client, url)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, _ = duplicated(runs)
    scenario.tasks = len(pairs) + 200
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    for exc in refusals:
        assert "maxmemory" in str(exc), str(exc)
        assert (len(exc.accepted) + len(exc.rejected), list(exc.unknown)) == (100, []), exc
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (len(pairs), 0, 0), outcomes.failed
    assert twice == set()
    assert int(still_full["used_memory"]) >= int(still_full["maxmemory"]) * 0.9
    assert later.ok == 200, later.failed
    assert total == len(pairs) + 200  # one outcome per task
    assert [w.returncode for w in workers] == [0, 0]


async def test_an_evicting_redis(
    make_redis_server: Any, tmp_path: Path, scenario: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = 8000
    scenario.scenario = f"Redis with maxmemory-policy allkeys-lru, maxmemory {MAXMEMORY}"
    scenario.broker = "redis"
    scenario.promise = (
        "every process warns at start that the policy may delete tasks (naming noeviction); "
        "every receipt resolves (an evicted task: TaskLost), none wrong; recovery: last "
        f"submit to every receipt resolved (< {RESOLVE_BOUND:g} s)"
    )
    server = make_redis_server("--maxmemory", MAXMEMORY, "--maxmemory-policy", "allkeys-lru")
    url = server.url_with(prefix="chaos")
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = [start_worker(url, tmp_path, runs, seconds=0.02) for _ in range(2)]
    memory = Memory()
    memory.watch("worker", workers[0].pid)
    memory.watch("redis", server.process.pid)
    caplog.set_level("WARNING", "queueing.redis")
    try:
        async with raw_redis(url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            await wait_for(lambda: serving_all(client, url, workers), 60, 0.1)
            async with connect(url, queue) as system:
                pairs = await submit_numbers(system, tasks, chunk=100)
                submitted_at = time.monotonic()
                outcomes = await Outcomes().gather(pairs, timeout=RESOLVE_BOUND * 2)
                scenario.recovery = outcomes.last_at - submitted_at
            evicted = int((await client.info("stats"))["evicted_keys"])
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, _ = duplicated(runs)
    scenario.tasks = tasks
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    warned = [r.getMessage() for r in caplog.records if "allkeys-lru" in r.getMessage()]
    assert warned, "the client did not warn"
    assert "maxmemory-policy noeviction" in warned[0]
    assert silent(tmp_path, "maxmemory-policy is 'allkeys-lru'") == [], "a worker did not warn"
    struck(evicted > 0, "Redis evicted nothing: the scenario proves nothing")
    assert outcomes.unresolved == 0
    assert (outcomes.wrong, outcomes.failed) == (0, [])
    assert outcomes.ok + outcomes.lost == tasks
    assert scenario.recovery < RESOLVE_BOUND

"""Fair share across processes (issue #18's acceptance): `queueing worker` processes on
one Redis share a queue's tasks out between tenants, and hold `tenant_concurrency` over
all of them, as the handlers' own records show."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from fair_tasks import CAP, capped, shared
from redis_helpers import global_key, raw_client, start_worker, stop_workers, wait_for

from queueing import connect

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]

PROCESSES = 3
HEAVY, LIGHTS, EACH = 10_000, 20, 10


def events(directory: Path) -> list[tuple[int, str, str]]:
    """Every process's records, in time order: (at, what, name)."""
    found = []
    for path in directory.glob("*.log"):
        for line in path.read_text().splitlines():
            at, what, name = line.split()
            found.append((int(at), what, name))
    return sorted(found)


async def workers_up(url: str, target: str, tmp_path: Path, runs: Path) -> list[Any]:
    env = {"QUEUEING_TEST_RUNS": str(runs)}
    workers = [start_worker(url, target, tmp_path, env=env) for _ in range(PROCESSES)]
    async with raw_client(url) as redis:

        async def all_up() -> bool:
            assert all(w.poll() is None for w in workers), "a worker died at start"
            return await redis.hlen(global_key(url, "workers")) == PROCESSES

        await wait_for(all_up, timeout=30, every=0.1)
    return workers


def url_of(redis_server: Any, name: str) -> str:
    return str(redis_server.url_with(prefix=f"{name}{os.getpid()}{time.monotonic_ns() % 10**6}"))


async def test_light_tenants_finish_early_behind_a_heavy_one(
    redis_server: Any, tmp_path: Path
) -> None:
    url = url_of(redis_server, "fair")
    runs = tmp_path / "runs"
    runs.mkdir()
    workers: list[subprocess.Popen[bytes]] = []
    async with connect(url, shared) as client:
        # The backlog waits before any worker runs: the heavy tenant's first, then the lights'.
        await client.submit_many("shared", [f"heavy-{i}" for i in range(HEAVY)], tenant="heavy")
        lights = []
        for light in range(LIGHTS):
            names = [f"light{light}-{i}" for i in range(EACH)]
            lights += await client.submit_many("shared", names, tenant=f"light{light}")
        try:
            workers = await workers_up(url, "fair_tasks:shared", tmp_path, runs)
            with trio.fail_after(120):
                for receipt in lights:
                    await receipt.result(timeout=120)
        finally:
            stop_workers(workers)
    done = [name for _, what, name in events(runs) if what == "done"]
    finished = [i for i, name in enumerate(done) if name.startswith("light")]
    assert len(finished) == LIGHTS * EACH
    print(f"\nthe last of {LIGHTS * EACH} light tasks was completion #{finished[-1] + 1}")
    assert finished[-1] < 500
    heavy = [int(name.partition("-")[2]) for name in done if name.startswith("heavy")]
    assert heavy  # the heavy tenant had its turns meanwhile
    slots = PROCESSES * shared.workers
    assert all(abs(p - i) <= slots for i, p in enumerate(heavy))  # FIFO within a tenant


async def test_tenant_concurrency_holds_across_worker_processes(
    redis_server: Any, tmp_path: Path
) -> None:
    url = url_of(redis_server, "capped")
    runs = tmp_path / "runs"
    runs.mkdir()
    tenants, each = 5, 30
    workers: list[subprocess.Popen[bytes]] = []
    async with connect(url, capped) as client:
        receipts = []
        for tenant in range(tenants):
            names = [f"t{tenant}-{i}" for i in range(each)]
            receipts += await client.submit_many("capped", names, tenant=f"t{tenant}")
        try:
            workers = await workers_up(url, "fair_tasks:capped", tmp_path, runs)
            with trio.fail_after(120):
                for receipt in receipts:
                    await receipt.result(timeout=120)
        finally:
            stop_workers(workers)
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    for _, what, tenant in events(runs):  # at the same instant, an end comes first
        running[tenant] = running.get(tenant, 0) + (1 if what == "start" else -1)
        most[tenant] = max(most.get(tenant, 0), running[tenant])
    print(f"\nthe most tasks of one tenant running at once: {most}")
    assert sorted(most) == [f"t{t}" for t in range(tenants)]
    assert max(most.values()) == CAP  # the cap was reached, never passed

"""Priorities across processes: a backlog of low-priority tasks, then high-priority ones,
served by two `queueing worker` processes on one Redis: the high ones start first."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from prio_tasks import queue
from redis_helpers import global_key, raw_client, start_worker, stop_workers, wait_for

from queueing import connect

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

LOW, HIGH = 1000, 100
PROCESSES = 2


def starts(directory: Path) -> list[str]:
    """Every process's starts, in time order (one clock: one machine)."""
    lines = [
        line.split() for path in directory.glob("*.log") for line in path.read_text().splitlines()
    ]
    return [name for _, name in sorted((int(at), name) for at, name in lines)]


async def test_a_backlog_starts_by_priority_across_worker_processes(
    redis_server: Any, tmp_path: Path
) -> None:
    prefix = f"prio{os.getpid()}{time.monotonic_ns() % 10**6}"
    url = redis_server.url_with(prefix=prefix)
    runs = tmp_path / "runs"
    runs.mkdir()
    async with connect(url, queue) as client:
        # The backlog waits before any worker runs: 1,000 low, then 100 high.
        low = await client.submit_many("prio", [f"low-{i}" for i in range(LOW)])
        high = await client.submit_many("prio", [f"high-{i}" for i in range(HIGH)], priority=9)
        env = {"QUEUEING_TEST_RUNS": str(runs)}
        workers = [
            start_worker(url, "prio_tasks:queue", tmp_path, env=env) for _ in range(PROCESSES)
        ]
        try:
            async with raw_client(url) as redis:

                async def all_up() -> bool:
                    assert all(w.poll() is None for w in workers), "a worker died at start"
                    return await redis.hlen(global_key(url, "workers")) == PROCESSES

                await wait_for(all_up, timeout=30, every=0.1)
            with trio.fail_after(120):
                for receipt in [*low, *high]:
                    await receipt.result(timeout=120)
        finally:
            stop_workers(workers)
    order = starts(runs)
    expected = [f"low-{i}" for i in range(LOW)] + [f"high-{i}" for i in range(HIGH)]
    assert sorted(order) == sorted(expected)
    last_high = max(i for i, name in enumerate(order) if name.startswith("high-"))
    slots = PROCESSES * queue.workers
    # Every high task starts within the first HIGH + slots starts (the slots: tasks that
    # processes hold while the others' starts are written), in practice within HIGH.
    print(f"\nthe last of {HIGH} high-priority tasks was start #{last_high + 1} of {len(order)}")
    assert last_high < HIGH + slots
    high_order = [name for name in order if name.startswith("high-")]
    # FIFO within a priority, up to the few tasks in flight at once in other processes.
    positions = [int(name.partition("-")[2]) for name in high_order]
    assert all(abs(p - i) <= slots for i, p in enumerate(positions))

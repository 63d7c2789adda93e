"""Three `queueing worker` processes and a client on one Redis; one worker is SIGKILLed
mid-run. Nothing is lost, duplicates are only tasks the killed worker had started, and
its tasks are reclaimed by the others once its lease has run out."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_helpers import (
    consumers,
    global_key,
    key,
    outstanding,
    raw_client,
    start_worker,
    stop_workers,
    wait_for,
)

from queueing import Receipt, connect

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

LEASE = 2.0
#: The others reclaim a dead worker's tasks when they have been idle a lease; leases are
#: checked every lease/3; the rest is scheduling on a loaded 2-core machine.
RECLAIM_BOUND = LEASE + LEASE / 3 + 10.0


def runs_by_process(directory: Path) -> dict[int, list[str]]:
    return {
        int(path.stem): path.read_text().split()
        for path in directory.glob("*.log")
        if path.stat().st_size
    }


# 3,000 tasks in the default run; 20,000 with the slow tests (`nox -s slow`), as the
# SQLite broker's test of the same (tests/sqlite/test_sqlite_processes.py).
@pytest.mark.parametrize(
    "tasks", [pytest.param(3000, id="3k"), pytest.param(20000, id="20k", marks=pytest.mark.slow)]
)
async def test_sigkill_of_a_worker_loses_nothing(
    redis_server: Any, tmp_path: Path, tasks: int
) -> None:
    prefix = f"mp{os.getpid()}{time.monotonic_ns() % 10**6}"
    url = redis_server.url_with(prefix=prefix, lease=LEASE)
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_TASK_SECONDS": "0.002"}
    workers = [
        start_worker(url, "mp_tasks:queue", tmp_path, "--concurrency", "8", env=env)
        for _ in range(3)
    ]
    victim = workers[0]
    report: dict[str, Any] = {"tasks": tasks}
    try:
        async with raw_client(url) as client:

            async def all_up() -> bool:
                assert all(w.poll() is None for w in workers), "a worker died at start"
                return await client.hlen(global_key(url, "workers")) == 3

            await wait_for(all_up, timeout=30, every=0.1)
            started = time.monotonic()
            async with connect(url) as system:
                receipts: list[Receipt] = []

                async def submit(numbers: range) -> None:
                    for number in numbers:
                        receipts.append(await system.submit("mp", number))

                async def kill_midway() -> None:
                    stats = key(url, "mp", "stats")

                    async def a_third_done() -> bool:
                        return int(await client.hget(stats, "succeeded") or 0) >= tasks // 3

                    await wait_for(a_third_done, timeout=120, every=0.02)
                    victim.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    victim.wait()
                    report["killed_after"] = killed_at - started

                    async def held() -> int:  # consumer names are host-pid-random
                        pending = await consumers(client, url)
                        return sum(n for c, n in pending.items() if f"-{victim.pid}-" in c)

                    report["held_at_kill"] = await held()

                    async def reclaimed() -> bool:
                        return await held() == 0

                    await wait_for(reclaimed, timeout=60, every=0.02)
                    report["reclaimed_after"] = time.monotonic() - killed_at

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_midway)
                    batch = tasks // 100
                    for start in range(0, tasks, batch):
                        nursery.start_soon(submit, range(start, min(start + batch, tasks)))
                report["submitted_in"] = time.monotonic() - started
                results = {}
                for receipt in receipts:
                    results[receipt.id] = await receipt.result(timeout=60)
                report["all_done_in"] = time.monotonic() - started
            assert len(receipts) == tasks
            assert sorted(results.values()) == [2 * n for n in range(tasks)]
            assert await outstanding(client, url, "mp") == 0
            assert await client.xlen(key(url, "mp", "dead")) == 0
    finally:
        stop_workers(workers)

    by_process = runs_by_process(runs)
    counts = Counter(task_id for ids in by_process.values() for task_id in ids)
    assert set(counts) == set(results)  # every task ran somewhere
    twice = {task_id for task_id, n in counts.items() if n > 1}
    killed_ran = set(by_process.get(victim.pid, ()))
    assert twice <= killed_ran, "a task ran twice without its worker being killed"
    assert all(counts[task_id] == 2 for task_id in twice)
    report["ran_on_killed"] = len(killed_ran)
    report["duplicates"] = len(twice)
    print(f"\nmulti-process run: {report}")
    assert report["reclaimed_after"] < RECLAIM_BOUND, report
    assert [w.returncode for w in workers[1:]] == [0, 0]

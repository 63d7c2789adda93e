"""Real processes on one SQLite file: `queueing worker` processes and clients, killed with
SIGKILL at awkward moments. Nothing accepted is lost, duplicates are only tasks a killed
worker had started, and a dead worker's tasks are claimed again once its lease ran out.

The quick versions run by default; `-m slow` adds a larger run of the worker kill.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlite_helpers import (
    logged,
    query,
    runs_by_process,
    start_client,
    start_worker,
    stop_processes,
    wait_until,
)

from queueing import Receipt, connect

pytestmark = pytest.mark.timeout(180)

LEASE = 1.0
#: A dead worker's tasks are claimable a lease after its last renewal, which was at most
#: a lease ago; the rest is scheduling on a loaded 2-core machine.
RECLAIM_BOUND = LEASE + 3.0
STARTUP = 30.0


def _processes(path: Path) -> int:
    return int(query(path, "SELECT count(*) FROM processes")[0][0])


def _counter(path: Path, column: str) -> int:
    rows = query(path, f"SELECT {column} FROM queues WHERE name = 'mp'")
    return int(rows[0][0]) if rows else 0


def _held_by(path: Path, pid: int) -> int:
    rows = query(
        path,
        "SELECT count(*) FROM tasks WHERE state = 'running' AND owner LIKE ?",
        f"%-{pid}-%",
    )
    return int(rows[0][0])


def _start_workers(url: str, count: int, tmp_path: Path, runs: Path, seconds: str) -> list[Any]:
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_TASK_SECONDS": seconds}
    return [
        start_worker(url, "sq_tasks:queue", tmp_path, "--concurrency", "8", env=env)
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    "tasks", [pytest.param(3000, id="3k"), pytest.param(20000, id="20k", marks=pytest.mark.slow)]
)
async def test_sigkill_of_a_worker_loses_nothing(tmp_path: Path, tasks: int) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}?lease={LEASE}"
    runs = tmp_path / "runs"
    runs.mkdir()
    async with connect(url, __import__("sq_tasks").queue):  # the file and its queue exist
        pass
    workers = _start_workers(url, 3, tmp_path, runs, "0.002")
    victim = workers[0]
    report: dict[str, Any] = {"tasks": tasks}
    try:
        wait_until(lambda: _processes(path) == 3, STARTUP)
        async with connect(url) as system:
            receipts: list[Receipt] = []

            async def submit(numbers: range) -> None:
                for number in numbers:
                    receipts.append(await system.submit("mp", number))

            async def kill_midway() -> None:
                while _counter(path, "succeeded") < tasks // 3:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # another process's file: no event to wait on
                victim.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                victim.wait()
                report["held_at_kill"] = _held_by(path, victim.pid)
                while _held_by(path, victim.pid):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                report["reclaimed_after"] = time.monotonic() - killed_at

            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_midway)
                    batch = tasks // 50
                    for start in range(0, tasks, batch):
                        nursery.start_soon(submit, range(start, min(start + batch, tasks)))
                results = {receipt.id: await receipt for receipt in receipts}
        assert sorted(results.values()) == [2 * n for n in range(tasks)]
        assert _counter(path, "outstanding") == 0
        assert query(path, "SELECT count(*) FROM dead_letters") == [(0,)]
    finally:
        stop_processes(workers)
    by_process = runs_by_process(runs)
    counts = Counter(task_id for ids in by_process.values() for task_id in ids)
    assert set(counts) == set(results)  # every task ran somewhere
    twice = {task_id for task_id, n in counts.items() if n > 1}
    killed_ran = set(by_process.get(victim.pid, ()))
    assert twice <= killed_ran, "a task ran twice without its worker being killed"
    assert all(counts[task_id] == 2 for task_id in twice)
    report["duplicates"] = len(twice)
    print(f"\nSIGKILL of a worker: {report}")
    assert report["reclaimed_after"] < RECLAIM_BOUND, report
    assert [w.returncode for w in workers[1:]] == [0, 0]


async def test_sigkill_of_a_client_mid_submit_many_keeps_every_receipt(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}?lease={LEASE}"
    log = tmp_path / "receipts.log"
    chunk = 500
    client = start_client(url, log, 1_000_000, chunk, tmp_path)
    try:
        wait_until(lambda: len(logged(log)) >= 10 * chunk, STARTUP, every=0.01)
        client.send_signal(signal.SIGKILL)
        client.wait()
    finally:
        stop_processes([client])
    got = logged(log)
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    stored = dict(query(path, "SELECT id, payload FROM tasks"))
    assert set(got) <= set(stored)  # every receipt's task is in the file
    assert len(set(stored) - set(got)) <= chunk  # at most the call it was killed in
    assert all(stored[task_id] == str(number) for task_id, number in got.items())
    assert _counter(path, "outstanding") == len(stored)
    workers = _start_workers(url, 1, tmp_path, tmp_path, "0")
    try:
        wait_until(lambda: _counter(path, "outstanding") == 0, 120)
    finally:
        stop_processes(workers)
    results = dict(query(path, "SELECT id, result FROM tasks WHERE state = 'succeeded'"))
    assert len(results) == len(stored)
    assert all(results[task_id] == str(2 * number) for task_id, number in got.items())


async def test_killing_every_process_and_starting_again_runs_what_was_left(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}?lease={LEASE}"
    runs = tmp_path / "runs"
    runs.mkdir()
    log = tmp_path / "receipts.log"
    tasks = 2000
    async with connect(url, __import__("sq_tasks").queue):
        pass
    first: list[subprocess.Popen[bytes]] = _start_workers(url, 2, tmp_path, runs, "0.01")
    client = start_client(url, log, tasks, 250, tmp_path)
    everyone = [*first, client]
    try:
        wait_until(lambda: _counter(path, "succeeded") >= tasks // 3, 120, every=0.01)
        for process in everyone:
            process.send_signal(signal.SIGKILL)
        for process in everyone:
            process.wait()
    finally:
        stop_processes(everyone)
    before = dict(query(path, "SELECT id, result FROM tasks WHERE state = 'succeeded'"))
    left = _counter(path, "outstanding")
    assert before
    assert left > 0  # killed mid-run: some tasks were unfinished
    second = _start_workers(url, 2, tmp_path, runs, "0")
    try:
        wait_until(lambda: _counter(path, "outstanding") == 0, 120)
    finally:
        stop_processes(second)
    got = logged(log)
    assert got
    async with connect(url) as system:
        with trio.fail_after(60):
            for task_id, number in got.items():
                assert await system.receipt(task_id) == 2 * number
    after = dict(query(path, "SELECT id, result FROM tasks WHERE state = 'succeeded'"))
    assert {task_id: after[task_id] for task_id in before} == before  # first result stands
    assert query(path, "SELECT count(*) FROM tasks WHERE state != 'succeeded'") == [(0,)]
    print(f"\nkilled everyone with {len(before)} done and {left} unfinished; all ran after")

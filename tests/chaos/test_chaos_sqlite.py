"""Chaos on SQLite: a worker process SIGKILLed mid-run, and a client process SIGKILLed
in the middle of `submit_many`, on one file."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from chaos_helpers import (
    Memory,
    Outcomes,
    duplicated,
    start_process,
    start_worker,
    stop,
    struck,
    submit_numbers,
    wait_for,
    wait_until,
)
from chaos_tasks import queue

from queueing import connect

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

LEASE = 1.0
#: A dead worker's tasks are claimable a lease after its last renewal; the rest is
#: scheduling on a loaded machine.
RECLAIM_BOUND = LEASE + 3.0


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def counter(path: Path, column: str) -> int:
    rows = query(path, f"SELECT {column} FROM queues WHERE name = 'chaos'")
    return int(rows[0][0]) if rows else 0


def held_by(path: Path, pid: int) -> int:
    sql = "SELECT count(*) FROM tasks WHERE state = 'running' AND owner LIKE ?"
    return int(query(path, sql, f"%-{pid}-%")[0][0])


async def test_sigkill_of_a_worker_mid_run(tmp_path: Path, scenario: Any) -> None:
    tasks = 2000
    scenario.scenario = "SIGKILL a worker mid-run"
    scenario.broker = "sqlite"
    scenario.promise = (
        "0 lost; duplicates only among the killed worker's tasks; they are claimed again "
        f"a lease after the last renewal (< {RECLAIM_BOUND:g} s with a {LEASE:g} s lease, "
        "with scheduling slack; recovery: kill to reclaimed)"
    )
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}?lease={LEASE}"
    runs = tmp_path / "runs"
    runs.mkdir()
    async with connect(url, queue):  # the file and its queue exist before the workers
        pass
    workers = [start_worker(url, tmp_path, runs, seconds=0.01) for _ in range(2)]
    victim = workers[0]
    memory = Memory()
    memory.watch("worker", workers[1].pid)
    try:
        async with connect(url, queue) as system, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            pairs = await submit_numbers(system, tasks)

            async def a_third() -> bool:
                assert all(w.poll() is None for w in workers), "a worker died"
                return counter(path, "succeeded") >= tasks // 3

            await wait_for(a_third, 120)
            held = held_by(path, victim.pid)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait()

            async def reclaimed() -> bool:
                return held_by(path, victim.pid) == 0

            await wait_for(reclaimed, 60)
            scenario.recovery = time.monotonic() - killed_at
            outcomes = await Outcomes().gather(pairs, timeout=120)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
    twice, by_process = duplicated(runs)
    scenario.tasks = tasks
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    struck(held > 0, "the killed worker held nothing: the scenario proves nothing")
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (tasks, 0, 0), outcomes.failed
    assert twice <= by_process.get(victim.pid, set())
    assert scenario.recovery < RECLAIM_BOUND
    assert workers[1].returncode == 0


async def test_sigkill_of_a_client_mid_submit_many(tmp_path: Path, scenario: Any) -> None:
    chunk = 500
    scenario.scenario = "SIGKILL a client mid-submit_many"
    scenario.broker = "sqlite"
    scenario.promise = (
        "every receipt the client got is a task in the file, and runs; at most the chunk "
        "it was killed in is stored without a receipt; the file intact"
    )
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}?lease={LEASE}"
    out = tmp_path / "receipts.log"
    client = start_process(["chaos_client.py", url, str(out), "1000000", str(chunk)], tmp_path)
    memory = Memory()
    memory.watch("client", client.pid)

    def got() -> dict[str, int]:
        lines = out.read_text().splitlines() if out.exists() else []
        return {line.split()[0]: int(line.split()[1]) for line in lines}

    try:
        wait_until(lambda: client.poll() is None and len(got()) >= 10 * chunk, 60, 0.01)
        memory.sample()
        client.send_signal(signal.SIGKILL)
        client.wait()
    finally:
        stop([client])
    receipts = got()
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    stored = dict(query(path, "SELECT id, payload FROM tasks"))
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = start_worker(url, tmp_path, runs, seconds=0, concurrency=16)
    memory.watch("worker", worker.pid)
    started = time.monotonic()
    try:
        wait_until(lambda: counter(path, "outstanding") == 0, 120)
        memory.sample()
    finally:
        stop([worker])
    results = dict(query(path, "SELECT id, result FROM tasks WHERE state = 'succeeded'"))
    twice, _ = duplicated(runs)
    scenario.tasks = len(stored)
    scenario.lost = len(set(receipts) - set(stored))
    scenario.unresolved = len(stored) - len(results)
    scenario.duplicated = len(twice)
    scenario.recovery = time.monotonic() - started
    scenario.memory = memory.peaks()
    assert set(receipts) <= set(stored)
    assert len(set(stored) - set(receipts)) <= chunk
    assert all(stored[task_id] == str(number) for task_id, number in receipts.items())
    assert len(results) == len(stored)
    assert all(results[task_id] == str(2 * number) for task_id, number in receipts.items())
    assert twice == set()

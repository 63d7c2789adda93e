"""`tenant_concurrency` across real processes on one SQLite file: three `queueing worker`
processes (4 workers each) share a queue with `tenant_concurrency=2`; the handlers' own
records (when each task of each tenant ran, on one machine-wide clock) never show more
than 2 tasks of one tenant running at once."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import trio
from sq_fair_tasks import TENANT_CAP, capped
from sqlite_helpers import query, start_worker, stop_processes, wait_until

from queueing import connect

pytestmark = pytest.mark.timeout(180)

STARTUP = 30.0
TENANTS = 3
EACH = 40


def _spans(runs: Path) -> tuple[dict[str, list[tuple[int, int]]], dict[str, set[str]]]:
    """Each tenant's (start, end) spans, and the processes that ran its tasks."""
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    processes: dict[str, set[str]] = defaultdict(set)
    for path in runs.glob("*.spans"):
        for line in path.read_text().splitlines():
            tenant, started, ended, _ = line.split()
            spans[tenant].append((int(started), int(ended)))
            processes[tenant].add(path.stem)
    return spans, processes


def _most_at_once(spans: list[tuple[int, int]]) -> int:
    """The most spans overlapping at one instant (an end before a start at the same one)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = running = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


async def test_tenant_concurrency_holds_across_three_processes(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}"
    runs = tmp_path / "runs"
    runs.mkdir()
    async with connect(url, capped):  # the file and its queue exist
        pass
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_TASK_SECONDS": "0.03"}
    workers = [start_worker(url, "sq_fair_tasks:capped", tmp_path, env=env) for _ in range(3)]
    try:
        wait_until(lambda: query(path, "SELECT count(*) FROM processes") == [(3,)], STARTUP)
        async with connect(url, capped) as system:
            jobs = [{"tenant": f"t{t}"} for _ in range(EACH) for t in range(TENANTS)]
            receipts = await system.submit_many("capped", jobs)
            with trio.fail_after(120):
                results = [await receipt for receipt in receipts]
        assert sorted(results) == sorted(job["tenant"] for job in jobs)
    finally:
        stop_processes(workers)
    spans, processes = _spans(runs)
    assert {tenant: len(s) for tenant, s in spans.items()} == {
        f"t{t}": EACH for t in range(TENANTS)
    }
    most = {tenant: _most_at_once(s) for tenant, s in spans.items()}
    print(f"\nmost running at once per tenant (cap {TENANT_CAP}): {most}")
    assert max(most.values()) <= TENANT_CAP
    assert max(most.values()) == TENANT_CAP  # the cap was reached: the check can fail
    assert len(set().union(*processes.values())) == 3  # every process ran tasks
    assert query(path, "SELECT count(*) FROM tenants") == [(0,)]  # every count freed

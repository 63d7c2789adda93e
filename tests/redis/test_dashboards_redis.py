"""The dashboards over Redis: worker processes publish their slots and latencies with their
heartbeats; `queueing top` (in a real terminal), the sampler and the web dashboard read
every process from another one."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from redis_helpers import start_worker, stop_workers

import queueing
from queueing.dashboard import Sampler, Snapshot, dashboard_app

pytestmark = pytest.mark.redis

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOKEN = "a-token-for-the-redis-tests-0123"
#: Seconds for worker processes to start and publish a heartbeat with their report.
START = 30.0


async def until(check: Callable[[], Any], timeout: float = START, every: float = 0.2) -> Any:
    """Poll `check()` (sync or async) until it returns something true; fail after timeout."""
    with trio.fail_after(timeout):
        while True:
            value = check()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await trio.sleep(every)


async def sample_until(sampler: Sampler, check: Callable[[Snapshot], bool]) -> Snapshot:
    async def sampled() -> Snapshot | None:
        snapshot = await sampler.sample()
        return snapshot if check(snapshot) else None

    result: Snapshot = await until(sampled, every=0.5)
    return result


async def served(url: str, processes: int = 1) -> None:
    """Wait until `processes` worker processes serve their queues (a client connected then
    knows them)."""
    async with queueing.connect(url) as probe:
        await sample_until(Sampler(probe), lambda s: len(s.processes) == processes)


async def test_the_sampler_sees_every_process_its_slots_and_latencies(
    redis_url: str, tmp_path: Path
) -> None:
    workers = [start_worker(redis_url, "cli_tasks", tmp_path) for _ in range(2)]
    try:
        await served(redis_url, 2)
        async with queueing.connect(redis_url) as client:
            sampler = Sampler(client, window=30)
            await sampler.sample()
            receipts = [await client.submit("nap", 0.3) for _ in range(8)]
            for receipt in receipts:
                await receipt.result(timeout=30)
            # Each process publishes its slots and latencies with its next heartbeat: wait
            # for both processes' (one may have published before the other).
            snapshot = await sample_until(
                sampler,
                lambda s: s.queue("nap").p50 is not None and s.queue("nap").workers == 4,
            )
    finally:
        stop_workers(workers)
    nap = snapshot.queue("nap")
    assert (nap.workers, nap.submitted, nap.succeeded) == (4, 8, 8)  # two processes, 2 each
    assert nap.p50 is not None
    assert 0.25 < nap.p50 < 5
    assert nap.p99 is not None
    assert nap.p99 >= nap.p50
    assert nap.rate_out is not None
    assert nap.rate_out > 0
    assert {p.slots["nap"][0] for p in snapshot.processes} == {2}
    assert all(p.pid for p in snapshot.processes)
    assert "redis://" in snapshot.source
    assert "prefix=" in snapshot.source


async def test_a_queue_declared_after_the_sampler_started_has_rates(
    redis_url: str, tmp_path: Path
) -> None:
    async with queueing.connect(redis_url) as watcher:
        sampler = Sampler(watcher, window=60)
        assert (await sampler.sample()).queues == []  # nothing declared yet
        worker = start_worker(redis_url, "cli_tasks", tmp_path)
        try:
            await served(redis_url)
            await sampler.sample()
            async with queueing.connect(redis_url) as client:
                for receipt in [await client.submit("nap", 0.01) for _ in range(5)]:
                    await receipt.result(timeout=30)
            await trio.sleep(0.5)
            nap = (await sampler.sample()).queue("nap")
        finally:
            stop_workers([worker])
    assert nap is not None
    assert nap.rate_in is not None
    assert nap.rate_in > 0
    assert nap.rate_out is not None
    assert nap.rate_out > 0


async def test_the_dashboard_requeues_a_dead_letter_across_processes(
    redis_url: str, tmp_path: Path
) -> None:
    worker = start_worker(redis_url, "cli_tasks", tmp_path)
    try:
        await served(redis_url)
        async with queueing.connect(redis_url) as client:
            receipt = await client.submit("shaky", "eu-west")
            with pytest.raises(queueing.TaskFailed):
                await receipt.result(timeout=30)
            sampler = Sampler(client)
            await sampler.sample()
            app = dashboard_app(client, sampler, token=TOKEN)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
                snapshot = (await web.get("/api/snapshot")).json()
                answer = await web.post(
                    "/api/queues/shaky/dead-letters/requeue",
                    json={"ids": [receipt.id]},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                (new_id,) = answer.json()["requeued"]
                again = client.receipt(new_id)
                with pytest.raises(queueing.TaskFailed):
                    await again.result(timeout=30)  # the worker process ran it again
                letters = (await web.get("/api/queues/shaky/dead-letters")).json()
                found = (await web.get(f"/api/tasks/{new_id}")).json()
    finally:
        stop_workers([worker])
    assert receipt.id in [f["id"] for f in snapshot["failures"]]
    assert [letter["id"] for letter in letters] == [new_id]
    assert found["state"] == "dead-lettered"
    assert "the service is down" in found["error"]["message"]


async def test_a_broker_away_shows_as_a_problem_and_the_figures_stay(
    make_redis_server: Callable[..., Any], tmp_path: Path
) -> None:
    server = make_redis_server()
    url = server.url_with(prefix="away")
    worker = start_worker(url, "cli_tasks", tmp_path)
    try:
        await served(url)
        async with queueing.connect(url) as client:
            sampler = Sampler(client)
            before = await sampler.sample()
            stop_workers([worker])
            server.stop()
            after = await sampler.sample()
            server.start()
    finally:
        stop_workers([worker])
    assert before.problem is None
    assert after.problem is not None
    assert after.queue("nap") is not None  # the last good figures


def test_top_shows_the_queues_of_a_worker_process_in_a_terminal(
    redis_url: str, tmp_path: Path, terminal: Any
) -> None:
    worker = start_worker(redis_url, "cli_tasks", tmp_path)
    try:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        top = [sys.executable, "-m", "queueing", "top", "--broker", redis_url, "--every", "0.5"]
        terminal.run(top, env={"PYTHONPATH": path}, cwd=HERE, width=130, height=40)
        # The worker process's heartbeat tells its slots: 0 of 2 busy.
        terminal.wait_for(lambda s: _cells(s, "nap")[-1:] == ["0/2"], timeout=60)
        with queueing.connect_sync(redis_url) as client:
            receipts = [client.submit("nap", 0.25) for _ in range(40)]  # 5 s of work
            busy = terminal.wait_for(lambda s: _cells(s, "nap")[-1:] == ["2/2"], timeout=60)
            for receipt in receipts:
                receipt.result(timeout=60)
        done = terminal.wait_for(
            lambda s: _number(_cells(s, "nap"), 8) == 40 and _cells(s, "nap")[6] != "-",
            timeout=60,
        )
        terminal.keys("q")
        terminal.wait_for(lambda s: "exited 0" in s)
    finally:
        stop_workers([worker])
    nap = _cells(busy, "nap")
    assert _number(nap, 1) is not None
    assert _number(nap, 2) == 2
    assert _cells(done, "nap")[5] != "-", done
    assert float(_cells(done, "nap")[5]) > 0, done  # out/s over the window
    assert "worker process" in done
    assert re.search(r"nap [0-2]/2, shaky [01]/1", done)  # the process, its slots by queue


def _cells(screen: str, queue: str) -> list[str]:
    """A queue's row on top's screen, latencies joined to their unit (so that the columns
    are: queue, depth, in flight, sched, in/s, out/s, p50, p99, done, failed, retried,
    dead, workers)."""
    for line in screen.splitlines():
        cells = line.replace(" ms", "ms").replace(" s ", "s ").split()
        if cells and cells[0] == queue:
            return cells
    return []


def _number(cells: list[str], index: int) -> int | None:
    try:
        return int(cells[index])
    except (IndexError, ValueError):
        return None

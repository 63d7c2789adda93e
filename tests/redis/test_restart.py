"""Redis restarts mid-run (persistence: `appendonly yes`, `appendfsync always`), shut
down or killed: worker processes and clients reconnect and finish, and every accepted task
still reaches its outcome. Without persistence the tasks are gone, but workers go on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_helpers import (
    global_key,
    key,
    outstanding,
    raw_client,
    start_worker,
    stop_workers,
    wait_for,
)

from queueing import Queue, Receipt, Worker, connect, open_system

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

TASKS = 3000


class Double(Worker):
    async def handle(self, number: int) -> int:
        return 2 * number


async def succeeded(url: str) -> int:
    async with raw_client(url) as client:
        return int(await client.hget(key(url, "mp", "stats"), "succeeded") or 0)


@pytest.mark.parametrize("how", ["terminate", "kill"])
async def test_workers_and_clients_survive_a_redis_restart(
    make_redis_server: Callable[..., Any], tmp_path: Path, how: str
) -> None:
    server = make_redis_server("--appendonly", "yes", "--appendfsync", "always")
    url = server.url_with(prefix="restart", lease=2)
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_TASK_SECONDS": "0.002"}
    workers = [
        start_worker(url, "mp_tasks:queue", tmp_path, "--concurrency", "4", env=env)
        for _ in range(2)
    ]
    try:
        with trio.fail_after(30):
            while True:
                assert all(w.poll() is None for w in workers), "a worker died at start"
                async with raw_client(url) as client:
                    if await client.hlen(global_key(url, "workers")) == 2:
                        break
                await trio.sleep(0.1)
        restarted = 0.0
        async with connect(url) as system:
            receipts: list[Receipt] = []

            async def submit(numbers: range) -> None:
                for number in numbers:
                    receipts.append(await system.submit("mp", number))

            async def restart_midway() -> None:
                nonlocal restarted

                async def a_third_done() -> bool:
                    return await succeeded(url) >= TASKS // 3

                await wait_for(a_third_done, timeout=60, every=0.02)
                assert await succeeded(url) < TASKS  # mid-run
                if how == "kill":
                    assert server.process is not None
                    server.process.kill()
                server.stop()
                await trio.sleep(0.5)  # down for a moment: every connection fails
                server.start()
                restarted = time.monotonic()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_midway)
                for start in range(0, TASKS, 100):
                    nursery.start_soon(submit, range(start, start + 100))
            results = [await receipt.result(timeout=60) for receipt in receipts]
            finished = time.monotonic() - restarted
        assert sorted(results) == [2 * n for n in range(TASKS)]
        async with raw_client(url) as client:
            assert await outstanding(client, url, "mp") == 0
            assert await client.xlen(key(url, "mp", "dead")) == 0
        assert all(w.poll() is None for w in workers), "a worker died"
    finally:
        stop_workers(workers)
    assert [w.returncode for w in workers] == [0, 0]
    ran = sum(len(path.read_text().split()) for path in runs.glob("*.log"))
    print(
        f"\nrestart ({how}): {TASKS} tasks, {ran - TASKS} ran twice, all done {finished:.1f}s after"
    )


async def test_workers_go_on_after_redis_lost_everything(
    make_redis_server: Callable[..., Any],
) -> None:
    server = make_redis_server()  # no persistence: a restart loses every key
    url = server.url_with(prefix="amnesia", lease=1)
    async with open_system(Queue("double", Double, workers=2), broker=url) as system:
        assert await (await system.submit("double", 1)).result(timeout=5) == 2
        server.stop()
        server.start()
        # The queue's stream and group are gone: the workers declare them again.
        receipt = await system.submit("double", 2)
        assert await receipt.result(timeout=10) == 4
        async with connect(url) as client:
            assert await (await client.submit("double", 3)).result(timeout=10) == 6

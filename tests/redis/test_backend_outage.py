"""The web developers' outage run (issue 11), over Redis with two worker processes: jobs
keep coming at a steady rate while the backend the handlers call is down for 5 s, and with
the default retry policy not one accepted job is lost (none dead-lettered or failed).

Part of the chaos suite (about 20 s of real time): `nox -s chaos`, or `pytest -m chaos
tests/redis/test_backend_outage.py`. The same run in virtual time, in memory, is
tests/queueing/test_retries.py's minute outage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_helpers import global_key, raw_client, start_worker, stop_workers, wait_for

from queueing import Receipt, connect

pytestmark = [pytest.mark.redis, pytest.mark.chaos, pytest.mark.timeout(180)]

RATE = 25  # jobs per second, submitted on a schedule whatever happens (open loop)
SECONDS = 12
OUTAGE = (3.0, 8.0)  # the backend is down from 3 s to 8 s into the run


async def backend(port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Answer "ok" to every line; cancelled to take the backend down (its port refuses)."""

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(64)
            await stream.send_all(b"ok\n")

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")  # SO_REUSEADDR
    await trio.serve_listeners(answer, listeners, task_status=task_status)


async def test_a_5_second_backend_outage_loses_no_job(redis_server: Any, tmp_path: Path) -> None:
    url = redis_server.url_with(prefix=f"outage{time.monotonic_ns() % 10**9}")
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"QUEUEING_TEST_BACKEND_PORT": str(port)}
    workers = [start_worker(url, "outage_tasks", tmp_path, env=env) for _ in range(2)]
    try:
        async with raw_client(url) as client:

            async def all_up() -> bool:
                assert all(w.poll() is None for w in workers), "a worker died at start"
                return await client.hlen(global_key(url, "workers")) == 2

            await wait_for(all_up, timeout=30, every=0.1)
        async with trio.open_nursery() as nursery, connect(url) as system:
            start = trio.current_time()

            async def backend_with_an_outage(*, task_status: Any) -> None:
                with trio.move_on_at(start + OUTAGE[0]):
                    await backend(port, task_status=task_status)
                await trio.sleep_until(start + OUTAGE[1])  # down: connections are refused
                await backend(port)  # back, on the same port

            await nursery.start(backend_with_an_outage)
            receipts: list[Receipt[Any]] = []
            for number in range(RATE * SECONDS):
                await trio.sleep_until(start + number / RATE)
                receipts.append(await system.submit("calls", number))
            results = [await receipt.result(timeout=60) for receipt in receipts]
            assert results == list(range(RATE * SECONDS))
            with trio.fail_after(30):  # a client's figures are read every few seconds
                while (stats := system.stats()["calls"]).succeeded < RATE * SECONDS:  # noqa: ASYNC110 (a poll)
                    await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        assert (stats.dead_lettered, stats.failed) == (0, 0)
        assert stats.retried > 0  # the outage was felt
    finally:
        stop_workers(workers)
    assert all(w.returncode == 0 for w in workers)

"""Faults with the RabbitMQ broker: a connection dropped mid-run, a worker process
SIGKILLed mid-task, RabbitMQ stopped and started again. Nothing confirmed is lost (every
accepted task gets its outcome, with its own result) and tasks run twice only if they
were in flight when the fault struck.

Slow (`nox -s slow`): they run thousands of tasks across real processes; the restart test
stops RabbitMQ's application for everyone on the machine for a few seconds.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
from rabbit_helpers import (
    close_connections,
    parts,
    redis_of,
    runs_by_process,
    start_worker,
    stop_workers,
    wait_for,
    wait_until,
    with_options,
)

from queueing import Queue, Receipt, Worker, connect, open_system

pytestmark = [pytest.mark.amqp, pytest.mark.slow, pytest.mark.timeout(240)]

#: Seconds one task takes: long enough that many are in flight when a fault strikes.
TASK_SECONDS = 0.005


class Logged(Worker):
    """Logs (task id, start time) of each run in `Logged.runs`, sleeps, returns 2 x."""

    runs: ClassVar[list[tuple[str, float]]] = []

    async def handle(self, number: int) -> int:
        assert self.task_id is not None
        Logged.runs.append((self.task_id, trio.current_time()))
        await trio.sleep(TASK_SECONDS)
        return 2 * number


async def submit_all(system: Any, queue: str, count: int) -> list[Receipt]:
    receipts: list[Receipt] = [None] * count  # type: ignore[list-item]

    async def submit(first: int, step: int) -> None:
        for number in range(first, count, step):
            receipts[number] = await system.submit(queue, number)

    async with trio.open_nursery() as nursery:
        for first in range(32):
            nursery.start_soon(submit, first, 32)
    return receipts


async def test_a_connection_dropped_mid_run_loses_nothing(
    amqp_url: str, rabbitmqctl: list[str]
) -> None:
    count = 2000
    name = parts(amqp_url)[2]
    Logged.runs = []
    url = with_options(amqp_url, connection_name=name)
    async with open_system(Queue("logged", Logged, workers=8), broker=url) as system:
        dropped_at: list[float] = []

        async def drop_midway() -> None:
            await wait_until(lambda: len(Logged.runs) >= count // 3)
            dropped_at.append(trio.current_time())
            assert await close_connections(rabbitmqctl, name) >= 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drop_midway)
            receipts = await submit_all(system, "logged", count)
        with trio.fail_after(120):
            results = [await receipt for receipt in receipts]
        assert results == [2 * n for n in range(count)]
        await system.drain(timeout=60)
        assert await system.dead_letters("logged") == []
    starts = Counter(task_id for task_id, _ in Logged.runs)
    assert set(starts) == {r.id for r in receipts}  # every task ran
    first_start = {}
    for task_id, at in Logged.runs:
        first_start.setdefault(task_id, at)
    twice = [task_id for task_id, n in starts.items() if n > 1]
    # A task ran twice only if it had started before the drop (in flight then).
    assert all(first_start[task_id] <= dropped_at[0] for task_id in twice)


async def test_a_worker_process_killed_mid_task_loses_nothing(
    amqp_url: str, tmp_path: Path
) -> None:
    count = 3000
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_TASK_SECONDS": str(TASK_SECONDS)}
    workers = [
        start_worker(amqp_url, "rabbit_tasks:queue", tmp_path, "--concurrency", "8", env=env)
        for _ in range(2)
    ]
    victim = workers[0]
    try:
        async with redis_of(amqp_url) as client:
            workers_key = f"{{{parts(amqp_url)[2]}}}:workers"

            async def all_up() -> bool:
                assert all(w.poll() is None for w in workers), "a worker died at start"
                return await client.hlen(workers_key) == 2

            await wait_for(all_up, timeout=60, every=0.1)
        async with connect(amqp_url) as system:

            async def kill_midway() -> None:
                def ran() -> int:
                    return sum(len(ids) for ids in runs_by_process(runs).values())

                await wait_until(lambda: ran() >= count // 3)
                victim.send_signal(signal.SIGKILL)
                victim.wait()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_midway)
                receipts = await submit_all(system, "mp", count)
            with trio.fail_after(120):
                results = [await receipt for receipt in receipts]
            assert results == [2 * n for n in range(count)]
            assert await system._broker.outstanding("mp") == 0  # type: ignore[attr-defined]
            assert await system.dead_letters("mp") == []
    finally:
        stop_workers(workers)
    by_process = runs_by_process(runs)
    counts = Counter(task_id for ids in by_process.values() for task_id in ids)
    assert set(counts) == {r.id for r in receipts}  # every task ran somewhere
    twice = {task_id for task_id, n in counts.items() if n > 1}
    assert twice <= set(by_process.get(victim.pid, ()))  # only what the killed one had
    assert victim.returncode == -signal.SIGKILL


async def test_a_rabbitmq_restart_loses_nothing(amqp_url: str, rabbitmqctl: list[str]) -> None:
    count = 1000
    Logged.runs = []
    async with open_system(Queue("logged", Logged, workers=8), broker=amqp_url) as system:
        before = await submit_all(system, "logged", count)
        await wait_until(lambda: len(Logged.runs) >= count // 4)
        await trio.run_process([*rabbitmqctl, "stop_app"])
        try:
            # Submits during the outage wait for RabbitMQ (no error, no loss).
            async with trio.open_nursery() as nursery:
                during: list[Receipt] = []

                async def submit_during() -> None:
                    during.extend(await submit_all(system, "logged", count // 10))

                nursery.start_soon(submit_during)
                await trio.sleep(1.0)
                assert len(during) == 0  # still waiting
                await trio.run_process([*rabbitmqctl, "start_app"])
        finally:
            await trio.run_process([*rabbitmqctl, "start_app"])  # idempotent
        with trio.fail_after(120):
            results = [await receipt for receipt in before]
            more = [await receipt for receipt in during]
        assert results == [2 * n for n in range(count)]
        assert more == [2 * n for n in range(count // 10)]
        await system.drain(timeout=60)
        assert await system.dead_letters("logged") == []
    ran = {task_id for task_id, _ in Logged.runs}
    assert ran == {r.id for r in [*before, *during]}

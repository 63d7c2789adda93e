"""Redis Sentinel (`redis+sentinel://host:26379,…/service`): the broker follows the master
the sentinels name, through a failover mid-run: every receipt resolves, with its result or
`TaskLost` (what asynchronous replication had not copied yet may be lost; see
docs/how-to/redis-cluster-sentinel.md)."""

from __future__ import annotations

import collections
from typing import Any

import pytest
import trio
from redis_topologies import cli, wait_until

from queueing import Queue, Receipt, TaskFailed, Worker, open_system

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

TASKS = 600
WORKERS = 4
RUNS: collections.Counter[int] = collections.Counter()
THIRD: list[trio.Event] = []


class Record(Worker):
    async def handle(self, number: int) -> int:
        RUNS[number] += 1
        if THIRD and len(RUNS) >= TASKS // 3:
            THIRD[-1].set()
        await trio.sleep(0.002)
        return 2 * number


async def test_a_round_trip_through_the_sentinels(redis_sentinels: Any) -> None:
    url = redis_sentinels.url(prefix="plain")
    async with open_system(Queue("double", Record, workers=2), broker=url) as system:
        receipts = [await system.submit("double", n) for n in range(50)]
        assert [await r.result(timeout=10) for r in receipts] == [2 * n for n in range(50)]


async def test_a_sentinel_failover_mid_run_resolves_every_receipt(redis_sentinels: Any) -> None:
    url = redis_sentinels.url(prefix="failing", lease=2)
    old = redis_sentinels.master_port()
    RUNS.clear()
    THIRD.append(trio.Event())
    async with open_system(Queue("work", Record, workers=WORKERS), broker=url) as system:
        receipts: list[Receipt] = []

        async def submit(numbers: range) -> None:
            for number in numbers:
                receipts.append(await system.submit("work", number))

        def failover() -> None:
            cli(redis_sentinels.sentinels[0].port, "SENTINEL", "FAILOVER", "queueing")
            wait_until(lambda: redis_sentinels.master_port() != old, "the failover")

        async def midway() -> None:
            with trio.fail_after(60):
                await THIRD[-1].wait()
            assert len(RUNS) < TASKS  # mid-run
            await trio.to_thread.run_sync(failover)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(midway)
            for start in range(0, TASKS, 100):
                nursery.start_soon(submit, range(start, start + 100))
        done, lost = 0, 0
        errors: list[str] = []
        for receipt in receipts:
            try:
                assert await receipt.result(timeout=60) % 2 == 0
                done += 1
            except TaskFailed as exc:
                errors.append(exc.error_type)
                lost += 1
    assert set(errors) <= {"TaskLost"}
    assert redis_sentinels.master_port() != old  # it did fail over
    assert done + lost == TASKS
    print(f"\n{TASKS} tasks: {done} done, {lost} lost, {sum(RUNS.values()) - len(RUNS)} twice")

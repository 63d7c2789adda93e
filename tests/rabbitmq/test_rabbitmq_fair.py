"""Fair share on RabbitMQ, below the contract (tests/contract/test_contract_fair_share.py
has the order): a queue that never saw a tenant keeps its RabbitMQ path; one that did keeps
its waiting tasks in the results store and hands them out with a lease; a serving process
that did not submit finds that out; running counts hold across processes; figures."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from rabbit_fair_tasks import capped
from rabbit_helpers import (
    parts,
    ready_count,
    redis_of,
    start_worker,
    stop_workers,
    wait_for,
    with_options,
)

from queueing import ErrorInfo, Queue, Worker, connect, open_system
from queueing._task import Task, TaskState
from queueing.brokers import QueueInfo, TenantFigures
from queueing.brokers.amqp import RabbitMQBroker
from queueing.brokers.redis._keys import ENVELOPE_OVERHEAD
from queueing.brokers.redis._wire import decode_envelope, encode_envelope

pytestmark = pytest.mark.amqp


class Log(Worker):
    def __init__(self, started: list[str], gate: trio.Event | None = None) -> None:
        self.started = started
        self.gate = gate

    async def handle(self, name: str) -> str:
        self.started.append(name)
        if self.gate is not None:
            await self.gate.wait()
        return name


async def fair_keys(url: str) -> list[str]:
    """The system's keys of fair share in the results store."""
    prefix = parts(url)[2]
    async with redis_of(url) as redis:
        return [key async for key in redis.scan_iter(match=f"{{{prefix}:*}}:fair*")]


async def test_a_queue_without_tenants_keeps_its_rabbitmq_path(amqp_url: str) -> None:
    started: list[str] = []
    spec = Queue("plain", Log, worker_kwargs={"started": started}, workers=1)
    async with connect(amqp_url, spec) as client:
        receipts = await client.submit_many("plain", ["p1", "p2", "p3"])
        assert await ready_count(amqp_url, "plain") == 3  # published to RabbitMQ at submit
        assert await fair_keys(amqp_url) == []  # nothing of fair share in the store
        async with open_system(spec, broker=amqp_url, shutdown_timeout=1.0):
            for receipt in receipts:
                await receipt.result(timeout=30)
    assert started == ["p1", "p2", "p3"]
    assert await fair_keys(amqp_url) == []


async def test_a_backlog_in_rabbitmq_joins_the_fair_order_of_another_process(
    amqp_url: str,
) -> None:
    # A client submits while nothing serves: three tasks without a tenant (published to
    # RabbitMQ), then two of tenant A (the queue turns fair: the three move to the store,
    # first in line). A serving process that submitted nothing hands them out fairly.
    started: list[str] = []
    spec = Queue("mixed", Log, worker_kwargs={"started": started}, workers=1)
    async with connect(amqp_url, spec) as client:
        plain = await client.submit_many("mixed", ["n1", "n2", "n3"])
        assert await ready_count(amqp_url, "mixed") == 3
        tenant = await client.submit_many("mixed", ["a1", "a2"], tenant="A")
        figures = await client._broker.tenant_figures("mixed", 10)
        assert figures == [  # the default tenant's three moved from RabbitMQ to the store
            TenantFigures("", waiting=3, running=0),
            TenantFigures("A", waiting=2, running=0),
        ]
        async with open_system(spec, broker=amqp_url, shutdown_timeout=1.0):
            for receipt in [*plain, *tenant]:
                await receipt.result(timeout=30)
    assert started == ["n1", "a1", "n2", "a2", "n3"]


@asynccontextmanager
async def running(url: str, info: QueueInfo) -> AsyncIterator[RabbitMQBroker]:
    broker = RabbitMQBroker(url)
    async with broker.connect({info.name: info}, serve=True), trio.open_nursery() as nursery:
        nursery.start_soon(broker.run)
        yield broker
        nursery.cancel_scope.cancel()


def new_task(queue: str, name: str, tenant: str) -> Task:
    task = Task(f"{queue}:{name}", queue, name, time.time())
    task.tenant = tenant
    return task


async def test_a_task_whose_lease_ran_out_is_handed_out_again_first(amqp_url: str) -> None:
    info = QueueInfo("leased", maxsize=100, max_payload=10_000, result_ttl=60)
    async with running(with_options(amqp_url, lease=0.5), info) as broker:
        for name in ["t1", "t2"]:
            assert (await broker.accept(info, new_task("leased", name, "A"))).value == "accepted"
        (first,) = await broker.claim(info, 1, wait=1.0)
        assert (first.id, first.deliveries) == ("leased:t1", 0)
        await trio.sleep(0.8)  # no renew: its lease runs out (a process that stopped)
        (again,) = await broker.claim(info, 1, wait=1.0)
        assert (again.id, again.deliveries) == ("leased:t1", 1)  # ahead of t2
        assert await broker.renew(info, [first]) == [first]  # the first claim lost it
        assert await broker.renew(info, [again]) == []
        assert await broker.settle(info, again, TaskState.SUCCEEDED, "done")
        await broker.flush()
        (second,) = await broker.claim(info, 1, wait=1.0)
        assert second.id == "leased:t2"
        figures = await broker.tenant_figures("leased", 10)
        assert figures == [TenantFigures("A", waiting=0, running=1)]


async def test_a_cancelled_waiting_task_is_never_handed_out_and_holds_no_slot(
    amqp_url: str,
) -> None:
    info = QueueInfo("capped", maxsize=100, max_payload=10_000, result_ttl=60, tenant_concurrency=1)
    async with running(amqp_url, info) as broker:
        for name in ["c1", "c2", "c3"]:
            await broker.accept(info, new_task("capped", name, "A"))
        (first,) = await broker.claim(info, 2, wait=1.0)  # the cap: one of A at a time
        assert first.id == "capped:c1"
        assert await broker.cancel("capped:c2", ErrorInfo("Cancelled", "no")) is not None
        assert await broker.settle(info, first, TaskState.SUCCEEDED, 1)
        await broker.flush()
        with trio.fail_after(10):
            taken: list[Task] = []
            while not taken:
                taken = await broker.claim(info, 2, wait=0.5)
        assert [task.id for task in taken] == ["capped:c3"]


def test_an_envelope_carries_the_tenant() -> None:
    # The tenant travels with the task (its envelope, read back by a claiming process).
    task = new_task("q", "x", "acme")
    back = decode_envelope({"env": encode_envelope(task)}, "q", 1000 + ENVELOPE_OVERHEAD)
    assert back.tenant == "acme"


@pytest.mark.slow
async def test_tenant_concurrency_holds_across_worker_processes(
    amqp_url: str, tmp_path: Path
) -> None:
    # Three processes, eight workers each, tenant_concurrency=2: the handlers' own records
    # (start and end times, per tenant) never show more than two of a tenant at once.
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_TASK_SECONDS": "0.1"}
    workers = [
        start_worker(amqp_url, "rabbit_fair_tasks:capped", tmp_path, env=env) for _ in range(3)
    ]
    try:
        async with redis_of(amqp_url) as redis:
            workers_key = f"{{{parts(amqp_url)[2]}}}:workers"

            async def all_up() -> bool:
                assert all(w.poll() is None for w in workers), "a worker died at start"
                return await redis.hlen(workers_key) == 3

            await wait_for(all_up, timeout=60, every=0.1)
        async with connect(amqp_url, capped) as client:
            receipts = []
            for tenant in ["A", "B", "C"]:
                names = [f"{tenant} {i}" for i in range(20)]
                receipts += await client.submit_many("capped", names, tenant=tenant)
            for receipt in receipts:
                await receipt.result(timeout=120)
    finally:
        stop_workers(workers)
    events: list[tuple[float, int, str]] = []
    for path in runs.glob("*.spans"):
        for line in path.read_text().split("\n"):
            if line:
                tenant, start, end = line.split()
                events += [(float(start), 1, tenant), (float(end), -1, tenant)]
    assert len(events) == 2 * 60
    assert len({path.stem for path in runs.glob("*.spans")}) > 1  # spread over processes
    now: dict[str, int] = {}
    most = 0
    for _, step, tenant in sorted(events, key=lambda e: (e[0], e[1])):
        now[tenant] = now.get(tenant, 0) + step
        most = max(most, now[tenant])
    assert most == 2

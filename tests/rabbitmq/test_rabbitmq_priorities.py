"""Priorities on RabbitMQ, below the contract: one ready queue per level in use, found by
a serving process that did not submit (through the levels the results store registers),
and figures that count every level."""

from __future__ import annotations

import pytest
import trio
from rabbit_helpers import parts, ready_count, redis_of

from queueing import Queue, Transient, Worker, connect, open_system

pytestmark = pytest.mark.amqp


class Log(Worker):
    started: list[str]

    def __init__(self, started: list[str]) -> None:
        self.started = started

    async def handle(self, name: str) -> str:
        self.started.append(name)
        return name


async def test_a_backlog_submitted_by_another_client_starts_by_priority(amqp_url: str) -> None:
    started: list[str] = []
    spec = Queue("prio", Log, worker_kwargs={"started": started}, workers=1)
    async with connect(amqp_url, spec) as client:
        low = await client.submit_many("prio", [f"low-{i}" for i in range(5)])
        high = await client.submit_many("prio", [f"high-{i}" for i in range(3)], priority=9)
        assert await ready_count(amqp_url, "prio") == 5
        assert await ready_count(amqp_url, "prio:p9") == 3
        # What `queueing status` and figures count as ready: every level.
        assert await client._broker._ready("prio") == 8
        async with redis_of(amqp_url) as redis:
            levels = [key async for key in redis.scan_iter(match="*prio}:levels")]
            assert len(levels) == 1
            assert await redis.smembers(levels[0]) == {"9"}
        # A serving process that submitted nothing: it reads the levels in use.
        async with open_system(spec, broker=amqp_url, shutdown_timeout=1.0):
            with trio.fail_after(30):
                for receipt in [*low, *high]:
                    await receipt.result(timeout=30)
    assert started == [*(f"high-{i}" for i in range(3)), *(f"low-{i}" for i in range(5))]


async def test_a_retried_task_goes_back_to_its_level(amqp_url: str) -> None:
    attempts: list[int] = []

    class Flaky(Worker):
        async def handle(self, name: str) -> str:
            attempts.append(self.attempt)
            if self.attempt == 1:
                raise Transient("not yet")
            return name

    async with open_system(Queue("flaky", Flaky), broker=amqp_url, shutdown_timeout=1.0) as system:
        receipt = await system.submit("flaky", "x", priority=6)
        assert await receipt.result(timeout=30) == "x"
        assert (await receipt.status()).priority == 6
    assert attempts == [1, 2]
    # Its retry waited in a delay queue of its level, which led back to its level's queue.
    _, _, prefix = parts(amqp_url)
    async with redis_of(amqp_url) as redis:
        declared = await redis.smembers(f"{{{prefix}}}:rabbitmq")
    delays = {name for name in declared if ":delay:" in name}
    assert delays
    assert all(name.startswith(f"{prefix}:flaky:p6:delay:") for name in delays)

"""Helpers for driving `queueing.brokers.redis.RedisBroker` directly through the broker
contract (import as `broker_helpers`): open a broker with its background work, pause it,
make task records, claim until something comes."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from queueing._task import PipelineTask, Task
from queueing.brokers._contract import QueueInfo
from queueing.brokers.redis import RedisBroker

JOBS = QueueInfo("jobs", maxsize=1000, max_payload=4096, result_ttl=60.0)


def new_task(queue: str = "jobs", payload: Any = None) -> Task:
    return Task(f"{queue}:{secrets.token_hex(6)}", queue, payload, time.time())


def new_run(pipeline: str, first_queue: str) -> tuple[PipelineTask, PipelineTask]:
    """A pipeline run's record and its first stage task (ids as the contract describes)."""
    run_id = f"{pipeline}:{secrets.token_hex(6)}"
    run = PipelineTask(run_id, pipeline, None, time.time(), route=pipeline)
    first = PipelineTask(
        f"{first_queue}:{run_id}.0", first_queue, "p", time.time(), run=run_id, route=pipeline
    )
    return run, first


class Running:
    """A broker inside `connect()`, with `run()` going in the background until `pause()`."""

    def __init__(self, broker: RedisBroker, nursery: trio.Nursery) -> None:
        self.broker = broker
        self._nursery = nursery
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def resume(self) -> None:
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        await self._nursery.start(self._run, self._scope, self._stopped)

    async def pause(self) -> None:
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    async def _run(
        self,
        scope: trio.CancelScope,
        stopped: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                task_status.started()
                await self.broker.run()
        finally:
            stopped.set()


@asynccontextmanager
async def running(
    url: str, *queues: QueueInfo, serve: bool = True, **options: Any
) -> AsyncIterator[Running]:
    """A connected broker with its background work running (`.broker`, `.pause()`...)."""
    broker = RedisBroker(url, **options)
    infos = {queue.name: queue for queue in queues or (JOBS,)}
    async with broker.connect(infos, serve=serve), trio.open_nursery() as nursery:
        handle = Running(broker, nursery)
        await handle.resume()
        yield handle
        await broker.flush()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def opened(url: str, *queues: QueueInfo, **options: Any) -> AsyncIterator[RedisBroker]:
    """A connected broker with its background work running."""
    async with running(url, *queues, **options) as handle:
        yield handle.broker


async def claim_until(
    broker: RedisBroker, queue: QueueInfo = JOBS, n: int = 10, timeout: float = 10.0
) -> list[Task]:
    """Claim until something comes (leases and delays run out in real time)."""
    with trio.fail_after(timeout):
        while True:
            tasks = await broker.claim(queue, n, wait=0.2)
            if tasks:
                return tasks


async def settled_all(
    broker: RedisBroker, ids: list[str], timeout: float = 10.0
) -> dict[str, Task]:
    """`wait_settled` until every id has its outcome, as the engine's receipt loop does."""
    found: dict[str, Task] = {}
    with trio.fail_after(timeout):
        while len(found) < len(ids):
            waiting = set(ids) - set(found)
            for task in await broker.wait_settled(waiting, 1.0):
                found[task.id] = task
    return found

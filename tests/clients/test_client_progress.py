"""Progress from the clients for any app: `SyncReceipt.watch()` and an asyncio receipt's
`watch()`, over a real Redis with the worker elsewhere (a trio run on another thread)."""

from __future__ import annotations

import asyncio

import pytest
import trio
from client_helpers import serving

from queueing import Queue, TaskState, TaskStatus, Worker, connect, connect_sync

pytestmark = pytest.mark.redis


class Steps(Worker):
    async def handle(self, steps: int) -> int:
        for done in range(1, steps + 1):
            await trio.sleep(0.05)
            self.progress(done, steps)
        return steps


steps = Queue("steps", Steps)


def check(seen: list[TaskStatus]) -> None:
    assert seen[-1].state is TaskState.SUCCEEDED
    dones = [status.progress.done for status in seen if status.progress is not None]
    assert len(dones) >= 3  # seen on the way, not only at the end
    assert dones == sorted(dones)
    assert dones[-1] == 12


def test_a_sync_receipt_watches_progress(redis_url: str) -> None:
    with serving(redis_url, steps), connect_sync(redis_url, steps) as client:
        receipt = client.submit("steps", 12)
        seen = list(receipt.watch(interval=0.05))
        assert receipt.result(timeout=10) == 12
    check(seen)


def test_an_asyncio_receipt_watches_progress(redis_url: str) -> None:
    async def main() -> list[TaskStatus]:
        async with connect(redis_url, steps) as client:
            receipt = await client.submit("steps", 12)
            seen = [status async for status in receipt.watch(interval=0.05)]
            assert await receipt == 12
            return seen

    with serving(redis_url, steps):
        check(asyncio.run(main()))

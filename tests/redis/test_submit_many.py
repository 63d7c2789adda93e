"""submit_many over Redis: many submissions share round trips, receipts come back in order."""

from __future__ import annotations

import pytest
import trio
from redis_helpers import outstanding, raw_client

from queueing import Full, Queue, QueueFull, Worker, open_system

pytestmark = pytest.mark.redis


class Triple(Worker):
    async def handle(self, number: int) -> int:
        return 3 * number


async def test_submit_many_over_redis_resolves_every_receipt_in_order(redis_url: str) -> None:
    async with open_system(Queue("triple", Triple, workers=8), broker=redis_url) as system:
        receipts = await system.submit_many("triple", range(500))
        results = [await receipt.result(timeout=20) for receipt in receipts]
        assert results == [3 * i for i in range(500)]
        await system.drain(timeout=10)
        async with raw_client(redis_url) as client:
            assert await outstanding(client, redis_url, "triple") == 0


class Gated(Worker):
    """Holds every task until the test opens the gate: none finishes during submit_many."""

    gate: trio.Event | None = None

    async def handle(self, number: int) -> int:
        assert Gated.gate is not None
        await Gated.gate.wait()
        return 3 * number


async def test_submit_many_over_redis_never_exceeds_maxsize(redis_url: str) -> None:
    Gated.gate = trio.Event()
    queue = Queue("gated", Gated, workers=1, maxsize=50, when_full=Full.REJECT)
    async with open_system(queue, broker=redis_url) as system:
        with pytest.raises(QueueFull) as info:
            await system.submit_many("gated", range(200))
        accepted = info.value.accepted  # type: ignore[attr-defined]
        # Nothing finished meanwhile, so no more than maxsize can have been accepted.
        assert 1 <= len(accepted) <= 50
        async with raw_client(redis_url) as client:
            assert await outstanding(client, redis_url, "gated") == len(accepted)
        Gated.gate.set()
        for receipt in accepted:
            assert await receipt.result(timeout=20) % 3 == 0

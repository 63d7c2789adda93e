"""What a request handler reads off a refusal or a failed lookup: `QueueFull.retry_after`
(from the queue's recent drain rate) and `UnknownTask.expired` (gone, or never was)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from queueing import Overflow, Pipeline, Queue, QueueFull, UnknownTask, Worker, open_system


class Second(Worker):
    async def handle(self, n: int) -> int:
        await trio.sleep(1.0)
        return n


def busy(maxsize: int = 100, workers: int = 2) -> Queue[int]:
    return Queue("busy", Second, workers=workers, maxsize=maxsize, when_full=Overflow.REJECT)


async def refusal(system: Any, name: str = "busy") -> QueueFull:
    with pytest.raises(QueueFull) as caught:
        await system.submit(name, 0)
    return caught.value


async def fill(system: Any, name: str = "busy") -> int:
    """Submit until the queue refuses; returns how many were accepted."""
    accepted = 0
    while True:
        try:
            await system.submit(name, 0)
        except QueueFull:
            return accepted
        accepted += 1


async def test_retry_after_is_the_time_to_drain_a_tenth_of_the_queue(
    autojump_clock: Any,
) -> None:
    async with open_system(busy(maxsize=100, workers=2)) as system:
        assert await fill(system) == 100
        first = await refusal(system)
        assert first.retry_after == 1.0  # nothing drained yet: the shortest hint
        assert first.drain_rate is None
        await trio.sleep(3.5)  # 2 workers, 1 s a task: 6 drained
        assert await fill(system) == 6
        second = await refusal(system)
        assert second.drain_rate == pytest.approx(6 / 3.5)
        assert second.retry_after == pytest.approx(10 / (6 / 3.5))  # a tenth of 100


async def test_retry_after_stays_within_bounds(autojump_clock: Any) -> None:
    async with open_system(busy(maxsize=10_000, workers=1)) as system:
        await fill(system)
        await refusal(system)
        await trio.sleep(2.0)
        await fill(system)
        assert (await refusal(system)).retry_after == 60.0  # 1000 tasks at 1 a second: capped


async def test_a_first_refusal_uses_the_queues_latency(autojump_clock: Any) -> None:
    async with open_system(busy(maxsize=40, workers=4)) as system:
        await (await system.submit("busy", 0))  # one latency on record: 1 s
        await fill(system)
        refused = await refusal(system)
        # Little's law: 40 outstanding, 1 s each in the queue: 40 a second drain.
        assert refused.drain_rate == pytest.approx(40.0)
        assert refused.retry_after == 1.0  # 4 tasks at 40 a second: the floor


async def test_a_pipelines_refusal_carries_the_hint_too(autojump_clock: Any) -> None:
    stage = busy(maxsize=5)
    async with open_system(stage, Pipeline("chain", [stage])) as system:
        await fill(system, "chain")
        refused = await refusal(system, "chain")
        assert refused.queue == "busy"
        assert refused.retry_after >= 1.0


async def test_an_expired_id_is_told_apart_from_a_wrong_one(autojump_clock: Any) -> None:
    queue = Queue("quick", Second, result_ttl=10)
    async with open_system(queue) as system:
        receipt = await system.submit("quick", 1)
        await receipt
        await trio.sleep(11)
        with pytest.raises(UnknownTask, match="no longer kept") as gone:
            await system.receipt(receipt.id)
        assert gone.value.expired is True
        with pytest.raises(UnknownTask, match="never gave it out") as wrong:
            await system.receipt("quick:0123456789-1").status()
        assert wrong.value.expired is False
        with pytest.raises(UnknownTask, match="names queue 'nope'") as other:
            await system.receipt("nope:0123456789-1").result()
        assert other.value.expired is False


async def test_an_id_pushed_out_by_max_results_reads_as_expired(autojump_clock: Any) -> None:
    async with open_system(Queue("quick", Second, workers=1), max_results=2) as system:
        receipts = [await system.submit("quick", n) for n in range(4)]
        for receipt in receipts:
            await receipt
        with pytest.raises(UnknownTask) as gone:
            await system.receipt(receipts[0].id)
        assert gone.value.expired is True


async def test_a_keys_task_cannot_be_told_apart(autojump_clock: Any) -> None:
    async with open_system(Queue("quick", Second, result_ttl=10)) as system:
        receipt = await system.submit("quick", 1, key="order-1")
        await receipt
        await trio.sleep(11)
        with pytest.raises(UnknownTask, match="wrong or its result expired") as unknown:
            await system.receipt(receipt.id).cancel()
        assert unknown.value.expired is None

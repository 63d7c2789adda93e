"""`Queue(shards=N)`: a queue spread over N parts behaves as one queue on every broker.

Redis keeps each shard under a hash tag of its own (`{prefix:queue:i}`, so a Redis Cluster
spreads it over slots); memory, SQLite and RabbitMQ have no use for parts and keep the
queue whole. Either way: every task runs once, keys stay unique, figures, dead letters and
purges cover the whole queue."""

from __future__ import annotations

import pytest
import trio
from contract_workers import (
    WAIT,
    Double,
    Gated,
    Parse,
    Probe,
    Render,
    Troubled,
    failure_of,
    outcome_of,
    pipeline,
    serve,
)
from tenacity import stop_after_attempt

from queueing import InvalidQueue, Queue, RetryPolicy

SHARDS = 4


async def test_a_sharded_queue_runs_every_task_once_and_counts_them_all(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    queue = Queue("hot", Double, workers=3, shards=SHARDS)
    async with serve(broker, queue) as system:
        receipts = [await system.submit("hot", n) for n in range(20)]
        receipts += await system.submit_many("hot", list(range(20, 40)))
        assert [await outcome_of(r) for r in receipts] == [2 * n for n in range(40)]
        await system.drain(timeout=WAIT)  # every shard's `outstanding` back to 0
        assert system.stats()["hot"].succeeded == 40


async def test_a_key_is_unique_across_the_shards(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    queue = Queue("gated", Gated, worker_kwargs={"probe": probe}, workers=2, shards=SHARDS)
    async with serve(broker, queue) as system:
        first = [await system.submit("gated", f"v{i}", key=f"k{i}") for i in range(8)]
        again = [await system.submit("gated", f"w{i}", key=f"k{i}") for i in range(8)]
        assert [r.id for r in again] == [r.id for r in first]
        probe.gate.set()
        assert [await outcome_of(r) for r in again] == [f"v{i}" for i in range(8)]
        await system.drain(timeout=WAIT)
    assert sorted(probe.finished) == sorted(f"v{i}" for i in range(8))


async def test_dead_letters_of_every_shard_are_listed_requeued_and_purged(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    queue = Queue(
        "troubled",
        Troubled,
        retry=RetryPolicy(stop=stop_after_attempt(1)),
        worker_kwargs={"probe": probe},
        shards=SHARDS,
    )
    names = [f"n{i}" for i in range(8)]
    async with serve(broker, queue) as system:
        failed = [await system.submit("troubled", {"name": n, "broken": True}) for n in names]
        for receipt in failed:
            await failure_of(receipt)
        letters = await system.dead_letters("troubled")
        assert sorted(letter.id for letter in letters) == sorted(r.id for r in failed)
        assert {letter.queue for letter in letters} == {"troubled"}
        probe.fixed = True
        again = await system.requeue("troubled", [r.id for r in failed[:4]])
        assert sorted([await outcome_of(r) for r in again]) == sorted(n.upper() for n in names[:4])
        assert await system.purge_dead_letters("troubled") == 4
        assert await system.dead_letters("troubled") == []
        await system.drain(timeout=WAIT)


async def test_a_receipt_of_a_sharded_queue_is_found_by_id(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    queue = Queue("hot", Double, shards=SHARDS)
    async with serve(broker, queue) as system:
        receipts = [await system.submit("hot", n) for n in range(8)]
        found = [system.receipt(r.id) for r in receipts]
        assert [await outcome_of(r) for r in found] == [2 * n for n in range(8)]


async def test_a_pipeline_runs_through_sharded_stages(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    steps = pipeline(
        "steps",
        Queue("parse", Parse, shards=3),
        Queue("double", Double, workers=2, shards=SHARDS),
        Queue("render", Render),
    )
    async with serve(broker, steps) as system:
        receipts = [await system.submit("steps", str(n)) for n in range(12)]
        assert [await outcome_of(r) for r in receipts] == [f"#{2 * n}" for n in range(12)]
        await system.drain(timeout=WAIT)


@pytest.mark.parametrize("shards", [0, -1, 1025, 2.0, True])
def test_shards_must_be_a_positive_int_within_the_limit(shards: object) -> None:
    with pytest.raises(InvalidQueue, match="shards"):
        Queue("hot", Double, shards=shards)  # type: ignore[arg-type]

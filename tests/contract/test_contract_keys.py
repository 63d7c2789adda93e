"""`submit(..., key=)`: a task with a key is submitted once while it is known."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from contract_workers import Gated, Parse, Probe, Render, outcome_of, pipeline, serve

from queueing import InvalidQueue, Queue, connect


def gated(probe: Probe, name: str = "gated") -> Queue:
    return Queue(name, Gated, worker_kwargs={"probe": probe}, workers=2)


async def test_a_repeated_key_gives_the_first_tasks_receipt(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        first = await system.submit("gated", "first", key="order-17")
        again = await system.submit("gated", "second", key="order-17")
        other = await system.submit("gated", "third", key="order-18")
        assert again.id == first.id
        assert other.id != first.id
        probe.gate.set()
        assert await outcome_of(first) == "first"
        assert await outcome_of(again) == "first"
        assert await outcome_of(other) == "third"
        # Known (its outcome is kept): submitting the key again still runs nothing.
        late = await system.submit("gated", "fourth", key="order-17")
        assert await outcome_of(late) == "first"
        await system.drain()
    assert sorted(probe.finished) == ["first", "third"]


async def test_the_same_key_on_another_queue_is_another_task(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, gated(probe), gated(probe, name="other")) as system:
        a = await system.submit("gated", "a", key="k")
        b = await system.submit("other", "b", key="k")
        assert a.id != b.id
        assert (await outcome_of(a), await outcome_of(b)) == ("a", "b")


async def test_submit_many_with_keys_again_runs_nothing_twice(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        names = [f"n{i}" for i in range(20)]
        first = await system.submit_many("gated", names[:10], key=str.upper)
        # The first ten again (an unknown outcome resubmitted) and ten new ones.
        again = await system.submit_many("gated", names, key=str.upper)
        assert [r.id for r in again[:10]] == [r.id for r in first]
        assert len({r.id for r in again}) == 20
        probe.gate.set()
        assert [await outcome_of(r) for r in again] == names
        await system.drain()
    assert sorted(probe.finished) == sorted(names)


@pytest.mark.parametrize("key", ["", "x" * 201, 17, "lone \ud800 surrogate"])
async def test_a_bad_key_is_refused(broker: str, clock: trio.abc.Clock | None, key: object) -> None:
    async with serve(broker, gated(Probe())) as system:
        with pytest.raises(InvalidQueue, match="key must be"):
            await system.submit("gated", "x", key=key)  # type: ignore[arg-type]


async def test_clients_racing_with_one_key_get_one_task(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Several clients of their own (a connection each) submit one key at the same moment:
    # the broker accepts it once, and every client gets that task's receipt.
    probe = Probe()
    clients = 4
    async with serve(broker, gated(probe)) as system:
        async with AsyncExitStack() as stack:
            if broker == "memory://":  # no other clients: tasks of the one process race
                remotes: list[Any] = [system] * clients
            else:
                remotes = [await stack.enter_async_context(connect(broker)) for _ in range(clients)]
            ids: list[str] = []

            async def submit(client: Any, n: int) -> None:
                receipt = await client.submit("gated", f"from-{n}", key="invoice-42")
                ids.append(receipt.id)

            async with trio.open_nursery() as nursery:
                for n, remote in enumerate(remotes):
                    nursery.start_soon(submit, remote, n)
            assert len(set(ids)) == 1
            probe.gate.set()
            winner = await outcome_of(system.receipt(ids[0]))
        await system.drain()
    assert probe.finished == [winner]


async def test_submits_of_one_key_racing_in_one_process_all_get_its_outcome(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Before: over a shared broker a later submit could watch a record of its own in
    # place of the first's, and the other receipts never got the outcome (RabbitMQ) or
    # got None (Redis, SQLite).
    probe = Probe()
    async with serve(broker, gated(probe)) as system:
        receipts: list[Any] = []

        async def submit(n: int) -> None:
            receipts.append(await system.submit("gated", f"from-{n}", key="invoice-43"))

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(submit, n)
        assert len({receipt.id for receipt in receipts}) == 1
        probe.gate.set()
        outcomes = [await outcome_of(receipt) for receipt in receipts]
        await system.drain()
    assert probe.finished == outcomes[:1]  # it ran once
    assert outcomes == outcomes[:1] * 4  # and every receipt has its result


async def test_a_pipeline_submitted_again_with_its_key_gives_every_receipt_the_outcome(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Before: over a shared broker the second submit's run replaced the first's among
    # those this process watched: the first receipt never got its outcome.
    steps = pipeline("steps", Queue("parse", Parse), Queue("render", Render))
    async with serve(broker, steps) as system:
        first = await system.submit("steps", "21", key="run-7")
        again = await system.submit("steps", "22", key="run-7")
        assert again.id == first.id
        assert await outcome_of(again) == "#21"
        assert await outcome_of(first) == "#21"


async def test_submit_many_runs_a_key_repeated_in_the_batch_once_for_its_first_payload(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, gated(probe)) as system:
        receipts = await system.submit_many(
            "gated", ["a-1", "b-1", "a-2", "a-3"], key=lambda payload: payload[0]
        )
        assert [r.id for r in receipts][::2] == [receipts[0].id] * 2
        assert len({r.id for r in receipts}) == 2
        assert [await outcome_of(r) for r in receipts] == ["a-1", "b-1", "a-1", "a-1"]
        await system.drain()
    assert sorted(probe.finished) == ["a-1", "b-1"]


async def test_a_key_function_that_raises_submits_nothing(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    def key(payload: str) -> str:
        if payload == "bad":
            raise ValueError("no key for 'bad'")
        return payload

    async with serve(broker, gated(Probe())) as system:
        with pytest.raises(ValueError, match="no key for 'bad'"):
            await system.submit_many("gated", ["ok", "bad"], key=key)
        assert system.stats()["gated"].submitted == 0

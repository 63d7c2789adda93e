"""The prefetch of a serving process's consumer (`_rabbit_claims.Feed`): what its workers
take at once, plus the deliveries whose outcome is on its way to the store (RabbitMQ
counts those until they are acknowledged), at most as many again. No server needed: the
feed's channel is a stand-in that records the acknowledgements sent."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from queueing.brokers.amqp._message import NO_PROPERTIES, Delivery
from queueing.brokers.amqp._rabbit_claims import Acks, Feed
from queueing.brokers.amqp._store_writes import Op, Writes


class StandInChannel:
    """Enough of a channel for a feed and its acknowledgements."""

    is_closed = False

    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack_many(self, tags: list[int], *, upto: int = 0) -> None:
        self.acked += [*range(1, upto + 1), *tags]


def deliveries(channel: Any, first: int, count: int) -> list[Delivery]:
    return [
        Delivery(
            body=b"{}",
            properties=NO_PROPERTIES,
            delivery_tag=tag,
            redelivered=False,
            exchange="",
            routing_key="q",
            channel=channel,
        )
        for tag in range(first, first + count)
    ]


async def redeclare() -> None:
    pass


def feed_on(channel: StandInChannel) -> tuple[Feed, Acks]:
    acks = Acks()
    feed = Feed("q", redeclare, acks)
    feed.channel = channel  # type: ignore[assignment]
    return feed, acks


async def test_the_prefetch_is_what_the_workers_take_at_once_when_outcomes_are_stored() -> None:
    channel = StandInChannel()
    feed, acks = feed_on(channel)
    for delivery in deliveries(channel, 1, 8):
        feed.push(delivery)
    taken = await feed.take(8, wait=0)
    assert len(taken) == 8
    assert feed.wanted == 8
    for delivery in taken:  # each outcome stored and acknowledged at once
        acks.ack_soon(delivery)
    await acks.send_due()
    assert channel.acked == list(range(1, 9))
    assert await feed.take(8, wait=0) == []
    assert feed.wanted == 8


async def test_deliveries_whose_outcome_is_being_stored_count_on_top_of_the_workers() -> None:
    channel = StandInChannel()
    feed, _ = feed_on(channel)
    for delivery in deliveries(channel, 1, 8):
        feed.push(delivery)
    assert len(await feed.take(8, wait=0)) == 8
    # All 8 ran; their outcomes are on their way to the store (not acknowledged yet), and
    # the 8 idle workers ask again: their next tasks must not wait for those writes.
    assert await feed.take(8, wait=0) == []
    assert feed.wanted == 16


async def test_the_deliveries_settling_add_at_most_as_many_again_as_the_workers_take() -> None:
    channel = StandInChannel()
    feed, _ = feed_on(channel)
    for delivery in deliveries(channel, 1, 4):
        feed.push(delivery)
    assert len(await feed.take(4, wait=0)) == 4
    # 30 more delivered (from an earlier, larger consumer) and settled, none acknowledged.
    for delivery in deliveries(channel, 5, 30):
        feed.push(delivery)
    assert len(await feed.take(30, wait=0)) == 30
    assert feed.wanted == 34  # 4 + 30: the workers took that many at once
    assert await feed.take(2, wait=0, held=2) == []
    # 2 held + 2 asked + 32 settling, of which count at most 30 (the most taken at once).
    assert feed.wanted == 34


class SlowChannel(StandInChannel):
    """A channel whose acknowledgements take a moment to write."""

    async def ack_many(self, tags: list[int], *, upto: int = 0) -> None:
        await trio.sleep(1)
        await super().ack_many(tags, upto=upto)


async def test_a_flush_during_a_send_returns_once_it_was_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    channel = SlowChannel()
    feed, acks = feed_on(channel)  # type: ignore[arg-type]
    for delivery in deliveries(channel, 1, 2):
        feed.push(delivery)
    taken = await feed.take(2, wait=0)
    async with trio.open_nursery() as nursery:
        acks.ack_soon(taken[0])
        # Sent from a store write's task (`after_written`), before the ack task looks.
        nursery.start_soon(acks.send_due)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(acks.run)  # finds nothing due: idle
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(60):
            await acks.flush()
        assert channel.acked == [1]
        nursery.cancel_scope.cancel()


class Redis:
    """Enough of the store's calls for its flush loop: every write answered 1."""

    def script(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> str:
        pipe.append(name)
        return name

    async def pipelined(self, what: str, fill: Any) -> list[Any]:
        sent: list[str] = []
        fill(sent)
        await trio.lowlevel.checkpoint()
        return [1 for _ in sent]


class Steps(trio.abc.Instrument):
    """Counts the steps of tasks whose name ends with `name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.steps += 1


async def test_acks_asked_for_by_a_write_are_sent_by_its_task_without_waking_the_ack_task() -> None:
    channel = StandInChannel()
    feed, acks = feed_on(channel)
    for delivery in deliveries(channel, 1, 2):
        feed.push(delivery)
    taken = await feed.take(2, wait=0)
    writes = Writes(Redis())  # type: ignore[arg-type]
    writes.after_written = acks.send_due
    writes.hush = acks.hush
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acks.run)
        nursery.start_soon(writes.flush_loop)
        await trio.testing.wait_all_tasks_blocked()
        steps = Steps("Acks.run")
        trio.lowlevel.add_instrument(steps)
        for delivery in taken:  # each outcome's answer asks for its acknowledgement
            writes.push(Op("finish", [str(delivery.delivery_tag)], [], then_ack(acks, delivery)))
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(steps)
        assert channel.acked == [1, 2]  # sent after the write, by the flush loop
        assert steps.steps == 0
        # Asked for outside a write's answers: the ack task sends it.
        for delivery in deliveries(channel, 3, 1):
            feed.push(delivery)
            acks.ack_soon(delivery)
        await trio.testing.wait_all_tasks_blocked()
        assert channel.acked == [1, 2, 3]
        nursery.cancel_scope.cancel()


def then_ack(acks: Acks, delivery: Delivery) -> Any:
    return lambda _: acks.ack_soon(delivery)

"""Consuming from RabbitMQ: prefetch, manual ack, redelivery, callbacks, broker cancels."""

from __future__ import annotations

import pytest
import trio
from amqp_helpers import Names, wait_for

from queueing.brokers import amqp

pytestmark = pytest.mark.amqp

QUORUM = {"x-queue-type": "quorum"}


async def _fill(channel: amqp.Channel, queue: str, count: int) -> None:
    for i in range(count):
        await channel.begin_publish(b"%d" % i, routing_key=queue)
    await channel.publish(b"last", routing_key=queue)  # confirms come in order


async def test_prefetch_limits_unacked_deliveries_and_acks_free_room(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    publisher = await connection.open_channel(publisher_confirms=True)
    await publisher.declare_queue(queue, arguments=QUORUM)
    await _fill(publisher, queue, 9)
    channel = await connection.open_channel()
    await channel.qos(prefetch_count=3)
    async with channel.consume(queue) as deliveries:
        held = [await deliveries.__anext__() for _ in range(3)]
        # With three unacked the broker sends no fourth until one is acked.
        with trio.move_on_after(0.3):
            await deliveries.__anext__()
            pytest.fail("a fourth delivery arrived beyond prefetch_count=3")
        await held[0].ack()
        with trio.fail_after(10):
            fourth = await deliveries.__anext__()
        assert [d.body for d in held] + [fourth.body] == [b"0", b"1", b"2", b"3"]
        for delivery in [*held[1:], fourth]:
            await delivery.ack()
        rest = []
        async for delivery in deliveries:
            rest.append(delivery.body)
            await delivery.ack()
            if delivery.body == b"last":
                break
    assert rest == [b"4", b"5", b"6", b"7", b"8", b"last"]
    info = await publisher.declare_queue(queue, passive=True)
    assert info.message_count == 0


async def test_a_nacked_delivery_is_redelivered_with_its_count(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue, arguments=QUORUM)
    await channel.publish(b"again", routing_key=queue)
    async with channel.consume(queue) as deliveries:
        first = await deliveries.__anext__()
        assert not first.redelivered
        await first.nack(requeue=True)
        with trio.fail_after(10):
            second = await deliveries.__anext__()
        assert second.body == b"again"
        assert second.redelivered
        assert second.headers.get("x-delivery-count") == 1
        await second.reject(requeue=True)
        with trio.fail_after(10):
            third = await deliveries.__anext__()
        assert third.headers.get("x-delivery-count") == 2
        await third.ack()


async def test_leaving_a_consumer_requeues_what_it_did_not_take(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue)
    await _fill(channel, queue, 4)

    async def ready(count: int) -> bool:
        return (await channel.declare_queue(queue, passive=True)).message_count == count

    consumer_channel = await connection.open_channel()
    async with consumer_channel.consume(queue) as deliveries:
        taken = await deliveries.__anext__()
        await taken.ack()
        await wait_for(lambda: ready(0))  # the other four were delivered here, untaken
    await wait_for(lambda: ready(4))
    assert not consumer_channel.is_closed


async def test_callback_consumer_gets_every_delivery(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue)
    send, receive = trio.open_memory_channel[amqp.Delivery](100)
    ended: list[BaseException | None] = []
    tag = await channel.basic_consume(queue, send.send_nowait, on_cancel=ended.append, no_ack=True)
    await _fill(channel, queue, 4)
    bodies = [(await receive.receive()).body for _ in range(5)]
    assert bodies == [b"0", b"1", b"2", b"3", b"last"]
    await channel.basic_cancel(tag)
    assert ended == [None]


async def test_deleting_the_queue_cancels_the_consumer_with_a_clear_error(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue, arguments=QUORUM)
    await channel.publish(b"before", routing_key=queue)
    other = await connection.open_channel()
    async with channel.consume(queue) as deliveries:
        first = await deliveries.__anext__()
        await first.ack()
        await other.delete_queue(queue)
        with trio.fail_after(10), pytest.raises(amqp.ConsumerCancelled) as caught:
            await deliveries.__anext__()
    assert caught.value.queue == queue
    assert queue in str(caught.value)
    assert not channel.is_closed  # the channel is fine; only the consumer ended


async def test_a_closed_channel_ends_its_consumers_with_the_error(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel()
    await channel.declare_queue(queue)
    async with channel.consume(queue) as deliveries:
        with pytest.raises(amqp.NotFound):
            await channel.declare_queue(names.prefix + "-missing", passive=True)
        with pytest.raises(amqp.NotFound):
            await deliveries.__anext__()


async def test_get_returns_none_on_an_empty_queue(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel()
    await channel.declare_queue(queue)
    assert await channel.get(queue) is None

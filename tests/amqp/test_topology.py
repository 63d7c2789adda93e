"""Declaring topology on RabbitMQ, and the channel errors wrong declarations cause."""

from __future__ import annotations

import pytest
import trio
from amqp_helpers import Names

from queueing.brokers import amqp

pytestmark = pytest.mark.amqp

# A task queue as the queueing broker would declare it: a quorum queue with a delivery
# limit, bounded, refusing publishes when full, dead-lettering at least once.
TASK_QUEUE = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 5,
    "x-max-length": 10_000,
    "x-overflow": "reject-publish",
    "x-dead-letter-strategy": "at-least-once",
}


async def test_a_quorum_queue_with_its_arguments_is_declared_and_redeclared(
    connection: amqp.Connection, names: Names
) -> None:
    queue, dead = names.queue("tasks"), names.queue("dead")
    dlx = names.exchange("dlx")
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_exchange(dlx, "fanout")
    await channel.declare_queue(dead, arguments={"x-queue-type": "quorum"})
    await channel.bind_queue(dead, dlx)
    arguments = {**TASK_QUEUE, "x-dead-letter-exchange": dlx}
    info = await channel.declare_queue(queue, arguments=arguments)
    assert info == amqp.QueueInfo(queue, 0, 0)
    await channel.publish(b"t", routing_key=queue)
    again = await channel.declare_queue(queue, arguments=arguments)  # same arguments: fine
    assert again.message_count == 1
    passive = await channel.declare_queue(queue, passive=True)
    assert passive.message_count == 1


async def test_the_delivery_limit_dead_letters_a_poison_message(
    connection: amqp.Connection, names: Names
) -> None:
    queue, dead = names.queue("tasks"), names.queue("dead")
    dlx = names.exchange("dlx")
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_exchange(dlx, "fanout")
    await channel.declare_queue(dead, arguments={"x-queue-type": "quorum"})
    await channel.bind_queue(dead, dlx)
    arguments = {**TASK_QUEUE, "x-delivery-limit": 1, "x-dead-letter-exchange": dlx}
    await channel.declare_queue(queue, arguments=arguments)
    await channel.publish(b"poison", routing_key=queue)
    async with channel.consume(queue) as deliveries:
        for _ in range(2):  # the first delivery and one redelivery, then the limit
            with trio.fail_after(10):
                delivery = await deliveries.__anext__()
            await delivery.nack(requeue=True)
    with trio.fail_after(10):
        while (dead_letter := await channel.get(dead)) is None:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert dead_letter.body == b"poison"
    await dead_letter.ack()


async def test_exchanges_route_by_binding(connection: amqp.Connection, names: Names) -> None:
    exchange, queue = names.exchange(), names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_exchange(exchange, "direct")
    await channel.declare_queue(queue)
    await channel.bind_queue(queue, exchange, "green")
    await channel.publish(b"g", exchange=exchange, routing_key="green")
    await channel.publish(b"r", exchange=exchange, routing_key="red")
    delivery = await channel.get(queue, no_ack=True)
    assert delivery is not None
    assert (delivery.body, delivery.exchange, delivery.routing_key) == (b"g", exchange, "green")
    assert await channel.get(queue) is None
    await channel.unbind_queue(queue, exchange, "green")
    with pytest.raises(amqp.PublishReturned):
        await channel.publish(b"g", exchange=exchange, routing_key="green", mandatory=True)


async def test_purge_and_delete_report_counts(connection: amqp.Connection, names: Names) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue)
    for _ in range(3):
        await channel.publish(b"x", routing_key=queue)
    assert await channel.purge_queue(queue) == 3
    await channel.publish(b"x", routing_key=queue)
    assert await channel.delete_queue(queue) == 1
    with pytest.raises(amqp.NotFound):
        await channel.declare_queue(queue, passive=True)


async def test_mismatching_arguments_fail_the_channel_not_the_connection(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel()
    await channel.declare_queue(queue, arguments={"x-queue-type": "quorum", "x-max-length": 10})
    with pytest.raises(amqp.PreconditionFailed) as caught:
        await channel.declare_queue(queue, arguments={"x-queue-type": "quorum", "x-max-length": 20})
    assert caught.value.reply_code == 406
    assert "x-max-length" in caught.value.reply_text
    assert caught.value.channel_id == channel.number
    assert channel.is_closed
    with pytest.raises(amqp.PreconditionFailed):  # every later call says why
        await channel.get(queue)
    other = await connection.open_channel()
    info = await other.declare_queue(queue, passive=True)
    assert info.name == queue
    assert not connection.is_closed


async def test_a_missing_queue_is_not_found(connection: amqp.Connection, names: Names) -> None:
    channel = await connection.open_channel()
    with pytest.raises(amqp.NotFound, match="NOT_FOUND") as caught:
        await channel.declare_queue(names.prefix + "-missing", passive=True)
    assert caught.value.reply_code == 404


async def test_a_reserved_name_is_access_refused(connection: amqp.Connection) -> None:
    channel = await connection.open_channel()
    with pytest.raises(amqp.AccessRefused) as caught:
        await channel.declare_queue("amq.reserved-by-the-broker")
    assert caught.value.reply_code == 403


async def test_another_connections_exclusive_queue_is_resource_locked(
    rabbitmq: str, connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    owner = await connection.open_channel()
    await owner.declare_queue(queue, exclusive=True, durable=False)
    async with amqp.connect(rabbitmq) as other:
        channel = await other.open_channel()
        with pytest.raises(amqp.ResourceLocked) as caught:
            await channel.declare_queue(queue, exclusive=True, durable=False)
    assert caught.value.reply_code == 405


async def test_a_channel_error_fails_requests_already_in_flight(
    connection: amqp.Connection, names: Names
) -> None:
    channel = await connection.open_channel()
    missing = names.prefix + "-missing"
    results: list[BaseException] = []

    async def declare(name: str) -> None:
        try:
            await channel.declare_queue(name, passive=True)
        except amqp.ChannelClosed as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):  # pipelined: all five are on the wire before the error comes
            nursery.start_soon(declare, missing)
    assert len(results) == 5
    assert all(isinstance(error, amqp.NotFound) for error in results)


async def test_exchange_to_exchange_bindings_route(
    connection: amqp.Connection, names: Names
) -> None:
    source, destination, queue = names.exchange("src"), names.exchange("dst"), names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_exchange(source, "topic")
    await channel.declare_exchange(destination, "fanout")
    await channel.declare_queue(queue)
    await channel.bind_queue(queue, destination)
    await channel.bind_exchange(destination, source, "jobs.*")
    await channel.publish(b"via two", exchange=source, routing_key="jobs.resize", mandatory=True)
    delivery = await channel.get(queue, no_ack=True)
    assert delivery is not None
    assert delivery.body == b"via two"
    await channel.unbind_exchange(destination, source, "jobs.*")
    with pytest.raises(amqp.PublishReturned):
        await channel.publish(b"x", exchange=source, routing_key="jobs.resize", mandatory=True)

"""Publishing to RabbitMQ: confirms, nacks, returns, large bodies, cancelled publishers."""

from __future__ import annotations

import pytest
import trio
from amqp_helpers import Names

from queueing.brokers import amqp

pytestmark = pytest.mark.amqp

QUORUM = {"x-queue-type": "quorum"}
IN_FLIGHT = 1_000
PUBLISHERS = 3_000


async def test_a_thousand_publishes_in_flight_are_all_confirmed(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue, arguments=QUORUM)
    confirmations = [
        await channel.begin_publish(b"%d" % i, routing_key=queue) for i in range(IN_FLIGHT)
    ]
    # The broker answers with multiple=True acks too: every tag up to one resolves.
    for confirmation in confirmations:
        await confirmation.wait()
    assert [c.delivery_tag for c in confirmations] == list(range(1, IN_FLIGHT + 1))
    assert channel.unconfirmed == 0
    info = await channel.declare_queue(queue, passive=True)
    assert info.message_count == IN_FLIGHT


async def test_concurrent_publishers_each_get_their_own_outcome(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue, arguments=QUORUM)
    async with trio.open_nursery() as nursery:
        for i in range(IN_FLIGHT):
            nursery.start_soon(lambda i=i: channel.publish(b"%d" % i, routing_key=queue))
    info = await channel.declare_queue(queue, passive=True)
    assert info.message_count == IN_FLIGHT


async def test_a_full_reject_publish_queue_nacks_with_a_clear_error(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    arguments = {"x-max-length": 2, "x-overflow": "reject-publish"}
    await channel.declare_queue(queue, arguments=arguments)
    await channel.publish(b"1", routing_key=queue)
    await channel.publish(b"2", routing_key=queue)
    with pytest.raises(amqp.PublishNacked, match="refused") as caught:
        await channel.publish(b"3", routing_key=queue)
    assert caught.value.routing_key == queue
    # The channel goes on: a nack is per message, not a channel error.
    await channel.purge_queue(queue)
    await channel.publish(b"4", routing_key=queue)


async def test_a_full_quorum_queue_with_reject_publish_nacks(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    arguments = {**QUORUM, "x-max-length": 1, "x-overflow": "reject-publish"}
    await channel.declare_queue(queue, arguments=arguments)
    await channel.publish(b"1", routing_key=queue)
    with trio.fail_after(30):
        while True:  # a quorum queue applies its length limit once the first is committed
            try:
                await channel.publish(b"more", routing_key=queue)
            except amqp.PublishNacked:
                break


async def test_mandatory_unroutable_publish_raises_returned(
    connection: amqp.Connection, names: Names
) -> None:
    channel = await connection.open_channel(publisher_confirms=True)
    unroutable = names.prefix + "-nowhere"
    with pytest.raises(amqp.PublishReturned) as caught:
        await channel.publish(b"lost?", routing_key=unroutable, mandatory=True)
    assert caught.value.reply_code == 312
    assert caught.value.routing_key == unroutable
    assert "NO_ROUTE" in str(caught.value)
    # Without mandatory the broker drops it and confirms it: no error.
    await channel.publish(b"dropped", routing_key=unroutable)


async def test_returns_match_their_publish_among_many_in_flight(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue)
    routed = [
        await channel.begin_publish(b"ok", routing_key=queue, mandatory=True) for _ in range(20)
    ]
    lost = [
        await channel.begin_publish(b"x", routing_key=names.prefix + "-none", mandatory=True)
        for _ in range(5)
    ]
    for confirmation in routed:
        await confirmation.wait()
    for confirmation in lost:
        with pytest.raises(amqp.PublishReturned):
            await confirmation.wait()


async def test_mandatory_needs_publisher_confirms(connection: amqp.Connection) -> None:
    channel = await connection.open_channel()
    with pytest.raises(ValueError, match="publisher_confirms"):
        await channel.publish(b"x", routing_key="any", mandatory=True)


async def test_a_message_larger_than_frame_max_round_trips_intact(
    connection: amqp.Connection, names: Names
) -> None:
    queue = names.queue()
    body = bytes(range(256)) * 4096  # 1 MiB: eight body frames of 128 KiB each way
    assert len(body) > connection.frame_max
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue, arguments=QUORUM)
    properties = amqp.Properties(
        content_type="application/octet-stream",
        headers={"kind": "big", "n": 1},
        delivery_mode=amqp.PERSISTENT,
        message_id="big-1",
    )
    await channel.publish(body, routing_key=queue, properties=properties)
    delivery = await channel.get(queue)
    assert delivery is not None
    assert delivery.body == body
    assert delivery.properties.message_id == "big-1"
    assert delivery.headers["kind"] == "big"
    assert delivery.properties.delivery_mode == amqp.PERSISTENT
    await delivery.ack()


async def test_an_empty_body_round_trips(connection: amqp.Connection, names: Names) -> None:
    queue = names.queue()
    channel = await connection.open_channel(publisher_confirms=True)
    await channel.declare_queue(queue)
    await channel.publish(b"", routing_key=queue)
    delivery = await channel.get(queue, no_ack=True)
    assert delivery is not None
    assert delivery.body == b""
    assert await channel.get(queue) is None


async def test_cancelled_publishers_never_leave_half_a_message_on_the_wire(
    rabbitmq: str, names: Names
) -> None:
    queue = names.queue()
    # Small frames, so each message is several frames, and more publishers than the
    # connection queues at once, so some are cancelled while waiting for room.
    async with amqp.connect(rabbitmq, frame_max=4096) as connection:
        channel = await connection.open_channel(publisher_confirms=True)
        await channel.declare_queue(queue)
        body = b"b" * 10_000
        finished = 0

        async def publish() -> None:
            nonlocal finished
            await channel.publish(body, routing_key=queue)
            finished += 1

        with trio.move_on_after(0.05):
            async with trio.open_nursery() as nursery:
                for _ in range(PUBLISHERS):
                    nursery.start_soon(publish)
        assert finished < PUBLISHERS, "nothing was cancelled: the test proves nothing"
        # Had a message been cut, the broker would have closed the connection
        # (UNEXPECTED_FRAME); had delivery tags gone out of step, this would never resolve.
        with trio.fail_after(30):
            await channel.publish(b"after", routing_key=queue)
        assert not connection.is_closed
        count = (await channel.declare_queue(queue, passive=True)).message_count
        assert count >= finished + 1
        delivered = 0
        while (delivery := await channel.get(queue, no_ack=True)) is not None:
            assert delivery.body in (body, b"after")
            delivered += 1
        assert delivered == count


async def test_publishing_to_a_missing_exchange_closes_the_channel_and_says_why(
    connection: amqp.Connection, names: Names
) -> None:
    channel = await connection.open_channel(publisher_confirms=True)
    missing = names.prefix + "-no-exchange"
    with pytest.raises(amqp.PublishOutcomeUnknown) as caught:
        await channel.publish(b"x", exchange=missing, routing_key="k")
    cause = caught.value.__cause__
    assert isinstance(cause, amqp.NotFound)
    assert missing in cause.reply_text
    with pytest.raises(amqp.NotFound):
        await channel.publish(b"y", exchange=missing, routing_key="k")

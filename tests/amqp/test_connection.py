"""Opening and closing connections to the machine's RabbitMQ, under trio and asyncio."""

from __future__ import annotations

import anyio
import pytest
from amqp_helpers import Names

from queueing.brokers import amqp

pytestmark = pytest.mark.amqp


async def test_handshake_negotiates_limits_and_reports_the_broker(rabbitmq: str) -> None:
    async with amqp.connect(rabbitmq, heartbeat=30, frame_max=8192, channel_max=7) as conn:
        assert conn.server_properties["product"] == "RabbitMQ"
        assert conn.heartbeat == 30
        assert conn.frame_max == 8192
        assert conn.channel_max == 7
        assert conn.capabilities["publisher_confirms"] is True
        assert not conn.is_closed
    assert conn.is_closed
    error = conn.closed_error
    assert isinstance(error, amqp.ConnectionClosed)
    assert error.reply_code == 200


async def test_wrong_password_is_a_clear_error_naming_user_and_vhost(rabbitmq: str) -> None:
    url = rabbitmq.replace("guest:guest", "guest:not-the-password")
    with pytest.raises(amqp.AuthenticationFailed) as caught:
        async with amqp.connect(url):
            pass
    assert caught.value.user == "guest"
    assert caught.value.vhost == "/"
    assert caught.value.reply_code == 403
    assert "'guest'" in str(caught.value)
    assert "vhost '/'" in str(caught.value)


async def test_unknown_vhost_is_refused_by_name(rabbitmq: str) -> None:
    with pytest.raises(amqp.VirtualHostNotAllowed) as caught:
        async with amqp.connect(rabbitmq + "no-such-vhost-here"):
            pass
    assert caught.value.vhost == "no-such-vhost-here"
    assert "no-such-vhost-here" in str(caught.value)


async def test_nothing_listening_raises_oserror() -> None:
    with pytest.raises(OSError, match="connection attempts failed"):
        async with amqp.connect("amqp://guest:guest@127.0.0.1:1/"):
            pass


async def test_closing_fails_pending_calls_and_refuses_new_ones(rabbitmq: str) -> None:
    async with amqp.connect(rabbitmq) as conn:
        channel = await conn.open_channel()
    with pytest.raises(amqp.ConnectionClosed, match="closed by this client"):
        await channel.declare_queue("", exclusive=True)
    with pytest.raises(amqp.ConnectionClosed):
        await conn.open_channel()


async def test_an_error_in_the_body_comes_out_as_itself(rabbitmq: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with amqp.connect(rabbitmq):
            raise KeyError("mine")


async def test_channel_numbers_are_reused_after_close(connection: amqp.Connection) -> None:
    first = await connection.open_channel()
    second = await connection.open_channel()
    assert (first.number, second.number) == (1, 2)
    await first.close()
    third = await connection.open_channel()
    assert third.number == 1


def test_the_same_layer_runs_under_asyncio(rabbitmq: str) -> None:
    names = Names()
    queue, robust_queue = names.queue(), names.queue("robust")

    async def main() -> list[bytes]:
        bodies = []
        async with amqp.connect(rabbitmq) as conn:
            channel = await conn.open_channel(publisher_confirms=True)
            await channel.declare_queue(queue, arguments={"x-queue-type": "quorum"})
            await channel.publish(b"from asyncio", routing_key=queue)
            async with channel.consume(queue) as deliveries:
                async for delivery in deliveries:
                    bodies.append(delivery.body)
                    await delivery.ack()
                    break
            await channel.delete_queue(queue)
        async with amqp.connect_robust(rabbitmq) as robust:
            await robust.declare_queue(robust_queue, auto_delete=True)
            async with robust.consume(robust_queue, prefetch_count=1) as deliveries:
                await robust.publish(b"robust on asyncio", routing_key=robust_queue)
                async for delivery in deliveries:
                    bodies.append(delivery.body)
                    await delivery.ack()
                    break
        return bodies

    assert anyio.run(main, backend="asyncio") == [b"from asyncio", b"robust on asyncio"]

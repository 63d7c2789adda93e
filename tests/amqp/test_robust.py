"""The robust connection: reconnecting, restoring topology and consumers, and what it
reports for publishes caught by a drop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
import tenacity
import trio
import trio.testing
from amqp_helpers import Names, close_connections
from fake_broker import FakeBroker

from queueing.brokers import amqp

QUORUM = {"x-queue-type": "quorum"}
FAST = tenacity.wait_fixed(0.1)


async def _next(consumer: amqp.RobustConsumer, timeout: float = 20) -> amqp.Delivery:
    with trio.fail_after(timeout):
        return await consumer.__anext__()


@pytest.mark.amqp
async def test_a_consumer_resumes_after_the_broker_drops_the_connection(
    rabbitmq: str, names: Names, rabbitmqctl: list[str]
) -> None:
    queue = names.queue()
    async with amqp.connect_robust(
        rabbitmq, connection_name=names.prefix, reconnect_wait=FAST
    ) as robust:
        await robust.declare_queue(queue, arguments=QUORUM)
        async with robust.consume(queue, prefetch_count=10) as consumer:
            await robust.publish(b"before", routing_key=queue)
            first = await _next(consumer)
            assert first.body == b"before"
            await first.ack()
            lost = robust.connection
            assert lost is not None
            assert await close_connections(rabbitmqctl, names.prefix) == 1
            error = await lost.wait_closed()
            assert isinstance(error, amqp.ConnectionClosed)
            assert error.reply_code == 320  # CONNECTION_FORCED
            await robust.publish(b"after", routing_key=queue)  # waits for the reconnect
            second = await _next(consumer)
            assert second.body == b"after"
            await second.ack()
            assert robust.reconnects == 1
            assert consumer.starts == 2


@pytest.mark.amqp
async def test_topology_is_declared_again_after_a_reconnect(
    rabbitmq: str, names: Names, rabbitmqctl: list[str]
) -> None:
    # An exclusive queue dies with its connection: only a re-declaration brings it back.
    exchange, queue = names.exchange(), names.queue()
    async with amqp.connect_robust(
        rabbitmq, connection_name=names.prefix, reconnect_wait=FAST
    ) as robust:
        await robust.declare_exchange(exchange, "direct")
        await robust.declare_queue(queue, exclusive=True, durable=False)
        await robust.bind_queue(queue, exchange, "k")
        async with robust.consume(queue) as consumer:
            assert await close_connections(rabbitmqctl, names.prefix) == 1
            with trio.fail_after(20):
                await robust.publish(b"routed", exchange=exchange, routing_key="k", mandatory=True)
            delivery = await _next(consumer)
            assert delivery.body == b"routed"
            await delivery.ack()


@pytest.mark.amqp
async def test_deleting_the_queue_ends_a_robust_consumer(rabbitmq: str, names: Names) -> None:
    queue = names.queue()
    async with amqp.connect_robust(rabbitmq) as robust:
        await robust.declare_queue(queue)
        async with robust.consume(queue) as consumer:
            await robust.delete_queue(queue)
            with trio.fail_after(10), pytest.raises(amqp.ConsumerCancelled):
                await consumer.__anext__()


@pytest.mark.amqp
async def test_wrong_credentials_are_not_retried(rabbitmq: str) -> None:
    url = rabbitmq.replace("guest:guest", "guest:wrong")
    with trio.fail_after(10), pytest.raises(amqp.AuthenticationFailed):
        async with amqp.connect_robust(url, reconnect_wait=tenacity.wait_fixed(60)):
            pass


async def test_it_gives_up_with_reconnect_failed(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(amqp.ReconnectFailed, match="after 3 attempts") as caught:
        async with amqp.connect_robust(
            "amqp://guest:guest@127.0.0.1:1/",
            reconnect_wait=tenacity.wait_fixed(1),
            reconnect_stop=tenacity.stop_after_attempt(3),
        ):
            pass
    assert isinstance(caught.value.__cause__, OSError)


@asynccontextmanager
async def fake_server(**broker: object) -> AsyncIterator[tuple[int, list[FakeBroker]]]:
    """A fake broker on a local TCP port: one `FakeBroker` per connection."""
    brokers: list[FakeBroker] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        fake = FakeBroker(stream, **broker)  # type: ignore[arg-type]
        brokers.append(fake)
        async with stream:
            await fake.serve()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield port, brokers
        tasks.cancel_scope.cancel()


async def test_a_publish_written_before_a_drop_is_reported_as_outcome_unknown() -> None:
    async with fake_server(ack_publishes=False) as (port, brokers):
        url = f"amqp://guest:guest@127.0.0.1:{port}/"
        async with amqp.connect_robust(url, reconnect_wait=FAST, heartbeat=0) as robust:
            outcome: list[BaseException] = []

            async def publish() -> None:
                try:
                    await robust.publish(b"in flight", routing_key="q")
                except amqp.PublishError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                with trio.fail_after(10):
                    while not brokers[0].published:  # noqa: ASYNC110 - another process's view
                        await trio.sleep(0.01)
                await brokers[0].stream.aclose()  # dropped before the broker confirmed
            assert len(outcome) == 1
            assert isinstance(outcome[0], amqp.PublishOutcomeUnknown)
            assert "may or may not have been routed" in str(outcome[0])
            assert "connection" in str(outcome[0])
            # The next publish goes out on the new connection (unacked here, so time out).
            with trio.move_on_after(1):
                await robust.publish(b"next", routing_key="q")
            assert robust.reconnects == 1
            assert [m.body for m in brokers[1].published] == [b"next"]


async def test_connections_reset_by_the_peer_are_retried() -> None:
    """A proxy or a load balancer in front of a broker that is down accepts connections and
    resets them: that is a broker not reachable yet, retried, not a failure for good."""
    import socket
    import struct

    resets = {"left": 3}
    brokers: list[FakeBroker] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        if resets["left"] > 0:
            resets["left"] -= 1
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()  # an RST, not a FIN
            return
        fake = FakeBroker(stream)
        brokers.append(fake)
        async with stream:
            await fake.serve()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        url = f"amqp://guest:guest@127.0.0.1:{port}/"
        with trio.fail_after(20):
            async with amqp.connect_robust(url, reconnect_wait=FAST, heartbeat=0) as robust:
                assert robust.connection is not None
        assert resets["left"] == 0
        assert len(brokers) == 1
        tasks.cancel_scope.cancel()

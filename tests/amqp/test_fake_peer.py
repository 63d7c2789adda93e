"""Protocol behaviour against a fake broker (in memory, virtual time where it matters):
heartbeats, blocking, confirms with multiple=True, drops mid-publish, bad frames."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fake_broker import FakeBroker, memory_stream_pair
from pamqp import commands

from queueing.brokers import amqp

PARAMS = amqp.ConnectionParameters(heartbeat=0)


@asynccontextmanager
async def fake(
    params: amqp.ConnectionParameters = PARAMS, **broker: Any
) -> AsyncIterator[tuple[amqp.Connection, FakeBroker]]:
    client_end, broker_end = memory_stream_pair()
    fake_broker = FakeBroker(broker_end, **broker)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_broker.serve)
        async with amqp.connect_stream(client_end, params) as connection:
            yield connection, fake_broker
        nursery.cancel_scope.cancel()


async def test_idle_connection_sends_heartbeats(autojump_clock: trio.testing.MockClock) -> None:
    params = amqp.ConnectionParameters(heartbeat=10)
    async with fake(params, heartbeat=60) as (connection, broker):
        assert connection.heartbeat == 10  # the smaller of the two
        start = trio.current_time()
        for _ in range(3):  # the broker keeps talking, so the client stays up
            await trio.sleep(5)
            await broker.send(0, commands.Connection.Blocked(reason="ping"))
            await broker.send(0, commands.Connection.Unblocked())
        await trio.sleep(1)
        assert not connection.is_closed
        gaps = [b - a for a, b in zip([start, *broker.heartbeats], broker.heartbeats, strict=False)]
        assert len(broker.heartbeats) >= 2
        assert all(gap <= 10 for gap in gaps)  # at least one per interval while idle


async def test_a_silent_broker_is_declared_dead_after_two_intervals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    params = amqp.ConnectionParameters(heartbeat=10)
    async with fake(params, heartbeat=10) as (connection, broker):
        channel = await connection.open_channel()
        broker.silent = True
        start = trio.current_time()
        with pytest.raises(amqp.HeartbeatTimeout, match="heartbeat"):
            await channel.declare_queue("never-answered")
        waited = trio.current_time() - start
        assert 20 <= waited <= 30  # two intervals, checked twice per interval
        assert isinstance(await connection.wait_closed(), amqp.HeartbeatTimeout)


async def test_publishers_wait_while_the_broker_blocks_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake() as (connection, broker):
        channel = await connection.open_channel(publisher_confirms=True)
        await broker.send(0, commands.Connection.Blocked(reason="low on memory"))
        await trio.sleep(1)
        assert connection.blocked
        done = trio.Event()

        async def publish() -> None:
            await channel.publish(b"held", routing_key="q")
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await trio.sleep(60)
            assert broker.published == []  # nothing reached the broker while blocked
            await channel.declare_queue("q")  # other methods go on
            await broker.send(0, commands.Connection.Unblocked())
            with trio.fail_after(5):
                await done.wait()
        assert not connection.blocked
        assert [m.body for m in broker.published] == [b"held"]


async def test_a_multiple_ack_resolves_every_tag_up_to_it() -> None:
    async with fake(ack_publishes=False) as (connection, broker):
        channel = await connection.open_channel(publisher_confirms=True)
        pending = [await channel.begin_publish(b"%d" % i, routing_key="q") for i in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        assert len(broker.published) == 5
        await broker.send(channel.number, commands.Basic.Ack(delivery_tag=3, multiple=True))
        await trio.testing.wait_all_tasks_blocked()
        assert [c.done for c in pending] == [True, True, True, False, False]
        await broker.send(channel.number, commands.Basic.Nack(delivery_tag=5, multiple=True))
        for confirmation in pending[:3]:
            await confirmation.wait()
        for confirmation in pending[3:]:
            with pytest.raises(amqp.PublishNacked):
                await confirmation.wait()


async def test_a_drop_mid_publish_says_the_outcome_is_unknown() -> None:
    async with fake(ack_publishes=False) as (connection, broker):
        channel = await connection.open_channel(publisher_confirms=True)
        sent = await channel.begin_publish(b"sent", routing_key="q")
        await trio.testing.wait_all_tasks_blocked()
        assert [m.body for m in broker.published] == [b"sent"]
        await broker.stream.aclose()  # the socket goes away, no Connection.Close
        with pytest.raises(amqp.PublishOutcomeUnknown, match="may or may not") as caught:
            await sent.wait()
        assert isinstance(caught.value.__cause__, amqp.ConnectionLost)
        with pytest.raises(amqp.ConnectionLost):
            await channel.publish(b"later", routing_key="q")


async def test_the_broker_closing_the_connection_fails_pending_calls() -> None:
    async with fake() as (connection, broker):
        channel = await connection.open_channel()
        broker.silent = True  # the declare below gets no answer
        async with trio.open_nursery() as nursery:
            errors: list[BaseException] = []

            async def declare() -> None:
                try:
                    await channel.declare_queue("q")
                except amqp.ConnectionClosed as exc:
                    errors.append(exc)

            nursery.start_soon(declare)
            await trio.testing.wait_all_tasks_blocked()
            close = commands.Connection.Close(
                reply_code=320, reply_text="CONNECTION_FORCED - shutdown", class_id=0, method_id=0
            )
            await broker.send(0, close)
        assert len(errors) == 1
        assert errors[0].reply_code == 320  # type: ignore[attr-defined]
        assert "CONNECTION_FORCED" in str(errors[0])
        assert connection.is_closed
        await trio.testing.wait_all_tasks_blocked()
        sent_last = broker.received[-1][1]
        assert isinstance(sent_last, commands.Connection.CloseOk)


async def test_bodies_go_out_in_frames_no_larger_than_frame_max() -> None:
    params = amqp.ConnectionParameters(heartbeat=0, frame_max=4096)
    async with fake(params, frame_max=1 << 20) as (connection, broker):
        assert connection.frame_max == 4096
        channel = await connection.open_channel(publisher_confirms=True)
        body = bytes(range(256)) * 40  # 10240 bytes: 3 frames of at most 4088 payload bytes
        await channel.publish(body, routing_key="q")
        assert broker.published[0].body == body
        assert broker.published[0].frames == 3  # and the fake checked every frame's size


async def test_a_body_in_many_small_frames_is_reassembled() -> None:
    body = bytes(range(256)) * 100
    async with fake(messages=[body], get_frame_size=1000) as (connection, _):
        channel = await connection.open_channel()
        delivery = await channel.get("q")
        assert delivery is not None
        assert delivery.body == body
        assert await channel.get("q") is None


async def test_a_frame_over_frame_max_is_a_protocol_error() -> None:
    params = amqp.ConnectionParameters(heartbeat=0, frame_max=4096)
    async with fake(params, messages=[b"x" * 10_000], get_frame_size=8192) as (connection, _):
        channel = await connection.open_channel()
        with pytest.raises(amqp.ProtocolError, match="over the negotiated frame_max"):
            await channel.get("q")
        assert isinstance(connection.closed_error, amqp.ProtocolError)


async def test_a_corrupt_frame_closes_the_connection() -> None:
    async with fake() as (connection, broker):
        channel = await connection.open_channel()
        await broker.stream.send(b"\x01\x00\x01\x00\x00\x00\x04abcdX")  # no frame-end byte
        with pytest.raises(amqp.ProtocolError, match="frame-end"):
            await channel.declare_queue("q")


async def test_a_refused_login_is_authentication_failed() -> None:
    client_end, broker_end = memory_stream_pair()
    broker = FakeBroker(broker_end, password="other")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.serve)
        params = amqp.ConnectionParameters(user="ann", vhost="jobs")
        with pytest.raises(amqp.AuthenticationFailed, match="'ann' on vhost 'jobs'"):
            async with amqp.connect_stream(client_end, params):
                pass


async def test_a_silent_broker_during_the_handshake_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_end, _broker_end = memory_stream_pair()
    params = amqp.ConnectionParameters(connect_timeout=5)
    with pytest.raises(TimeoutError, match="connect_timeout"):
        async with amqp.connect_stream(client_end, params):
            pass


async def test_an_open_channel_cancelled_before_it_was_sent_sends_nothing() -> None:
    async with fake() as (connection, broker):
        with trio.CancelScope() as scope:
            scope.cancel()
            await connection.open_channel()
        channel = await connection.open_channel()
        assert channel.number == 1
        await channel.declare_queue("q")
        sent = [type(value) for number, value in broker.received if number == 1]
        assert sent == [commands.Channel.Open, commands.Queue.Declare]


async def test_an_open_channel_cancelled_after_it_was_sent_closes_that_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake() as (connection, broker):
        broker.silent = True
        with trio.move_on_after(5):
            await connection.open_channel()
        await trio.testing.wait_all_tasks_blocked()
        sent = [type(value) for number, value in broker.received if number == 1]
        assert sent == [commands.Channel.Open, commands.Channel.Close]
        broker.silent = False
        await broker.send(1, commands.Channel.CloseOk())  # the number is free again
        await trio.testing.wait_all_tasks_blocked()
        channel = await connection.open_channel()
        assert channel.number == 1
        assert not connection.is_closed

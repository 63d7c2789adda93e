"""Frames and URLs, without a broker: bodies split by frame_max and reassembled whole,
whatever the sizes (property tests against the fake broker's own frame parsing)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import trio
from fake_broker import FakeBroker, memory_stream_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from queueing.brokers import amqp

FRAME_OVERHEAD = 8  # 7-byte frame header + frame-end byte


async def _round_trip(body: bytes, frame_max: int, back_frame: int) -> tuple[int, bytes]:
    client_end, broker_end = memory_stream_pair()
    broker = FakeBroker(broker_end, frame_max=1 << 20, get_frame_size=back_frame)
    params = amqp.ConnectionParameters(heartbeat=0, frame_max=frame_max)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.serve)
        async with amqp.connect_stream(client_end, params) as connection:
            channel = await connection.open_channel(publisher_confirms=True)
            await channel.publish(body, routing_key="q")
            broker.messages.append(broker.published[0].body)
            delivery = await channel.get("q")
            assert delivery is not None
        nursery.cancel_scope.cancel()
    return broker.published[0].frames, delivery.body


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=30_000),
    frame_max=st.integers(4096, 12_000),
    back=st.integers(FRAME_OVERHEAD + 1, 4096),
)
def test_any_body_survives_splitting_and_reassembly(body: bytes, frame_max: int, back: int) -> None:
    frames, received = trio.run(_round_trip, body, frame_max, back)
    assert frames == math.ceil(len(body) / (frame_max - FRAME_OVERHEAD))
    assert received == body


_SHORT = st.text(max_size=80)


async def _published_properties(properties: amqp.Properties, body: bytes) -> tuple[Any, bytes]:
    client_end, broker_end = memory_stream_pair()
    broker = FakeBroker(broker_end, frame_max=1 << 20)
    params = amqp.ConnectionParameters(heartbeat=0, frame_max=4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.serve)
        async with amqp.connect_stream(client_end, params) as connection:
            channel = await connection.open_channel(publisher_confirms=True)
            await channel.publish(body, routing_key="q", properties=properties)
        nursery.cancel_scope.cancel()
    return broker.published[0].properties, broker.published[0].body


@settings(max_examples=80, deadline=None)
@given(
    properties=st.builds(
        amqp.Properties,
        content_type=st.none() | _SHORT,
        content_encoding=st.none() | _SHORT,
        headers=st.none() | st.just({"kind": "x", "n": 1}),
        delivery_mode=st.none() | st.sampled_from([amqp.PERSISTENT, amqp.TRANSIENT]),
        priority=st.none() | st.integers(0, 255),
        correlation_id=st.none() | _SHORT,
        reply_to=st.none() | _SHORT,
        expiration=st.none() | _SHORT,
        message_id=st.none() | _SHORT,
        type=st.none() | _SHORT,
        user_id=st.none() | _SHORT,
        app_id=st.none() | _SHORT,
    ),
    body=st.binary(max_size=10_000),
)
def test_published_properties_arrive_as_sent(properties: amqp.Properties, body: bytes) -> None:
    # A message's content header is built without pamqp when its properties allow: the
    # broker (pamqp's decoder) reads back what was sent ("" is "not set", as in pamqp).
    received, received_body = trio.run(_published_properties, properties, body)
    assert received_body == body
    for name in attrs.fields_dict(amqp.Properties):
        sent = getattr(properties, name)
        got = getattr(received, "message_type" if name == "type" else name)
        assert got == (None if sent == "" else sent), name


def test_url_with_everything() -> None:
    params = amqp.ConnectionParameters.from_url(
        "amqps://ann:p%40ss@rabbit.example:5999/jobs%2Fa?heartbeat=15&frame_max=65536"
        "&channel_max=64&connect_timeout=2.5&connection_name=worker-1"
    )
    assert params == amqp.ConnectionParameters(
        host="rabbit.example",
        port=5999,
        user="ann",
        password="p@ss",
        vhost="jobs/a",
        tls=True,
        heartbeat=15,
        frame_max=65536,
        channel_max=64,
        connect_timeout=2.5,
        connection_name="worker-1",
    )
    assert "p@ss" not in repr(params)
    assert "p@ss" not in params.url


@pytest.mark.parametrize(
    ("url", "vhost", "port"),
    [
        ("amqp://localhost", "/", 5672),
        ("amqp://localhost/", "/", 5672),
        ("amqp://localhost/%2F", "/", 5672),
        ("amqps://localhost/prod", "prod", 5671),
    ],
)
def test_url_defaults(url: str, vhost: str, port: int) -> None:
    params = amqp.ConnectionParameters.from_url(url)
    assert (params.vhost, params.port, params.user) == (vhost, port, "guest")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "not an AMQP URL"),
        ("amqp://localhost/?heartbeet=5", "unknown option 'heartbeet'"),
        ("amqp://localhost/?frame_max=100", "frame_max must be at least 4096"),
        ("amqp://localhost/?channel_max=0", "channel_max must be between"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        amqp.ConnectionParameters.from_url(url)

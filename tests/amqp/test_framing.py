"""Frames and URLs, without a broker: bodies split by frame_max and reassembled whole,
whatever the sizes (property tests against the fake broker's own frame parsing)."""

from __future__ import annotations

import datetime
import math
from typing import Any

import attrs
import pytest
import trio
from fake_broker import FakeBroker, memory_stream_pair
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import frame, header

from queueing.brokers import amqp
from queueing.brokers.amqp import Properties

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


_text = st.text(max_size=40)
_properties = st.builds(
    Properties,
    content_type=st.none() | _text,
    content_encoding=st.none() | _text,
    headers=st.none()
    | st.dictionaries(st.text(min_size=1, max_size=10), st.integers(0, 2**31) | _text, max_size=3),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 9),
    correlation_id=st.none() | _text,
    reply_to=st.none() | _text,
    expiration=st.none() | st.integers(0, 10**9).map(str),
    message_id=st.none() | _text,
    timestamp=st.none()
    | st.integers(0, 2**32 - 1).map(lambda s: datetime.datetime.fromtimestamp(s, datetime.UTC)),
    type=st.none() | _text,
    user_id=st.none() | _text,
    app_id=st.none() | _text,
)


async def _consume(
    sent: list[tuple[Properties, bytes, bool]], cuts: list[int], frame_size: int
) -> list[amqp.Delivery]:
    client_end, broker_end = memory_stream_pair()
    broker = FakeBroker(broker_end, frame_max=8192)
    params = amqp.ConnectionParameters(heartbeat=0)
    got: list[amqp.Delivery] = []
    with trio.fail_after(120):  # (a hang fails)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.serve)
            await _deliver_all(broker, client_end, params, sent, cuts, frame_size, got)
            nursery.cancel_scope.cancel()
    return got


async def _deliver_all(
    broker: FakeBroker,
    client_end: Any,
    params: amqp.ConnectionParameters,
    sent: list[tuple[Properties, bytes, bool]],
    cuts: list[int],
    frame_size: int,
    got: list[amqp.Delivery],
) -> None:
    async with amqp.connect_stream(client_end, params) as connection:
        channel = await connection.open_channel()
        async with channel.consume("q", consumer_tag="c") as deliveries:
            wire = b"".join(
                broker.delivery_bytes(
                    channel.number,
                    "c",
                    tag,
                    body,
                    properties.to_pamqp(),
                    redelivered=again,
                    frame_size=frame_size,
                )
                for tag, (properties, body, again) in enumerate(sent, 1)
            )
            # The stream cut anywhere: frames arrive whole, split, or many at once.
            at = 0
            for cut in sorted(cuts):
                await broker.stream.send(wire[at:cut])
                at = max(at, cut)
            await broker.stream.send(wire[at:])
            for _ in sent:
                got.append(await deliveries.__anext__())


@settings(max_examples=25, deadline=None)
@given(
    sent=st.lists(
        st.tuples(_properties, st.binary(max_size=3000), st.booleans()), min_size=1, max_size=4
    ),
    cuts=st.lists(st.integers(0, 15_000), max_size=6),
    frame_size=st.integers(256, 8192),
)
def test_deliveries_arrive_whole_however_the_stream_is_cut(
    sent: list[tuple[Properties, bytes, bool]], cuts: list[int], frame_size: int
) -> None:
    got = trio.run(_consume, sent, cuts, frame_size)
    for tag, ((properties, body, again), delivery) in enumerate(zip(sent, got, strict=True), 1):
        assert delivery.body == body
        assert delivery.delivery_tag == tag
        assert delivery.redelivered is again
        assert delivery.consumer_tag == "c"
        assert delivery.routing_key == "q"
        assert delivery.exchange == ""
        assert delivery.properties == _decoded_by_pamqp(properties)


def _decoded_by_pamqp(properties: Properties) -> Properties:
    """What pamqp makes of these properties on the wire (it leaves out empty ones)."""
    content = header.ContentHeader(body_size=0, properties=properties.to_pamqp())
    _, _, decoded = frame.unmarshal(frame.marshal(content, 1))
    assert isinstance(decoded, header.ContentHeader)
    return Properties.from_pamqp(decoded.properties)


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

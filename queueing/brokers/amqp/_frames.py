"""AMQP 0-9-1 frames on a byte stream: reading them whole, and building outgoing bytes.

pamqp encodes and decodes each frame; this module cuts the stream into frames, checks
their size and end marker, and splits a message body into body frames. Two hot cases are
done here, for speed, and anything else (or anything unusual) goes through pamqp:

- publishing: `publish_bytes` builds a message's content header itself when its
  properties are short strings and octets only (no headers table, no timestamp), which is
  every task message;
- a consumer's delivery whose three frames (Basic.Deliver, its content header, one body
  frame) have arrived whole is decoded as one `WholeDelivery` (the worker's hot path).
"""

from __future__ import annotations

import functools
import struct
from collections import deque
from collections.abc import Container, Sequence

import anyio
import anyio.abc
from pamqp import base, commands, decode, frame, header
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.heartbeat import Heartbeat

from ._errors import FRAME_ERROR, ProtocolError
from ._message import Properties

# type (1 byte), channel (2), payload size (4); then the payload and one end byte.
FRAME_HEADER = struct.Struct(">BHI")
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_OVERHEAD = FRAME_HEADER.size + 1
FRAME_METHOD = 1
FRAME_HEADER_KIND = 2
FRAME_BODY = 3
# A content header's payload start: class (Basic, 60), weight (0), body size, flags.
_HEADER_START = struct.Struct(">BHIHHQH")
_BASIC_CLASS = 60
# Basic.Deliver's class and method ids (60, 60), the first bytes of its payload.
DELIVER_ID = b"\x00\x3c\x00\x3c"
# A content header's payload: class id, weight, body size, property flags.
CONTENT_HEADER = struct.Struct(">HHQH")
LONGLONG = struct.Struct(">Q")
# How much one read asks the socket for.
RECEIVE_CHUNK = 64 * 1024


class WholeDelivery:
    """A Basic.Deliver with its content, decoded at once (see the module doc)."""

    __slots__ = (
        "body",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "properties",
        "redelivered",
        "routing_key",
    )
    name = "Basic.Deliver"

    def __init__(
        self,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        properties: Properties,
        body: bytes,
    ) -> None:
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body


Frame = base.Frame | header.ContentHeader | ContentBody | Heartbeat | WholeDelivery

# The properties decoded by `_properties`, by flag bit, in wire order: (name, kind) with
# kind "s" a short string, "o" an octet, "t" a field table, "T" a timestamp.
_PROPERTY_BITS = (
    (1 << 15, "content_type", "s"),
    (1 << 14, "content_encoding", "s"),
    (1 << 13, "headers", "t"),
    (1 << 12, "delivery_mode", "o"),
    (1 << 11, "priority", "o"),
    (1 << 10, "correlation_id", "s"),
    (1 << 9, "reply_to", "s"),
    (1 << 8, "expiration", "s"),
    (1 << 7, "message_id", "s"),
    (1 << 6, "timestamp", "T"),
    (1 << 5, "type", "s"),
    (1 << 4, "user_id", "s"),
    (1 << 3, "app_id", "s"),
)
# Flags this module leaves to pamqp: cluster_id (bit 2) and the continuation bit (0).
_PROPERTY_OTHER = (1 << 2) | 1
# Properties of the messages this package publishes: content type, delivery mode and
# message id (and the x-delivery-count header quorum queues add), decoded with few steps.
_FLAGS_CT_DM_ID = (1 << 15) | (1 << 12) | (1 << 7)


def _properties(flags: int, data: bytearray, offset: int, end: int) -> Properties | None:
    """The properties of a content header whose property list is data[offset:end], or
    None if they are left to pamqp (flags it does not decode here, or a malformed list)."""
    if flags & _PROPERTY_OTHER:
        return None
    try:
        if flags == _FLAGS_CT_DM_ID:
            n = data[offset]
            content_type = data[offset + 1 : offset + 1 + n].decode()
            offset += 1 + n
            mode = data[offset]
            n = data[offset + 1]
            message_id = data[offset + 2 : offset + 2 + n].decode()
            if offset + 2 + n != end:
                return None
            return Properties(content_type=content_type, delivery_mode=mode, message_id=message_id)
        values: dict[str, object] = {}
        for bit, name, kind in _PROPERTY_BITS:
            if not flags & bit:
                continue
            if kind == "s":
                n = data[offset]
                values[name] = data[offset + 1 : offset + 1 + n].decode()
                offset += 1 + n
            elif kind == "o":
                values[name] = data[offset]
                offset += 1
            elif kind == "t":
                used, table = decode.field_table(bytes(data[offset:end]))
                values[name] = table
                offset += used
            else:
                _, values[name] = decode.timestamp(bytes(data[offset : offset + 8]))
                offset += 8
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    if offset != end or values.get("delivery_mode", 1) not in (1, 2):
        return None
    return Properties(**values)  # type: ignore[arg-type]


HEARTBEAT_BYTES = Heartbeat.marshal()
PROTOCOL_HEADER = header.ProtocolHeader().marshal()


def method_bytes(channel: int, method: base.Frame) -> bytes:
    """One method frame, ready for the wire."""
    return frame.marshal(method, channel)


@functools.lru_cache(maxsize=1024)
def publish_method_bytes(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """The Basic.Publish method frame, encoded once per channel, exchange, routing key and
    `mandatory` (the same for every message sent that way)."""
    method = commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    return frame.marshal(method, channel)


# Basic.Properties in wire order: (attribute of `Properties`, flag bit, the values of an
# octet or None for a short string); the headers table (bit 13) and timestamp (bit 6) are
# left to pamqp, and so is any value pamqp refuses (it raises).
_OCTET = range(256)
_SIMPLE_PROPERTIES: tuple[tuple[str, int, Container[int] | None], ...] = (
    ("content_type", 1 << 15, None),
    ("content_encoding", 1 << 14, None),
    ("delivery_mode", 1 << 12, (1, 2)),
    ("priority", 1 << 11, _OCTET),
    ("correlation_id", 1 << 10, None),
    ("reply_to", 1 << 9, None),
    ("expiration", 1 << 8, None),
    ("message_id", 1 << 7, None),
    ("type", 1 << 5, None),
    ("user_id", 1 << 4, None),
    ("app_id", 1 << 3, None),
)


def _header_bytes(channel: int, body_size: int, props: Properties) -> bytes:
    """The content header frame of a message, built here when its properties allow (as
    pamqp would encode it, byte for byte), else by pamqp."""
    if props.headers is None and props.timestamp is None:
        flags = 0
        fields: list[bytes] = []
        for name, bit, octet in _SIMPLE_PROPERTIES:
            value = getattr(props, name)
            if value is None or value == "":
                continue  # not set (pamqp leaves out an empty string too)
            if octet is not None:
                if value not in octet:
                    break
                fields.append(bytes((value,)))
            else:
                data = value.encode()
                if len(data) > 255:
                    break  # pamqp's error, not ours
                fields += (bytes((len(data),)), data)
            flags |= bit
        else:
            payload = b"".join(fields)
            size = 14 + len(payload)  # class, weight, body size, flags: 2 + 2 + 8 + 2
            start = _HEADER_START.pack(
                FRAME_HEADER_KIND, channel, size, _BASIC_CLASS, 0, body_size, flags
            )
            return start + payload + FRAME_END_BYTE
    content = header.ContentHeader(body_size=body_size, properties=props.to_pamqp())
    return frame.marshal(content, channel)


def publish_bytes(
    channel: int, method: bytes, properties: Properties, body: bytes, frame_max: int
) -> bytes:
    """A Basic.Publish (`method`: its frame, from `publish_method_bytes`) with its content
    header and body frames no larger than `frame_max`, joined so they go out as one piece."""
    head = _header_bytes(channel, len(body), properties)
    step = frame_max - FRAME_OVERHEAD
    if not body:
        return method + head
    if len(body) <= step:
        return b"".join(
            (method, head, FRAME_HEADER.pack(FRAME_BODY, channel, len(body)), body, FRAME_END_BYTE)
        )
    parts: list[bytes | memoryview] = [method, head]
    view = memoryview(body)
    for start in range(0, len(body), step):
        chunk = view[start : start + step]
        parts += (FRAME_HEADER.pack(FRAME_BODY, channel, len(chunk)), chunk, FRAME_END_BYTE)
    return b"".join(parts)


class FrameReader:
    """Reads whole frames from a byte stream, checking each against `frame_max`."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream, frame_max: int) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._pending: deque[tuple[int, Frame]] = deque()
        self.frame_max = frame_max
        # When bytes last arrived (anyio's clock): the heartbeat monitor's evidence of life.
        self.last_receive = anyio.current_time()

    async def read(self) -> Sequence[tuple[int, Frame]]:
        """The next frames: at least one, as many as have arrived whole.

        Raises:
            anyio.EndOfStream: the peer closed the connection.
            ProtocolError: a frame that cannot be decoded or breaks `frame_max`.
        """
        if self._pending:
            frames = list(self._pending)
            self._pending.clear()
            return frames
        while True:
            data = await self._stream.receive(RECEIVE_CHUNK)
            self.last_receive = anyio.current_time()
            self._buffer += data
            frames = self._parse()
            if frames:
                return frames

    async def next_frame(self) -> tuple[int, Frame]:
        """The next frame alone (the handshake reads one at a time)."""
        if not self._pending:
            self._pending.extend(await self.read())
        return self._pending.popleft()

    def _parse(self) -> list[tuple[int, Frame]]:
        buffer = self._buffer
        frames: list[tuple[int, Frame]] = []
        offset = 0
        while len(buffer) - offset >= FRAME_OVERHEAD:
            if buffer[offset : offset + 4] == b"AMQP":
                version = ".".join(str(b) for b in buffer[offset + 5 : offset + 8])
                raise ProtocolError(
                    f"the broker refused AMQP 0-9-1 and offered protocol version {version}; "
                    "this client speaks only 0-9-1 (RabbitMQ's)",
                    reply_code=FRAME_ERROR,
                )
            kind, channel, size = FRAME_HEADER.unpack_from(buffer, offset)
            if size + FRAME_OVERHEAD > self.frame_max:
                raise ProtocolError(
                    f"the broker sent a frame of {size + FRAME_OVERHEAD} bytes on channel "
                    f"{channel}, over the negotiated frame_max of {self.frame_max}",
                    reply_code=FRAME_ERROR,
                )
            end = offset + FRAME_HEADER.size + size
            if len(buffer) <= end:
                break  # the rest of this frame has not arrived yet
            if buffer[end] != FRAME_END:
                raise ProtocolError(
                    f"a frame on channel {channel} does not end with the frame-end byte "
                    "(the stream is corrupt)",
                    reply_code=FRAME_ERROR,
                )
            if kind == FRAME_METHOD and buffer[offset + 7 : offset + 11] == DELIVER_ID:
                whole = self._whole_delivery(buffer, offset, end, channel)
                if whole is not None:
                    frames.append((channel, whole[0]))
                    offset = whole[1]
                    continue
            if kind == FRAME_BODY:
                # The hot path for large messages: no pamqp object work beyond the wrapper.
                frames.append((channel, ContentBody(bytes(buffer[end - size : end]))))
            else:
                try:
                    _, _, value = frame.unmarshal(bytes(buffer[offset : end + 1]))
                except (PAMQPException, ValueError, struct.error) as exc:
                    raise ProtocolError(
                        f"cannot decode a frame on channel {channel}: {exc}",
                        reply_code=FRAME_ERROR,
                    ) from exc
                frames.append((channel, value))  # type: ignore[arg-type]
            offset = end + 1
        if offset:
            del buffer[:offset]
        return frames

    def _whole_delivery(
        self, buffer: bytearray, offset: int, end: int, channel: int
    ) -> tuple[WholeDelivery, int] | None:
        """The Basic.Deliver method frame at `offset` (ending at `end`) with its content
        header and body frame, if both follow it whole on its channel: the delivery and
        the offset after it. None leaves the frames to the general path (which reports
        anything malformed)."""
        try:
            start = offset + FRAME_HEADER.size + 4
            n = buffer[start]
            consumer_tag = buffer[start + 1 : start + 1 + n].decode()
            start += 1 + n
            (delivery_tag,) = LONGLONG.unpack_from(buffer, start)
            redelivered = bool(buffer[start + 8] & 1)
            start += 9
            n = buffer[start]
            exchange = buffer[start + 1 : start + 1 + n].decode()
            start += 1 + n
            n = buffer[start]
            routing_key = buffer[start + 1 : start + 1 + n].decode()
            if start + 1 + n != end:
                return None
            # The content header.
            at = end + 1
            if len(buffer) - at < FRAME_OVERHEAD:
                return None
            kind, on, size = FRAME_HEADER.unpack_from(buffer, at)
            head_end = at + FRAME_HEADER.size + size
            if (
                kind != FRAME_HEADER_KIND
                or on != channel
                or size + FRAME_OVERHEAD > self.frame_max
                or len(buffer) <= head_end
                or buffer[head_end] != FRAME_END
            ):
                return None
            class_id, _, body_size, flags = CONTENT_HEADER.unpack_from(
                buffer, at + FRAME_HEADER.size
            )
            if class_id != 60:
                return None
            properties = _properties(
                flags, buffer, at + FRAME_HEADER.size + CONTENT_HEADER.size, head_end
            )
            if properties is None:
                return None
            after = head_end + 1
            if body_size == 0:
                body = b""
            else:
                # One body frame, carrying the whole body.
                if len(buffer) - after < FRAME_OVERHEAD:
                    return None
                kind, on, size = FRAME_HEADER.unpack_from(buffer, after)
                body_end = after + FRAME_HEADER.size + size
                if (
                    kind != FRAME_BODY
                    or on != channel
                    or size != body_size
                    or size + FRAME_OVERHEAD > self.frame_max
                    or len(buffer) <= body_end
                    or buffer[body_end] != FRAME_END
                ):
                    return None
                body = bytes(buffer[body_end - size : body_end])
                after = body_end + 1
        except (IndexError, UnicodeDecodeError, struct.error):
            return None
        delivery = WholeDelivery(
            consumer_tag, delivery_tag, redelivered, exchange, routing_key, properties, body
        )
        return delivery, after

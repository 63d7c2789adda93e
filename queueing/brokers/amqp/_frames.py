"""AMQP 0-9-1 frames on a byte stream: reading them whole, and building outgoing bytes.

pamqp encodes and decodes each frame; this module only cuts the stream into frames,
checks their size and end marker, and splits a message body into body frames. The one
exception is the hot path of publishing: `publish_bytes` builds a message's content header
itself when its properties are short strings and octets only (no headers table, no
timestamp), which is every task message; anything else goes through pamqp.
"""

from __future__ import annotations

import functools
import struct
from collections import deque
from collections.abc import Container, Sequence

import anyio
import anyio.abc
from pamqp import base, commands, frame, header
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
FRAME_HEADER_KIND = 2
FRAME_BODY = 3
# A content header's payload start: class (Basic, 60), weight (0), body size, flags.
_HEADER_START = struct.Struct(">BHIHHQH")
_BASIC_CLASS = 60
# How much one read asks the socket for.
RECEIVE_CHUNK = 64 * 1024

Frame = base.Frame | header.ContentHeader | ContentBody | Heartbeat
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

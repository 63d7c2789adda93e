"""A fake AMQP broker for tests that a real RabbitMQ cannot do cheaply or in virtual time.

It speaks just enough of the server side (handshake, channels, confirm mode, publishes,
queue declares, close) over any anyio byte stream, with its own frame parsing (pamqp
only), so it checks the client's bytes independently of the client's own reader. Tests
steer it: answer or not, send a frame, go silent, drop the socket.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pamqp import base, commands, frame, header
from pamqp.body import ContentBody
from pamqp.heartbeat import Heartbeat

SERVER_CAPABILITIES = {
    "publisher_confirms": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
}


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory byte pipe (anyio has object pipes only)."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._leftover:
            self._leftover = await self._receive.receive()
        data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        await self._send.send(bytes(item))

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected in-memory byte streams (unbounded, so neither side ever blocks)."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)


@attrs.define
class Published:
    """A message the client published, as the fake broker saw it."""

    channel: int
    method: commands.Basic.Publish
    properties: commands.Basic.Properties
    body: bytes
    frames: int  # body frames it came in


@attrs.define
class FakeBroker:
    """The server end of one connection; run `serve()` in a task."""

    stream: anyio.abc.ByteStream
    heartbeat: int = 0
    frame_max: int = 131072
    channel_max: int = 2047
    password: str = "guest"
    ack_publishes: bool = True
    # Bodies for Basic.Get, and the body frame size to send them with (None: frame_max).
    messages: list[bytes] = attrs.field(factory=list)
    get_frame_size: int | None = None
    received: list[tuple[int, Any]] = attrs.field(factory=list)
    published: list[Published] = attrs.field(factory=list)
    heartbeats: list[float] = attrs.field(factory=list)
    silent: bool = False  # stop answering (and sending heartbeats), keep reading
    on_publish: Callable[[Published], None] | None = None
    opened: anyio.Event = attrs.field(factory=anyio.Event, init=False)
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _tags: dict[int, int] = attrs.field(factory=dict, init=False)
    _content: dict[int, list[Any]] = attrs.field(factory=dict, init=False)

    async def send(self, channel: int, value: base.Frame | Heartbeat) -> None:
        await self.stream.send(frame.marshal(value, channel))

    async def send_content(
        self, channel: int, method: base.Frame, body: bytes, frame_size: int | None = None
    ) -> None:
        """A method with content, its body cut into frames of `frame_size` (default:
        as large as frame_max allows), all in one write."""
        step = (frame_size or self.frame_max) - 8
        parts = [
            frame.marshal(method, channel),
            frame.marshal(header.ContentHeader(body_size=len(body)), channel),
        ]
        parts += [
            frame.marshal(ContentBody(body[i : i + step]), channel)
            for i in range(0, len(body), step)
        ]
        await self.stream.send(b"".join(parts))

    def delivery_bytes(
        self,
        channel: int,
        consumer_tag: str,
        delivery_tag: int,
        body: bytes,
        properties: commands.Basic.Properties,
        *,
        redelivered: bool = False,
        frame_size: int | None = None,
    ) -> bytes:
        """A Basic.Deliver to a consumer with its content, as the wire carries it."""
        deliver = commands.Basic.Deliver(
            consumer_tag=consumer_tag,
            delivery_tag=delivery_tag,
            redelivered=redelivered,
            exchange="",
            routing_key="q",
        )
        step = (frame_size or self.frame_max) - 8
        content = header.ContentHeader(body_size=len(body), properties=properties)
        parts = [frame.marshal(deliver, channel), frame.marshal(content, channel)]
        parts += [
            frame.marshal(ContentBody(body[i : i + step]), channel)
            for i in range(0, len(body), step)
        ]
        return b"".join(parts)

    async def _next(self) -> tuple[int, Any]:
        while True:
            if len(self._buffer) >= 8:
                _, channel, size = struct.unpack_from(">BHI", self._buffer)
                if len(self._buffer) >= size + 8:
                    assert self._buffer[size + 7] == 0xCE, "client frame without frame-end"
                    assert size + 8 <= self.frame_max, f"client frame of {size + 8} bytes"
                    data = bytes(self._buffer[: size + 8])
                    del self._buffer[: size + 8]
                    _, channel, value = frame.unmarshal(data)
                    self.received.append((channel, value))
                    return channel, value
            self._buffer += await self.stream.receive()

    async def handshake(self) -> None:
        while len(self._buffer) < 8:
            self._buffer += await self.stream.receive()
        assert bytes(self._buffer[:8]) == b"AMQP\x00\x00\x09\x01"
        del self._buffer[:8]
        start = commands.Connection.Start(
            server_properties={"product": "fake", "capabilities": SERVER_CAPABILITIES}
        )
        await self.send(0, start)
        _, start_ok = await self._next()
        assert isinstance(start_ok, commands.Connection.StartOk)
        if start_ok.response.split("\0")[2] != self.password:
            close = commands.Connection.Close(
                reply_code=403, reply_text="ACCESS_REFUSED - bad login", class_id=0, method_id=0
            )
            await self.send(0, close)
            return
        tune = commands.Connection.Tune(
            channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
        )
        await self.send(0, tune)
        _, tune_ok = await self._next()
        assert isinstance(tune_ok, commands.Connection.TuneOk)
        self.heartbeat = tune_ok.heartbeat
        self.frame_max = tune_ok.frame_max
        _, open_ = await self._next()
        assert isinstance(open_, commands.Connection.Open)
        await self.send(0, commands.Connection.OpenOk())
        self.opened.set()

    async def serve(self) -> None:
        """Handshake, then answer until the client closes or the stream ends."""
        await self.handshake()
        try:
            while True:
                channel, value = await self._next()
                if isinstance(value, Heartbeat):
                    self.heartbeats.append(anyio.current_time())
                elif self.silent:
                    continue
                elif isinstance(value, commands.Connection.Close):
                    await self.send(0, commands.Connection.CloseOk())
                    return
                else:
                    await self._answer(channel, value)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    async def _answer(self, channel: int, value: Any) -> None:
        if isinstance(value, commands.Channel.Open):
            await self.send(channel, commands.Channel.OpenOk())
        elif isinstance(value, commands.Channel.Close):
            await self.send(channel, commands.Channel.CloseOk())
        elif isinstance(value, commands.Confirm.Select):
            self._tags[channel] = 0
            await self.send(channel, commands.Confirm.SelectOk())
        elif isinstance(value, commands.Queue.Declare):
            await self.send(channel, commands.Queue.DeclareOk(value.queue, 0, 0))
        elif isinstance(value, commands.Basic.Get):
            if not self.messages:
                await self.send(channel, commands.Basic.GetEmpty())
                return
            body = self.messages.pop(0)
            get_ok = commands.Basic.GetOk(
                delivery_tag=1, exchange="", routing_key=value.queue, message_count=0
            )
            await self.send_content(channel, get_ok, body, self.get_frame_size)
        elif isinstance(value, commands.Basic.Qos):
            await self.send(channel, commands.Basic.QosOk())
        elif isinstance(value, commands.Basic.Consume):
            await self.send(channel, commands.Basic.ConsumeOk(consumer_tag=value.consumer_tag))
        elif isinstance(value, commands.Basic.Cancel):
            await self.send(channel, commands.Basic.CancelOk(consumer_tag=value.consumer_tag))
        elif isinstance(value, commands.Basic.Publish):
            self._content[channel] = [value]
        elif isinstance(value, header.ContentHeader | ContentBody):
            parts = self._content[channel]
            parts.append(value)
            content = parts[1]
            body = b"".join(p.value for p in parts[2:])
            if len(body) == content.body_size:
                del self._content[channel]
                await self._published(
                    Published(channel, parts[0], content.properties, body, len(parts) - 2)
                )

    async def _published(self, message: Published) -> None:
        self.published.append(message)
        if self.on_publish is not None:
            self.on_publish(message)
        if message.channel in self._tags:
            self._tags[message.channel] += 1
            if self.ack_publishes:
                tag = self._tags[message.channel]
                await self.send(message.channel, commands.Basic.Ack(delivery_tag=tag))

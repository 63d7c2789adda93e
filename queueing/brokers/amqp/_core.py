"""The core of a channel: its state, requests and replies, frames in, closing.

The connection's reader task calls `_on_frame` for every frame of the channel; it never
waits, so one busy channel cannot stall the others. `Channel` (in `_channel.py`) adds the
operations on top.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.lowlevel
import attrs
from pamqp import base, commands, header
from pamqp.body import ContentBody

from ._confirms import Confirms
from ._errors import (
    REPLY_SUCCESS,
    UNEXPECTED_FRAME,
    ChannelClosed,
    ConsumerCancelled,
    ProtocolError,
    PublishOutcomeUnknown,
    PublishReturned,
    channel_error,
    fresh,
    reply_name,
)
from ._frames import Frame, WholeDelivery, method_bytes
from ._message import Delivery, Properties
from ._writer import Outgoing

if TYPE_CHECKING:
    from ._connection import Connection

log = logging.getLogger("queueing.amqp")
_Expect = type[base.Frame] | tuple[type[base.Frame], ...]
# The methods a content header and body frames follow.
_CONTENT_METHODS = (commands.Basic.Deliver, commands.Basic.GetOk, commands.Basic.Return)
# How long `close()` waits for the broker's Channel.CloseOk.
CLOSE_TIMEOUT = 5.0


class Waiter:
    __slots__ = ("error", "event", "sent", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.sent = False

    def resolve(self, value: Any) -> None:
        self.value = value
        self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


@attrs.define
class _Request:
    waiter: Waiter
    expect: type[base.Frame] | tuple[type[base.Frame], ...]
    name: str


@attrs.define
class ConsumerEntry:
    queue: str
    on_delivery: Callable[[Delivery], None]
    on_cancel: Callable[[BaseException | None], None]


@attrs.define
class _Incoming:
    method: commands.Basic.Deliver | commands.Basic.GetOk | commands.Basic.Return
    header: header.ContentHeader | None = None
    chunks: list[bytes] = attrs.field(factory=list)
    size: int = 0


class ChannelCore:
    """A channel's state and frame handling (see `Channel` for the operations)."""

    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.number = number
        self._requests: deque[_Request] = deque()
        self._consumers: dict[str, ConsumerEntry] = {}
        self._confirms: Confirms | None = None
        self._error: BaseException | None = None
        self._close_ok = anyio.Event()
        self._incoming: _Incoming | None = None
        self._tags = itertools.count(1)

    def __repr__(self) -> str:
        state = "open" if self._error is None else "closed"
        return f"<Channel {self.number} of {self.connection.params.url} {state}>"

    @property
    def is_closed(self) -> bool:
        """True once the channel (or its connection) is closing or closed."""
        return self._error is not None

    @property
    def closed_error(self) -> BaseException | None:
        """Why it closed, or None while open."""
        return self._error

    @property
    def publisher_confirms(self) -> bool:
        """True if the channel is in confirm mode."""
        return self._confirms is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    # ---- requests --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise fresh(self._error)

    def _outgoing(self, method: base.Frame, waiter: Waiter, expect: _Expect) -> Outgoing:
        def before() -> bool:
            if self._error is not None:
                waiter.fail(fresh(self._error))
                return False
            waiter.sent = True
            self._requests.append(_Request(waiter, expect, method.name))
            return True

        data = method_bytes(self.number, method)
        return Outgoing(data, before=before, drop=lambda e: waiter.fail(fresh(e)))

    async def _request(self, method: base.Frame, expect: _Expect) -> Waiter:
        """Queue a synchronous method; its reply resolves the returned waiter."""
        self._check_open()
        waiter = Waiter()
        await self.connection._put(self._outgoing(method, waiter, expect))
        return waiter

    async def _rpc(self, method: base.Frame, expect: _Expect) -> Any:
        waiter = await self._request(method, expect)
        return await waiter.wait()

    def _request_now(self, method: base.Frame, expect: _Expect) -> None:
        """Queue a request whose reply nobody awaits (cleanup after a cancelled call)."""
        if self._error is None:
            self.connection._put_now(self._outgoing(method, Waiter(), expect))

    async def _send(self, method: base.Frame) -> None:
        """Queue an asynchronous method (no reply)."""
        self._check_open()
        item = Outgoing(method_bytes(self.number, method), before=lambda: self._error is None)
        await self.connection._put(item)

    def _reject_soon(self, delivery_tag: int) -> None:
        method = commands.Basic.Reject(delivery_tag=delivery_tag, requeue=True)
        item = Outgoing(method_bytes(self.number, method), before=lambda: self._error is None)
        self.connection._put_now(item)

    # ---- opening and closing ----------------------------------------------------------

    async def _open(self, *, publisher_confirms: bool) -> None:
        waiter: Waiter | None = None
        try:
            waiter = await self._request(commands.Channel.Open(), commands.Channel.OpenOk)
            await waiter.wait()
            if publisher_confirms:
                await self._rpc(commands.Confirm.Select(), commands.Confirm.SelectOk)
                self._confirms = Confirms()
        except BaseException as exc:
            error = ChannelClosed(f"opening channel {self.number} failed: {exc!r}")
            if waiter is not None and waiter.sent and not self.is_closed:
                self._close_now(error)  # Channel.Open is on the wire: close it properly
            else:
                # Never sent (the writer drops it now): a Channel.Close for a channel the
                # broker never saw opened would be a connection error.
                self._closed(error)
                self.connection._release(self)
            raise

    def _close_now(self, error: BaseException) -> None:
        if self._error is None:
            close = commands.Channel.Close(
                reply_code=REPLY_SUCCESS, reply_text="closed", class_id=0, method_id=0
            )
            data = method_bytes(self.number, close)
            self._closed(error)
            self.connection._put_now(Outgoing(data, control=True))

    async def close(self) -> None:
        """Close the channel (Channel.Close, wait for CloseOk, bounded).

        Publishes still awaiting their confirmation fail with `PublishOutcomeUnknown`.
        """
        self._close_now(
            ChannelClosed(
                f"channel {self.number} was closed by this client",
                reply_code=REPLY_SUCCESS,
                channel_id=self.number,
            )
        )
        if not self.connection.is_closed:
            with anyio.move_on_after(CLOSE_TIMEOUT):
                await self._close_ok.wait()

    def _closed(self, error: BaseException) -> None:
        """Record why the channel closed and fail everything waiting on it."""
        if self._error is not None:
            return
        self._error = error
        requests, self._requests = self._requests, deque()
        for request in requests:
            request.waiter.fail(fresh(error))
        if self._confirms is not None:
            self._confirms.fail_all(PublishOutcomeUnknown, error)
        consumers, self._consumers = self._consumers, {}
        for entry in consumers.values():
            entry.on_cancel(fresh(error))

    def _connection_closed(self, error: BaseException) -> None:
        self._closed(error)
        self._close_ok.set()

    def _released(self) -> None:
        self._close_ok.set()
        self.connection._release(self)

    # ---- incoming frames ----------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if type(frame) is WholeDelivery and self._incoming is None:
            # The hot path: a consumer's delivery, decoded whole by the frame reader.
            delivery = Delivery(
                body=frame.body,
                properties=frame.properties,
                delivery_tag=frame.delivery_tag,
                redelivered=frame.redelivered,
                exchange=frame.exchange,
                routing_key=frame.routing_key,
                consumer_tag=frame.consumer_tag,
                channel=self,
            )
            self._to_consumer(frame.consumer_tag, delivery)
        elif self._incoming is not None:
            self._on_content(self._incoming, frame)
        elif isinstance(frame, _CONTENT_METHODS):
            self._incoming = _Incoming(frame)
        elif isinstance(frame, commands.Basic.Ack | commands.Basic.Nack):
            if self._confirms is not None:
                nack = isinstance(frame, commands.Basic.Nack)
                self._confirms.settle(frame.delivery_tag, multiple=frame.multiple, nack=nack)
        elif isinstance(frame, commands.Basic.Cancel):
            self._on_broker_cancel(frame)
        elif isinstance(frame, commands.Basic.CancelOk):
            entry = self._consumers.pop(frame.consumer_tag or "", None)
            if entry is not None:
                entry.on_cancel(None)
            self._reply(frame, frame)
        elif isinstance(frame, commands.Channel.Close):
            self._on_broker_close(frame)
        elif isinstance(frame, commands.Channel.CloseOk):
            self._released()
        elif isinstance(frame, commands.Channel.Flow):
            flow_ok = commands.Channel.FlowOk(active=frame.active)
            self.connection._put_now(Outgoing(method_bytes(self.number, flow_ok)))
        elif isinstance(frame, base.Frame):
            self._reply(frame, None if isinstance(frame, commands.Basic.GetEmpty) else frame)
        else:
            raise ProtocolError(
                f"unexpected {frame.name} on channel {self.number} (no message was started)",
                reply_code=UNEXPECTED_FRAME,
            )

    def _reply(self, frame: base.Frame, value: Any) -> None:
        if self._error is not None:
            return  # a reply to a request the close already failed
        if not self._requests:
            raise ProtocolError(
                f"{frame.name} on channel {self.number} answers no request",
                reply_code=UNEXPECTED_FRAME,
            )
        request = self._requests.popleft()
        if not isinstance(frame, request.expect):
            raise ProtocolError(
                f"{frame.name} on channel {self.number} does not answer {request.name}",
                reply_code=UNEXPECTED_FRAME,
            )
        request.waiter.resolve(value)

    def _on_content(self, incoming: _Incoming, frame: Frame) -> None:
        if incoming.header is None:
            if not isinstance(frame, header.ContentHeader):
                raise ProtocolError(
                    f"{incoming.method.name} on channel {self.number} is followed by "
                    f"{frame.name}, not a content header",
                    reply_code=UNEXPECTED_FRAME,
                )
            incoming.header = frame
        elif isinstance(frame, ContentBody):
            incoming.chunks.append(frame.value)
            incoming.size += len(frame.value)
        else:
            raise ProtocolError(
                f"{frame.name} on channel {self.number} in the middle of a message body",
                reply_code=UNEXPECTED_FRAME,
            )
        if incoming.size >= incoming.header.body_size:
            if incoming.size > incoming.header.body_size:
                raise ProtocolError(
                    f"a message body on channel {self.number} is longer than its header says",
                    reply_code=UNEXPECTED_FRAME,
                )
            self._incoming = None
            self._on_message(incoming, incoming.header)

    def _on_message(self, incoming: _Incoming, content: header.ContentHeader) -> None:
        chunks = incoming.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        properties = Properties.from_pamqp(content.properties)
        method = incoming.method
        if isinstance(method, commands.Basic.Return):
            self._on_return(method, properties)
            return
        delivery = Delivery(
            body=body,
            properties=properties,
            delivery_tag=method.delivery_tag or 0,
            redelivered=bool(method.redelivered),
            exchange=method.exchange or "",
            routing_key=method.routing_key or "",
            consumer_tag=getattr(method, "consumer_tag", None),
            message_count=getattr(method, "message_count", None),
            channel=self,
        )
        if isinstance(method, commands.Basic.GetOk):
            self._reply(method, delivery)
        else:
            self._to_consumer(method.consumer_tag or "", delivery)

    def _to_consumer(self, consumer_tag: str, delivery: Delivery) -> None:
        if (entry := self._consumers.get(consumer_tag)) is not None:
            try:
                entry.on_delivery(delivery)
            except Exception:
                log.exception("the delivery callback of consumer %s failed", consumer_tag)
        elif self._error is None:
            log.warning("channel %d: a delivery for unknown consumer %r", self.number, consumer_tag)

    def _on_return(self, method: commands.Basic.Return, properties: Properties) -> None:
        code, text = method.reply_code or 0, method.reply_text or ""
        error = PublishReturned(
            f"the broker returned the mandatory message published to exchange "
            f"{method.exchange!r} with routing key {method.routing_key!r}: "
            f"{reply_name(code)} {code}: {text} (no queue is bound for it)",
            reply_code=code,
            reply_text=text,
            exchange=method.exchange or "",
            routing_key=method.routing_key or "",
        )
        if self._confirms is None or not self._confirms.returned(properties.message_id, error):
            log.warning("channel %d: %s (matching no pending publish)", self.number, error)

    def _on_broker_cancel(self, frame: commands.Basic.Cancel) -> None:
        tag = frame.consumer_tag or ""
        entry = self._consumers.pop(tag, None)
        if entry is not None:
            error = ConsumerCancelled(
                f"the broker cancelled consumer {tag!r} of queue {entry.queue!r}: the queue "
                "was deleted or became unavailable; declare it and consume again",
                consumer_tag=tag,
                queue=entry.queue,
            )
            log.warning("%s", error)
            entry.on_cancel(error)
        if self.connection.capabilities.get("accept_consumer_cancel_ok"):
            cancel_ok = commands.Basic.CancelOk(consumer_tag=tag)
            self.connection._put_now(Outgoing(method_bytes(self.number, cancel_ok)))

    def _on_broker_close(self, frame: commands.Channel.Close) -> None:
        index = ((frame.class_id or 0) << 16) | (frame.method_id or 0)
        method = commands.INDEX_MAPPING.get(index)
        name = method.name if method is not None else ""  # type: ignore[attr-defined]
        error = channel_error(frame.reply_code or 0, frame.reply_text or "", self.number, name)
        log.debug("%s", error)
        self._closed(error)
        close_ok = method_bytes(self.number, commands.Channel.CloseOk())
        self.connection._put_now(Outgoing(close_ok, after=self._released, control=True))

    # ---- settling deliveries ---------------------------------------------------------

    async def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Acknowledge a delivery (and every earlier one with `multiple`)."""
        await self._send(commands.Basic.Ack(delivery_tag=delivery_tag, multiple=multiple))

    async def ack_many(self, delivery_tags: Sequence[int], *, upto: int = 0) -> None:
        """Acknowledge, in one write, every delivery up to `upto` (one Basic.Ack with
        `multiple`, if `upto` > 0) and each of `delivery_tags` (one Basic.Ack each)."""
        acks = [commands.Basic.Ack(delivery_tag=tag) for tag in delivery_tags]
        if upto > 0:
            acks.insert(0, commands.Basic.Ack(delivery_tag=upto, multiple=True))
        if not acks:
            await anyio.lowlevel.checkpoint()
            return
        self._check_open()
        data = b"".join(method_bytes(self.number, ack) for ack in acks)
        await self.connection._put(Outgoing(data, before=lambda: self._error is None))

    async def nack(
        self, delivery_tag: int, *, requeue: bool = True, multiple: bool = False
    ) -> None:
        """Refuse a delivery: requeue it, or dead-letter/drop it (`requeue=False`)."""
        method = commands.Basic.Nack(delivery_tag=delivery_tag, multiple=multiple, requeue=requeue)
        await self._send(method)

    async def reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        """Refuse one delivery (Basic.Reject)."""
        await self._send(commands.Basic.Reject(delivery_tag=delivery_tag, requeue=requeue))

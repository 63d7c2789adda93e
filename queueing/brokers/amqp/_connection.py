"""An AMQP 0-9-1 connection on an anyio byte stream: one reader, one writer, heartbeats.

`connect()` (in `_connect.py`) opens it and closes it (Connection.Close/CloseOk) on exit. The
background tasks never raise into the caller's code: when the connection fails they
record why, fail every pending call with that error and stop; `wait_closed()` and
`closed_error` tell the owner (the robust wrapper reconnects on it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from pamqp import commands
from pamqp.heartbeat import Heartbeat

from ._channel import Channel
from ._core import ChannelCore
from ._errors import (
    FRAME_ERROR,
    REPLY_SUCCESS,
    UNEXPECTED_FRAME,
    ConnectionClosed,
    ConnectionLost,
    HeartbeatTimeout,
    ProtocolError,
    fresh,
    reply_name,
)
from ._frames import HEARTBEAT_BYTES, Frame, FrameReader, method_bytes
from ._handshake import Tuned
from ._params import ConnectionParameters
from ._writer import Outgoing, WriteQueue

log = logging.getLogger("queueing.amqp")

# How many units callers may queue ahead of the writer before `put` waits.
WRITE_QUEUE_LIMIT = 1_024
# How many bytes the writer joins into one send.
WRITE_BATCH_BYTES = 256 * 1024
# The spec: a peer is dead after two heartbeat intervals without a byte from it.
MISSED_HEARTBEATS = 2
# Heartbeat checks (send if idle, detect silence) per negotiated interval.
HEARTBEAT_CHECKS_PER_INTERVAL = 2
# How long a clean close waits for the broker's CloseOk before dropping the socket.
CLOSE_TIMEOUT = 5.0


class Connection:
    """An open AMQP connection; open channels on it with `open_channel()`.

    Made by `connect()` (or `connect_stream()`), which also closes it.

    Attributes:
        params: what it was opened with.
        server_properties: what the broker said about itself (product, version,
            capabilities).
        channel_max, frame_max, heartbeat: the negotiated limits (heartbeat in seconds,
            0 = off).
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        reader: FrameReader,
        params: ConnectionParameters,
        tuned: Tuned,
    ) -> None:
        self.params = params
        self.server_properties: dict[str, Any] = tuned.server_properties
        self.channel_max = tuned.channel_max
        self.frame_max = tuned.frame_max
        self.heartbeat = tuned.heartbeat
        self._stream = stream
        self._reader = reader
        self._queue = WriteQueue(WRITE_QUEUE_LIMIT)
        self._channels: dict[int, Channel] = {}
        self._error: BaseException | None = None
        self._closed = anyio.Event()
        self._unblocked = anyio.Event()
        self._unblocked.set()
        self._blocked_reason = ""
        # Set when the close handshake ends: CloseOk arrived, or the connection failed.
        self._close_ok = anyio.Event()
        self._close_sent = False
        self._scope: anyio.CancelScope | None = None
        self._last_send = anyio.current_time()
        # Called with the error when the connection closes (the robust wrapper's hook).
        self._on_close: list[Callable[[BaseException], None]] = []

    def __repr__(self) -> str:
        state = "open" if self._error is None else "closed"
        return f"<Connection {self.params.url} {state}>"

    # ---- public surface ------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the connection is closing or closed (for whatever reason)."""
        return self._error is not None

    @property
    def closed_error(self) -> BaseException | None:
        """Why it closed (a `ConnectionClosed`), or None while open."""
        return self._error

    @property
    def blocked(self) -> bool:
        """True while the broker blocks publishing (Connection.Blocked: memory or disk alarm)."""
        return not self._unblocked.is_set()

    @property
    def capabilities(self) -> dict[str, Any]:
        """The broker's capabilities table."""
        return dict(self.server_properties.get("capabilities") or {})

    async def wait_closed(self) -> BaseException:
        """Wait until the connection is closed; return why."""
        await self._closed.wait()
        assert self._error is not None
        return self._error

    async def open_channel(self, *, publisher_confirms: bool = False) -> Channel:
        """Open a new channel (the lowest free number).

        Args:
            publisher_confirms: put it in confirm mode (Confirm.Select): every publish
                then waits for the broker's Basic.Ack, and a Basic.Nack raises.
        """
        self._check_open()
        number = next((n for n in range(1, self.channel_max + 1) if n not in self._channels), 0)
        if number == 0:
            raise ConnectionClosed(
                f"all {self.channel_max} channels of {self.params.url} are in use; close "
                "channels you no longer need, or raise channel_max (in the URL and on the "
                "broker)"
            )
        channel = Channel(self, number)
        self._channels[number] = channel
        await channel._open(publisher_confirms=publisher_confirms)
        return channel

    async def close(self) -> None:
        """Close cleanly (Connection.Close, wait for CloseOk, bounded), then stop."""
        if self._error is None:
            closing = ConnectionClosed(
                f"the connection to {self.params.url} was closed by this client",
                reply_code=REPLY_SUCCESS,
                reply_text="closed by client",
            )
            self._mark_closed(closing)
            close = commands.Connection.Close(
                reply_code=REPLY_SUCCESS, reply_text="bye", class_id=0, method_id=0
            )
            self._queue.put_now(Outgoing(method_bytes(0, close), control=True))
            self._close_sent = True
        if self._close_sent:
            # Also when a second caller closes while the first waits: stopping now would
            # cut the reader off before the broker's CloseOk arrives.
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await self._close_ok.wait()
        self._stop()

    # ---- used by channels ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise fresh(self._error)

    async def _put(self, item: Outgoing) -> None:
        await self._queue.put(item)

    def _put_now(self, item: Outgoing) -> None:
        self._queue.put_now(item)

    async def _wait_unblocked(self) -> None:
        while not self._unblocked.is_set():
            await self._unblocked.wait()

    def _release(self, channel: ChannelCore) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    # ---- background ------------------------------------------------------------------

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                self._scope = tasks.cancel_scope
                if self._error is not None:  # closed before it started
                    tasks.cancel_scope.cancel()
                tasks.start_soon(self._read_loop)
                tasks.start_soon(self._write_loop)
                if self.heartbeat:
                    tasks.start_soon(self._heartbeat_loop)
                task_status.started()
        finally:
            self._mark_closed(ConnectionLost(f"the connection to {self.params.url} stopped"))
            self._close_ok.set()
            self._queue.drain(self._error or ConnectionLost("stopped"))
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(self._stream)

    def _mark_closed(self, error: BaseException) -> None:
        """Record why the connection closed and fail everything waiting on it."""
        if self._error is not None:
            return
        self._error = error
        self._queue.refuse(error)
        for channel in list(self._channels.values()):
            channel._connection_closed(error)
        self._unblocked.set()
        self._closed.set()
        for callback in self._on_close:
            callback(error)

    def _stop(self) -> None:
        self._close_ok.set()
        if self._scope is not None:
            self._scope.cancel()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            log.warning("%s: %s", self.params.url, error)
        self._mark_closed(error)
        self._stop()

    async def _read_loop(self) -> None:
        url = self.params.url
        try:
            while True:
                for channel_id, frame in await self._reader.read():
                    if channel_id == 0:
                        await self._on_connection_frame(frame)
                    elif (channel := self._channels.get(channel_id)) is not None:
                        channel._on_frame(frame)
                    else:
                        log.debug("%s: %s for channel %d, not open", url, frame, channel_id)
        except anyio.EndOfStream:
            self._fail(ConnectionLost(f"{url} closed the socket without Connection.Close"))
        except ProtocolError as exc:  # before OSError: it is a ConnectionError too
            # Try to tell the broker before dropping the socket; it may not listen.
            code = exc.reply_code or FRAME_ERROR
            close = commands.Connection.Close(
                reply_code=code, reply_text=str(exc)[:255], class_id=0, method_id=0
            )
            self._put_now(Outgoing(method_bytes(0, close), control=True))
            self._fail(exc)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            error = ConnectionLost(f"the connection to {url} failed: {exc!r}")
            error.__cause__ = exc
            self._fail(error)

    async def _on_connection_frame(self, frame: Frame) -> None:
        if isinstance(frame, Heartbeat):
            return
        if isinstance(frame, commands.Connection.Close):
            code, text = frame.reply_code, frame.reply_text
            error = ConnectionClosed(
                f"the broker closed the connection to {self.params.url}: "
                f"{reply_name(code)} {code}: {text}",
                reply_code=code,
                reply_text=text,
            )
            log.warning("%s", error)
            self._mark_closed(error)
            sent = anyio.Event()
            close_ok = Outgoing(
                method_bytes(0, commands.Connection.CloseOk()), after=sent.set, control=True
            )
            self._put_now(close_ok)
            with anyio.move_on_after(CLOSE_TIMEOUT):
                await sent.wait()
            self._stop()
        elif isinstance(frame, commands.Connection.CloseOk):
            self._close_ok.set()
            self._stop()
        elif isinstance(frame, commands.Connection.Blocked):
            self._blocked_reason = frame.reason
            log.warning("%s: the broker blocks publishing: %s", self.params.url, frame.reason)
            if self._unblocked.is_set():
                self._unblocked = anyio.Event()
        elif isinstance(frame, commands.Connection.Unblocked):
            log.info("%s: the broker unblocked publishing", self.params.url)
            self._unblocked.set()
        else:
            raise ProtocolError(
                f"unexpected {getattr(frame, 'name', frame)} on channel 0",
                reply_code=UNEXPECTED_FRAME,
            )

    async def _write_loop(self) -> None:
        try:
            while True:
                batch = await self._queue.get_batch(WRITE_BATCH_BYTES)
                sent: list[Outgoing] = []
                for item in batch:
                    if self._error is not None and not item.control:
                        if item.drop is not None:
                            item.drop(self._error)
                    elif item.before is None or item.before():
                        sent.append(item)
                if sent:
                    await self._stream.send(b"".join([item.data for item in sent]))
                    self._last_send = anyio.current_time()
                for item in sent:
                    if item.after is not None:
                        item.after()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            error = ConnectionLost(f"writing to {self.params.url} failed: {exc!r}")
            error.__cause__ = exc
            self._fail(error)

    async def _heartbeat_loop(self) -> None:
        period = self.heartbeat / HEARTBEAT_CHECKS_PER_INTERVAL
        deadline = self.heartbeat * MISSED_HEARTBEATS
        while True:
            await anyio.sleep(period)
            now = anyio.current_time()
            silent = now - self._reader.last_receive
            if silent > deadline:
                self._fail(
                    HeartbeatTimeout(
                        f"nothing arrived from {self.params.url} for {silent:.0f}s, over "
                        f"{MISSED_HEARTBEATS} heartbeat intervals of {self.heartbeat}s: the "
                        "broker or the network is presumed dead"
                    )
                )
                return
            if now - self._last_send >= period and not self._queue:
                self._put_now(Outgoing(HEARTBEAT_BYTES, control=True))

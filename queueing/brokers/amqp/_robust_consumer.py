"""A consumer that survives reconnects (made by `RobustConnection.consume`)."""

from __future__ import annotations

from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._channel import Channel
from ._consumer import CANCEL_TIMEOUT, DeliveryBuffer
from ._errors import AMQPError, ConnectionClosed
from ._message import Delivery

if TYPE_CHECKING:
    from ._connection import Connection
    from ._robust import RobustConnection


class RobustConsumer:
    """Deliveries from one queue across reconnects, as an async iterator.

    `async with` starts it (on a channel of its own, with its prefetch) and leaving
    cancels it and closes that channel, which hands unsettled deliveries back to the
    queue. After a reconnect it is started again; deliveries that had arrived from the
    lost connection but were not taken yet are dropped (the broker delivers them again).

    Iteration ends after `cancel()`; it raises `ConsumerCancelled` when the broker
    cancels the consumer (its queue was deleted), a `ChannelClosed` error when starting
    it again fails (e.g. `NotFound`), and `ReconnectFailed` when the robust connection
    gives up or is closed.

    Attributes:
        queue: the queue it consumes.
        starts: how many times Basic.Consume succeeded (1 + restarts after reconnects).
    """

    def __init__(
        self,
        robust: RobustConnection,
        queue: str,
        *,
        prefetch_count: int,
        no_ack: bool,
        exclusive: bool,
        arguments: dict[str, Any] | None,
    ) -> None:
        self.queue = queue
        self.starts = 0
        self._robust = robust
        self._prefetch_count = prefetch_count
        self._no_ack = no_ack
        self._exclusive = exclusive
        self._arguments = arguments
        self._buffer = DeliveryBuffer()
        self._channel: Channel | None = None
        self._lock = anyio.Lock()
        self._active = False

    async def __aenter__(self) -> RobustConsumer:
        self._active = True
        self._robust._consumers.add(self)
        try:
            while True:
                connection = await self._robust.wait_connected()
                try:
                    await self._start(connection)
                except ConnectionClosed:
                    if connection.is_closed and self._active:
                        continue  # lost meanwhile: start on the next connection
                    raise
                return self
        except BaseException:
            self._forget()
            raise

    async def _restart(self, connection: Connection) -> None:
        """Start again on a new connection (the robust connection's restore calls this)."""
        if not self._active:
            return
        try:
            await self._start(connection)
        except ConnectionClosed:
            raise  # this connection is lost too: the robust connection tries again
        except AMQPError as exc:
            self._end(exc)

    async def _start(self, connection: Connection) -> None:
        async with self._lock:
            current = self._channel
            if current is not None and not current.is_closed and current.connection is connection:
                return
            channel = await connection.open_channel()
            try:
                if self._prefetch_count:
                    await channel.qos(self._prefetch_count)
                await channel.basic_consume(
                    self.queue,
                    self._buffer.push,
                    on_cancel=lambda error: self._on_cancel(channel, error),
                    no_ack=self._no_ack,
                    exclusive=self._exclusive,
                    arguments=self._arguments,
                )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await channel.close()
                raise
            self._channel = channel
            self.starts += 1

    def _on_cancel(self, channel: Channel, error: BaseException | None) -> None:
        if error is None:
            return  # our own Basic.Cancel
        if isinstance(error, ConnectionClosed):
            # Lost with its connection: what it delivered and nobody took comes again.
            self._buffer.remove(lambda delivery: delivery.channel is channel)
            return
        self._end(error)

    def _forget(self) -> None:
        self._active = False
        self._robust._consumers.discard(self)

    def _end(self, error: BaseException | None) -> None:
        self._forget()
        self._buffer.end(error)

    async def cancel(self) -> None:
        """Stop consuming; iteration ends once the deliveries already here are taken."""
        self._forget()
        channel = self._channel
        if channel is not None and not channel.is_closed:
            for tag in list(channel._consumers):
                await channel.basic_cancel(tag)
        self._buffer.end(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Short cleanup with its own deadline, run even when the caller is cancelled.
        shield = anyio.CancelScope(shield=True)
        with shield, anyio.move_on_after(CANCEL_TIMEOUT), suppress(AMQPError):
            await self.cancel()
            if self._channel is not None:
                await self._channel.close()  # unsettled deliveries go back to the queue
        self._end(None)

    def __aiter__(self) -> RobustConsumer:
        return self

    async def __anext__(self) -> Delivery:
        return await self._buffer.get()

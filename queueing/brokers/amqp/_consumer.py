"""Consumers as async iterators of deliveries."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._errors import AMQPError, fresh
from ._message import Delivery

if TYPE_CHECKING:
    from ._channel import Channel

# How long leaving a consumer's `async with` waits for Basic.CancelOk.
CANCEL_TIMEOUT = 5.0


class DeliveryBuffer:
    """Deliveries waiting for the code that iterates a consumer.

    It has no bound of its own: Basic.Qos (prefetch) bounds how many unacked deliveries
    the broker sends. The reader task pushes without waiting, so a slow consumer never
    stalls the connection (heartbeats, confirms and other channels go on).
    """

    def __init__(self) -> None:
        self._items: deque[Delivery] = deque()
        self._event = anyio.Event()
        self._ended = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        """True once `end` was called (items may still be waiting)."""
        return self._ended

    def push(self, delivery: Delivery) -> None:
        """Add a delivery (ignored once ended)."""
        if not self._ended:
            self._items.append(delivery)
            self._event.set()

    def end(self, error: BaseException | None) -> None:
        """No more deliveries: `get` raises `error` (or StopAsyncIteration) once drained."""
        if not self._ended:
            self._ended = True
            self._error = error
            self._event.set()

    def remove(self, predicate: Callable[[Delivery], bool]) -> list[Delivery]:
        """Take out the waiting deliveries `predicate` selects."""
        kept: deque[Delivery] = deque()
        removed: list[Delivery] = []
        for delivery in self._items:
            (removed if predicate(delivery) else kept).append(delivery)
        self._items = kept
        return removed

    async def get(self) -> Delivery:
        """The next delivery, waiting for one.

        Raises:
            StopAsyncIteration: ended without an error, and drained.
            the error the buffer ended with, once drained.
        """
        await anyio.lowlevel.checkpoint()
        while True:
            if self._items:
                return self._items.popleft()
            if self._ended:
                if self._error is None:
                    raise StopAsyncIteration
                raise fresh(self._error)
            self._event = anyio.Event()
            await self._event.wait()


class Consumer:
    """The deliveries of one Basic.Consume, as an async iterator.

    Use it as an async context manager (`async with channel.consume("jobs") as
    deliveries:`): entering starts the consumer, leaving cancels it and hands the
    deliveries that arrived but were not taken back to the queue.

    Iteration ends (StopAsyncIteration) after `cancel()`; it raises `ConsumerCancelled`
    when the broker cancels the consumer (its queue was deleted), and the channel's or
    connection's error when those close. Deliveries that arrived first are yielded first.
    """

    def __init__(
        self,
        channel: Channel,
        queue: str,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.consumer_tag = consumer_tag or ""
        self._exclusive = exclusive
        self._arguments = arguments
        self._buffer = DeliveryBuffer()
        self._active = False

    async def start(self) -> None:
        """Send Basic.Consume (entering the `async with` does this)."""
        self._active = True
        try:
            self.consumer_tag = await self.channel.basic_consume(
                self.queue,
                self._buffer.push,
                on_cancel=self._on_cancel,
                no_ack=self.no_ack,
                exclusive=self._exclusive,
                arguments=self._arguments,
                consumer_tag=self.consumer_tag or None,
            )
        except BaseException:
            self._active = False
            raise

    async def cancel(self) -> None:
        """Stop the consumer (Basic.Cancel); iteration ends once waiting deliveries are taken."""
        if self._active and not self.channel.is_closed:
            await self.channel.basic_cancel(self.consumer_tag)
        self._buffer.end(None)

    def _on_cancel(self, error: BaseException | None) -> None:
        self._active = False
        self._buffer.end(error)

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Short cleanup with its own deadline: it runs even when the caller is cancelled.
        # A closed channel needs no cancel: the broker requeues everything anyway.
        shield = anyio.CancelScope(shield=True)
        with shield, anyio.move_on_after(CANCEL_TIMEOUT), suppress(AMQPError):
            await self.cancel()
        waiting = self._buffer.remove(lambda _: True)
        if not self.no_ack and not self.channel.is_closed:
            for delivery in waiting:
                self.channel._reject_soon(delivery.delivery_tag)

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        return await self._buffer.get()

"""A channel's operations: publishing (with confirms), consuming, settling deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import attrs
from pamqp import commands

from ._confirms import Confirmation
from ._consumer import Consumer
from ._core import ConsumerEntry, Waiter
from ._errors import fresh
from ._frames import publish_bytes, publish_method_bytes
from ._message import NO_PROPERTIES, Delivery, Properties
from ._topology import Topology
from ._writer import Outgoing


def _ignore(_: BaseException | None) -> None:
    pass


class Channel(Topology):
    """One AMQP channel; made by `Connection.open_channel()`; `async with` closes it.

    A channel error from the broker (404, 406, ...) closes the channel: the call that
    caused it raises the matching `ChannelClosed` subclass, and so does every later call.
    Open a new channel to go on; the connection stays usable.
    """

    # ---- publishing ----------------------------------------------------------------------

    async def begin_publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> Confirmation:
        """Send a message and return its `Confirmation` without waiting for it.

        This keeps many messages in flight from one task; `publish` waits for each.
        While the broker blocks the connection (Connection.Blocked), this waits.

        Raises:
            ValueError: `mandatory` on a channel without publisher confirms (a return
                could not be matched to its publish).
            ChannelClosed, ConnectionClosed: the channel or connection is closed.
        """
        self._check_open()
        if mandatory and self._confirms is None:
            raise ValueError(
                "mandatory=True needs a channel opened with publisher_confirms=True, so a "
                "returned message can be reported to its publish"
            )
        await self.connection._wait_unblocked()
        self._check_open()
        props = properties or NO_PROPERTIES
        message_id: str | None = None
        if mandatory:
            if props.message_id is None:
                props = attrs.evolve(props, message_id=uuid.uuid4().hex)
            message_id = props.message_id
        method = publish_method_bytes(self.number, exchange, routing_key, mandatory)
        data = publish_bytes(self.number, method, props, body, self.connection.frame_max)
        confirmation = Confirmation(exchange, routing_key)
        confirms = self._confirms

        def before() -> bool:
            if self._error is not None:
                confirmation._settle(fresh(self._error))
                return False
            if confirms is not None:
                confirms.register(confirmation, message_id)
            return True

        item = Outgoing(
            data,
            before=before,
            after=None if confirms is not None else confirmation._settle,
            drop=lambda e: confirmation._settle(fresh(e)),
        )
        await self.connection._put(item)
        return confirmation

    async def begin_publish_many(
        self,
        messages: Sequence[tuple[bytes, str, Properties | None]],
        *,
        exchange: str = "",
        mandatory: bool = False,
    ) -> list[Confirmation]:
        """Send several messages `(body, routing_key, properties)` as one write, and return
        their `Confirmation`s (in order) without waiting for them.

        The same as a `begin_publish` per message, in one piece for the connection's
        writer: one socket write and one wake-up of it for the lot, instead of one each.

        Raises:
            as `begin_publish`.
        """
        self._check_open()
        if mandatory and self._confirms is None:
            raise ValueError(
                "mandatory=True needs a channel opened with publisher_confirms=True, so a "
                "returned message can be reported to its publish"
            )
        await self.connection._wait_unblocked()
        self._check_open()
        frame_max = self.connection.frame_max
        parts: list[bytes] = []
        confirmations: list[tuple[Confirmation, str | None]] = []
        for body, routing_key, properties in messages:
            props = properties or NO_PROPERTIES
            message_id: str | None = None
            if mandatory:
                if props.message_id is None:
                    props = attrs.evolve(props, message_id=uuid.uuid4().hex)
                message_id = props.message_id
            method = publish_method_bytes(self.number, exchange, routing_key, mandatory)
            parts.append(publish_bytes(self.number, method, props, body, frame_max))
            confirmations.append((Confirmation(exchange, routing_key), message_id))
        confirms = self._confirms

        def before() -> bool:
            if self._error is not None:
                for confirmation, _ in confirmations:
                    confirmation._settle(fresh(self._error))
                return False
            if confirms is not None:
                for confirmation, message_id in confirmations:
                    confirms.register(confirmation, message_id)
            return True

        def after() -> None:
            for confirmation, _ in confirmations:
                confirmation._settle()

        def drop(error: BaseException) -> None:
            for confirmation, _ in confirmations:
                confirmation._settle(fresh(error))

        item = Outgoing(
            b"".join(parts),
            before=before,
            after=None if confirms is not None else after,
            drop=drop,
        )
        await self.connection._put(item)
        return [confirmation for confirmation, _ in confirmations]

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish a message; with publisher confirms, return once the broker has it.

        Raises:
            PublishNacked: the broker refused it (e.g. `x-overflow: reject-publish`).
            PublishReturned: `mandatory` and no queue is bound for its routing key.
            PublishOutcomeUnknown: the channel or connection closed before the broker
                answered; it may or may not have been routed.
        """
        confirmation = await self.begin_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
        )
        await confirmation.wait()

    @property
    def unconfirmed(self) -> int:
        """Publishes sent and not yet confirmed (0 without publisher confirms)."""
        return len(self._confirms) if self._confirms is not None else 0

    # ---- consuming ------------------------------------------------------------------------

    def consume(
        self,
        queue: str,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
    ) -> Consumer:
        """A consumer of `queue`, started by `async with` and iterated with `async for`."""
        return Consumer(
            self,
            queue,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
            consumer_tag=consumer_tag,
        )

    async def basic_consume(
        self,
        queue: str,
        on_delivery: Callable[[Delivery], None],
        *,
        on_cancel: Callable[[BaseException | None], None] | None = None,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
    ) -> str:
        """Start a consumer that calls `on_delivery(delivery)` for each message.

        The callbacks run in the connection's reader task: they must not block (hand the
        delivery to a memory stream, or start a task). `on_cancel(error)` runs once when
        the consumer ends: None after `basic_cancel`, `ConsumerCancelled` when the broker
        cancels it, the channel's or connection's error when those close.

        Returns:
            the consumer tag.
        """
        self._check_open()
        tag = consumer_tag or f"ctag{self.number}.{next(self._tags)}"
        if tag in self._consumers:
            raise ValueError(f"channel {self.number} already has a consumer tagged {tag!r}")
        # Registered before Basic.Consume goes out: deliveries may follow ConsumeOk at once.
        self._consumers[tag] = ConsumerEntry(queue, on_delivery, on_cancel or _ignore)
        method = commands.Basic.Consume(
            queue=queue,
            consumer_tag=tag,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
        )
        waiter: Waiter | None = None
        try:
            waiter = await self._request(method, commands.Basic.ConsumeOk)
            await waiter.wait()
        except BaseException:
            if waiter is not None and self._error is None:
                # Basic.Consume will reach the broker: cancel it behind it.
                self._request_now(commands.Basic.Cancel(consumer_tag=tag), commands.Basic.CancelOk)
            else:
                self._consumers.pop(tag, None)
            raise
        return tag

    async def basic_cancel(self, consumer_tag: str) -> None:
        """Cancel a consumer; deliveries already sent still reach its callback."""
        if consumer_tag in self._consumers:
            method = commands.Basic.Cancel(consumer_tag=consumer_tag)
            await self._rpc(method, commands.Basic.CancelOk)
        else:
            await anyio.lowlevel.checkpoint()

    async def qos(
        self, prefetch_count: int, *, prefetch_size: int = 0, global_: bool = False
    ) -> None:
        """Limit unacked deliveries (per consumer; `global_`: per channel in RabbitMQ)."""
        method = commands.Basic.Qos(
            prefetch_size=prefetch_size, prefetch_count=prefetch_count, global_=global_
        )
        await self._rpc(method, commands.Basic.QosOk)

    async def get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """Take one message from `queue` (Basic.Get); None if it is empty."""
        reply: Delivery | None = await self._rpc(
            commands.Basic.Get(queue=queue, no_ack=no_ack),
            (commands.Basic.GetOk, commands.Basic.GetEmpty),
        )
        return reply

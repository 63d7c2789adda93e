"""Messages: their properties, and a message delivered to this client."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from pamqp import commands

if TYPE_CHECKING:
    from ._core import ChannelCore

PERSISTENT = 2
TRANSIENT = 1


@attrs.frozen(kw_only=True)
class Properties:
    """A message's AMQP properties (Basic.Properties); every one is optional.

    Args:
        content_type: MIME type of the body, e.g. "application/json".
        content_encoding: e.g. "gzip".
        headers: application headers (a field table: str keys; str, int, float, bool,
            bytes, datetime, None, lists and nested tables as values).
        delivery_mode: 2 (`PERSISTENT`) to survive a broker restart, 1 (`TRANSIENT`) not.
        priority: 0-9 (for classic queues with `x-max-priority`).
        correlation_id: to match replies to requests.
        reply_to: a queue to reply to.
        expiration: per-message TTL in milliseconds, as a string ("60000").
        message_id: the application's id for the message.
        timestamp: when it was made.
        type: the application's message type name.
        user_id: must equal the connection's user if set (RabbitMQ checks it).
        app_id: the publishing application.
    """

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime.datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None

    def to_pamqp(self) -> commands.Basic.Properties:
        """The pamqp object that encodes these properties."""
        return commands.Basic.Properties(
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            headers=dict(self.headers) if self.headers is not None else None,
            delivery_mode=self.delivery_mode,
            priority=self.priority,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            expiration=self.expiration,
            message_id=self.message_id,
            timestamp=self.timestamp,
            message_type=self.type,
            user_id=self.user_id,
            app_id=self.app_id,
        )

    @classmethod
    def from_pamqp(cls, value: commands.Basic.Properties) -> Properties:
        """These properties, from a decoded content header."""
        return cls(
            content_type=value.content_type,
            content_encoding=value.content_encoding,
            headers=value.headers,
            delivery_mode=value.delivery_mode,
            priority=value.priority,
            correlation_id=value.correlation_id,
            reply_to=value.reply_to,
            expiration=value.expiration,
            message_id=value.message_id,
            timestamp=value.timestamp,
            type=value.message_type,
            user_id=value.user_id,
            app_id=value.app_id,
        )


NO_PROPERTIES = Properties()


@attrs.frozen(kw_only=True)
class Delivery:
    """A message delivered to this client, by a consumer or by `Channel.get`.

    Unless it was consumed with `no_ack=True`, settle it exactly once with `ack`, `nack`
    or `reject` on the channel it came from; until then it counts against the channel's
    prefetch. When that channel is gone, settling raises its close error and the broker
    delivers the message again.

    Attributes:
        body: the message body.
        properties: its properties.
        delivery_tag: its number on the channel (what ack/nack/reject refer to).
        redelivered: True if it was delivered before and not acked (a retry).
        exchange: the exchange it was published to.
        routing_key: its routing key.
        consumer_tag: the consumer it came to (None for `Channel.get`).
        message_count: messages left in the queue (`Channel.get` only, else None).
    """

    body: bytes
    properties: Properties
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    consumer_tag: str | None = None
    message_count: int | None = None
    channel: ChannelCore = attrs.field(repr=False, eq=False)

    @property
    def headers(self) -> Mapping[str, Any]:
        """The application headers ({} if none): quorum queues add `x-delivery-count`."""
        return self.properties.headers or {}

    async def ack(self, *, multiple: bool = False) -> None:
        """Acknowledge it (and, with `multiple`, every earlier unsettled delivery)."""
        await self.channel.ack(self.delivery_tag, multiple=multiple)

    async def nack(self, *, requeue: bool = True, multiple: bool = False) -> None:
        """Refuse it: back to the queue (`requeue`) or to its dead-letter exchange/dropped."""
        await self.channel.nack(self.delivery_tag, requeue=requeue, multiple=multiple)

    async def reject(self, *, requeue: bool = True) -> None:
        """Refuse this one delivery (as `nack` without `multiple`)."""
        await self.channel.reject(self.delivery_tag, requeue=requeue)

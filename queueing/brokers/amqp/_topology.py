"""Declaring, binding, purging and deleting exchanges and queues on a channel."""

from __future__ import annotations

from typing import Any

import attrs
from pamqp import commands

from ._core import ChannelCore


@attrs.frozen
class QueueInfo:
    """What Queue.DeclareOk reports: the queue's name (the broker's choice when declared
    as ""), its ready messages and its consumers."""

    name: str
    message_count: int
    consumer_count: int


class Topology(ChannelCore):
    """The exchange and queue methods of `Channel`.

    Declares default to `durable=True` (RabbitMQ's quorum queues require it). Arguments
    are a field table passed as is, e.g. ``{"x-queue-type": "quorum", "x-delivery-limit":
    5, "x-max-length": 10_000, "x-overflow": "reject-publish",
    "x-dead-letter-exchange": "dlx", "x-dead-letter-strategy": "at-least-once"}``.
    Redeclaring with different arguments raises `PreconditionFailed` and closes the channel.
    """

    async def declare_exchange(
        self,
        name: str,
        exchange_type: str = "direct",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Declare an exchange (`passive`: only check that it exists, else `NotFound`)."""
        method = commands.Exchange.Declare(
            exchange=name,
            exchange_type=exchange_type,
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
        )
        await self._rpc(method, commands.Exchange.DeclareOk)

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange (`if_unused`: only if no queue is bound to it)."""
        method = commands.Exchange.Delete(exchange=name, if_unused=if_unused)
        await self._rpc(method, commands.Exchange.DeleteOk)

    async def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Route messages from exchange `source` to exchange `destination` (RabbitMQ)."""
        method = commands.Exchange.Bind(
            destination=destination, source=source, routing_key=routing_key, arguments=arguments
        )
        await self._rpc(method, commands.Exchange.BindOk)

    async def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Remove an exchange-to-exchange binding."""
        method = commands.Exchange.Unbind(
            destination=destination, source=source, routing_key=routing_key, arguments=arguments
        )
        await self._rpc(method, commands.Exchange.UnbindOk)

    async def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> QueueInfo:
        """Declare a queue (`passive`: only check it exists and count its messages)."""
        method = commands.Queue.Declare(
            queue=name,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
        )
        reply: commands.Queue.DeclareOk = await self._rpc(method, commands.Queue.DeclareOk)
        return QueueInfo(reply.queue or name, reply.message_count or 0, reply.consumer_count or 0)

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Route messages from `exchange` with `routing_key` to `queue`."""
        method = commands.Queue.Bind(
            queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments
        )
        await self._rpc(method, commands.Queue.BindOk)

    async def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        method = commands.Queue.Unbind(
            queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments
        )
        await self._rpc(method, commands.Queue.UnbindOk)

    async def purge_queue(self, queue: str) -> int:
        """Drop a queue's ready messages; return how many there were."""
        reply: commands.Queue.PurgeOk = await self._rpc(
            commands.Queue.Purge(queue=queue), commands.Queue.PurgeOk
        )
        return int(reply.message_count or 0)

    async def delete_queue(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete a queue (its consumers are cancelled); return how many messages it held."""
        method = commands.Queue.Delete(queue=queue, if_unused=if_unused, if_empty=if_empty)
        reply: commands.Queue.DeleteOk = await self._rpc(method, commands.Queue.DeleteOk)
        return int(reply.message_count or 0)

"""Errors raised by the AMQP 0-9-1 layer.

The tree::

    BrokerError                  (queueing's: the broker failed)
    └── AMQPError
        ├── ConnectionClosed     (also ConnectionError) the connection is gone;
        │   │                    .reply_code/.reply_text when the broker said why
        │   ├── AuthenticationFailed   the broker refused the user's credentials
        │   ├── VirtualHostNotAllowed  no such vhost, or no access to it for the user
        │   ├── ConnectionLost         the socket closed or failed, no Connection.Close
        │   │   └── HeartbeatTimeout   nothing arrived for too many heartbeat intervals
        │   ├── ProtocolError          a frame we cannot read, or one out of place
        │   └── ReconnectFailed        a robust connection gave up reconnecting
        ├── ChannelClosed        the channel is gone; .reply_code/.reply_text
        │   ├── AccessRefused        403 ACCESS_REFUSED
        │   ├── NotFound             404 NOT_FOUND
        │   ├── ResourceLocked       405 RESOURCE_LOCKED
        │   └── PreconditionFailed   406 PRECONDITION_FAILED
        ├── PublishError         one publish did not succeed
        │   ├── PublishNacked        the broker refused it (Basic.Nack)
        │   ├── PublishReturned      mandatory, and no queue took it (Basic.Return)
        │   └── PublishOutcomeUnknown  the channel or connection closed before the
        │                              broker answered: it may or may not be routed
        └── ConsumerCancelled    the broker cancelled a consumer (its queue was deleted...)

    PayloadTooLarge              (queueing's: a payload over a limit; also ValueError)
    └── MessageTooLarge          a task's message is over RabbitMQ's max_message_size

Every class takes its message as the one positional argument and keeps its details as
attributes, so `copy.copy` makes a fresh instance (see `fresh`).
"""

from __future__ import annotations

import copy
import re

from ..._exceptions import BrokerError, PayloadTooLarge

# Reply codes from the AMQP 0-9-1 specification that RabbitMQ uses.
REPLY_SUCCESS = 200
NO_ROUTE = 312
CONNECTION_FORCED = 320
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
UNEXPECTED_FRAME = 505
NOT_ALLOWED = 530

REPLY_NAMES = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    311: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    313: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    402: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    502: "SYNTAX_ERROR",
    503: "COMMAND_INVALID",
    504: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    506: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
    541: "INTERNAL_ERROR",
}


def reply_name(code: int | None) -> str:
    """The specification's name of a reply code (`404` -> `"NOT_FOUND"`)."""
    if code is None:
        return "no reply code"
    return REPLY_NAMES.get(code, f"reply code {code}")


class AMQPError(BrokerError):
    """Root of every error raised by the AMQP layer."""


class ConnectionClosed(AMQPError, ConnectionError):
    """The connection is closed; every call on it or its channels raises this.

    Attributes:
        reply_code: the code the broker (or this client) closed it with; None when the
            socket went away without a Connection.Close.
        reply_text: the broker's explanation ("" if none).
    """

    def __init__(
        self, message: str, *, reply_code: int | None = None, reply_text: str = ""
    ) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text


class AuthenticationFailed(ConnectionClosed):
    """The broker refused the user name or password (ACCESS_REFUSED during the handshake).

    Attributes:
        user: the user name that was refused.
        vhost: the virtual host the connection was for.
    """

    def __init__(
        self,
        message: str,
        *,
        user: str = "",
        vhost: str = "",
        reply_code: int | None = None,
        reply_text: str = "",
    ) -> None:
        super().__init__(message, reply_code=reply_code, reply_text=reply_text)
        self.user = user
        self.vhost = vhost


class VirtualHostNotAllowed(ConnectionClosed):
    """The virtual host does not exist, or the user has no permission to use it."""

    def __init__(
        self,
        message: str,
        *,
        user: str = "",
        vhost: str = "",
        reply_code: int | None = None,
        reply_text: str = "",
    ) -> None:
        super().__init__(message, reply_code=reply_code, reply_text=reply_text)
        self.user = user
        self.vhost = vhost


class ConnectionLost(ConnectionClosed):
    """The socket closed or failed without the AMQP close handshake."""


class HeartbeatTimeout(ConnectionLost):
    """Nothing arrived from the broker for too many heartbeat intervals: a dead peer."""


class ProtocolError(ConnectionClosed):
    """The broker sent something this client cannot read or did not expect."""


class ReconnectFailed(ConnectionClosed):
    """A robust connection stopped reconnecting; its last error is the `__cause__`."""


class ChannelClosed(AMQPError):
    """The channel is closed: by the broker (an error) or by this client.

    Attributes:
        reply_code: the code it was closed with (e.g. 404), None if its connection closed.
        reply_text: the broker's explanation, e.g. "NOT_FOUND - no queue 'jobs' in vhost '/'".
        channel_id: the channel's number on its connection.
    """

    def __init__(
        self,
        message: str,
        *,
        reply_code: int | None = None,
        reply_text: str = "",
        channel_id: int = 0,
    ) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.channel_id = channel_id


class AccessRefused(ChannelClosed):
    """403 ACCESS_REFUSED: the user may not do this (or the name is reserved, `amq.*`)."""


class NotFound(ChannelClosed):
    """404 NOT_FOUND: the queue or exchange does not exist."""


class ResourceLocked(ChannelClosed):
    """405 RESOURCE_LOCKED: an exclusive queue owned by another connection."""


class PreconditionFailed(ChannelClosed):
    """406 PRECONDITION_FAILED: e.g. a declare whose arguments differ from the existing queue's."""


_CHANNEL_ERRORS: dict[int, type[ChannelClosed]] = {
    ACCESS_REFUSED: AccessRefused,
    NOT_FOUND: NotFound,
    RESOURCE_LOCKED: ResourceLocked,
    PRECONDITION_FAILED: PreconditionFailed,
}


class PublishError(AMQPError):
    """One publish did not succeed.

    Attributes:
        exchange: the exchange it was published to ("" is the default exchange).
        routing_key: its routing key.
    """

    def __init__(self, message: str, *, exchange: str = "", routing_key: str = "") -> None:
        super().__init__(message)
        self.exchange = exchange
        self.routing_key = routing_key


class PublishNacked(PublishError):
    """The broker refused the message (Basic.Nack): e.g. a full queue with
    `x-overflow: reject-publish`. It was not enqueued; publish it again later or elsewhere."""


class PublishReturned(PublishError):
    """A mandatory message could not be routed to any queue (Basic.Return).

    Attributes:
        reply_code: 312 NO_ROUTE, usually.
        reply_text: the broker's explanation.
    """

    def __init__(
        self,
        message: str,
        *,
        reply_code: int = NO_ROUTE,
        reply_text: str = "",
        exchange: str = "",
        routing_key: str = "",
    ) -> None:
        super().__init__(message, exchange=exchange, routing_key=routing_key)
        self.reply_code = reply_code
        self.reply_text = reply_text


class PublishOutcomeUnknown(PublishError):
    """The message was sent, but its channel or connection closed before the broker
    confirmed or refused it: it may or may not have been routed. The cause is `__cause__`."""


class ConsumerCancelled(AMQPError):
    """The broker cancelled the consumer (its queue was deleted, or a quorum queue's
    leader moved away for good); no more deliveries will come from it.

    Attributes:
        consumer_tag: the consumer's tag.
        queue: the queue it consumed from.
    """

    def __init__(self, message: str, *, consumer_tag: str = "", queue: str = "") -> None:
        super().__init__(message)
        self.consumer_tag = consumer_tag
        self.queue = queue


class MessageTooLarge(PayloadTooLarge):
    """A task's message is larger than RabbitMQ's `max_message_size` (a server setting:
    128 MiB by default on 3.x, 16 MiB on 4.0 and later), so RabbitMQ refused it (406
    PRECONDITION_FAILED, closing the channel). It was not enqueued, and its reservation
    was taken back.

    Attributes:
        queue: the task's queue.
        size: the message's size in bytes (the payload and the envelope around it).
        limit: the server's `max_message_size` in bytes.
        max_payload: the queue's `max_payload`.
    """

    def __init__(self, queue: str, size: int, limit: int, max_payload: int) -> None:
        super().__init__(queue, size, limit)
        self.max_payload = max_payload
        self.args = (
            f"the message of a task for queue {queue!r} is {size} bytes, over RabbitMQ's "
            f"max_message_size of {limit} bytes (a server setting), so RabbitMQ refused it; "
            f"raise max_message_size in rabbitmq.conf, or lower Queue(max_payload=...) "
            f"(now {max_payload}) below it so that submit refuses such payloads, or send a "
            "reference (a key, a URL) instead of the data",
        )


_TOO_LARGE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")


def max_message_size(error: BaseException | None) -> int | None:
    """RabbitMQ's `max_message_size` if `error` (or its cause) is its refusal of a message
    over it (406 "message size N is larger than configured max size M"); else None."""
    while error is not None:
        if isinstance(error, PreconditionFailed):
            match = _TOO_LARGE.search(error.reply_text)
            return int(match.group(2)) if match else None
        error = error.__cause__
    return None


def channel_error(code: int, text: str, channel_id: int, method: str) -> ChannelClosed:
    """The exception for a Channel.Close from the broker, by reply code."""
    cls = _CHANNEL_ERRORS.get(code, ChannelClosed)
    where = f" in reply to {method}" if method else ""
    message = f"the broker closed channel {channel_id}{where}: {reply_name(code)} {code}: {text}"
    return cls(message, reply_code=code, reply_text=text, channel_id=channel_id)


def fresh(error: BaseException) -> BaseException:
    """A copy of a stored error, to raise again without growing the original's traceback."""
    clone = copy.copy(error)
    clone.__cause__ = error.__cause__
    clone.__traceback__ = None
    return clone

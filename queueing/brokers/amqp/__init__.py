"""A small AMQP 0-9-1 client for RabbitMQ, on anyio (trio or asyncio), using pamqp frames.

`connect()` opens a connection, `Connection.open_channel()` a channel; channels declare
topology, publish (with publisher confirms) and consume. `connect_robust()` reconnects
and restores the topology and consumers it was told about. See
docs/how-to/amqp-protocol.md.

The `amqp://` broker built on it, `RabbitMQBroker`, is imported only when it is used (it
needs a Redis results store: docs/how-to/rabbitmq.md).
"""

from typing import Any

from ._channel import Channel as Channel
from ._confirms import Confirmation as Confirmation
from ._connect import connect as connect
from ._connect import connect_stream as connect_stream
from ._connection import Connection as Connection
from ._consumer import Consumer as Consumer
from ._errors import AccessRefused as AccessRefused
from ._errors import AMQPError as AMQPError
from ._errors import AuthenticationFailed as AuthenticationFailed
from ._errors import ChannelClosed as ChannelClosed
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import ConnectionLost as ConnectionLost
from ._errors import ConsumerCancelled as ConsumerCancelled
from ._errors import HeartbeatTimeout as HeartbeatTimeout
from ._errors import NotFound as NotFound
from ._errors import PreconditionFailed as PreconditionFailed
from ._errors import ProtocolError as ProtocolError
from ._errors import PublishError as PublishError
from ._errors import PublishNacked as PublishNacked
from ._errors import PublishOutcomeUnknown as PublishOutcomeUnknown
from ._errors import PublishReturned as PublishReturned
from ._errors import ReconnectFailed as ReconnectFailed
from ._errors import ResourceLocked as ResourceLocked
from ._errors import VirtualHostNotAllowed as VirtualHostNotAllowed
from ._message import PERSISTENT as PERSISTENT
from ._message import TRANSIENT as TRANSIENT
from ._message import Delivery as Delivery
from ._message import Properties as Properties
from ._params import ConnectionParameters as ConnectionParameters
from ._robust import RobustConnection as RobustConnection
from ._robust import connect_robust as connect_robust
from ._robust_consumer import RobustConsumer as RobustConsumer
from ._topology import QueueInfo as QueueInfo

__all__ = [
    "AMQPError",
    "AccessRefused",
    "AuthenticationFailed",
    "Channel",
    "ChannelClosed",
    "Confirmation",
    "Connection",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionParameters",
    "Consumer",
    "ConsumerCancelled",
    "Delivery",
    "HeartbeatTimeout",
    "NotFound",
    "PERSISTENT",
    "PreconditionFailed",
    "Properties",
    "ProtocolError",
    "PublishError",
    "PublishNacked",
    "PublishOutcomeUnknown",
    "PublishReturned",
    "QueueInfo",
    "RabbitMQBroker",
    "ReconnectFailed",
    "ResourceLocked",
    "RobustConnection",
    "RobustConsumer",
    "TRANSIENT",
    "VirtualHostNotAllowed",
    "connect",
    "connect_robust",
    "connect_stream",
]


def __getattr__(name: str) -> Any:
    if name == "RabbitMQBroker":
        from ._broker import RabbitMQBroker

        return RabbitMQBroker
    raise AttributeError(name)

"""The public surface of `queueing.brokers.amqp`: exactly the documented names."""

from __future__ import annotations

import inspect

import pytest

from queueing import BrokerError
from queueing.brokers import amqp

# docs/how-to/amqp-protocol.md describes these (and docs/how-to/rabbitmq.md the broker,
# `RabbitMQBroker`). Adding or removing one is an API change.
DOCUMENTED = [
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


def test_all_is_exactly_the_documented_names() -> None:
    assert amqp.__all__ == DOCUMENTED


def test_all_is_sorted() -> None:
    assert list(amqp.__all__) == sorted(amqp.__all__)


@pytest.mark.parametrize("name", [n for n in DOCUMENTED if not n.isupper()])
def test_public_name_has_its_own_docstring(name: str) -> None:
    obj = getattr(amqp, name)
    assert inspect.getdoc(obj), f"amqp.{name} has no docstring"
    if inspect.isclass(obj):
        assert obj.__doc__, f"amqp.{name} inherits its docstring instead of having one"


def test_every_error_is_a_broker_error() -> None:
    errors = [getattr(amqp, n) for n in DOCUMENTED if inspect.isclass(getattr(amqp, n))]
    errors = [e for e in errors if issubclass(e, BaseException)]
    assert all(issubclass(error, amqp.AMQPError) for error in errors)
    assert issubclass(amqp.AMQPError, BrokerError)
    assert issubclass(amqp.ConnectionClosed, ConnectionError)

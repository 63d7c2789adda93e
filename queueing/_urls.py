"""The broker a URL names."""

from __future__ import annotations

import os

from ._exceptions import InvalidQueue
from .brokers._contract import Broker
from .brokers._memory import MemoryBroker

#: The schemes of the Redis broker.
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)
#: The scheme of the SQLite broker (a file shared by the processes of one machine).
SQLITE_SCHEME = "sqlite"
#: The schemes of the RabbitMQ broker.
AMQP_SCHEMES = ("amqp", "amqps")


def broker_from_url(
    broker: str | Broker | None,
    *,
    max_results: int,
    max_dead_letters: int,
    connect_timeout: float | None = None,
) -> Broker:
    """A broker from its URL (default: `QUEUEING_BROKER`, else "memory://"), or `broker`
    itself if it is one already."""
    if broker is None:
        broker = os.environ.get("QUEUEING_BROKER") or "memory://"
    if isinstance(broker, Broker):
        return broker
    if not isinstance(broker, str):
        raise InvalidQueue(f"broker must be a URL string or a Broker, got {broker!r}")
    scheme = broker.split(":", 1)[0] if ":" in broker else ""
    if scheme == "memory":
        if broker != "memory://":
            # A typo ("memory:/"), or a host and options that would be ignored silently.
            raise InvalidQueue(
                f"the memory broker's URL is exactly 'memory://', got {broker!r}: it lives "
                "in this process and takes no host, path or options (its limits are "
                "open_system(max_results=..., max_dead_letters=...))"
            )
        return MemoryBroker(max_results=max_results, max_dead_letters=max_dead_letters)
    if scheme == SQLITE_SCHEME:
        from .brokers.sqlite import SqliteBroker

        return SqliteBroker(broker, max_dead_letters=max_dead_letters)
    if scheme in REDIS_SCHEMES:
        from .brokers.redis import RedisBroker

        if connect_timeout is None:
            return RedisBroker(broker, max_dead_letters=max_dead_letters)
        return RedisBroker(
            broker, max_dead_letters=max_dead_letters, connect_timeout=connect_timeout
        )
    if scheme in AMQP_SCHEMES:
        from .brokers.amqp._broker import RabbitMQBroker

        if connect_timeout is None:
            return RabbitMQBroker(broker, max_dead_letters=max_dead_letters)
        return RabbitMQBroker(
            broker, max_dead_letters=max_dead_letters, connect_timeout=connect_timeout
        )
    raise InvalidQueue(
        f"unsupported broker URL {broker!r} (scheme {scheme!r}); use 'memory://', "
        "'sqlite:///path/to/file.db', 'redis://host:port/db', 'rediss://...' (TLS), "
        "'redis+cluster://host:port,host:port', 'redis+sentinel://host:26379/service' or "
        "'amqp://user:password@host:5672/vhost?results=redis://host:6379/0' (RabbitMQ)"
    )


def is_shared_url(url: str) -> bool:
    """Whether the URL names a broker that other processes can reach."""
    scheme = url.split(":", 1)[0]
    return scheme in REDIS_SCHEMES or scheme in AMQP_SCHEMES or scheme == SQLITE_SCHEME

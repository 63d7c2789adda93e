"""Connection parameters, from an `amqp://` or `amqps://` URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
# RabbitMQ's own defaults: a frame of 128 KiB, and a heartbeat every 60 s.
DEFAULT_FRAME_MAX = 131_072
DEFAULT_HEARTBEAT = 60
# The largest channel number AMQP 0-9-1 can carry (a short), and RabbitMQ's default limit.
MAX_CHANNELS = 65_535
DEFAULT_CHANNEL_MAX = 2_047
# The spec's smallest frame_max: every peer accepts frames up to this size before Tune.
FRAME_MIN_SIZE = 4_096
DEFAULT_CONNECT_TIMEOUT = 30.0

_INT_OPTIONS = ("heartbeat", "frame_max", "channel_max")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _frame_max(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < FRAME_MIN_SIZE:
        raise ValueError(
            f"frame_max must be at least {FRAME_MIN_SIZE} bytes (AMQP's minimum), got {value}"
        )


def _channel_max(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_CHANNELS:
        raise ValueError(f"channel_max must be between 1 and {MAX_CHANNELS}, got {value}")


def _heartbeat(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_CHANNELS:
        raise ValueError(f"heartbeat must be 0 (off) to {MAX_CHANNELS} seconds, got {value}")


@attrs.frozen(kw_only=True)
class ConnectionParameters:
    """Where and how to connect; `from_url` reads them from an `amqp://` URL.

    Args:
        host: the broker's host name or address.
        port: 5672 (amqp) or 5671 (amqps) unless given.
        user: the user name (PLAIN authentication).
        password: its password.
        vhost: the virtual host ("/" unless the URL's path names another).
        tls: connect with TLS (`amqps://`).
        heartbeat: seconds between heartbeats this client asks for; the broker's proposal
            wins if it is smaller; 0 turns heartbeats off.
        frame_max: the largest frame this client asks for, in bytes (the smaller of the
            two peers' values is used).
        channel_max: the most channels this client asks for.
        connect_timeout: seconds for the TCP (and TLS) connect, and again for the AMQP
            handshake.
        connection_name: shown by the broker's management tools (`connection_name`).
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    user: str = "guest"
    password: str = attrs.field(default="guest", repr=False)
    vhost: str = "/"
    tls: bool = False
    heartbeat: int = attrs.field(default=DEFAULT_HEARTBEAT, validator=_heartbeat)
    frame_max: int = attrs.field(default=DEFAULT_FRAME_MAX, validator=_frame_max)
    channel_max: int = attrs.field(default=DEFAULT_CHANNEL_MAX, validator=_channel_max)
    connect_timeout: float = attrs.field(default=DEFAULT_CONNECT_TIMEOUT, validator=_positive)
    connection_name: str | None = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ConnectionParameters:
        """Read `amqp[s]://user:password@host:port/vhost?heartbeat=30&frame_max=...`.

        The vhost is the URL's path without its leading slash, percent-decoded
        (`/%2F` and an empty path both mean "/"). Query options: `heartbeat`,
        `frame_max`, `channel_max`, `connect_timeout`, `connection_name`. Keyword
        arguments override what the URL says.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL (amqp:// or amqps://): {url!r}")
        tls = parts.scheme == "amqps"
        values: dict[str, Any] = {"tls": tls}
        if parts.hostname:
            values["host"] = unquote(parts.hostname)
        values["port"] = parts.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
        if parts.username is not None:
            values["user"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
        vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        values["vhost"] = vhost or "/"
        for key, value in parse_qsl(parts.query):
            if key in _INT_OPTIONS:
                values[key] = int(value)
            elif key == "connect_timeout":
                values[key] = float(value)
            elif key == "connection_name":
                values[key] = value
            else:
                known = ", ".join((*_INT_OPTIONS, "connect_timeout", "connection_name"))
                raise ValueError(f"unknown option {key!r} in the AMQP URL; known: {known}")
        values.update(overrides)
        return cls(**values)

    @property
    def url(self) -> str:
        """The URL without the password (for messages and logs)."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = "%2F" if self.vhost == "/" else self.vhost
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{vhost}"

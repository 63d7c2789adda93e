"""The RabbitMQ broker's URL: the AMQP part, the results store, and our own options.

`amqp://user:password@host:5672/vhost?results=redis://host:6379/0&prefix=app` (or
`amqps://`): the AMQP options of the protocol layer (`heartbeat`, `frame_max`,
`channel_max`, `connect_timeout`, `connection_name`) stay in the AMQP URL; `results`,
`prefix` and `lease` are ours. `results` is the URL of the store of task records and
outcomes (percent-encode it if it has a query of its own).
"""

from __future__ import annotations

import difflib
import math
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs

from ..._exceptions import BrokerError
from .._contract import check_lease, query_options
from ._params import ConnectionParameters

#: The schemes of the broker, and of the results stores it can use.
SCHEMES = ("amqp", "amqps")
RESULTS_SCHEMES = ("redis", "rediss", "unix")
#: Our own query options (the others are the AMQP layer's).
OPTIONS = ("results", "prefix", "lease")
#: The options of the AMQP connection (`ConnectionParameters.from_url`).
AMQP_OPTIONS = ("heartbeat", "frame_max", "channel_max", "connect_timeout", "connection_name")
#: A prefix names RabbitMQ queues (`prefix.queue`) and Redis keys (`{prefix:queue}:...`).
PREFIX_FORBIDDEN = "{}: ./#*"


@attrs.frozen
class BrokerURL:
    """A parsed broker URL."""

    amqp: ConnectionParameters
    results: str
    prefix: str
    lease: float


def safe(url: str) -> str:
    """The URL without its password (for messages)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def parse(url: str, *, prefix: str, lease: float) -> BrokerURL:
    """Check the URL and split it; `prefix` and `lease` are the defaults the URL's options
    override.

    Raises:
        BrokerError: what is wrong with the URL, and how to write it.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BrokerError(f"bad AMQP URL {safe(url)!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise BrokerError(
            f"bad AMQP URL {safe(url)!r}: the scheme must be amqp:// or amqps://, "
            f"got {parts.scheme!r}"
        )
    ours: dict[str, str] = {}
    theirs = []
    for key, value in query_options(parts.query, f"bad AMQP URL {safe(url)!r}"):
        if key in OPTIONS:
            ours[key] = value
        else:
            theirs.append((key, value))
    for key, _ in theirs:
        if key not in AMQP_OPTIONS:  # a typo of ours ("result=") among theirs
            known = (*OPTIONS, *AMQP_OPTIONS)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BrokerError(
                f"bad AMQP URL {safe(url)!r}: unknown option {key!r}{hint} (the RabbitMQ "
                f"broker's URL takes {', '.join(known)})"
            )
    amqp_url = urlunsplit(parts._replace(query=urlencode(theirs)))
    try:
        params = ConnectionParameters.from_url(amqp_url)
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"bad AMQP URL {safe(url)!r}: {exc}") from None
    results = ours.get("results", "")
    if not results:
        raise BrokerError(
            f"the RabbitMQ broker {safe(url)!r} needs a results store for task records and "
            "outcomes (RabbitMQ keeps messages, not records to look up): add "
            "?results=redis://host:6379/0 to the URL"
        )
    scheme = results.split("://", 1)[0] if "://" in results else ""
    if scheme not in RESULTS_SCHEMES:
        raise BrokerError(
            f"bad results store {safe(results)!r} in the AMQP URL: use redis://host:port/db, "
            "rediss://... (TLS) or unix:///path/to/redis.sock"
        )
    prefix = ours.get("prefix", prefix)
    if not prefix or any(c in prefix for c in PREFIX_FORBIDDEN):
        raise BrokerError(
            f"prefix must be non-empty, without any of {PREFIX_FORBIDDEN!r}: {prefix!r}"
        )
    lease = check_lease(seconds("lease", ours.get("lease", lease)))
    return BrokerURL(params, results, prefix, lease)


def seconds(name: str, value: str | float) -> float:
    """A number of seconds > 0 from an argument or a URL option, or `BrokerError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BrokerError(f"{name} must be a number of seconds > 0, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise BrokerError(f"{name} must be a number of seconds > 0, got {value!r}")
    return number

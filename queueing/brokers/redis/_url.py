"""The Redis URL: schemes we take, our own query options, and checks that say what is wrong."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..._exceptions import BrokerError

#: URL schemes we take, and our own query options.
SCHEMES = ("redis", "rediss", "unix")
OPTIONS = ("prefix", "lease")


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Check the URL and take our own options (`prefix`, `lease`) out of its query."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BrokerError(f"bad Redis URL {safe_url(url)!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise BrokerError(
            f"bad Redis URL {safe_url(url)!r}: the scheme must be one of "
            f"{', '.join(s + '://' for s in SCHEMES)}, got {parts.scheme!r}"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise BrokerError(
                f"bad Redis URL {safe_url(url)!r}: a unix:// URL needs the socket's path "
                "(unix:///run/redis.sock)"
            )
    elif not parts.hostname:
        raise BrokerError(
            f"bad Redis URL {safe_url(url)!r}: no host (write {parts.scheme}://host:port/db)"
        )
    if port is not None and not 0 < port < 65536:
        raise BrokerError(f"bad Redis URL {safe_url(url)!r}: port {port} is out of range")
    ours: dict[str, str] = {}
    theirs = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in OPTIONS:
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def safe_url(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def finite_positive(name: str, value: str | float) -> float:
    """A number of seconds from an argument or a URL option, or `BrokerError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BrokerError(f"{name} must be a number of seconds > 0, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise BrokerError(f"{name} must be a number of seconds > 0, got {value!r}")
    return number

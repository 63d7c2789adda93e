"""The Redis URL: schemes we take, our own query options, and checks that say what is wrong."""

from __future__ import annotations

import math
from urllib.parse import unquote, urlencode, urlsplit

import attrs

from ..._exceptions import BrokerError
from .._contract import query_options

#: URL schemes we take, and our own query options.
SCHEMES = ("redis", "rediss", "unix")
#: Redis Cluster: seed nodes `host:port[,host:port...]`, the rest discovered.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: Redis Sentinel: sentinels `host:port[,host:port...]`, then `/service-name`.
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
ALL_SCHEMES = SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES
OPTIONS = ("prefix", "lease")
#: coredis's own options a redis://, rediss:// or unix:// URL may carry: passed on to
#: `coredis.Redis.from_url` (which ignores any other name, so a typo would go unsaid).
#: `noreply` is left out: the broker reads every reply.
COREDIS_OPTIONS = (
    "client_name",
    "connect_timeout",
    "db",
    "max_connections",
    "max_idle_time",
    "noevict",
    "notouch",
    "stream_timeout",
    "timeout",
)
#: coredis's TLS options: a rediss:// URL only (coredis ignores them on redis://).
TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_cert_reqs",
    "ssl_certfile",
    "ssl_check_hostname",
    "ssl_keyfile",
)
#: The port of a cluster node or a sentinel the URL names without one.
CLUSTER_PORT = 6379
SENTINEL_PORT = 26379


@attrs.frozen
class Servers:
    """What a `redis+cluster://` or `redis+sentinel://` URL names."""

    #: "cluster" or "sentinel".
    kind: str
    #: Seed nodes (cluster) or sentinels, as (host, port).
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool
    #: The service (master) name of a sentinel URL; "" for a cluster.
    service: str = ""


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Check the URL and take our own options (`prefix`, `lease`) out of its query."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in CLUSTER_SCHEMES or scheme in SENTINEL_SCHEMES:
        parts = urlsplit(url)
        servers_of(url)  # checks it
        return _split_options(url, parts.query, scheme)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BrokerError(f"bad Redis URL {safe_url(url)!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise BrokerError(
            f"bad Redis URL {safe_url(url)!r}: the scheme must be one of "
            f"{', '.join(s + '://' for s in ALL_SCHEMES)}, got {parts.scheme!r}"
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
    elif not parts.path.strip("/").isdigit() and parts.path.strip("/"):
        # The client would take database 0 for it, unsaid: another application's keys.
        raise BrokerError(
            f"bad Redis URL {safe_url(url)!r}: the database must be a number "
            f"({parts.scheme}://host:port/0), got {parts.path.strip('/')!r}"
        )
    if port is not None and not 0 < port < 65536:
        raise BrokerError(f"bad Redis URL {safe_url(url)!r}: port {port} is out of range")
    return _split_options(url, parts.query, parts.scheme)


def _split_options(url: str, query: str, scheme: str) -> tuple[str, dict[str, str]]:
    """Our options, and the URL with coredis's; `BrokerError` for any other option."""
    # A cluster's or a sentinel's client is built from the URL's parts, not by coredis
    # from the URL: only our options apply.
    plain = scheme in SCHEMES
    known = OPTIONS + (COREDIS_OPTIONS + TLS_OPTIONS if scheme == "rediss" else COREDIS_OPTIONS)
    ours: dict[str, str] = {}
    theirs = []
    for key, value in query_options(query, f"bad Redis URL {safe_url(url)!r}"):
        if key in OPTIONS:
            ours[key] = value
        elif plain and key in known:
            theirs.append((key, _checked_option(url, key, value)))
        elif plain and key in TLS_OPTIONS:
            raise BrokerError(
                f"bad Redis URL {safe_url(url)!r}: {key!r} is a TLS option, for a rediss:// "
                f"URL (this one is {scheme}://); options here: {', '.join(known)}"
            )
        else:
            shown = ", ".join(known if plain else OPTIONS)
            raise BrokerError(
                f"bad Redis URL {safe_url(url)!r}: unknown option {key!r}; a {scheme}:// URL "
                f"takes {shown}"
            )
    base = url.split("?", 1)[0]
    return (f"{base}?{urlencode(theirs)}" if theirs else base), ours


#: The values `ssl_cert_reqs` takes: how a rediss:// client checks the server's certificate.
CERT_REQS = ("none", "optional", "required")
#: The values a yes/no option (`ssl_check_hostname`) takes, and what they mean; both
#: clients (coredis and the lean one) read these the same way.
BOOLEANS = {
    **dict.fromkeys(("1", "true", "yes"), "true"),
    **dict.fromkeys(("0", "false", "no"), "false"),
}


def _checked_option(url: str, key: str, value: str) -> str:
    """A TLS option's value, checked and spelt the one way both clients read it."""
    if key == "ssl_cert_reqs":
        if value.lower() not in CERT_REQS:
            raise BrokerError(
                f"bad Redis URL {safe_url(url)!r}: ssl_cert_reqs must be one of "
                f"{', '.join(CERT_REQS)}, got {value!r}"
            )
        return value.lower()
    if key == "ssl_check_hostname":
        if value.lower() not in BOOLEANS:
            raise BrokerError(
                f"bad Redis URL {safe_url(url)!r}: ssl_check_hostname must be true or false "
                f"(or 1/0, yes/no), got {value!r}"
            )
        return BOOLEANS[value.lower()]
    return value


def servers_of(url: str) -> Servers | None:
    """The nodes of a `redis+cluster://` URL or the sentinels and service of a
    `redis+sentinel://` URL; None for a plain Redis URL. `BrokerError` says what is wrong."""
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        kind, default_port = "cluster", CLUSTER_PORT
    elif scheme in SENTINEL_SCHEMES:
        kind, default_port = "sentinel", SENTINEL_PORT
    else:
        return None
    bad = f"bad Redis URL {safe_url(url)!r}"
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, has_password, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes = []
    for item in netloc.split(","):
        host, has_port, port_text = item.strip().rpartition(":")
        if not has_port:
            host, port_text = port_text, str(default_port)
        host = host.strip("[]")
        if not host:
            raise BrokerError(f"{bad}: no host in {item!r} (write {scheme}://host:port,host:port)")
        try:
            port = int(port_text)
        except ValueError:
            raise BrokerError(f"{bad}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise BrokerError(f"{bad}: port {port} is out of range")
        nodes.append((host, port))
    service = unquote(path.strip("/"))
    if kind == "sentinel" and (not service or "/" in service):
        raise BrokerError(
            f"{bad}: a sentinel URL names the service after the sentinels: "
            f"{scheme}://host:26379,host:26380/mymaster"
        )
    if kind == "cluster" and path.strip("/") not in ("", "0"):
        raise BrokerError(
            f"{bad}: Redis Cluster has only database 0; leave the path out "
            f"({scheme}://host:port,host:port)"
        )
    return Servers(kind, tuple(nodes), username, password, scheme.startswith("rediss"), service)


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
    if number > MAX_SECONDS:
        # Redis takes times as integer milliseconds (a lease's expiry, say).
        raise BrokerError(
            f"{name} must be at most {MAX_SECONDS:.0f} seconds (ten years), got {value!r}"
        )
    return number


#: The longest `lease` (or other time) a Redis broker takes: ten years, as `MAX_DELAY`.
MAX_SECONDS = 10 * 365 * 86_400.0

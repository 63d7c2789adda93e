"""The coredis client a URL names: one Redis, a Redis Cluster, or a master behind Sentinel.

Everything else in the broker is the same for all three: each script call and each
multi-key command touches one hash tag (one Cluster slot), so the cluster client routes it
to the node that owns that slot and follows its MOVED and ASK redirections.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..._exceptions import BrokerError
from ._url import Servers, safe_url, servers_of

#: Connections the cluster client may open to each node.
CLUSTER_CONNECTIONS = 64


def kind_of(url: str) -> str:
    """ "redis", "cluster" or "sentinel"."""
    servers = servers_of(url)
    return "redis" if servers is None else servers.kind


@asynccontextmanager
async def open_client(url: str, *, connect_timeout: float) -> AsyncIterator[Any]:
    """The client of `url` (decoding responses), open for the block."""
    import coredis

    servers = servers_of(url)
    if servers is None:
        try:
            client: Any = coredis.Redis.from_url(
                url, decode_responses=True, connect_timeout=connect_timeout
            )
        except Exception as exc:
            raise BrokerError(f"bad Redis URL {safe_url(url)!r}: {exc}") from exc
        async with client:
            yield client
    elif servers.kind == "cluster":
        async with _cluster(servers, connect_timeout) as client:
            yield client
    else:
        async with _sentinel(servers, connect_timeout) as client:
            yield client


def _auth(servers: Servers) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if servers.username is not None:
        options["username"] = servers.username
    if servers.password is not None:
        options["password"] = servers.password
    return options


@asynccontextmanager
async def _cluster(servers: Servers, connect_timeout: float) -> AsyncIterator[Any]:
    import coredis
    from coredis.connection import TCPLocation

    client: Any = coredis.RedisCluster(
        startup_nodes=[TCPLocation(host, port) for host, port in servers.nodes],
        decode_responses=True,
        connect_timeout=connect_timeout,
        ssl=servers.tls,
        # Blocking reads (one per queue and process) each hold a connection to a node.
        max_connections=CLUSTER_CONNECTIONS,
        max_connections_per_node=True,
        **_auth(servers),
    )
    async with contextlib.AsyncExitStack() as stack:
        # The cluster client discovers the nodes as it opens: errors here are errors of
        # the URL or of the network.
        nodes = ", ".join(f"{host}:{port}" for host, port in servers.nodes)
        # (Each node's connection has `connect_timeout`; a deadline around this would
        # interleave with the client's own task group.)
        try:
            await stack.enter_async_context(client)
        except Exception as exc:
            raise BrokerError(
                f"cannot use the Redis Cluster at {nodes}: {type(exc).__name__}: {exc} "
                "(check the seed nodes, the password or ACL user, and rediss+cluster:// for "
                "TLS)"
            ) from exc
        yield client


@asynccontextmanager
async def _sentinel(servers: Servers, connect_timeout: float) -> AsyncIterator[Any]:
    import coredis
    from coredis.connection import TCPLocation

    # The sentinels take the same credentials as the master (one ACL for the set-up).
    tls: dict[str, Any] = {}
    if servers.tls:
        import ssl

        tls["ssl_context"] = ssl.create_default_context()
    sentinel: Any = coredis.Sentinel(
        [TCPLocation(host, port) for host, port in servers.nodes],
        sentinel_kwargs={"connect_timeout": connect_timeout, **_auth(servers), **tls},
        decode_responses=True,
        connect_timeout=connect_timeout,
        **_auth(servers),
        **tls,
    )
    async with sentinel:
        primary = sentinel.primary_for(servers.service)
        async with primary:
            yield primary

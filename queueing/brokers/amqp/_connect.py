"""Opening connections: `connect()` from a URL, `connect_stream()` over any byte stream."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs

from ._connection import Connection
from ._frames import FrameReader
from ._handshake import handshake
from ._params import ConnectionParameters


async def _open_stream(
    params: ConnectionParameters, ssl_context: ssl.SSLContext | None
) -> anyio.abc.ByteStream:
    if params.tls:
        context = ssl_context or ssl.create_default_context()
        return await anyio.connect_tcp(
            params.host,
            params.port,
            ssl_context=context,
            tls_hostname=params.host,
            tls_standard_compatible=False,
        )
    return await anyio.connect_tcp(params.host, params.port)


@asynccontextmanager
async def connect(
    url: str | ConnectionParameters,
    *,
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> AsyncIterator[Connection]:
    """Open a connection (`amqp://user:password@host:5672/vhost`, or `amqps://` for TLS).

    Args:
        url: the broker's URL, or `ConnectionParameters`.
        ssl_context: for `amqps://`: the context to verify the broker with (default:
            the system's trusted CAs, checking the host name).
        options: override `ConnectionParameters` fields (heartbeat=, frame_max=, ...).

    Raises:
        AuthenticationFailed: wrong user name or password.
        VirtualHostNotAllowed: no such vhost, or the user may not use it.
        TimeoutError: no handshake within `connect_timeout`.
        OSError: the broker is not reachable.
    """
    params = url if isinstance(url, ConnectionParameters) else ConnectionParameters.from_url(url)
    if options:
        params = attrs.evolve(params, **options)
    try:
        with anyio.fail_after(params.connect_timeout):
            stream = await _open_stream(params, ssl_context)
    except TimeoutError:
        raise TimeoutError(
            f"no TCP{'/TLS' if params.tls else ''} connection to {params.url} within "
            f"{params.connect_timeout:g}s (connect_timeout)"
        ) from None
    async with connect_stream(stream, params) as connection:
        yield connection


@asynccontextmanager
async def connect_stream(
    stream: anyio.abc.ByteStream, params: ConnectionParameters
) -> AsyncIterator[Connection]:
    """Open a connection over a stream you connected yourself (a Unix socket, a proxy,
    a test double). The stream is closed on exit."""
    reader = FrameReader(stream, params.frame_max)
    try:
        try:
            with anyio.fail_after(params.connect_timeout):
                tuned = await handshake(stream, reader, params)
        except TimeoutError:
            raise TimeoutError(
                f"no AMQP handshake with {params.url} within {params.connect_timeout:g}s "
                "(connect_timeout)"
            ) from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(stream)
        raise
    connection = Connection(stream, reader, params, tuned)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(connection._run)
            try:
                yield connection
            finally:
                await connection.close()
    except BaseExceptionGroup as group:
        # The background tasks never raise (they record errors instead), so a group
        # here holds the caller's own exception: give it back as it was raised.
        if len(group.exceptions) != 1:
            raise
        own = group.exceptions[0]
    else:
        return
    raise own  # outside the except clause, so its __context__ stays its own

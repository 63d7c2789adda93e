"""Opening a connection: protocol header, Start/StartOk (PLAIN), Tune/TuneOk, Open/OpenOk."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import anyio
import anyio.abc
import attrs
from pamqp import commands
from pamqp.heartbeat import Heartbeat

from ._errors import (
    ACCESS_REFUSED,
    NOT_ALLOWED,
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionLost,
    ProtocolError,
    VirtualHostNotAllowed,
    reply_name,
)
from ._frames import PROTOCOL_HEADER, Frame, FrameReader, method_bytes
from ._params import MAX_CHANNELS, ConnectionParameters

# What this client can do, announced in Connection.StartOk. authentication_failure_close
# makes RabbitMQ say ACCESS_REFUSED on a bad password instead of just dropping the socket.
CAPABILITIES = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "basic.nack": True,
    "authentication_failure_close": True,
    "exchange_exchange_bindings": True,
    "per_consumer_qos": True,
}


@attrs.frozen
class Tuned:
    """What the handshake settled: the negotiated limits and the broker's properties."""

    channel_max: int
    frame_max: int
    heartbeat: int
    server_properties: dict[str, Any]


def _version() -> str:
    try:
        return metadata.version("trio-queueing")
    except metadata.PackageNotFoundError:
        return "unknown"


def client_properties(params: ConnectionParameters) -> dict[str, Any]:
    """Connection.StartOk's client_properties table."""
    props: dict[str, Any] = {
        "product": "queueing",
        "version": _version(),
        "platform": f"{platform.python_implementation()} {platform.python_version()}",
        "information": "queueing's AMQP 0-9-1 layer (anyio, pamqp)",
        "capabilities": dict(CAPABILITIES),
    }
    if params.connection_name is not None:
        props["connection_name"] = params.connection_name
    return props


def negotiate(ours: int, theirs: int, *, zero_means_unlimited: bool) -> int:
    """The smaller of two limits, where 0 from a peer means it sets none."""
    if zero_means_unlimited:
        if theirs == 0:
            return ours
        if ours == 0:
            return theirs
    return min(ours, theirs)


def negotiate_heartbeat(ours: int, theirs: int) -> int:
    """0 from this client turns heartbeats off; otherwise the smaller nonzero value."""
    if ours == 0:
        return 0
    return ours if theirs == 0 else min(ours, theirs)


async def _next_method(reader: FrameReader, waiting_for: str) -> Frame:
    while True:
        channel, frame = await reader.next_frame()
        if isinstance(frame, Heartbeat):
            continue
        if channel != 0:
            raise ProtocolError(
                f"the broker sent {frame.name} on channel {channel} while this client "
                f"waited for {waiting_for}"
            )
        return frame


def _refused(frame: commands.Connection.Close, params: ConnectionParameters) -> ConnectionClosed:
    code, text = frame.reply_code, frame.reply_text
    where = f"user {params.user!r} on vhost {params.vhost!r} at {params.host}:{params.port}"
    if code == ACCESS_REFUSED:
        return AuthenticationFailed(
            f"the broker refused the credentials of {where}: {text}; check the user name "
            "and password in the URL",
            user=params.user,
            vhost=params.vhost,
            reply_code=code,
            reply_text=text,
        )
    if code == NOT_ALLOWED:
        return VirtualHostNotAllowed(
            f"the broker refused {where}: {text}; create the vhost or grant the user "
            f"access (rabbitmqctl set_permissions -p {params.vhost!r} {params.user!r} ...)",
            user=params.user,
            vhost=params.vhost,
            reply_code=code,
            reply_text=text,
        )
    return ConnectionClosed(
        f"the broker closed the connection for {where} during the handshake: "
        f"{reply_name(code)} {code}: {text}",
        reply_code=code,
        reply_text=text,
    )


async def handshake(
    stream: anyio.abc.ByteStream, reader: FrameReader, params: ConnectionParameters
) -> Tuned:
    """Run the opening handshake on a fresh stream; raise a clear error if refused."""
    try:
        await stream.send(PROTOCOL_HEADER)
        start = await _next_method(reader, "Connection.Start")
    except anyio.EndOfStream:
        raise ConnectionLost(
            f"{params.host}:{params.port} closed the connection before Connection.Start; "
            "is it an AMQP 0-9-1 broker (and does it expect TLS, amqps://)?"
        ) from None
    except anyio.BrokenResourceError as exc:
        # A proxy or load balancer whose broker is down accepts, then resets: not there yet.
        raise ConnectionLost(
            f"{params.host}:{params.port} reset the connection before Connection.Start "
            f"({exc.__cause__ or exc!r})"
        ) from exc
    if not isinstance(start, commands.Connection.Start):
        raise ProtocolError(f"expected Connection.Start, the broker sent {start.name}")
    mechanisms = str(start.mechanisms).split()
    if "PLAIN" not in mechanisms:
        raise ProtocolError(
            f"the broker offers the SASL mechanisms {mechanisms}, not PLAIN, the one this "
            "client supports"
        )
    credentials = f"\0{params.user}\0{params.password}"
    start_ok = commands.Connection.StartOk(
        client_properties=client_properties(params), mechanism="PLAIN", response=credentials
    )
    await stream.send(method_bytes(0, start_ok))
    try:
        tune = await _next_method(reader, "Connection.Tune")
    except anyio.EndOfStream:
        # A broker that does not announce authentication_failure_close drops the socket.
        raise AuthenticationFailed(
            f"the broker closed the connection after authentication of user "
            f"{params.user!r} on vhost {params.vhost!r}: probably a wrong user name or "
            "password",
            user=params.user,
            vhost=params.vhost,
        ) from None
    if isinstance(tune, commands.Connection.Close):
        raise _refused(tune, params)
    if not isinstance(tune, commands.Connection.Tune):
        raise ProtocolError(f"expected Connection.Tune, the broker sent {tune.name}")
    channel_max = negotiate(params.channel_max, tune.channel_max, zero_means_unlimited=True)
    tuned = Tuned(
        channel_max=min(channel_max, MAX_CHANNELS),
        frame_max=negotiate(params.frame_max, tune.frame_max, zero_means_unlimited=True),
        heartbeat=negotiate_heartbeat(params.heartbeat, tune.heartbeat),
        server_properties=dict(start.server_properties),
    )
    tune_ok = commands.Connection.TuneOk(
        channel_max=tuned.channel_max, frame_max=tuned.frame_max, heartbeat=tuned.heartbeat
    )
    opening = method_bytes(0, tune_ok) + method_bytes(
        0, commands.Connection.Open(virtual_host=params.vhost)
    )
    await stream.send(opening)
    reader.frame_max = tuned.frame_max
    try:
        open_ok = await _next_method(reader, "Connection.OpenOk")
    except anyio.EndOfStream:
        raise ConnectionLost(
            f"the broker closed the connection while opening vhost {params.vhost!r}"
        ) from None
    if isinstance(open_ok, commands.Connection.Close):
        raise _refused(open_ok, params)
    if not isinstance(open_ok, commands.Connection.OpenOk):
        raise ProtocolError(f"expected Connection.OpenOk, the broker sent {open_ok.name}")
    return tuned

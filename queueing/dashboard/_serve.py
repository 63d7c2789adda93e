"""Serve the web dashboard of a running system, on hypercorn's trio worker."""

from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from .._exceptions import QueueingError
from ._sampler import EVERY, WINDOW, Sampler

if TYPE_CHECKING:
    from .._system import QueueSystem

log = logging.getLogger("queueing.dashboard")

#: The fewest characters of a token given to a dashboard (a generated one has more).
MIN_TOKEN = 16
#: Seconds open requests get to finish when the dashboard stops.
GRACEFUL = 1.0


class DashboardError(QueueingError, ValueError):
    """The dashboard cannot be served as asked (a bind beyond loopback without a token,
    a token too short)."""


@attrs.frozen
class Dashboard:
    """A dashboard being served: where, and the token its actions need."""

    url: str
    """Its address, `http://127.0.0.1:8000`."""
    token: str
    """What an action (requeue, purge) needs: `Authorization: Bearer TOKEN`."""

    @property
    def link(self) -> str:
        """The page's address with the token (the page reads it from the fragment, which
        a browser never sends to the server)."""
        return f"{self.url}/#token={self.token}"


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind beyond loopback without a token, and a token too short.

    Raises:
        DashboardError: with what to change.
    """
    if token is not None and len(token) < MIN_TOKEN:
        raise DashboardError(
            f"the dashboard's token has {len(token)} characters; give one of at least "
            f"{MIN_TOKEN} (`python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    if token is None and not is_loopback(host):
        raise DashboardError(
            f"refusing to serve the dashboard on {host!r} without a token: beyond loopback, "
            "anyone who reaches the port could read task payloads and requeue or purge dead "
            "letters. Pass a token (`--token`, or QUEUEING_DASHBOARD_TOKEN; "
            "`serve_dashboard(token=...)`), or bind to 127.0.0.1"
        )


async def serve_dashboard(
    system: QueueSystem,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    every: float = EVERY,
    window: float = WINDOW,
    task_status: trio.TaskStatus[Dashboard] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the web dashboard of `system` until cancelled (`await nursery.start(...)`
    returns a `Dashboard` once it listens).

    Args:
        system: the running system to show (in process, serving queues over a shared
            broker, or a `connect()` client).
        host: the address to bind; beyond loopback a `token` is required.
        port: the port (0: any free one; `Dashboard.url` says which).
        token: what actions (requeue, purge) need, and beyond loopback every read too;
            default: a random one (on loopback only), in `Dashboard.token`.
        every: seconds between two readings of the figures.
        window: seconds the rates and latency percentiles cover.

    Raises:
        DashboardError: a bind beyond loopback without a token, or a token too short.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from ._app import dashboard_app

    check_bind(host, token)
    loopback = is_loopback(host)
    token = token or secrets.token_urlsafe()
    sampler = Sampler(system, every=every, window=window)
    app = dashboard_app(system, sampler, token=token, loopback=loopback)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # the application's logging decides
    config.graceful_timeout = GRACEFUL
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        binds = await nursery.start(serve, app, config)
        url = binds[0] if binds else f"http://{host}:{port}"
        dashboard = Dashboard(url, token)
        log.info("dashboard on %s", url)
        task_status.started(dashboard)

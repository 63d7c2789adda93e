"""What `queueing top`, `queueing dashboard` and `queueing worker --dashboard-port` run
(cli.py declares their options)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import click
import trio

from ._exceptions import QueueingError
from ._open import connect_trio as connect
from ._system import QueueSystem
from .dashboard._sampler import Sampler
from .dashboard._views import Snapshot

#: What a command says when it is pointed at memory://, which lives inside one process.
MEMORY_HINT = (
    "memory:// lives inside the process that runs the system: serve its dashboard from "
    "there (`queueing worker MODULE --broker memory:// --dashboard-port 8000`, or "
    "`queueing.dashboard.serve_dashboard(system)` in your program), then point "
    "`queueing top --url http://127.0.0.1:8000` or a browser at it"
)

HOST = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The dashboard's address; beyond loopback it needs --token.",
)
TOKEN = click.option(
    "--token",
    envvar="QUEUEING_DASHBOARD_TOKEN",
    default=None,
    help="What the dashboard's actions (requeue, purge) need (or set "
    "QUEUEING_DASHBOARD_TOKEN); beyond loopback every read needs it too. Default: a random "
    "one, printed with the dashboard's link (loopback only).",
)


class Seconds(click.FloatRange):
    """A number of seconds within a range, NaN refused (every comparison lets it through
    `click.FloatRange`, and `trio` then fails with a traceback)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


EVERY = click.option(
    "--every",
    type=Seconds(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between two readings of the figures.",
)
WINDOW = click.option(
    "--window",
    type=Seconds(min=1.0),
    default=10.0,
    show_default=True,
    help="Seconds the rates and latency percentiles cover.",
)
#: How often `queueing worker --dashboard-port` reads its figures, and the window.
SAMPLE_EVERY = 1.0
SAMPLE_WINDOW = 10.0


def _shared(url: str) -> str:
    if url.startswith("memory:"):
        raise click.UsageError(MEMORY_HINT)
    return url


def top(
    broker: str, url: str | None, token: str | None, every: float, window: float, once: bool
) -> Snapshot | None:
    """Run `queueing top` (a snapshot back with `once`)."""
    from ._top import HttpSnapshots, run_top

    async def go() -> Snapshot | None:
        if url is not None:
            fetch = HttpSnapshots(url, token)
            return await _watch(fetch, every, once)
        async with connect(_shared(broker)) as system:
            sampler = Sampler(system, every=every, window=window)
            return await _watch(sampler.sample, every, once)

    async def _watch(
        snapshots: Callable[[], Awaitable[Snapshot]], every: float, once: bool
    ) -> Snapshot | None:
        if once:
            await snapshots()  # a first reading: rates need two
            await trio.sleep(every)
            return await snapshots()
        await run_top(snapshots, every)
        return None

    try:
        return trio.run(go)
    except KeyboardInterrupt:
        return None
    except QueueingError as exc:
        raise click.ClickException(str(exc)) from exc


async def serve_forever(
    system: QueueSystem,
    *,
    host: str,
    port: int,
    token: str | None,
    every: float,
    window: float,
) -> None:
    """Serve `system`'s dashboard until cancelled, saying where on stderr."""
    from .dashboard._serve import serve_dashboard

    async with trio.open_nursery() as nursery:
        dashboard = await nursery.start(
            partial(
                serve_dashboard,
                system,
                host=host,
                port=port,
                token=token,
                every=every,
                window=window,
            )
        )
        where = dashboard.url if token else dashboard.link
        click.echo(f"queueing dashboard: {where}", err=True)


def _check_bind(host: str, token: str | None) -> None:
    from .dashboard._serve import check_bind

    try:
        check_bind(host, token)
    except QueueingError as exc:
        raise click.UsageError(str(exc)) from exc


def worker_main(
    host: str, port: int, token: str | None
) -> Callable[[QueueSystem], Awaitable[None]]:
    """`queueing worker --dashboard-port`: the system's `main`, serving its dashboard."""
    _check_bind(host, token)
    return partial(
        serve_forever, host=host, port=port, token=token, every=SAMPLE_EVERY, window=SAMPLE_WINDOW
    )


def dashboard(
    broker: str, host: str, port: int, token: str | None, every: float, window: float
) -> None:
    """Run `queueing dashboard`: a client of the broker, serving the page until Ctrl-C."""
    _shared(broker)
    _check_bind(host, token)

    async def go() -> None:
        async with connect(broker) as system:
            await serve_forever(
                system, host=host, port=port, token=token, every=every, window=window
            )

    try:
        trio.run(go)
    except KeyboardInterrupt:
        return
    except QueueingError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # the port is taken, say
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from exc

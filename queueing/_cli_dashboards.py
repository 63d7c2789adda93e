"""What `queueing top`, `queueing dashboard` and `queueing worker --dashboard-port` run
(cli.py declares their options)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

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


def dashboard(
    broker: str, host: str, port: int, token: str | None, every: float, window: float
) -> None:
    """Run `queueing dashboard`: a client of the broker, serving the page until Ctrl-C."""
    from .dashboard._serve import check_bind

    _shared(broker)
    try:
        check_bind(host, token)
    except QueueingError as exc:
        raise click.UsageError(str(exc)) from exc

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

"""`queueing worker --metrics-port/--otel`: what a worker process serves besides its queues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import click
import trio

from ._system import QueueSystem

Main = Callable[[QueueSystem], Awaitable[None]]


def observed(
    metrics_port: int | None, metrics_host: str, otel: bool, then: Main | None = None
) -> Main | None:
    """The worker's `main`: metrics served and traces on as asked, and `then` (the
    dashboard's) run beside them, until a signal stops it (`then` alone when nothing is
    asked here). The extras are checked before the system starts."""
    if metrics_port is None and not otel:
        return then
    if metrics_port is not None:
        try:
            from . import metrics
            from ._metrics import serve_listeners
        except ImportError as exc:
            raise click.ClickException(
                f"--metrics-port needs prometheus-client ({exc.name} is missing): "
                "pip install 'trio-queueing[metrics]'"
            ) from exc
    if otel:
        try:
            from . import tracing
        except ImportError as exc:
            raise click.ClickException(
                f"--otel needs opentelemetry-api ({exc.name} is missing): "
                "pip install 'trio-queueing[otel]'"
            ) from exc

    async def main(system: QueueSystem) -> None:
        if otel:
            tracing.instrument(system)
            click.echo("queueing worker: tracing with OpenTelemetry's global provider", err=True)
        if metrics_port is None:
            if then is None:
                await trio.sleep_forever()
            else:
                await then(system)
            return
        metrics.register(system)
        try:  # bound here, outside any nursery: the error reaches the command as it is
            listeners = await trio.open_tcp_listeners(metrics_port, host=metrics_host)
        except OSError as exc:
            raise click.ClickException(
                f"--metrics-port {metrics_port}: cannot listen on {metrics_host}: {exc}"
            ) from exc
        port = listeners[0].socket.getsockname()[1]
        host = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
        click.echo(f"queueing worker: metrics on http://{host}:{port}/metrics", err=True)
        if then is None:
            await serve_listeners(listeners)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_listeners, listeners)
            await then(system)

    return main

"""The `queueing` command line: run workers, submit tasks, inspect queues and dead letters.

Needs the `cli` extra (click, rich): `pip install 'trio-queueing[cli,redis]'` (or
`[cli,amqp]` for RabbitMQ).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import click
import trio

from ._exceptions import QueueingError
from ._open import connect, run_system
from ._queue import Pipeline, Queue
from ._system import QueueSystem

T = TypeVar("T")
_BROKER = click.option(
    "--broker",
    envvar="QUEUEING_BROKER",
    default="redis://localhost:6379/0",
    show_default=True,
    help="Broker URL (or set QUEUEING_BROKER): redis://[user:password@]host:port/db, "
    "rediss://... for TLS; `?prefix=NAME` picks the key prefix. RabbitMQ: "
    "amqp://user:password@host:5672/vhost?results=redis://host:6379/0 (amqps:// for TLS).",
)


def _load(target: str) -> list[Queue[Any] | Pipeline]:
    """Import MODULE[:ATTR]; ATTR is a Queue, a Pipeline or an iterable of them (default:
    every Queue and Pipeline the module defines)."""
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "its source"
        raise click.BadParameter(
            f"cannot import {module_name!r}: a syntax error in {where}: {exc.msg}"
        ) from exc
    except Exception as exc:  # the module raised while it was imported
        raise click.BadParameter(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc} "
            "(run `python -c 'import " + module_name + "'` for the traceback)"
        ) from exc
    if attr:
        try:
            value: Any = getattr(module, attr)
        except AttributeError:
            raise click.BadParameter(f"module {module_name!r} has no attribute {attr!r}") from None
        if callable(value) and not isinstance(value, Queue | Pipeline | type):
            value = value()
        values = [value] if isinstance(value, Queue | Pipeline) else list(value)
    else:
        values = [v for v in vars(module).values() if isinstance(v, Queue | Pipeline)]
    specs = [v for v in values if isinstance(v, Queue | Pipeline)]
    if not specs or len(specs) != len(values):
        raise click.BadParameter(
            f"{target!r} must name a Queue, a Pipeline, or a list of them "
            "(or a module that defines some)"
        )
    return specs


def _client(broker: str, fn: Callable[[QueueSystem], Awaitable[T]]) -> T:
    async def run() -> T:
        async with connect(broker) as system:
            return await fn(system)

    try:
        return trio.run(run)
    except QueueingError as exc:  # a failed task, an unknown queue, no broker...: no traceback
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(package_name="trio-queueing")
def main() -> None:
    """Processing queues built on supervised actors, on trio."""


@main.command()
@click.argument("target")
@_BROKER
@click.option("--concurrency", type=click.IntRange(min=1), help="Workers per queue.")
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True)
def worker(target: str, broker: str, concurrency: int | None, shutdown_timeout: float) -> None:
    """Run the workers of the queues TARGET (MODULE[:ATTR]) defines, until SIGINT/SIGTERM."""
    specs = _load(target)
    if concurrency is not None:
        specs = [attrs.evolve(s, workers=concurrency) if isinstance(s, Queue) else s for s in specs]
    names = ", ".join(s.name for s in specs)
    click.echo(f"queueing worker: serving {names} on {broker.split('@')[-1]}", err=True)
    try:
        run_system(*specs, broker=broker, shutdown_timeout=shutdown_timeout)
    except QueueingError as exc:  # no broker, a bad URL...: the message, not a traceback
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("queue")
@click.argument("payload")
@_BROKER
@click.option("--wait/--no-wait", default=False, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def submit(queue: str, payload: str, broker: str, wait: bool, timeout: float) -> None:
    """Submit one task: PAYLOAD is JSON. Prints the task id (and the result with --wait)."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"PAYLOAD must be JSON: {exc}") from exc

    async def go(system: QueueSystem) -> None:
        receipt = await system.submit(queue, data)
        click.echo(receipt.id)
        if wait:
            click.echo(json.dumps(await receipt.result(timeout=timeout)))

    _client(broker, go)


@main.command()
@_BROKER
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(broker: str, as_json: bool) -> None:
    """Queues (depth, in flight, dead letters, counts) and live workers."""

    async def go(system: QueueSystem) -> dict[str, Any]:
        return await system._broker.status()  # type: ignore[attr-defined,no-any-return]

    info = _client(broker, go)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    table = Table(title="queues")
    shown = {
        "ready": "ready",
        "scheduled": "sched",
        "in_flight": "running",
        "outstanding": "outst",
        "dead_letters": "dead",
        "submitted": "subm",
        "succeeded": "ok",
        "failed": "failed",
        "retried": "retried",
        "cancelled": "cancel",
    }
    table.add_column("queue")
    for header in shown.values():
        table.add_column(header, justify="right")
    for name, q in info["queues"].items():
        table.add_row(name, *(str(q.get(key, 0)) for key in shown))
    console.print(table)
    workers = Table(title="live workers")
    for column in ("worker", "queues", "workers", "in_flight"):
        workers.add_column(column)
    for name, w in info["workers"].items():
        workers.add_row(name, ", ".join(w["queues"]), str(w["workers"]), str(w["in_flight"]))
    console.print(workers)


@main.group("dead-letters")
def dead_letters() -> None:
    """List, requeue or purge a queue's dead letters."""


@dead_letters.command("list")
@click.argument("queue")
@_BROKER
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def dl_list(queue: str, broker: str, limit: int) -> None:
    """The newest dead letters of QUEUE."""

    async def go(system: QueueSystem) -> None:
        for letter in await system.dead_letters(queue, limit):
            error = f"{letter.error.type}: {letter.error.message}" if letter.error else ""
            click.echo(
                f"{letter.id}\t{letter.state.value}\tattempts={letter.attempts}\t"
                f"{json.dumps(letter.payload)[:80]}\t{error}"
            )

    _client(broker, go)


@dead_letters.command("requeue")
@click.argument("queue")
@click.argument("ids", nargs=-1)
@_BROKER
def dl_requeue(queue: str, ids: tuple[str, ...], broker: str) -> None:
    """Submit QUEUE's dead letters again (all, or those with IDS); prints the new ids."""

    async def go(system: QueueSystem) -> None:
        for receipt in await system.requeue(queue, list(ids) or None):
            click.echo(receipt.id)

    _client(broker, go)


@dead_letters.command("purge")
@click.argument("queue")
@_BROKER
@click.confirmation_option(prompt="Delete every dead letter of this queue?")
def dl_purge(queue: str, broker: str) -> None:
    """Delete QUEUE's dead letters."""

    async def go(system: QueueSystem) -> None:
        click.echo(f"purged {await system.purge_dead_letters(queue)} dead letter(s)")

    _client(broker, go)

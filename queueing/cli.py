"""The `queueing` command line: run workers, submit tasks, look at one task, inspect queues
and dead letters.

Needs the `cli` extra (click, rich): `pip install 'trio-queueing[cli]'` (add `redis` for
Redis, `amqp` for RabbitMQ). With no `--broker` and no `QUEUEING_BROKER`, every command
uses the SQLite file `queueing.db` in the working directory (`DEFAULT_BROKER`), and says so
on its first line.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shlex
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import click
import trio

from . import _cli_dashboards as dashboards
from . import _cli_render as show
from ._cli_observe import observed
from ._cli_targets import Concurrency, describe, load
from ._exceptions import (
    InvalidQueue,
    PayloadError,
    QueueingError,
    ResultTimeout,
    TaskFailed,
    UnknownQueue,
)
from ._open import connect_trio as connect
from ._open import run_system
from ._system import QueueSystem
from ._task import TaskState, TaskStatus
from ._urls import broker_from_url
from ._validate import priority as check_priority
from ._validate import tenant as check_tenant

T = TypeVar("T")
#: Exit status of `result`/`submit --wait` when the task has no outcome (yet): 1 is a
#: failed task (or any other error), 2 a usage error (click's).
EXIT_NOT_DONE = 3
#: Dead letters read to check the ids `dead-letters requeue` is given (a broker keeps
#: fewer per queue: `max_dead_letters`).
ALL_LETTERS = 1 << 30

#: The broker of a command given no `--broker` and no `QUEUEING_BROKER`: a file here.
DEFAULT_BROKER = "sqlite:///queueing.db"
#: Tenants `queueing status` shows per queue (the busiest).
BUSIEST_TENANTS = 10
_BROKER = click.option(
    "--broker",
    envvar="QUEUEING_BROKER",
    default=None,
    help="Broker URL (or set QUEUEING_BROKER): sqlite:///path.db (a file the processes of "
    "this machine share), redis://[user:password@]host:port/db, rediss://... for TLS, "
    "amqp://user:password@host:5672/vhost?results=redis://host:6379/0 (RabbitMQ). "
    f"Default: {DEFAULT_BROKER} (in the working directory).",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


class Exit(click.ClickException):
    """A message on stderr, exit status 1 (a failed task, an unknown id...)."""


class NotDone(click.ClickException):
    """A task without an outcome (yet), where one was asked for."""

    exit_code = EXIT_NOT_DONE


def _broker_url(broker: str | None) -> str:
    """The broker given, or the default file (said on the command's first line)."""
    if broker:
        return broker
    click.echo(
        f"queueing: using {DEFAULT_BROKER} (no --broker given and QUEUEING_BROKER is not set)",
        err=True,
    )
    return DEFAULT_BROKER


def _checked(check: Callable[[Any], None], value: T) -> T:
    """An option's value that `check` (a `_validate` function) accepts: else a usage error
    (exit status 2) before anything is submitted."""
    if value is not None:
        try:
            check(value)
        except InvalidQueue as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


def _client(broker: str | None, fn: Callable[[QueueSystem], Awaitable[T]]) -> T:
    url = _broker_url(broker)
    if url.partition(":")[0].lower() == "memory":
        raise click.BadParameter(
            "memory:// lives inside the one process that opened it, where no other command "
            "can reach it: give the broker its workers share (sqlite:///path.db, "
            "redis://host:port/db, amqp://...)",
            param_hint="'--broker'",
        )

    async def run() -> T:
        async with connect(url) as system:
            return await fn(system)

    try:
        return trio.run(run)
    except UnknownQueue as exc:  # a QUEUE argument that names none: a bad argument
        raise click.UsageError(str(exc)) from exc
    except QueueingError as exc:  # a failed task, no broker...: no traceback
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(package_name="trio-queueing")
def main() -> None:
    """Processing queues built on supervised actors, on trio."""


@main.command()
@click.argument("target")
@_BROKER
@click.option(
    "--concurrency",
    multiple=True,
    metavar="[QUEUE=]N",
    help="Workers in this process: N for every queue, QUEUE=N for one (repeat it: "
    "--concurrency 8 --concurrency store=1). Default: each Queue's workers=.",
)
@click.option("--shutdown-timeout", type=dashboards.Seconds(min=0), default=30.0, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (the metrics extra).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address the metrics are served on (0.0.0.0: every interface).",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Trace tasks with OpenTelemetry's global tracer provider (the otel extra).",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve the web dashboard of this process's system on this port (the way to see "
    "a memory:// system; `queueing top --url` reads it too).",
)
@dashboards.HOST
@dashboards.TOKEN
def worker(
    target: str,
    broker: str | None,
    concurrency: tuple[str, ...],
    shutdown_timeout: float,
    metrics_port: int | None,
    metrics_host: str,
    otel: bool,
    dashboard_port: int | None,
    host: str,
    token: str | None,
) -> None:
    """Run the workers of the queues TARGET (MODULE[:ATTR]) defines, until SIGINT/SIGTERM.

    A pipeline brings its stages; each queue runs its own pool of workers."""
    broker = _broker_url(broker)
    try:  # a URL that names no broker (a typo, an unknown option) is refused before the banner
        broker_from_url(broker, max_results=0, max_dead_letters=1)
    except QueueingError as exc:
        raise click.BadParameter(str(exc), param_hint="'--broker'") from exc
    settings = Concurrency.parse(concurrency)
    specs = settings.apply(load(target))
    then = None if dashboard_port is None else dashboards.worker_main(host, dashboard_port, token)
    main_fn = frozen(observed(metrics_port, metrics_host, otel, then))
    click.echo(f"queueing worker: serving {describe(specs)} on {broker.split('@')[-1]}", err=True)
    try:
        run_system(*specs, broker=broker, shutdown_timeout=shutdown_timeout, main=main_fn)
    except QueueingError as exc:  # no broker, a bad URL...: the message, not a traceback
        raise click.ClickException(str(exc)) from exc


def frozen(
    then: Callable[[QueueSystem], Awaitable[None]] | None,
) -> Callable[[QueueSystem], Awaitable[None]]:
    """The worker's `main`: once the system is up, what start-up made (modules, classes,
    the system and its actors: tens of thousands of objects that live as long as the
    process) is moved out of the garbage collector's sight (`gc.freeze`), then `then` runs
    (or the process waits for a signal). Each full collection walked all of it: pauses of
    tens of milliseconds (over 200 ms on a loaded machine) in the middle of serving tasks,
    which every task waiting then waited out. The process is the command's own, so the
    choice is ours to make; objects made later are collected as usual."""

    async def main(system: QueueSystem) -> None:
        gc.collect()
        gc.freeze()
        if then is None:
            await trio.sleep_forever()
        else:
            await then(system)

    return main


@main.command()
@click.argument("queue")
@click.argument("payload")
@_BROKER
@click.option("--wait/--no-wait", default=False, help="Wait for the result and print it.")
@click.option("--timeout", type=dashboards.Seconds(min=0), default=60.0, show_default=True)
@click.option(
    "--priority",
    type=int,
    callback=lambda ctx, param, value: _checked(check_priority, value),
    default=0,
    show_default=True,
    help="0 (lowest) to 9 (highest): waiting tasks of higher priority start first.",
)
@click.option(
    "--tenant",
    default=None,
    callback=lambda ctx, param, value: _checked(check_tenant, value),
    help="The client (customer, account) the task is for: waiting tasks are shared out "
    "fairly between tenants (docs: fair share).",
)
def submit(
    queue: str,
    payload: str,
    broker: str | None,
    wait: bool,
    timeout: float,
    priority: int,
    tenant: str | None,
) -> None:
    """Submit one task: PAYLOAD is JSON. Prints the task id (and the result with --wait).

    PAYLOAD is checked against the payload type the queue's workers published when they
    started: one that does not match exits 2 and says which field is wrong."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(
            f"PAYLOAD must be JSON: {exc}; a string takes JSON's quotes inside the shell's: "
            f"queueing submit {queue} {shlex.quote(json.dumps(payload))}"
        ) from exc

    async def go(system: QueueSystem) -> None:
        try:
            receipt = await system.submit(queue, data, priority=priority, tenant=tenant)
        except PayloadError as exc:  # checked against the type the workers published
            raise click.BadParameter(str(exc), param_hint="PAYLOAD") from exc
        click.echo(receipt.id)
        if wait:
            try:
                value = await receipt.result(timeout=timeout)
            except ResultTimeout as exc:
                raise NotDone(str(exc)) from exc
            click.echo(json.dumps(value, default=str))

    _client(broker, go)


async def _outcome(system: QueueSystem, task_id: str, wait: float | None) -> tuple[TaskStatus, Any]:
    """A task's status (after waiting up to `wait` seconds for its outcome) and its result
    if it succeeded."""
    receipt = system.receipt(task_id)
    if wait is not None:
        with contextlib.suppress(ResultTimeout, TaskFailed):  # the status says how it stands
            await receipt.result(timeout=wait)
    status = await receipt.status()
    value = await receipt.result() if status.state is TaskState.SUCCEEDED else None
    return status, value


@main.command()
@click.argument("task_id", metavar="ID")
@_BROKER
@click.option("--wait/--no-wait", default=False, help="Wait for the outcome.")
@click.option(
    "--timeout",
    type=dashboards.Seconds(min=0),
    default=60.0,
    show_default=True,
    help="With --wait.",
)
@_JSON
def result(task_id: str, broker: str | None, wait: bool, timeout: float, as_json: bool) -> None:
    """Print a task's result as JSON.

    Exits 0 with the result, 1 if the task failed (or was cancelled, expired, lost; or the
    id is unknown), 3 if it has no outcome yet (with --wait: after --timeout)."""
    status, value = _client(broker, lambda s: _outcome(s, task_id, timeout if wait else None))
    doc: dict[str, Any] = {"id": status.id, "state": status.state.value}
    if status.state is TaskState.SUCCEEDED:
        doc["result"] = value
    elif status.state.final:
        doc.update(attempts=status.attempts, stage=status.stage, error=show.error_doc(status.error))
    if as_json:
        click.echo(show.dumps(doc))
    elif status.state is TaskState.SUCCEEDED:
        click.echo(json.dumps(value, default=str))
    if status.state is TaskState.SUCCEEDED:
        return
    if not status.state.final:
        hint = f"no outcome after {timeout:g} s" if wait else "`--wait` waits for it"
        raise NotDone(f"task {task_id!r} is {status.state.value}: no result yet ({hint})")
    error = f": {status.error.type}: {status.error.message}" if status.error else ""
    where = f" at stage {status.stage!r}" if status.stage else ""
    tries = f" after {status.attempts} attempt(s)" if status.attempts else ""
    raise Exit(f"task {task_id!r} {status.state.value}{where}{tries}{error}")


@main.command()
@click.argument("task_id", metavar="ID")
@_BROKER
def cancel(task_id: str, broker: str | None) -> None:
    """Cancel a task: a waiting one never runs, a running one is stopped.

    Exits 1 if it had an outcome already (nothing to cancel) or the id is unknown."""

    async def go(system: QueueSystem) -> TaskStatus | None:
        receipt = system.receipt(task_id)
        if await receipt.cancel():
            return None
        return await receipt.status()

    status = _client(broker, go)
    if status is not None:
        raise Exit(f"task {task_id!r} had ended already ({status.state.value}): not cancelled")
    click.echo(f"cancelled {task_id}")


@main.command()
@click.argument("task_id", metavar="ID")
@_BROKER
@_JSON
def inspect(task_id: str, broker: str | None, as_json: bool) -> None:
    """Everything known of one task: queue, state, attempts, deliveries, times, the last
    error (type, message, traceback) and the result."""
    status, value = _client(broker, lambda s: _outcome(s, task_id, None))
    succeeded = status.state is TaskState.SUCCEEDED
    if as_json:
        doc = show.status_doc(status)
        if succeeded:
            doc["result"] = value
        click.echo(show.dumps(doc))
    else:
        show.print_inspect(status, value, succeeded)


@main.command()
@click.argument("target", required=False)
@_BROKER
@_JSON
def status(target: str | None, broker: str | None, as_json: bool) -> None:
    """Queues (ready, scheduled, running, dead letters kept; outcome counts), the busiest
    tenants of queues that have some (waiting and running tasks), live worker processes,
    and schedules: next run, last run and its outcome.

    The schedules are those TARGET (MODULE[:ATTR], as `queueing worker` takes) defines,
    and those the live workers report running (over Redis and AMQP)."""
    from ._report import looked_up, schedules_of
    from ._schedule import Schedule

    defined = [s for s in load(target) if isinstance(s, Schedule)] if target else []

    async def go(system: QueueSystem) -> dict[str, Any]:
        broker = system._broker
        info: dict[str, Any] = await broker.status()  # type: ignore[attr-defined]
        reports = [w.get("report") for w in info.get("workers", {}).values()]
        names = {s.name for s in defined}
        reported = [s for s in schedules_of(reports) if s.name not in names]
        schedules = [*defined, *reported]
        if schedules:
            info["schedules"] = await looked_up(broker, schedules)
        tenants = {}
        for name in info.get("queues", {}):
            rows = await broker.tenant_figures(name, BUSIEST_TENANTS)
            if rows:  # None: the broker does not count them (nor can a client)
                tenants[name] = [attrs.asdict(row) for row in rows]
        if tenants:
            info["tenants"] = tenants
        return info

    info = _client(broker, go)
    if as_json:
        click.echo(show.dumps(show.status_figures(info)))
    else:
        show.print_status(info)


@main.group("dead-letters")
def dead_letters() -> None:
    """List, requeue or purge a queue's dead letters."""


@dead_letters.command("list")
@click.argument("queue")
@_BROKER
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_JSON
def dl_list(queue: str, broker: str | None, limit: int, as_json: bool) -> None:
    """The newest dead letters of QUEUE (oldest first): id, outcome, attempts, when, the
    error and the payload."""

    async def go(system: QueueSystem) -> Any:
        return await system.dead_letters(queue, limit)

    letters = _client(broker, go)
    if as_json:
        click.echo(show.dumps([show.letter_doc(letter) for letter in letters]))
    else:
        show.print_dead_letters(queue, letters, limit)


@dead_letters.command("requeue")
@click.argument("queue")
@click.argument("ids", nargs=-1)
@_BROKER
def dl_requeue(queue: str, ids: tuple[str, ...], broker: str | None) -> None:
    """Submit QUEUE's dead letters again (all, or those with IDS); prints the new ids.

    An id that is not among QUEUE's dead letters is an error, and nothing is requeued."""

    async def go(system: QueueSystem) -> list[str]:
        if ids:
            kept = {letter.id for letter in await system.dead_letters(queue, ALL_LETTERS)}
            missing = [i for i in ids if i not in kept]
            if missing:
                raise Exit(
                    f"no dead letter {', '.join(map(repr, missing))} in {queue!r}; nothing "
                    f"was requeued (`queueing dead-letters list {queue}` lists them)"
                )
        return [receipt.id for receipt in await system.requeue(queue, list(ids) or None)]

    new_ids = _client(broker, go)
    if not new_ids:
        click.echo(f"no dead letters to requeue in {queue!r}", err=True)
    for new_id in new_ids:
        click.echo(new_id)


@dead_letters.command("purge")
@click.argument("queue")
@_BROKER
@click.confirmation_option(prompt="Delete every dead letter of this queue?")
def dl_purge(queue: str, broker: str | None) -> None:
    """Delete QUEUE's dead letters."""

    async def go(system: QueueSystem) -> None:
        click.echo(f"purged {await system.purge_dead_letters(queue)} dead letter(s)")

    _client(broker, go)


@main.command()
@_BROKER
@click.option(
    "--url",
    default=None,
    help="Read a web dashboard instead of a broker: its address, http://127.0.0.1:8000 "
    "(the way to watch a memory:// system that serves one).",
)
@click.option("--token", envvar="QUEUEING_DASHBOARD_TOKEN", default=None, help="With --url.")
@dashboards.EVERY
@dashboards.WINDOW
@click.option("--once", is_flag=True, help="Print one screen (after two readings) and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
def top(
    broker: str | None,
    url: str | None,
    token: str | None,
    every: float,
    window: float,
    once: bool,
    as_json: bool,
) -> None:
    """A live view of every queue (depth, in flight, rates in and out, p50/p99 latency,
    failures, dead letters), worker process (busy/slots) and schedule. q quits."""
    from ._top import print_once

    once = once or as_json
    source = broker if url is not None else _broker_url(broker)
    snapshot = dashboards.top(source or "", url, token, every, window, once)
    if snapshot is not None:
        print_once(snapshot, as_json)


@main.command()
@_BROKER
@dashboards.HOST
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@dashboards.TOKEN
@dashboards.EVERY
@dashboards.WINDOW
def dashboard(
    broker: str | None, host: str, port: int, token: str | None, every: float, window: float
) -> None:
    """Serve the web dashboard of the broker's queues: queues, workers, throughput and
    latency charts, recent failures, dead letters (requeue, purge), task lookup."""
    dashboards.dashboard(_broker_url(broker), host, port, token, every, window)

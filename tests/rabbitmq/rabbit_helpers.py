"""Helpers for the RabbitMQ broker's tests (import as `rabbit_helpers`): the URL's parts,
messages published by hand, the broker's records in Redis, worker processes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import coredis
import trio

import queueing
from queueing.brokers import amqp


def parts(url: str) -> tuple[str, str, str]:
    """(the AMQP URL alone, the results store's URL, the prefix) of a broker URL."""
    split = urlsplit(url)
    query = parse_qs(split.query)
    return urlunsplit(split._replace(query="")), query["results"][0], query["prefix"][0]


def with_options(url: str, **options: Any) -> str:
    """The URL with more query options (`lease=0.5`, `connection_name=...`)."""
    return url + "".join(f"&{key}={value}" for key, value in options.items())


def envelope(queue: str, task_id: str, payload: Any) -> bytes:
    """A task's message body as the broker writes it."""
    doc = {
        "v": 1,
        "id": task_id,
        "queue": queue,
        "payload": payload,
        "submitted_at": time.time(),
        "expires_at": None,
        "attempts": 0,
        "first_started": None,
    }
    return json.dumps(doc).encode()


async def publish(url: str, queue: str, body: bytes, message_id: str | None = None) -> None:
    """Publish a message to a queue's ready queue by hand (as another program could)."""
    plain, _, prefix = parts(url)
    async with amqp.connect(plain) as connection:
        channel = await connection.open_channel(publisher_confirms=True)
        properties = amqp.Properties(delivery_mode=amqp.PERSISTENT, message_id=message_id)
        await channel.publish(body, routing_key=f"{prefix}:{queue}", properties=properties)


async def ready_count(url: str, queue: str) -> int:
    """Messages ready in a RabbitMQ queue (`queue` is the full name after the prefix)."""
    plain, _, prefix = parts(url)
    async with amqp.connect(plain) as connection, await connection.open_channel() as channel:
        info = await channel.declare_queue(f"{prefix}:{queue}", passive=True)
        return info.message_count


@asynccontextmanager
async def redis_of(url: str) -> AsyncIterator[coredis.Redis[str]]:
    """A plain client of the URL's results store."""
    _, results, _ = parts(url)
    client: coredis.Redis[str] = coredis.Redis.from_url(results, decode_responses=True)
    async with client:
        yield client


def record_key(url: str, task_id: str) -> str:
    """A task's record in the results store (the Redis broker's layout)."""
    _, _, prefix = parts(url)
    return f"{{{prefix}:{task_id.partition(':')[0]}}}:task:{task_id}"


async def outcome_of(receipt: queueing.Receipt, timeout: float = 10.0) -> Any:
    """The receipt's result, or the `TaskFailed` it raises."""
    try:
        return await receipt.result(timeout=timeout)
    except queueing.TaskFailed as exc:
        return exc


async def wait_for(predicate: Any, timeout: float = 10.0, every: float = 0.02) -> None:
    """Poll an async predicate until it is true (a server's state has no event to wait on)."""
    with trio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110 - polls a server
            await trio.sleep(every)


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll a plain condition (a count of runs, say) until it holds."""
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - what it watches has no event
            await trio.sleep(0.01)


def start_worker(
    url: str, target: str, logs: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`queueing worker TARGET --broker URL ARGS` in a process of its own (TARGET is
    importable from this directory); its output goes to a file in `logs`."""
    here = str(Path(__file__).parent)
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, environ.get("PYTHONPATH")]))
    output = (logs / f"worker-{secrets.token_hex(3)}.log").open("wb")
    with output:
        return subprocess.Popen(
            [sys.executable, "-m", "queueing", "worker", target, "--broker", url, *args],
            cwd=here,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL whatever is still running after `timeout`."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def close_connections(rabbitmqctl: list[str], connection_name: str) -> int:
    """Make RabbitMQ close the connections named `connection_name` (CONNECTION_FORCED),
    and no other."""
    listing = await trio.run_process(
        [*rabbitmqctl, "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_stdout=True,
    )
    closed = 0
    for line in listing.stdout.decode().splitlines():
        if f'{{"connection_name","{connection_name}"}}' in line:
            pid = line.split("\t", 1)[0]
            await trio.run_process([*rabbitmqctl, "close_connection", pid, "test"])
            closed += 1
    return closed


def runs_by_process(directory: Path) -> dict[int, list[str]]:
    """Task ids each worker process ran (rabbit_tasks.py records them), by process id."""
    return {
        int(path.stem): path.read_text().split()
        for path in directory.glob("*.log")
        if path.stat().st_size
    }

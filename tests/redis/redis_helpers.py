"""Helpers for the Redis tests (import as `redis_helpers`): a raw client on the test's
server, the broker's key names, and hand-made envelopes for writing entries directly."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import coredis
import trio

import queueing


def prefix_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["prefix"][0]


def key(url: str, queue: str, what: str) -> str:
    """A queue's key (`ready`, `outstanding`, `dead`, `delayed`...) under the URL's prefix."""
    return f"{{{prefix_of(url)}:{queue}}}:{what}"


def global_key(url: str, what: str) -> str:
    """A system-wide key (`task:<id>`, `workers`, `queues`...) under the URL's prefix."""
    return f"{{{prefix_of(url)}}}:{what}"


def task_key(url: str, task_id: str) -> str:
    """A task's record in the layout of `queueing.brokers.redis` (under its queue's tag:
    the queue is the id's part before the first `:`)."""
    return key(url, task_id.partition(":")[0], f"task:{task_id}")


def replies_key(url: str, queue: str, client: str) -> str:
    """One client's replies stream of a queue, in the layout of `queueing.brokers.redis`."""
    return key(url, queue, f"replies:{client}")


@asynccontextmanager
async def raw_client(url: str) -> AsyncIterator[coredis.Redis[str]]:
    """A plain coredis client on the URL's server (the broker's options left out)."""
    parts = urlsplit(url)
    client: coredis.Redis[str] = coredis.Redis(
        parts.hostname, parts.port, password=parts.password, decode_responses=True
    )
    async with client:
        yield client


async def outstanding(client: coredis.Redis[str], url: str, queue: str) -> int:
    return int(await client.get(key(url, queue, "outstanding")) or 0)


#: An `envelope()` field given as REMOVE is left out.
REMOVE: Any = object()


def envelope(queue: str, task_id: Any, payload: Any, **fields: Any) -> str:
    """An envelope as the broker writes it; `fields` override or add (REMOVE removes)."""
    doc: dict[str, Any] = {
        "v": 1,
        "id": task_id,
        "queue": queue,
        "payload": payload,
        "submitted_at": time.time(),
        "expires_at": None,
        "attempts": 0,
        "first_started": None,
        "reply_to": None,
    }
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not REMOVE})


async def inject_task(client: coredis.Redis[str], url: str, queue: str, payload: Any) -> str:
    """Write a task as another program could: its entry in the ready stream and the record
    that names it (so the broker takes it as a task, not as a forgery); returns its id."""
    task_id = f"{queue}:injected-{secrets.token_hex(4)}"
    meta = json.dumps({"submitted_at": time.time(), "expires_at": None, "attempts": 0})
    # Entry and record at once (a worker may read the entry the moment it exists).
    await client.eval(
        INJECT,
        keys=[key(url, queue, "ready"), task_key(url, task_id), key(url, queue, "outstanding")],
        args=[task_id, envelope(queue, task_id, payload), meta],
    )
    return task_id


INJECT = (
    "local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'env', ARGV[2]) "
    "redis.call('HSET', KEYS[2], 's', 'pending', 'e', entry, 'r', '', 'm', ARGV[3], "
    "'t', '60000') "
    "redis.call('INCR', KEYS[3]) "
    "return entry"
)


async def wait_for(predicate: Any, timeout: float = 10.0, every: float = 0.01) -> None:
    """Poll an async predicate until it is true (state in Redis has no event to wait on)."""
    with trio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110 - polls Redis, which has no event
            await trio.sleep(every)


async def outcome_of(receipt: queueing.Receipt, timeout: float = 10.0) -> Any:
    """The receipt's result, or the `TaskFailed` it raises."""
    try:
        return await receipt.result(timeout=timeout)
    except queueing.TaskFailed as exc:
        return exc


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


async def consumers(client: coredis.Redis[str], url: str) -> dict[str, int]:
    """Pending (fetched, unacknowledged) entries of each consumer of the `mp` queue."""
    ready = key(url, "mp", "ready")
    try:
        summary = await client.xpending(ready, "workers")
    except coredis.exceptions.ResponseError:  # no group yet
        return {}
    return {str(name): int(count) for name, count in (summary.consumers or {}).items()}

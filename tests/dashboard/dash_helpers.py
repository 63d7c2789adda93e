"""Queues for the dashboard tests (import as `dash_helpers`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from queueing import Queue, Worker


class Nap(Worker):
    """Sleeps for the payload's seconds (a task to catch running), returns them."""

    async def handle(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


class Refuse(Worker):
    """Fails every task with an error that is not retried (it is kept as a dead letter)."""

    async def handle(self, order: int) -> int:
        raise ValueError(f"order {order} is refused")


def naps(name: str = "naps", **options: Any) -> Queue[float]:
    return Queue(name, Nap, **options)


def refusals(name: str = "refusals", **options: Any) -> Queue[int]:
    return Queue(name, Refuse, **options)


ROOT = Path(__file__).resolve().parents[2]
#: Seconds the example gets to print its dashboard's link.
START_TIMEOUT = 60.0


@contextmanager
def example_serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python examples/dashboard.py --port 0 ARGS` in a process of its own; yields it and
    its dashboard's link (once it is printed). Stopped (SIGINT, as Ctrl-C) at the end."""
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "examples/dashboard.py", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        link = ""
        seen = []
        while not link:
            line = process.stdout.readline()
            seen.append(line)
            if line.startswith("Dashboard: "):
                link = line.split(" ", 1)[1].strip()
            elif (not line and process.poll() is not None) or time.monotonic() > deadline:
                raise AssertionError("the example printed no link:\n" + "".join(seen))
        yield process, link
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def base_url(link: str) -> str:
    """A dashboard's address, from its link (`http://127.0.0.1:PORT/#token=...`)."""
    return link.split("/#", 1)[0]

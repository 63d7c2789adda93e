"""Queues for the client tests, and a worker process's part played by a trio run in a thread
of the test process (`serving`): the clients under test are what runs elsewhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from queueing import Overflow, Queue, RetryPolicy, Worker, open_system


@attrs.frozen
class Resize:
    width: int
    height: int


class Double(Worker):
    async def handle(self, number: int) -> int:
        return 2 * number


class Area(Worker):
    async def handle(self, size: Resize) -> int:
        return size.width * size.height


class Fail(Worker):
    async def handle(self, word: str) -> str:
        raise ValueError(f"cannot handle {word!r}")


class Sleep(Worker):
    async def handle(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


double = Queue("double", Double, workers=4)
area = Queue("area", Area, workers=2, max_payload=64)
fail = Queue("fail", Fail, retry=RetryPolicy.never())
sleep = Queue("sleep", Sleep, workers=2)
#: Served by nobody: its tasks stay pending (maxsize and cancel tests).
held = Queue("held", Double, maxsize=2, when_full=Overflow.REJECT)
SERVED = (double, area, fail, sleep)
#: What a client passes to `connect()` to know every queue's types and policies.
SPECS = (*SERVED, held)


@contextmanager
def serving(url: str, *specs: Queue[Any]) -> Iterator[None]:
    """Workers for `specs` (default: SERVED) on `url`, in a trio run on a thread, until the
    block ends; an error of that run fails the test at the end of the block."""
    specs = specs or SERVED
    ready = threading.Event()
    errors: list[BaseException] = []
    token: list[trio.lowlevel.TrioToken] = []
    stop = trio.Event()

    async def main() -> None:
        async with open_system(*specs, broker=url, shutdown_timeout=2.0):
            token.append(trio.lowlevel.current_trio_token())
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="test-workers")
    thread.start()
    ready.wait(30)
    if errors:
        raise errors[0]
    try:
        yield
    finally:
        if token:
            trio.from_thread.run_sync(stop.set, trio_token=token[0])
        thread.join(30)
        assert not thread.is_alive(), "the workers did not stop"
    if errors:
        raise errors[0]

"""Sync (`def`) handlers run in worker threads, at most `Queue(threads=N)` at once.

These tests run real threads; the few real sleeps are tiny (the whole file takes well
under a second).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import pytest
import trio
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_none

from queueing import (
    Queue,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskState,
    Transient,
    Worker,
    open_system,
)


@attrs.frozen
class Image:
    name: str
    pixels: int


class Concurrency:
    """Counts handler threads running at once, and the most ever seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.threads: set[str] = set()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.current_thread().name)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


class Blocking(Worker):
    def __init__(self, seen: Concurrency) -> None:
        self.seen = seen

    def handle(self, seconds: float) -> str:
        with self.seen:
            time.sleep(seconds)  # blocking work: fine in a thread
        return threading.current_thread().name


class Resize(Worker):
    def handle(self, image: Image) -> Image:
        assert isinstance(image, Image)
        return Image(image.name, image.pixels // 4)


class FlakySync(Worker):
    def handle(self, payload: int) -> int:
        if self.attempt <= payload:
            raise Transient("flaky")
        return self.attempt


class Waits(Worker):
    """Blocks its thread until the event is set."""

    def __init__(self, release: threading.Event, started: threading.Event) -> None:
        self.release = release
        self.started = started

    def handle(self, payload: int) -> int:
        self.started.set()
        self.release.wait(5)
        return payload


async def test_a_sync_handler_runs_in_a_worker_thread() -> None:
    seen = Concurrency()
    queue = Queue("block", Blocking, worker_kwargs={"seen": seen})
    async with open_system(queue) as system:
        name = await (await system.submit("block", 0.0))
    assert name != threading.current_thread().name
    assert name != threading.main_thread().name


async def test_a_sync_handler_gets_its_payload_structured() -> None:
    async with open_system(Queue("resize", Resize)) as system:
        assert await (await system.submit("resize", Image("a", 400))) == Image("a", 100)


async def test_queue_threads_bounds_the_handler_threads_at_once() -> None:
    seen = Concurrency()
    queue = Queue("block", Blocking, workers=4, threads=2, worker_kwargs={"seen": seen})
    async with open_system(queue) as system:
        receipts = [await system.submit("block", 0.02) for _ in range(8)]
        for receipt in receipts:
            await receipt
    assert seen.most == 2


async def test_without_threads_the_handler_threads_are_bounded_by_the_workers() -> None:
    seen = Concurrency()
    queue = Queue("block", Blocking, workers=3, worker_kwargs={"seen": seen})
    async with open_system(queue) as system:
        receipts = [await system.submit("block", 0.02) for _ in range(9)]
        for receipt in receipts:
            await receipt
    assert seen.most == 3


async def test_blocking_handlers_do_not_block_the_event_loop() -> None:
    seen = Concurrency()
    ticks = 0
    queue = Queue("block", Blocking, workers=2, worker_kwargs={"seen": seen})
    async with open_system(queue) as system:
        receipt = await system.submit("block", 0.1)
        while not receipt.done():
            ticks += 1
            await trio.sleep(0.005)
    assert ticks >= 5


async def test_a_sync_handler_error_is_retried_like_an_async_one(autojump_clock: Any) -> None:
    policy = RetryPolicy(stop=stop_after_attempt(3), wait=wait_none())
    queue = Queue("flaky", FlakySync, retry=policy)
    async with open_system(queue) as system:
        assert await (await system.submit("flaky", 2)) == 3
        error = await outcome_of(await system.submit("flaky", 5))
    assert isinstance(error, TaskFailed)
    assert (error.outcome, error.attempts) == (TaskState.DEAD_LETTERED, 3)


async def test_cancelling_a_running_sync_task_resolves_its_receipt_at_once() -> None:
    release, started = threading.Event(), threading.Event()
    queue = Queue("waits", Waits, worker_kwargs={"release": release, "started": started})
    async with open_system(queue) as system:
        receipt = await system.submit("waits", 1)
        assert await trio.to_thread.run_sync(started.wait, 5)
        with trio.fail_after(1):
            assert await receipt.cancel() is True
            with pytest.raises(TaskCancelled):
                await receipt
        release.set()  # the abandoned thread ends on its own


async def test_a_sync_task_past_its_timeout_fails_with_task_timeout(autojump_clock: Any) -> None:
    release, started = threading.Event(), threading.Event()
    queue = Queue(
        "waits",
        Waits,
        timeout=5,
        retry=RetryPolicy.never(),
        worker_kwargs={"release": release, "started": started},
    )
    async with open_system(queue) as system:
        error = await outcome_of(await system.submit("waits", 1))
        release.set()
    assert isinstance(error, TaskFailed)
    assert error.error_type == "queueing.TaskTimeout"

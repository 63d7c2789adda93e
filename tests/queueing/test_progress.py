"""Task progress in one process: `Worker.progress`, `status().progress`, `watch()`."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Any

import pytest
import trio

from queueing import (
    Progress,
    Queue,
    QueueingError,
    TaskState,
    TaskStatus,
    Worker,
    open_system,
)
from queueing.brokers import Broker, MemoryBroker, QueueInfo, Task

#: Steps of the handlers below, and the seconds between two (MockClock: no real time).
STEPS = 200
STEP = 0.01


class Steps(Worker):
    """Reports each step, then returns how many there were."""

    async def handle(self, steps: int) -> int:
        for done in range(1, steps + 1):
            await trio.sleep(STEP)
            self.progress(done, steps, note=f"step {done}")
        return steps


class TightLoop(Worker):
    """Reports many times without yielding, then once more after a pause."""

    async def handle(self, count: int) -> str:
        for done in range(count):
            self.progress(done, count)
        await trio.sleep(1.0)
        self.progress(count, count, note="done")
        return "ok"


class CountingBroker(MemoryBroker):
    """The memory broker, counting the publishes of progress it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[list[tuple[str, Progress]]] = []
        self.reads = 0

    async def store_progress(
        self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]
    ) -> None:
        self.stored.append([(task.id, progress) for task, progress in updates])
        await super().store_progress(queue, updates)

    async def read_progress(self, task_ids: Collection[str]) -> dict[str, Progress]:
        self.reads += 1
        return await super().read_progress(task_ids)


async def test_status_carries_the_latest_progress(autojump_clock: Any) -> None:
    async with open_system(Queue("steps", Steps)) as system:
        receipt = await system.submit("steps", 10)
        await trio.sleep(5 * STEP + STEP / 2)  # five steps done
        running = await receipt.status()
        assert running.state is TaskState.RUNNING
        assert running.progress is not None
        assert (running.progress.done, running.progress.total) == (5, 10)
        assert running.progress.note == "step 5"
        assert running.progress.fraction == 0.5
        assert await receipt == 10
        final = await receipt.status()
    assert final.progress is not None
    assert (final.progress.done, final.progress.total, final.progress.note) == (10, 10, "step 10")


async def test_a_task_that_never_reports_has_no_progress(autojump_clock: Any) -> None:
    async with open_system(Queue("steps", Steps)) as system:
        receipt = await system.submit("steps", 0)
        assert await receipt == 0
        assert (await receipt.status()).progress is None


async def test_a_tight_loop_of_reports_is_coalesced(autojump_clock: Any) -> None:
    broker = CountingBroker()
    async with open_system(Queue("tight", TightLoop), broker=broker) as system:
        receipt = await system.submit("tight", 10_000)
        assert await receipt == "ok"
        await trio.sleep(1.0)  # the last publish
        status = await receipt.status()
    reports = [progress for batch in broker.stored for _, progress in batch]
    # 10 001 reports, published as two values: the loop's last, then the final one.
    assert [(p.done, p.note) for p in reports] == [(9_999, None), (10_000, "done")]
    assert status.progress is not None
    assert status.progress.note == "done"


async def test_publishes_are_spaced_while_reports_keep_coming(autojump_clock: Any) -> None:
    broker = CountingBroker()
    async with open_system(Queue("steps", Steps), broker=broker) as system:
        receipt = await system.submit("steps", STEPS)
        assert await receipt == STEPS
        await trio.sleep(1.0)
    dones = [progress.done for batch in broker.stored for _, progress in batch]
    # STEPS reports over STEPS * STEP = 2 s, published at most every PUBLISH_EVERY (0.1 s):
    # about 20 publishes, never one per report; the last value always gets through.
    assert 10 <= len(dones) <= 25
    assert dones == sorted(dones)
    assert dones[-1] == STEPS


async def test_watch_follows_progress_and_ends_with_the_outcome(autojump_clock: Any) -> None:
    seen: list[TaskStatus] = []
    async with open_system(Queue("steps", Steps)) as system:
        receipt = await system.submit("steps", 50)
        async for status in receipt.watch():
            seen.append(status)
    assert seen[-1].state is TaskState.SUCCEEDED
    assert all(status.state is not TaskState.SUCCEEDED for status in seen[:-1])
    dones = [status.progress.done for status in seen if status.progress is not None]
    assert dones == sorted(dones)
    assert len(dones) >= 5  # live: several values on the way, not only the last
    assert dones[-1] == 50


async def test_watch_of_a_finished_task_gives_its_outcome_once(autojump_clock: Any) -> None:
    async with open_system(Queue("steps", Steps)) as system:
        receipt = await system.submit("steps", 3)
        await receipt
        seen = [status async for status in receipt.watch()]
    assert [status.state for status in seen] == [TaskState.SUCCEEDED]


async def test_a_receipt_found_by_id_sees_progress(autojump_clock: Any) -> None:
    async with open_system(Queue("steps", Steps)) as system:
        receipt = await system.submit("steps", 10)
        await trio.sleep(3 * STEP + STEP / 2)
        status = await system.receipt(receipt.id).status()
    assert status.progress is not None
    assert status.progress.done == 3


class Outside(Worker):
    async def on_start(self) -> None:
        self.refused: Exception | None = None
        try:
            self.progress(1)
        except QueueingError as exc:
            self.refused = exc

    async def handle(self, _: int) -> str:
        return str(self.refused)


async def test_progress_outside_a_task_is_refused(autojump_clock: Any) -> None:
    async with open_system(Queue("outside", Outside)) as system:
        message = await (await system.submit("outside", 0))
    assert "call it from handle()" in message


class Bad(Worker):
    async def handle(self, case: str) -> str:
        arguments: dict[str, tuple[Any, ...]] = {
            "done": ("many",),
            "nan": (float("nan"),),
            "total": (1, "ten"),
            "note": (1, 10, 42),
            "long": (1, 10, "x" * 5000),
        }
        try:
            self.progress(*arguments[case])
        except (TypeError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "accepted"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("done", "TypeError: progress(done=...) must be a finite int or float"),
        ("nan", "TypeError: progress(done=...) must be a finite int or float"),
        ("total", "TypeError: progress(total=...) must be None or a finite int or float"),
        ("note", "TypeError: progress(note=...) must be None or a str"),
        ("long", "ValueError: progress(note=...) is 5000 characters, over the limit of 1000"),
    ],
)
async def test_a_report_a_progress_cannot_carry_is_refused(
    autojump_clock: Any, case: str, expected: str
) -> None:
    async with open_system(Queue("bad", Bad)) as system:
        message = await (await system.submit("bad", case))
    assert message.startswith(expected)


class Blocking(Worker):
    """A sync handler: runs in a thread, reports from there."""

    def handle(self, steps: int) -> str:
        for done in range(1, steps + 1):
            self.progress(done, steps)
        return threading.current_thread().name


async def test_a_sync_handler_reports_from_its_thread() -> None:
    # Real time: the handler runs in a worker thread.
    async with open_system(Queue("blocking", Blocking)) as system:
        receipt = await system.submit("blocking", 1000)
        thread = await receipt
        with trio.fail_after(5):
            while (status := await receipt.status()).progress is None or (  # noqa: ASYNC110
                status.progress.done < 1000  # the publish comes from the handler's thread
            ):
                await trio.sleep(0.01)
    assert thread != threading.current_thread().name
    assert status.progress is not None
    assert status.progress.fraction == 1.0


def test_fraction_is_within_zero_and_one() -> None:
    assert Progress(3, 4).fraction == 0.75
    assert Progress(5, 4).fraction == 1.0
    assert Progress(-1, 4).fraction == 0.0
    assert Progress(3).fraction is None
    assert Progress(3, 0).fraction is None


class NoProgressBroker(MemoryBroker):
    """A broker that keeps no progress (the contract's defaults)."""

    store_progress = Broker.store_progress  # type: ignore[assignment]
    read_progress = Broker.read_progress  # type: ignore[assignment]


async def test_a_broker_without_progress_keeps_it_in_this_process(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_system(Queue("steps", Steps), broker=NoProgressBroker()) as system:
        receipt = await system.submit("steps", 10)
        assert await receipt == 10
        await trio.sleep(1.0)
        status = await receipt.status()
    assert status.progress is not None
    assert status.progress.done == 10
    (warning,) = [r for r in caplog.records if "task progress stays in this process" in r.message]
    assert "NoProgressBroker does not store task progress (Broker.store_progress)" in (
        warning.message
    )

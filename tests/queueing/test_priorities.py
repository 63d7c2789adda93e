"""Priorities in process (memory://), property-tested: whatever the mix of priorities, the
waiting tasks start highest priority first, in submission order within one; a queue that
switches to priorities mid-backlog keeps the tasks already waiting in their place."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing import Queue, Worker, open_system

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


class Held(Worker):
    """Logs each start; the first task waits at the gate (the one worker is busy)."""

    def __init__(self, started: list[int], gate: trio.Event) -> None:
        self.started = started
        self.gate = gate

    async def handle(self, index: int) -> None:
        self.started.append(index)
        await self.gate.wait()


def start_order(priorities: list[int], workers: int = 1) -> list[int]:
    """Submit task 0 (it takes the worker), then one task per priority; the start order."""
    started: list[int] = []

    async def body() -> None:
        gate = trio.Event()
        spec = Queue("q", Held, worker_kwargs={"started": started, "gate": gate}, workers=workers)
        async with open_system(spec) as system:
            for index in range(workers):
                await system.submit("q", -1 - index)
            await trio.testing.wait_all_tasks_blocked()  # each worker waits at the gate
            assert len(started) == workers
            for index, priority in enumerate(priorities):
                await system.submit("q", index, priority=priority)
            gate.set()
            await system.drain()

    trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))
    return started[workers:]


@SETTINGS
@given(st.lists(st.integers(0, 9), max_size=40))
def test_waiting_tasks_start_by_priority_then_in_submission_order(priorities: list[int]) -> None:
    expected = sorted(range(len(priorities)), key=lambda i: (-priorities[i], i))
    assert start_order(priorities) == expected


@SETTINGS
@given(st.lists(st.integers(0, 9), max_size=40), st.integers(1, 4))
def test_every_task_starts_once_whatever_the_workers(priorities: list[int], workers: int) -> None:
    order = start_order(priorities, workers)
    assert sorted(order) == list(range(len(priorities)))
    # Each start is of the highest priority still waiting then (ties: the oldest).
    waiting = list(range(len(priorities)))
    for index in order:
        best = min(waiting, key=lambda i: (-priorities[i], i))
        assert priorities[index] == priorities[best]
        waiting.remove(index)


def test_the_backlog_of_a_queue_that_switches_to_priorities_keeps_its_place() -> None:
    # Ten tasks of the default priority wait in the queue's plain buffer; the first task
    # with a priority moves them (in order) to the per-priority store, behind itself.
    assert start_order([0] * 10 + [3, 0, 3]) == [10, 12, *range(10), 11]


async def test_a_task_handed_back_by_a_crashed_worker_goes_first_in_its_priority(
    autojump_clock: Any,
) -> None:
    started: list[str] = []
    gate = trio.Event()

    class Crashy(Worker):
        fatal = (RuntimeError,)

        async def handle(self, name: str) -> None:
            started.append(name)
            if name == "hold":
                await gate.wait()
            if name == "crash" and started.count("crash") == 1:
                raise RuntimeError("worker state lost")

    async with open_system(Queue("q", Crashy, workers=1)) as system:
        await system.submit("q", "hold")
        await trio.testing.wait_all_tasks_blocked()
        assert started == ["hold"]
        await system.submit("q", "crash", priority=5)
        await system.submit("q", "other", priority=5)
        await system.submit("q", "low")
        gate.set()
        await system.drain()
    assert started == ["hold", "crash", "crash", "other", "low"]

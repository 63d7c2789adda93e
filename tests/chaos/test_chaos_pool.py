"""Chaos in one process (memory://): 1% of tasks crash their worker (a fatal error) in a
pool of 16; the pool keeps most of its throughput."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
import trio
from chaos_helpers import Memory, Outcomes

from queueing import Queue, Worker, open_system

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TASKS = 3000
WORKERS = 16
#: Throughput with 1% of tasks crashing their worker, over the crash-free run's (issue 9).
KEPT = 0.7


class LostConnection(Exception):
    """The worker's own resource broke: the worker must be replaced."""


class SometimesFatal(Worker):
    """Every `every`-th task crashes its worker on its first delivery (a fatal error)."""

    fatal = (LostConnection,)

    def __init__(self, every: int, runs: Counter[str]) -> None:
        self.every = every
        self.runs = runs

    async def handle(self, n: int) -> int:
        assert self.task_id is not None
        self.runs[self.task_id] += 1
        await trio.sleep(0.01)
        if self.every and n % self.every == 0 and self.runs[self.task_id] == 1:
            raise LostConnection(f"lost it on task {n}")
        return 2 * n


async def _run(every: int) -> tuple[float, Outcomes, Counter[str], int]:
    runs: Counter[str] = Counter()
    queue = Queue(
        "work", SometimesFatal, workers=WORKERS, worker_kwargs={"every": every, "runs": runs}
    )
    async with open_system(queue) as system:
        started = time.monotonic()
        receipts = await system.submit_many("work", range(TASKS))
        outcomes = await Outcomes().gather(enumerate(receipts), timeout=120)
        took = time.monotonic() - started
        await system.drain(timeout=60)  # returns: nothing left outstanding
        restarts = system.stats()["work"].restarts
    return took, outcomes, runs, restarts


async def test_one_percent_fatal_crashes_in_a_pool_of_16(scenario: Any) -> None:
    scenario.scenario = f"1% of tasks crash their worker (pool of {WORKERS})"
    scenario.broker = "memory"
    memory = Memory()
    memory.watch("client", os.getpid())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memory.sample_loop)
        # Best of two runs each: the machine is shared, a hiccup is not the pool's doing.
        healthy = min([(await _run(0))[0] for _ in range(2)])
        crashing = [await _run(100) for _ in range(2)]
        nursery.cancel_scope.cancel()
    took, outcomes, runs, restarts = min(crashing, key=lambda run: run[0])
    ratio = healthy / took
    scenario.promise = (
        f"every receipt resolves and drain() returns; throughput >= {KEPT:.0%} of the "
        "crash-free run's "
        f"(measured {ratio:.0%}: {TASKS / healthy:,.0f} vs {TASKS / took:,.0f} tasks/s); "
        "only the crashed tasks run again"
    )
    scenario.tasks = TASKS
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = sum(1 for n in runs.values() if n > 1)
    scenario.memory = memory.peaks()
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (TASKS, 0, 0), outcomes.failed
    assert restarts == TASKS // 100
    assert scenario.duplicated == TASKS // 100
    assert ratio >= KEPT, (healthy, took)

"""Chaos in one process (memory://): 1% of tasks crash their worker (a fatal error) in a
pool of 16; the pool keeps most of its throughput."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import attrs
import pytest
import trio
from chaos_helpers import Memory, Outcomes, struck

from queueing import Queue, QueueSystem, Worker, open_system

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TASKS = 3000
WORKERS = 16
#: Throughput with 1% of tasks crashing their worker, over the crash-free run's (issue 9).
KEPT = 0.7
#: Seconds after drain() within which every crashed worker is back. drain() waits for the
#: tasks, not the workers: a worker that crashes again within `Queue(reset_after=)` waits
#: out its restart backoff (capped at 0.5 s by default) while the others finish the run.
RESTARTED_WITHIN = 10.0


class LostConnection(Exception):
    """The worker's own resource broke: the worker must be replaced."""


class SometimesFatal(Worker):
    """Every `every`-th task crashes its worker on its first delivery (a fatal error)."""

    fatal = (LostConnection,)

    def __init__(self, every: int, runs: Counter[str], crashes: list[str]) -> None:
        self.every = every
        self.runs = runs
        self.crashes = crashes

    async def handle(self, n: int) -> int:
        assert self.task_id is not None
        self.runs[self.task_id] += 1
        await trio.sleep(0.01)
        if self.every and n % self.every == 0 and self.runs[self.task_id] == 1:
            self.crashes.append(self.task_id)
            raise LostConnection(f"lost it on task {n}")
        return 2 * n


@attrs.frozen
class Run:
    took: float
    outcomes: Outcomes
    runs: Counter[str]
    crashes: int
    #: Workers restarted by the pool once it had restarted them all, or RESTARTED_WITHIN
    #: after drain().
    restarts: int


async def restarted(system: QueueSystem, crashes: int) -> int:
    """The pool's restarts once they reach `crashes`, or after RESTARTED_WITHIN seconds."""
    with trio.move_on_after(RESTARTED_WITHIN):
        while system.stats()["work"].restarts < crashes:  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.05)
    return system.stats()["work"].restarts


async def _run(every: int) -> Run:
    runs: Counter[str] = Counter()
    crashes: list[str] = []
    queue = Queue(
        "work",
        SometimesFatal,
        workers=WORKERS,
        worker_kwargs={"every": every, "runs": runs, "crashes": crashes},
    )
    async with open_system(queue) as system:
        started = time.monotonic()
        receipts = await system.submit_many("work", range(TASKS))
        outcomes = await Outcomes().gather(enumerate(receipts), timeout=120)
        took = time.monotonic() - started
        await system.drain(timeout=60)  # returns: nothing left outstanding
        restarts = await restarted(system, len(crashes))
    return Run(took, outcomes, runs, len(crashes), restarts)


async def test_one_percent_fatal_crashes_in_a_pool_of_16(scenario: Any) -> None:
    scenario.scenario = f"1% of tasks crash their worker (pool of {WORKERS})"
    scenario.broker = "memory"
    memory = Memory()
    memory.watch("client", os.getpid())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memory.sample_loop)
        # Best of two runs each: the machine is shared, a hiccup is not the pool's doing.
        healthy = min([(await _run(0)).took for _ in range(2)])
        crashing = [await _run(100) for _ in range(2)]
        nursery.cancel_scope.cancel()
    run = min(crashing, key=lambda run: run.took)
    outcomes = run.outcomes
    ratio = healthy / run.took
    scenario.promise = (
        f"every receipt resolves and drain() returns; throughput >= {KEPT:.0%} of the "
        "crash-free run's "
        f"(measured {ratio:.0%}: {TASKS / healthy:,.0f} vs {TASKS / run.took:,.0f} tasks/s); "
        "only the crashed tasks run again; every crashed worker is restarted"
    )
    scenario.tasks = TASKS
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    twice = {task_id for task_id, n in run.runs.items() if n > 1}
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    struck(run.crashes == TASKS // 100, f"{run.crashes} workers crashed, not {TASKS // 100}")
    assert (outcomes.lost, outcomes.unresolved) == (0, 0), (
        f"{outcomes.lost} receipts ended TaskLost, {outcomes.unresolved} never resolved"
    )
    assert (outcomes.ok, outcomes.wrong, outcomes.failed) == (TASKS, 0, []), (
        f"{outcomes.wrong} wrong results, failures: {outcomes.failed[:3]}"
    )
    assert scenario.duplicated == run.crashes, f"{scenario.duplicated} tasks ran twice"
    assert run.restarts == run.crashes, (
        f"{run.restarts} of {run.crashes} crashed workers restarted "
        f"{RESTARTED_WITHIN:g}s after drain()"
    )
    assert ratio >= KEPT, f"throughput {ratio:.0%} of the crash-free run's, below {KEPT:.0%}"

"""Issue #18's acceptance, in process (memory://): one heavy tenant submits 10,000 tasks,
then 20 light tenants 10 each; with 4 workers, every light tenant's tasks finish within
the first 500 completions. Without `tenant=`, the same submits run in plain FIFO order."""

from __future__ import annotations

from typing import Any

import trio

from queueing import Queue, Worker, open_system

HEAVY = 10_000
LIGHTS = 20
EACH = 10
WORKERS = 4


class Job(Worker):
    """Takes a hundredth of a second (of the mock clock); logs its start and its end."""

    def __init__(self, started: list[str], finished: list[str]) -> None:
        self.started = started
        self.finished = finished

    async def handle(self, name: str) -> None:
        self.started.append(name)
        await trio.sleep(0.01)
        self.finished.append(name)


async def burst(fair: bool) -> tuple[list[str], list[str]]:
    started: list[str] = []
    finished: list[str] = []
    spec = Queue(
        "jobs",
        Job,
        worker_kwargs={"started": started, "finished": finished},
        workers=WORKERS,
        maxsize=HEAVY + LIGHTS * EACH,
    )
    async with open_system(spec) as system:
        heavy = [f"heavy-{i}" for i in range(HEAVY)]
        await system.submit_many("jobs", heavy, tenant="heavy" if fair else None)
        for light in range(LIGHTS):
            names = [f"light{light}-{i}" for i in range(EACH)]
            await system.submit_many("jobs", names, tenant=f"light{light}" if fair else None)
        await system.drain()
    assert len(finished) == HEAVY + LIGHTS * EACH
    return started, finished


async def test_light_tenants_finish_within_the_first_500_completions(autojump_clock: Any) -> None:
    started, finished = await burst(fair=True)
    for light in range(LIGHTS):
        done = [i for i, name in enumerate(finished) if name.startswith(f"light{light}-")]
        assert len(done) == EACH
        assert max(done) < 500, f"light{light}'s last task finished {max(done) + 1}th"
    # Each tenant's own tasks start in their order.
    assert [n for n in started if n.startswith("heavy")] == [f"heavy-{i}" for i in range(HEAVY)]
    assert [n for n in started if n.startswith("light7-")] == [f"light7-{i}" for i in range(EACH)]


async def test_without_tenants_the_same_burst_is_plain_fifo(autojump_clock: Any) -> None:
    started, finished = await burst(fair=False)
    expected = [f"heavy-{i}" for i in range(HEAVY)]
    expected += [f"light{light}-{i}" for light in range(LIGHTS) for i in range(EACH)]
    assert started == expected
    first_light = min(i for i, name in enumerate(finished) if name.startswith("light"))
    assert first_light >= HEAVY - WORKERS

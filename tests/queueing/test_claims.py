"""The dispatcher's claims on a shared broker: a worker that becomes idle while a claim is
under way starts another claim (for itself, not ahead of any worker), and a stop with
claims under way loses no task and runs none twice."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from queueing import Queue, Worker, _dispatcher, open_system
from queueing.brokers import QueueInfo, Task
from queueing.brokers.sqlite import SqliteBroker

RUNS: collections.Counter[int] = collections.Counter()
HOLD = trio.Event()
STARTED: list[int] = []
#: Woken whenever a handler starts or a claim comes to its gate (see `until`).
CHANGED = trio.lowlevel.ParkingLot()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    global HOLD
    RUNS.clear()
    STARTED.clear()
    HOLD = trio.Event()


async def until(check: Callable[[], bool]) -> None:
    """Wait until `check()` holds, looking again at each change."""
    while not check():
        await CHANGED.park()


class Held(Worker):
    async def handle(self, x: int) -> int:
        STARTED.append(x)
        CHANGED.unpark_all()
        await HOLD.wait()
        return x


class Count(Worker):
    async def handle(self, x: int) -> int:
        RUNS[x] += 1
        CHANGED.unpark_all()
        await trio.sleep(0.001)
        return x


class GatedClaims(SqliteBroker):
    """A SQLite broker whose claims each wait at a gate the test opens: it sees which
    claims are under way at once, and what each asked for."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gates: list[tuple[int, trio.Event]] = []

    @property
    def under_way(self) -> list[int]:
        """What the claims waiting at their gate asked for."""
        return [n for n, gate in self.gates if not gate.is_set()]

    def open_gates(self) -> None:
        for _, gate in self.gates:
            gate.set()

    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        gate = trio.Event()
        self.gates.append((n, gate))
        CHANGED.unpark_all()
        await gate.wait()
        return await super().claim(queue, n, wait=wait)


async def test_a_worker_idle_while_a_claim_is_under_way_starts_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One claim at a time is the default (measured: docs/scale.md); the dispatcher's
    # second claim loop, for a machine whose claims take milliseconds, is tested here.
    monkeypatch.setattr(_dispatcher, "CLAIMS_IN_FLIGHT", 2)
    broker = GatedClaims(f"sqlite:///{tmp_path / 'q.db'}")
    async with open_system(Queue("q", Held, workers=2), broker=broker) as system:
        await until(lambda: sum(broker.under_way) == 2)  # both workers idle, both asked for
        receipt = await system.submit("q", 7)
        broker.open_gates()
        # One worker runs the task; the other is idle, and a claim asks for it alone.
        await until(lambda: STARTED == [7] and broker.under_way == [1])
        HOLD.set()
        assert await receipt.result(timeout=10) == 7
        # The first worker is idle again while the claim for the second is still under
        # way: a second claim asks for it, without waiting for the first one's answer.
        with trio.move_on_after(5):
            await until(lambda: len(broker.under_way) == 2)
        assert broker.under_way == [1, 1]
        broker.open_gates()


@pytest.mark.parametrize("claims", [1, 2])
@pytest.mark.parametrize("where", ["sqlite", "redis"])
async def test_a_stop_with_claims_under_way_loses_no_task_and_runs_none_twice(
    tmp_path: Path,
    where: str,
    claims: int,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_dispatcher, "CLAIMS_IN_FLIGHT", claims)
    url = (
        f"sqlite:///{tmp_path / 'q.db'}"
        if where == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    queue = Queue("q", Count, workers=4, maxsize=1000)
    tasks = 300
    async with open_system(queue, broker=url) as system:
        receipts = await system.submit_many("q", range(tasks))
        await until(lambda: sum(RUNS.values()) >= tasks // 3)
        # Leaving the block stops the system: claims are under way, some with tasks.
    assert sum(RUNS.values()) < tasks
    async with open_system(queue, broker=url) as system:
        results = [await system.receipt(r.id).result(timeout=30) for r in receipts]
    assert sorted(results) == list(range(tasks))
    assert sorted(RUNS) == list(range(tasks))
    assert set(RUNS.values()) == {1}, {x: n for x, n in RUNS.items() if n != 1}

"""Fair share's cost per task: a queue without tenants, and with 1, 100 and 10,000 active
tenants (issue #18: the cost of taking the next task must not grow with the tenants).

Each run: a queue of 8 no-op workers; N tasks submitted with one `submit_many` (the
queue's `tenant` function spreads them round-robin over the tenants: task i is tenant
i mod T's), while the workers hold back (each worker's first task waits for a start
signal); then the signal, and the time until every task has finished. So during the
drain all T tenants have tasks waiting (N/T each), and what is timed is taking, running
and settling each task. Also timed: the submit (validation, the tenant function, the
fair store's bookkeeping). Figures are tasks/s (wall clock), best and median of
`--repeat` runs, in rounds (each scenario once per round) after an untimed warm-up, and
the drain's CPU time per task (this process's, best and median: steadier than the wall
clock on a machine shared with other work).

    python bench/fair_bench.py                    # memory://, N=50k, 5 rounds
    python bench/fair_bench.py --quick            # N=10k, 3 rounds
    python bench/fair_bench.py --only none        # the queue without tenants alone

In process only: over Redis, `bench/redis_fair_bench.py` measures the same settings
(submitted first by a client, then one serving process; the server's own time in the
scripts too).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import _common
import trio
import trio.testing
from _common import Timing, best, fmt_rate, median
from rich.console import Console
from rich.table import Table

from queueing import Queue, QueueSystem, Worker, open_system

WORKERS = 8
#: Scenario name: the number of tenants (None: no tenant at all).
SCENARIOS: dict[str, int | None] = {
    "none": None,
    "1": 1,
    "100": 100,
    "10000": 10_000,
}
console = Console(width=120)


class Noop(Worker):
    """Returns its payload; a worker's first task waits for the start signal."""

    def __init__(self, go: trio.Event) -> None:
        self.go = go

    async def handle(self, payload: int) -> int:
        if not self.go.is_set():
            await self.go.wait()
        return payload


def spread(tenants: int) -> Any:
    """The queue's `tenant` function: task i is tenant i mod `tenants`'s."""
    names = [f"tenant-{i}" for i in range(tenants)]

    def tenant_of(payload: int) -> str:
        return names[payload % tenants]

    return tenant_of


async def one_run(n: int, tenants: int | None) -> tuple[Timing, Timing, Timing]:
    """(submit, drain, drain's CPU time) timings of one run."""
    go = trio.Event()
    spec = Queue(
        "fair_bench",
        Noop,
        worker_kwargs={"go": go},
        workers=WORKERS,
        maxsize=max(n, 10_000),
        tenant=None if tenants is None else spread(tenants),
    )
    async with open_system(spec) as system:
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        receipts = await system.submit_many("fair_bench", range(n))
        submitted = time.perf_counter() - start
        if system.stats()["fair_bench"].submitted != n:
            raise AssertionError("not every task was accepted")
        await _wait_started(system)
        start = time.perf_counter()
        cpu = time.process_time()
        go.set()
        await system.drain()
        drained = time.perf_counter() - start
        cpu = time.process_time() - cpu
        total = 0
        for receipt in receipts:
            total += await receipt
        if total != n * (n - 1) // 2:
            raise AssertionError(f"wrong results: sum {total} for {n} tasks")
    return (n, submitted), (n, drained), (n, cpu)


async def _wait_started(system: QueueSystem) -> None:
    """Until every worker holds its first task (in process: at once)."""
    for _ in range(1000):
        if system.stats()["fair_bench"].in_flight >= WORKERS:
            return
        await trio.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best and median)")
    parser.add_argument("--quick", action="store_true", help="N=10k, 3 rounds")
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="these scenarios only"
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeat = 10_000, 3
    names = args.only or list(SCENARIOS)
    console.print(_common.machine())
    console.print(
        f"memory://, {args.n:,} no-op tasks per run, "
        f"{WORKERS} workers, best and median of {args.repeat} rounds"
    )
    trio.run(one_run, min(args.n, 2_000), SCENARIOS[names[-1]])  # warm-up
    submits: dict[str, list[Timing]] = {name: [] for name in names}
    drains: dict[str, list[Timing]] = {name: [] for name in names}
    cpus: dict[str, list[Timing]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:
            submit, drain, cpu = trio.run(one_run, args.n, SCENARIOS[name])
            submits[name].append(submit)
            drains[name].append(drain)
            cpus[name].append(cpu)
    table = Table(title="fair share: tasks/s (best / median)")
    columns = ("active tenants", "drain (take, run, settle)", "CPU µs/task", "submit_many")
    for column in columns:
        table.add_column(column, justify="right")
    for name in names:
        tenants = SCENARIOS[name]
        table.add_row(
            "no tenant" if tenants is None else f"{tenants:,}",
            f"{fmt_rate(best(drains[name]))} / {fmt_rate(median(drains[name]))}",
            f"{1e6 / best(cpus[name]):.1f} / {1e6 / median(cpus[name]):.1f}",
            f"{fmt_rate(best(submits[name]))} / {fmt_rate(median(submits[name]))}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

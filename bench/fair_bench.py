"""Fair share's cost per task in process (memory://): a queue without tenants, and with
1, 10, 100 and 10,000 active tenants (issue #18: the cost of taking the next task must
not grow with the number of tenants).

What is measured, like with like: a steady state with the same backlog whatever the
number of tenants. `--backlog` tasks (50,000) are submitted first, task i of tenant
i mod T; then each task's handler submits the next task of its tenant (task i + backlog,
the same tenant) until `--n` tasks have run. So while it is timed the queue always holds
the same number of tasks (waiting, or running in one of the 8 no-op workers), every one
of the T tenants has a flow of backlog / T of them, and each task is one submit (from
the handler), one take from the fair store, one run and one settle. With a backlog of
one task per tenant (`--backlog 10000 --only 10000`), a flow ends at each take and
starts again at the handler's submit: the churn of tenants with one task waiting each.

- default: CPU time (this process's) per task over the steady part (from task
  2 x backlog to task n - backlog), best and median of `--repeat` rounds (each scenario
  once per round, after an untimed warm-up), and the wall-clock rate over the same part;
- `--callgrind`: instructions per task under `valgrind --tool=callgrind` (load-independent):
  two whole runs that differ only by the length of the steady part (the same backlog
  first, the same tail after), their difference over the tasks between; `--cache` adds
  callgrind's cache simulation (first-level and last-level data misses per task).

    python bench/fair_bench.py                       # CPU per task, 5 rounds
    python bench/fair_bench.py --callgrind --cache   # instructions and misses per task
                                                     # (backlog 20,000: 50 times slower)
    python bench/fair_bench.py --backlog 10000 --only 10 --only 10000

Over Redis, `bench/redis_fair_bench.py` measures its own settings (submitted first by a
client, then one serving process; the server's own time in the scripts too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _common
import trio
import trio.testing
from rich.console import Console
from rich.table import Table

from queueing import Queue, QueueSystem, Worker, open_system

WORKERS = 8
BACKLOG = 50_000
#: Under callgrind (some 50 times slower): the backlog, and the lengths of the two runs
#: past it.
CALLGRIND_BACKLOG = 20_000
CALLGRIND_RUNS = (1_000, 5_000)
#: Scenario name: the number of tenants (None: no tenant at all).
SCENARIOS: dict[str, int | None] = {
    "none": None,
    "1": 1,
    "10": 10,
    "100": 100,
    "10000": 10_000,
}
console = Console(width=120)


class Run:
    """What the handlers share: the system, the run's sizes, the CPU and wall marks."""

    def __init__(self, n: int, backlog: int) -> None:
        self.n = n
        self.backlog = backlog
        self.system: QueueSystem | None = None
        self.go = trio.Event()
        self.marks = (2 * backlog, n - backlog)  # the steady part: tasks [first, last)
        self.cpu = [0.0, 0.0]
        self.wall = [0.0, 0.0]


class Refill(Worker):
    """A no-op that submits the next task of its tenant (task i + backlog) while there is
    one to run; a worker's first task waits for the start signal."""

    def __init__(self, shared: Run) -> None:
        self.shared = shared

    async def handle(self, payload: int) -> int:
        run = self.shared
        if not run.go.is_set():
            await run.go.wait()
        if payload in run.marks:
            at = run.marks.index(payload)
            run.cpu[at] = time.process_time()
            run.wall[at] = time.perf_counter()
        following = payload + run.backlog
        if following < run.n:
            assert run.system is not None
            await run.system.submit("fair_bench", following)
        return payload


def spread(tenants: int) -> Any:
    """The queue's `tenant` function: task i is tenant i mod `tenants`'s."""
    names = [f"tenant-{i}" for i in range(tenants)]

    def tenant_of(payload: int) -> str:
        return names[payload % tenants]

    return tenant_of


async def one_run(n: int, tenants: int | None, backlog: int) -> tuple[float, float, float]:
    """(CPU seconds per task and tasks/s wall over the steady part, submit_many of the
    backlog in tasks/s) of one run of n tasks."""
    run = Run(n, backlog)
    spec = Queue(
        "fair_bench",
        Refill,
        worker_kwargs={"shared": run},
        workers=WORKERS,
        maxsize=backlog + 10_000,
        tenant=None if tenants is None else spread(tenants),
    )
    async with open_system(spec) as system:
        run.system = system
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        await system.submit_many("fair_bench", range(backlog))
        submitted = time.perf_counter() - start
        run.go.set()
        await system.drain()
        if system.stats()["fair_bench"].succeeded != max(n, backlog):
            raise AssertionError(f"not every task ran: {system.stats()['fair_bench']}")
    tasks = run.marks[1] - run.marks[0]
    if tasks <= 0:
        return (0.0, 0.0, backlog / submitted)  # too short for a steady part (--run)
    return (
        (run.cpu[1] - run.cpu[0]) / tasks,
        tasks / (run.wall[1] - run.wall[0]),
        backlog / submitted,
    )


def instructions(n: int, tenants: str, backlog: int, cache: bool) -> dict[str, int]:
    """callgrind's totals of one whole run (a fixed hash seed): Ir, and with `cache` the
    data misses D1mr+D1mw and DLmr+DLmw."""
    command = [sys.executable, __file__, "--run", str(n), "--only", tenants]
    counts = _common.callgrind_totals([*command, "--backlog", str(backlog)], cache=cache)
    figures = {"Ir": counts["Ir"]}
    if cache:
        figures["D1"] = counts["D1mr"] + counts["D1mw"]
        figures["LL"] = counts["DLmr"] + counts["DLmw"]
    return figures


def callgrind(names: list[str], backlog: int, cache: bool) -> None:
    title = f"fair share: per task in the steady state, {backlog:,} tasks queued (callgrind)"
    table = Table(title=title)
    for column in ("active tenants", "tasks per tenant", "instructions"):
        table.add_column(column, justify="right")
    if cache:
        table.add_column("D1 misses", justify="right")
        table.add_column("LL misses", justify="right")
    for name in names:
        tenants = SCENARIOS[name]
        small, large = (backlog + extra for extra in CALLGRIND_RUNS)
        with ThreadPoolExecutor(2) as pool:  # two processes: one per core
            low, high = pool.map(
                instructions, (small, large), [name] * 2, [backlog] * 2, [cache] * 2
            )
        per = {key: (high[key] - low[key]) / (large - small) for key in low}
        row = [
            "no tenant" if tenants is None else f"{tenants:,}",
            "-" if tenants is None else f"{backlog // tenants:,}",
            f"{per['Ir']:,.0f}",
        ]
        if cache:
            row += [f"{per['D1']:,.1f}", f"{per['LL']:,.1f}"]
        table.add_row(*row)
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4 * BACKLOG, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best and median)")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="tasks queued throughout")
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="these scenarios only"
    )
    parser.add_argument("--callgrind", action="store_true", help="instructions per task")
    parser.add_argument("--cache", action="store_true", help="--callgrind: cache misses too")
    parser.add_argument("--run", type=int, metavar="N", help="one run of N tasks, nothing else")
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    if args.backlog is None:
        args.backlog = CALLGRIND_BACKLOG if args.callgrind else BACKLOG
    for name in names:
        tenants = SCENARIOS[name]
        if tenants is not None and args.backlog % tenants:
            parser.error(f"--backlog {args.backlog} is not a multiple of {tenants} tenants")
    if args.run is not None:
        trio.run(one_run, args.run, SCENARIOS[names[0]], args.backlog)
        return 0
    console.print(_common.machine())
    if args.callgrind:
        callgrind(names, args.backlog, args.cache)
        return 0
    console.print(
        f"memory://, {args.n:,} no-op tasks per run, {WORKERS} workers, "
        f"{args.backlog:,} tasks queued, best and median of {args.repeat} rounds"
    )
    if args.n < 3 * args.backlog + 1000:
        parser.error(f"--n {args.n} is too short for a steady part: 3 x backlog + 1000 at least")
    trio.run(one_run, 4000, 10, 1000)  # warm-up
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:
            runs[name].append(trio.run(one_run, args.n, SCENARIOS[name], args.backlog))
    table = Table(title="fair share: the steady state, per task (best / median)")
    columns = (
        "active tenants",
        "tasks per tenant",
        "CPU µs/task",
        "tasks/s (wall)",
        "submit_many",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for name in names:
        tenants = SCENARIOS[name]
        cpus = [run[0] * 1e6 for run in runs[name]]
        walls = [run[1] for run in runs[name]]
        submits = [run[2] for run in runs[name]]
        table.add_row(
            "no tenant" if tenants is None else f"{tenants:,}",
            "-" if tenants is None else f"{args.backlog // tenants:,}",
            f"{min(cpus):.2f} / {statistics.median(cpus):.2f}",
            f"{max(walls):,.0f} / {statistics.median(walls):,.0f}",
            f"{max(submits):,.0f} / {statistics.median(submits):,.0f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

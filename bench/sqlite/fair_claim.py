"""The cost of taking a task from a `sqlite://` queue with 0 (no tenants: the plain
path), 10 and 10,000 tenants with tasks waiting.

A fresh file per case holds BACKLOG ready tasks spread evenly over the tenants (none:
plain FIFO). Then the broker's own requests run on its connection, as its writer thread
runs them (without the event loop's round trip): a claim of one task (`_ops.claim`, its
transaction) then its outcome (`_ops.settle`, another), CLAIMS times after an untimed
warm-up; the figure is the mean CPU time (this thread's: user and system, so the load
of a shared machine does not count) of one claim + settle, in microseconds
(`synchronous=normal`). With PYTHONPATH at another tree (main), the same script measures
its code: the case without tenants is the comparison of the plain path.
Each case runs `--repeat` times (3), in rounds; best and median are printed. With
`--cap`, the queue has `tenant_concurrency` (every claim then also reads its tenant's
running count).

    python bench/sqlite/fair_claim.py
    python bench/sqlite/fair_claim.py --backlog 100000 --claims 5000
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from queueing import TaskState
from queueing.brokers import QueueInfo, Task
from queueing.brokers.sqlite import _ops
from queueing.brokers.sqlite._records import task_row
from queueing.brokers.sqlite._schema import open_database
from queueing.brokers.sqlite._settings import parse_url
from queueing.brokers.sqlite._thread import Batch, Executor, Failure

WARMUP = 200


def one_case(directory: Path, tenants: int, backlog: int, claims: int, cap: bool) -> float:
    path = directory / f"fair-{tenants}-{time.monotonic_ns()}.db"
    info = QueueInfo("bench", 10_000_000, 1 << 20, 60.0, tenant_concurrency=4 if cap else None)
    settings = parse_url(f"sqlite:///{path}?synchronous=normal")
    conn = open_database(settings)
    executor = Executor(conn, settings, "bench-owner")
    # `_ops.claim` takes the QueueInfo (its name before fair share: compare with main).
    by_name = "queue" in inspect.signature(_ops.claim).parameters

    def run(op: Any, *args: Any, lease: bool = False) -> Any:
        batch = Batch(lease)
        batch.ops.append((op, args))
        batch.writes = True
        executor.run([batch], quick=lease)
        result = batch.results[0]
        if type(result) is Failure:
            raise result.exc
        return result

    rows = []
    for i in range(backlog):
        task = Task(f"bench:{i}", "bench", i, time.time())
        if tenants:
            task.tenant = f"tenant-{i % tenants}"
        rows.append((task.id, task_row(task)))
        if len(rows) == 1000:
            run(_ops.accept_many, info, rows)
            rows = []
    if rows:
        run(_ops.accept_many, info, rows)

    def take(count: int) -> None:
        for _ in range(count):
            [task], _ = run(_ops.claim, info.name if by_name else info, 1, 30.0, lease=True)
            counts = (task.attempts + 1, task.deliveries + 1, time.time())
            run(_ops.settle, info, task.id, TaskState.SUCCEEDED, "null", None, counts, 0.0)

    take(WARMUP)
    started = time.thread_time()
    take(claims)
    elapsed = time.thread_time() - started
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return elapsed / claims * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cap", action="store_true", help="with tenant_concurrency=4")
    parser.add_argument("--tenants", type=int, nargs="*", default=[0, 10, 10_000])
    args = parser.parse_args()
    results: dict[int, list[float]] = {n: [] for n in args.tenants}
    with tempfile.TemporaryDirectory(dir=".") as directory:
        for _ in range(args.repeat):
            for tenants in args.tenants:
                cost = one_case(Path(directory), tenants, args.backlog, args.claims, args.cap)
                results[tenants].append(cost)
    print(
        f"backlog {args.backlog}, {args.claims} claims, cap={args.cap}: "
        "us of CPU per claim + settle"
    )
    for tenants, costs in results.items():
        label = "no tenants" if tenants == 0 else f"{tenants} tenants"
        print(f"  {label:>14}: best {min(costs):7.1f}  median {statistics.median(costs):7.1f}")


if __name__ == "__main__":
    main()

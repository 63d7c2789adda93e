"""The cost of taking a task from a `sqlite://` queue with 0 (no tenants: the plain
path), 10 and 10,000 tenants with tasks waiting.

A fresh file per case holds BACKLOG ready tasks spread evenly over the tenants (none:
plain FIFO). Then one `SqliteBroker` claims tasks one at a time (`claim(queue, 1)`) and
settles each (`settle`, written with the next claim's batch), CLAIMS times, after an
untimed warm-up; the figure is the mean time of one claim + settle, in microseconds.
Each case runs `--repeat` times (3), in rounds; best and median are printed. With
`--cap`, the queue has `tenant_concurrency` (every claim then also reads its tenant's
running count).

    python bench/sqlite/fair_claim.py
    python bench/sqlite/fair_claim.py --backlog 100000 --claims 5000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from queueing.brokers import QueueInfo, SqliteBroker, Task
from queueing.brokers.sqlite import _broker

WARMUP = 200


async def one_case(directory: Path, tenants: int, backlog: int, claims: int, cap: bool) -> float:
    path = directory / f"fair-{tenants}-{time.monotonic_ns()}.db"
    info = QueueInfo("bench", 10_000_000, 1 << 20, 60.0, tenant_concurrency=4 if cap else None)
    broker = SqliteBroker(f"sqlite:///{path}?synchronous=normal")
    async with broker.connect({"bench": info}, serve=True):
        chunk = []
        for i in range(backlog):
            task = Task(f"bench:{i}", "bench", i, time.time())
            if tenants:
                task.tenant = f"tenant-{i % tenants}"
            chunk.append(task)
            if len(chunk) == 5000:
                await broker.accept_many(info, chunk)
                chunk = []
        if chunk:
            await broker.accept_many(info, chunk)
        await broker.flush()

        async def take(count: int) -> None:
            for _ in range(count):
                [task] = await broker.claim(info, 1, wait=0)
                await broker.settle(info, task, _broker.TaskState.SUCCEEDED, None)

        await take(WARMUP)
        started = time.perf_counter()
        await take(claims)
        await broker.flush()
        elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed / claims * 1e6


async def main() -> None:
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
                cost = await one_case(Path(directory), tenants, args.backlog, args.claims, args.cap)
                results[tenants].append(cost)
    print(f"backlog {args.backlog}, {args.claims} claims, cap={args.cap}: us per claim + settle")
    for tenants, costs in results.items():
        label = "no tenants" if tenants == 0 else f"{tenants} tenants"
        print(f"  {label:>14}: best {min(costs):7.1f}  median {statistics.median(costs):7.1f}")


if __name__ == "__main__":
    trio.run(main)

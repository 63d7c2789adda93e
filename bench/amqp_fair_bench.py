"""Fair share over RabbitMQ (`amqp://`): the per-task cost of a claim and its settle with
no `tenant=` (the RabbitMQ path) and with 1, 100 and 10,000 tenants waiting (issue #18:
taking a task must not cost more with more tenants).

At the broker's level (no engine): `--backlog` tasks are accepted first (in turns over the
tenants), then `--measured` times one task is claimed and settled, one after the other
(each claim of a fair queue is one round trip to the results store; with no tenant the
claim takes RabbitMQ's delivery). The figure is the mean wall time per task of that loop;
each setting runs `--repeat` times, and the best and the median are printed.

Needs RabbitMQ (the URL's host, guest/guest) and a Redis for results: pass
`--results redis://127.0.0.1:PORT/0` (a private one: the bench writes under a fresh
prefix and leaves its keys there).

    python bench/amqp_fair_bench.py --results redis://127.0.0.1:6391/0
    python bench/amqp_fair_bench.py --results ... --backlog 5000 --measured 200 --repeat 1
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time

import trio

from queueing._task import Task, TaskState
from queueing.brokers import QueueInfo
from queueing.brokers.amqp import RabbitMQBroker


async def one(amqp: str, results: str, tenants: int | None, backlog: int, measured: int) -> float:
    """Milliseconds per claimed and settled task, with `tenants` waiting (None: none)."""
    prefix = f"fairbench{secrets.token_hex(3)}"
    broker = RabbitMQBroker(f"{amqp}?results={results}&prefix={prefix}")
    info = QueueInfo("b", maxsize=10**7, max_payload=10_000, result_ttl=60)
    async with broker.connect({"b": info}, serve=True), trio.open_nursery() as nursery:
        nursery.start_soon(broker.run)
        tasks = []
        for i in range(backlog):
            task = Task(f"b:{i}", "b", i, time.time())
            if tenants is not None:
                task.tenant = f"t{i % tenants}"
            tasks.append(task)
        for start in range(0, backlog, 500):
            await broker.accept_many(info, tasks[start : start + 500])
        for task in await broker.claim(info, 1, wait=5):  # warm up
            await broker.settle(info, task, TaskState.SUCCEEDED, 1)
        began = time.perf_counter()
        done = 0
        while done < measured:
            for task in await broker.claim(info, 1, wait=5):
                await broker.settle(info, task, TaskState.SUCCEEDED, 1)
                done += 1
        elapsed = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    await trio.lowlevel.checkpoint()
    async with broker.connect({}, serve=False):
        await broker._rabbit.delete([f"{prefix}:b", f"{prefix}:b:dead"])
    return elapsed / measured * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--results", required=True, help="redis://host:port/db")
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--measured", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for tenants in [None, 1, 100, 10_000]:
        runs = [
            await one(args.amqp, args.results, tenants, args.backlog, args.measured)
            for _ in range(args.repeat)
        ]
        label = "no tenant" if tenants is None else f"{tenants} tenants"
        print(
            f"{label:>14}: best {min(runs):.2f} ms/task, median "
            f"{statistics.median(runs):.2f} ms/task",
            flush=True,
        )


if __name__ == "__main__":
    trio.run(main)

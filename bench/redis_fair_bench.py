"""Fair share over Redis: the per-task cost with 0 (no `tenant=`), 1, 100 and 10,000
tenants waiting (issue #18: taking a task must not cost more with more tenants).

One private redis-server (a free port, `--save "" --appendonly no`). For each tenant
count: N tasks are submitted first (in turns over the tenants, N / tenants each, every
tenant's tasks in one `submit_many`), then one process serves the queue with 8 workers
(no-op handler) until every task is done. Figures per task, from that drain:

- wall: the drain's seconds / N (one process, 8 workers, the claims' and outcomes'
  round trips included);
- redis: the server's own time in the queue's scripts (`INFO commandstats`, microseconds of
  `evalsha`, reset before the drain) / N: what the Lua costs, the figure that would grow
  with the number of tenants if the order did.

Each setting runs `--repeat` times; the table gives the best and the median.

    python bench/redis_fair_bench.py            # N=20,000, 3 runs each
    python bench/redis_fair_bench.py -n 5000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import coredis
import trio

from queueing import Queue, Worker, connect, open_system

WORKERS = 8


class Noop(Worker):
    async def handle(self, payload: int) -> int:
        return payload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def script_usec(redis: coredis.Redis[str]) -> float:
    stats = await redis.info("commandstats")
    return sum(
        float(value.get("usec", 0)) if isinstance(value, dict) else 0.0
        for name, value in stats.items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )


async def one_run(port: int, tenants: int, n: int, run: int) -> tuple[float, float]:
    prefix = f"fairbench{tenants}x{run}"
    url = f"redis://127.0.0.1:{port}/0?prefix={prefix}"
    queue = Queue("job", Noop, workers=WORKERS, maxsize=n + 1)
    async with connect(url, queue) as client:
        if tenants == 0:
            receipts = await client.submit_many("job", list(range(n)))
        else:
            receipts = []
            each = max(1, n // tenants)
            for t in range(tenants):
                receipts += await client.submit_many(
                    "job", list(range(t * each, (t + 1) * each)), tenant=f"tenant-{t}"
                )
    redis: coredis.Redis[str] = coredis.Redis("127.0.0.1", port, decode_responses=True)
    async with redis:
        await redis.config_resetstat()
        started = time.perf_counter()
        async with open_system(queue, broker=url) as system:
            for receipt in receipts:
                await system.receipt(receipt.id).result(timeout=600)
        wall = time.perf_counter() - started
        usec = await script_usec(redis)
    done = len(receipts)
    return wall / done * 1e6, usec / done


async def main(args: argparse.Namespace) -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="fairbench")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything runs
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        redis: coredis.Redis[str] = coredis.Redis("127.0.0.1", port, decode_responses=True)
        async with redis:
            with trio.fail_after(10):
                while True:
                    try:
                        await redis.ping()
                        break
                    except Exception:
                        await trio.sleep(0.05)
        rows: list[tuple[int, list[float], list[float]]] = []
        for tenants in args.tenants:
            walls, scripts = [], []
            for run in range(args.repeat):
                wall, script = await one_run(port, tenants, args.n, run)
                walls.append(wall)
                scripts.append(script)
                print(f"tenants={tenants} run {run}: {wall:.0f} us/task, {script:.1f} in scripts")
            rows.append((tenants, walls, scripts))
        print(f"\nN={args.n}, {WORKERS} workers, 1 process, {args.repeat} run(s); best / median")
        print("| tenants | wall us/task | Redis script us/task |")
        print("|---:|---:|---:|")
        for tenants, walls, scripts in rows:
            label = "none" if tenants == 0 else f"{tenants:,}"
            print(
                f"| {label} | {min(walls):.0f} / {statistics.median(walls):.0f} "
                f"| {min(scripts):.1f} / {statistics.median(scripts):.1f} |"
            )
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--tenants",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0, 1, 100, 10_000],
        help="tenant counts (0: no tenant=)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main, parse())

"""Load-free costs of the RabbitMQ broker (`amqp://`): instructions counted by callgrind,
which do not move with the machine's load the way CPU seconds and tasks/s do.

Two parts:

- `store`: the results store's Redis work per task, script by script: the client's
  `reserve.lua` (a task's record) and `confirm.lua` (RabbitMQ confirmed its message), in
  calls of `--submits` tasks (30, about what the bench's 64 concurrent submits share),
  and the worker's `check.lua` (is each delivery its task's message?) and `finish_many`
  (the outcomes of a batch, `finish.lua` per task), in calls of `--batch` (6, the
  worker's usual claim). A private redis-server runs under callgrind; the calls go
  through the broker's own `Store`. Figures: redis-server instructions per task.
- `processes`: the bench's set-up (`bench/amqp_bench.py`: `queueing worker
  ours_tasks:job --concurrency 8`, the bench's client submitting and awaiting N tasks
  with 64 concurrent submits, RabbitMQ and a private Redis), with the worker and the
  client under callgrind (the worker counting from after a warm-up; the client whole),
  for N and 3N tasks: the difference over 2N is the cost per task, start-up and imports
  cancelled out. Both run ~50x slower under callgrind, so their batches differ from a
  real run's: compare figures of this script with each other (before and after a
  change), not with the bench's CPU figures. The client's figure repeats (543k and 544k
  instructions per task in two runs); the worker's does not (159k and 519k): it waits on
  the slowed client, so its batches and its timers follow that client's speed.

    python bench/amqp_cost.py                      # store part, N=3000
    python bench/amqp_cost.py --part processes --n 1000
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import amqp_bench as bench  # noqa: E402

from queueing._task import Task, TaskState  # noqa: E402
from queueing.brokers._contract import QueueInfo  # noqa: E402
from queueing.brokers.amqp._store import Store, StoreCalls  # noqa: E402
from queueing.brokers.redis import _keys as k  # noqa: E402
from queueing.brokers.redis._wire import encode_envelope  # noqa: E402

QUEUE = QueueInfo("job", maxsize=1_000_000, max_payload=4096, result_ttl=60.0)


def instructions(prefix: Path) -> int:
    """The instructions a callgrind run counted (its output files `prefix*`; several when
    it was dumped before the end: the largest total of each, summed)."""
    total = 0
    for path in prefix.parent.glob(prefix.name + "*"):
        found = 0
        with open(path) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    found = max(found, int(line.split()[1]))
        total += found
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def control(pid: int, flag: str) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


# -- the store's scripts ------------------------------------------------------------------


def store_part(args: argparse.Namespace, work: Path) -> None:
    port = free_port()
    out = work / "redis.cg"
    server = _common.start_redis_server(port, work, callgrind=out, instr_atstart=False)
    counts: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if bench.redis_command(port, "PING").startswith(b"+PONG"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("redis-server under callgrind did not start")
            time.sleep(0.2)
        counts = trio.run(store_run, args, port, server.pid, out)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
    n = args.n
    print(
        f"redis-server instructions per task ({n} tasks; submits in batches of "
        f"{args.submits}, claims of {args.batch}): reserve.lua {counts['reserve'] / n:,.0f}, "
        f"confirm.lua {counts['confirm'] / n:,.0f}, check.lua {counts['check'] / n:,.0f}, "
        f"finish_many {counts['finish'] / n:,.0f}, all {sum(counts.values()) / n:,.0f}"
    )


async def store_run(args: argparse.Namespace, port: int, pid: int, out: Path) -> dict[str, int]:
    calls = StoreCalls(f"redis://127.0.0.1:{port}/0", connect_timeout=60, block=5)
    store = Store(calls, k.Keys("cost"), "client-1")

    async def ready() -> None:
        pass

    counts: dict[str, int] = {}
    async with calls.connected(ready):
        tasks = [Task(f"job:t{i}", "job", i, time.time()) for i in range(args.n)]

        async def measured(name: str, step: object, size: int) -> None:
            before = instructions(out)
            control(pid, "-i=on")
            for start in range(0, args.n, size):
                await step(tasks[start : start + size])  # type: ignore[operator]
            control(pid, "-i=off")
            control(pid, "-d")
            counts[name] = instructions(out) - before

        async def reserve(batch: list[Task]) -> None:
            entries = [(t, f"n{t.id}", encode_envelope(t), "", "client-1") for t in batch]
            codes = await store.reserve([(QUEUE, entries)])
            assert codes == [[1] * len(batch)], codes

        async def confirm(batch: list[Task]) -> None:
            store.confirmed("job", [t.id for t in batch])
            ops = store.take()
            store.answered(ops, await calls.pipelined("confirm", lambda p: store.fill(p, ops)))

        async def check(batch: list[Task]) -> None:
            verdicts = await store.check("job", [(t.id, f"n{t.id}") for t in batch])
            assert all(v.startswith("+") for v in verdicts), verdicts

        async def finish(batch: list[Task]) -> None:
            answers: list[object] = []
            for task in batch:
                task.settle(TaskState.SUCCEEDED, task.payload, None, time.time())
                store.finish(QUEUE, task, f"n{task.id}", "client-1", "", answers.append)
            ops = store.take()
            store.answered(ops, await calls.pipelined("finish", lambda p: store.fill(p, ops)))
            assert answers == [1] * len(batch), answers

        await measured("reserve", reserve, args.submits)
        await measured("confirm", confirm, args.submits)
        await measured("check", check, args.batch)
        await measured("finish", finish, args.batch)
    return counts


# -- the worker and client processes ------------------------------------------------------


def processes_part(args: argparse.Namespace, work: Path) -> None:
    first = processes_run(args, work, args.n)
    second = processes_run(args, work, 3 * args.n)
    worker = (second[0] - first[0]) / (2 * args.n)
    client = (second[1] - first[1]) / (2 * args.n)
    print(
        f"instructions per task ({args.n} and {3 * args.n} tasks): worker {worker:,.0f}, "
        f"client {client:,.0f}"
    )


def processes_run(args: argparse.Namespace, work: Path, n: int) -> tuple[int, int]:
    python = sys.executable
    with bench.private_redis(work) as (port, _):
        redis = f"redis://127.0.0.1:{port}/0"
        queue = f"cost-amqp-{secrets.token_hex(3)}"
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        # Under callgrind (and a crowded machine) connecting takes longer than the
        # default 5 s allows.
        slow = f"{args.amqp}{'&' if '?' in args.amqp else '?'}connect_timeout=300"
        env.update(
            BENCH_AMQP_URL=slow,
            BENCH_REDIS_URL=redis,
            BENCH_QUEUE=queue,
            BENCH_DEADLINE="3600",
            BENCH_CONNECT_TIMEOUT="300",
            PYTHONPATH=os.pathsep.join([str(bench.PEERS), str(ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        url = f"{slow}&results={redis}&prefix={queue}"
        worker_out, client_out = work / f"worker-{n}.cg", work / f"client-{n}.cg"
        ours = next(fw for fw in bench.frameworks() if fw.name == "ours")
        ours.python = python
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={worker_out}",
            *ours.worker_argv(url),  # the bench's own worker command
        ]
        worker = bench.spawn(argv, work / "worker.log", env)

        def drive(*more: str, under: tuple[str, ...] = ()) -> None:
            done = subprocess.run(
                [*under, python, str(bench.PEERS / "drive.py"), "ours", *more],
                cwd=bench.PEERS,
                env=env,
                capture_output=True,
                text=True,
            )
            last = (done.stdout.strip().splitlines() or ["{}"])[-1]
            if '"error"' in last or done.returncode:
                raise SystemExit(f"the client failed: {last}\n{done.stderr[-2000:]}")

        try:
            drive("ready", "1", "600")
            drive("throughput", "300")  # warm-up, not counted
            control(worker.pid, "-i=on")
            client = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={client_out}")
            drive("throughput", str(n), under=client)
            control(worker.pid, "-i=off")
            control(worker.pid, "-d")
        finally:
            bench.stop(worker, grace=120)
            bench.delete_queues(args.amqp, [f"{queue}:job", f"{queue}:job:dead"])
        return instructions(worker_out), instructions(client_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("store", "processes"), default="store")
    parser.add_argument("--n", type=int, default=3000, help="tasks (processes: N and 3N)")
    parser.add_argument("--batch", type=int, default=6, help="store: tasks per claim")
    parser.add_argument("--submits", type=int, default=30, help="store: tasks per reserve")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amqp-cost-") as tmp:
        if args.part == "store":
            store_part(args, Path(tmp))
        else:
            processes_part(args, Path(tmp))


if __name__ == "__main__":
    main()

"""Redis's own cost per task, from a fixed replay through the Redis broker (load-free).

The throughput bench (bench/redis_bench.py) measures Redis's CPU per task from `INFO cpu`
during a real run; on a loaded machine that figure moves with the load (caches, context
switches) and with how the run happened to batch. This replays one fixed pattern through
`RedisBroker` against a private redis-server, so that Redis gets the same commands every
time:

- blocks of `--block` tasks (64) submitted in one `accept_many`;
- claimed `--claim` (8) at a time, each task settled (succeeded, its payload as result)
  before the next claim, which takes those outcomes along (as a worker's does);
- every outcome of the block waited for with `wait_settled` (the client's notices).

`--phase submit` replays the submits alone, `--phase claim` the submits and claims (no
outcome written: the tasks stay claimed): the differences between the three give what
each step costs Redis.

It reports per task: Redis's commands (`INFO commandstats`: calls and microseconds), the
reads of client input (`INFO stats`: about one per round trip), Redis's CPU (`INFO cpu`,
user + sys), this process's CPU (the broker's client and worker side) and, with
`--callgrind`, the instructions redis-server
ran (`valgrind --tool=callgrind`, two runs of N and 3N tasks: the difference over 2N, so
start-up and shutdown cancel out; `serverCron`'s share, which grows with wall time, shown
apart). Instruction counts do not depend on the machine's load; CPU times do.

    python bench/redis_replay.py                    # N=3072: commands and CPU per task
    python bench/redis_replay.py --callgrind        # + instructions (needs valgrind)
    python bench/redis_replay.py --callgrind --phase submit     # the submits alone
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queueing._task import Task, TaskState  # noqa: E402
from queueing.brokers._contract import QueueInfo  # noqa: E402
from queueing.brokers.redis import RedisBroker  # noqa: E402

QUEUE = QueueInfo("job", maxsize=1_000_000, max_payload=4096, result_ttl=3600.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def info(port: int, section: str) -> dict[str, str]:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", section],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def cpu(port: int) -> tuple[float, float]:
    figures = info(port, "cpu")
    return float(figures["used_cpu_user"]), float(figures["used_cpu_sys"])


def commandstats(port: int) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for name, rest in info(port, "commandstats").items():
        if name.startswith("cmdstat_"):
            figures = dict(part.split("=", 1) for part in rest.split(","))
            out[name[len("cmdstat_") :]] = (int(figures["calls"]), float(figures["usec"]))
    return out


async def replay(url: str, n: int, block: int, claim: int, phase: str = "full") -> None:
    broker = RedisBroker(url, prefix="replay", connect_timeout=120)  # under valgrind, loaded
    async with broker.connect({QUEUE.name: QUEUE}, serve=True), trio.open_nursery() as nursery:
        nursery.start_soon(broker.run)
        serial = 0
        run = secrets.token_hex(4)  # ids new to Redis in every replay
        for _ in range(0, n, block):
            tasks = []
            for _ in range(block):
                serial += 1
                tasks.append(Task(f"job:{run}{serial:08d}", "job", serial, time.time()))
            assert await broker.accept_many(QUEUE, tasks) == block
            if phase == "submit":
                continue
            done = 0
            while done < block:
                got = await broker.claim(QUEUE, claim, wait=1.0)
                assert got, "nothing to claim"
                if phase == "full":
                    for task in got:
                        await broker.settle(QUEUE, task, TaskState.SUCCEEDED, task.payload)
                done += len(got)
            if phase != "full":
                continue
            waiting = {t.id: t.payload for t in tasks}
            while waiting:
                settled = await broker.wait_settled(set(waiting), 30.0)
                assert settled, f"no outcome within 30 s for {len(waiting)} task(s)"
                for task in settled:
                    assert task.result == waiting.pop(task.id), task
        nursery.cancel_scope.cancel()


def run_once(n: int, args: argparse.Namespace, callgrind: Path | None) -> dict[str, Any]:
    """One private redis-server, one replay of n tasks; figures per task."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="redis-replay-"))
    server = _common.start_redis_server(port, work, callgrind=callgrind)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                cli(port, "PING")
                if "PONG" in cli(port, "PING"):
                    break
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.2)
        url = f"redis://127.0.0.1:{port}/0"
        # A warm-up block (scripts loaded, group made), then the measured replay.
        trio.run(replay, url, args.block, args.block, args.claim, args.phase)
        cli(port, "CONFIG", "RESETSTAT")
        user0, sys0 = cpu(port)
        reads0 = int(info(port, "stats")["total_reads_processed"])
        started = time.monotonic()
        mine0 = time.process_time()
        trio.run(replay, url, n, args.block, args.claim, args.phase)
        wall = time.monotonic() - started
        user1, sys1 = cpu(port)
        mine = time.process_time() - mine0
        reads = int(info(port, "stats")["total_reads_processed"]) - reads0
        stats = commandstats(port)
        cli(port, "SHUTDOWN", "NOSAVE")
    finally:
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "n": n,
        "wall": wall,
        "user": (user1 - user0) / n,
        "sys": (sys1 - sys0) / n,
        "reads": reads / n,
        "python": mine / n,
        "commands": {name: (calls / n, usec / n) for name, (calls, usec) in stats.items()},
    }


def instructions(path: Path) -> tuple[int, int]:
    """Total instructions of a callgrind run, and serverCron's inclusive share."""
    total = 0
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cron = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\?\?\?|\S+):(\S+)", line)
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
        elif m and m.group(2).startswith("serverCron") and not cron:
            cron = int(m.group(1).replace(",", ""))
    return total, cron


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=3072, help="tasks replayed (a multiple of --block)")
    parser.add_argument("--block", type=int, default=64, help="tasks per accept_many")
    parser.add_argument("--claim", type=int, default=8, help="tasks per claim")
    parser.add_argument("--repeat", type=int, default=3, help="runs for the CPU figures")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    parser.add_argument(
        "--phase",
        choices=("submit", "claim", "full"),
        default="full",
        help="replay the submits only, the submits and claims (no outcomes), or all",
    )
    args = parser.parse_args()

    runs = [run_once(args.n, args, None) for _ in range(args.repeat)]
    last = runs[-1]
    print(f"replay ({args.phase}): {args.n} tasks, blocks of {args.block}, claims of {args.claim}")
    print(f"{'command':14} {'calls/task':>10} {'us/task':>8}")
    total_calls = 0.0
    for name, (calls, usec) in sorted(last["commands"].items(), key=lambda kv: -kv[1][1]):
        total_calls += calls
        print(f"{name:14} {calls:10.3f} {usec:8.2f}")
    print(f"{'(all)':14} {total_calls:10.3f}")
    print(f"reads of client input (round trips) per task: {last['reads']:.3f}")
    ours = sorted(1e6 * run["python"] for run in runs)
    print(
        f"this process's CPU per task (the broker's client and worker side): best "
        f"{ours[0]:.1f} us, median {ours[len(ours) // 2]:.1f} us"
    )
    totals = sorted(1e6 * (run["user"] + run["sys"]) for run in runs)
    print(
        "Redis CPU per task (INFO cpu, user+sys): best "
        f"{totals[0]:.1f} us, median {totals[len(totals) // 2]:.1f} us "
        f"(user {1e6 * last['user']:.1f}, sys {1e6 * last['sys']:.1f} in the last run); "
        f"runs: {', '.join(f'{t:.1f}' for t in totals)}"
    )
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("--callgrind needs valgrind")
        out = Path(tempfile.mkdtemp(prefix="redis-replay-cg-"))
        small, large = out / "small.out", out / "large.out"
        run_once(args.n, args, small)
        run_once(3 * args.n, args, large)
        (t1, c1), (t3, c3) = instructions(small), instructions(large)
        per = (t3 - t1) / (2 * args.n)
        cron = (c3 - c1) / (2 * args.n)
        print(
            f"redis-server instructions per task (callgrind): {per / 1000:.1f}k "
            f"(serverCron {cron / 1000:.1f}k of them; {per - cron:,.0f} without)"
        )
        print(f"callgrind files in {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

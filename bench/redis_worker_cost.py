"""The worker process's own cost per task on the Redis broker (load-free with callgrind).

`bench/redis_bench.py` reads the worker process's CPU per task from a real run, where a
client submits while the worker claims: that figure moves with the machine's load and with
how the run happened to batch. This measures the worker process alone, at saturation:

- a private redis-server; N no-op tasks submitted first (`submit_many`, this process);
- then one `queueing worker redis_worker_cost:job --concurrency 8` process (the command
  line the bench runs) drains them; this process awaits every receipt, then stops the
  worker (SIGINT);
- the worker's CPU time (its rusage) or, with `--callgrind`, its instructions
  (`valgrind --tool=callgrind`), for N and 3N tasks: the difference over 2N is the cost per
  task (start-up, imports and shutdown cancel out).

Under callgrind the worker runs some fifty times slower, so its timed background loops
(heartbeat, promoter, probes) run that much more often per task than in a real run, and
more so on a loaded machine (a run that takes longer counts more). `--idle S` counts the
idle worker for S seconds after the tasks and takes its rate, times the tasks' duration,
off the count (an estimate: the idle worker's blocking claims are counted in its rate).
`--quiet` has those loops wait an hour between rounds instead (the worker's own loops
that remain: lease renewals every lease/3, the receipts' sweep), for a count of the
tasks' own instructions that a profile can be read from.

    python bench/redis_worker_cost.py                 # CPU us per task (3 pairs of runs)
    python bench/redis_worker_cost.py --callgrind     # + instructions per task
    python bench/redis_worker_cost.py --repeat 0 --callgrind --idle 20   # timed loops taken off
    python bench/redis_worker_cost.py --repeat 0 --callgrind --quiet     # timed loops paused
    python bench/redis_worker_cost.py --repeat 0 --callgrind --quiet --paced 4  # claims of 4
    python bench/redis_worker_cost.py --profile cprofile.out --run 6000   # one run, cProfile

`--body incr` makes each task do one coredis `INCR` (as redis_bench's `--body incr`);
`--body sleep0` one `await trio.sleep(0)` (a handler that yields once, without I/O).
`--client shared` gives the `incr` body one client per process instead of one per worker.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import coredis
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queueing import Queue, Worker, connect  # noqa: E402

URL = os.environ.get("BENCH_WORKER_URL", "redis://127.0.0.1:6379/0")
BODY = os.environ.get("BENCH_WORKER_BODY", "noop")
INCR = BODY == "incr"
#: An awaiting body without I/O (`await trio.sleep(0)`): the worker's own cost when its
#: handler yields, set against `noop`'s.
SLEEP0 = BODY == "sleep0"
#: "1": the worker's timed background loops (figures, heartbeat, epoch probe, promoter)
#: wait an hour between rounds, so that an instruction count is the tasks' own (`--quiet`).
QUIET = os.environ.get("BENCH_WORKER_QUIET") == "1"
#: The module constants of those loops' periods (seconds), as `--quiet` sets them.
QUIET_PERIODS = (
    ("queueing._results", "FIGURES_EVERY"),
    ("queueing.brokers.redis._admin", "HEARTBEAT_EVERY"),
    ("queueing.brokers.redis._losses", "PROBE_EVERY"),
    ("queueing.brokers.redis._consumer", "PROMOTE_IDLE"),
)
if QUIET:
    import importlib

    for module, name in QUIET_PERIODS:
        setattr(importlib.import_module(module), name, 3600.0)
#: With `incr`: "own" (a client per worker, opened in `on_start`: the bench's body) or
#: "shared" (one client for the process's workers, coredis multiplexing their commands
#: over one connection).
CLIENT = os.environ.get("BENCH_WORKER_CLIENT", "own")
_shared: list[coredis.Redis[bytes]] = []
_opened: trio.Event | None = None


async def shared_client() -> coredis.Redis[bytes]:
    """The process's one client. A measuring device, not a pattern to copy: a trio system
    task owns it (open until the process's trio run ends), where an error would crash the
    process."""
    global _opened
    if _opened is None:
        opened = _opened = trio.Event()

        async def own() -> None:
            async with coredis.Redis.from_url(URL) as client:
                _shared.append(client)
                opened.set()
                await trio.sleep_forever()

        trio.lowlevel.spawn_system_task(own)
    await _opened.wait()
    return _shared[0]


class Job(Worker):
    _redis: coredis.Redis[bytes] | None = None
    _own = False

    async def on_start(self) -> None:
        if INCR and CLIENT == "shared":
            self._redis = await shared_client()
        elif INCR:
            self._redis = coredis.Redis.from_url(URL)
            await self._redis.__aenter__()
            self._own = True

    async def on_stop(self) -> None:
        if self._redis is not None and self._own:
            await self._redis.__aexit__(None, None, None)

    async def handle(self, payload: int) -> int:
        if self._redis is not None:
            await self._redis.incr("bench:counter")
        elif SLEEP0:
            await trio.sleep(0)  # noqa: ASYNC115 (as per_task_cost.py)
        return payload


#: Tasks run before the instructions are counted (scripts loaded, code paths warm).
WARMUP = 200

job = Queue("job", Job, workers=8, maxsize=1_000_000)


#: Redis's commands per task in each run (INFO commandstats, from the worker's start).
COMMANDS: list[dict[str, float]] = []
#: (user, sys) CPU seconds of the worker in each run.
SPLIT: list[tuple[float, float]] = []
#: With `--idle`: (seconds the tasks took, the idle worker's instructions per second, the
#: tasks' part's instructions before the idle rate is taken off).
BACKGROUND: list[tuple[float, float, int]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submit(url: str, n: int) -> None:
    async def go() -> None:
        async with connect(url, job) as system:
            await system.submit_many("job", range(n))

    trio.run(go)


def run_callgrind(n: int, args: argparse.Namespace, out: Path, cpu: bool = False) -> int:
    """The worker's instructions for n tasks: it starts under callgrind with the
    instrumentation off; a warm-up of `WARMUP` tasks; then the instrumentation is turned on,
    n tasks submitted (one `submit_many`) and every receipt awaited, and it is turned off
    before the worker stops. Start-up and shutdown are left out."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="redis-worker-cost-"))
    server = _common.start_redis_server(port, work)
    url = f"redis://127.0.0.1:{port}/0"
    # The worker's stderr to a file, not a pipe: valgrind's lines and the worker's logs (on
    # a loaded machine, a slow worker logs its calls' timeouts) would fill a pipe nobody
    # reads until the end, and the worker would block writing.
    log = open(out.with_suffix(".stderr"), "wb")  # noqa: SIM115 (closed in `finally`)
    try:
        wait_port(port)
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *worker_argv(url, args.concurrency),
        ]
        if args.profile:  # cProfile instead (start-up and the warm-up included)
            argv = profiled(worker_argv(url, args.concurrency), args.profile)
        elif args.pyspy or cpu:  # py-spy, or CPU time (start-up and warm-up included)
            argv = worker_argv(url, args.concurrency)
        worker = subprocess.Popen(
            argv, env=worker_env(url, args), stdout=subprocess.DEVNULL, stderr=log
        )

        spy = spy_on(worker.pid, args.pyspy) if args.pyspy else None

        def control(flag: str) -> None:
            if args.profile or args.pyspy or cpu:
                return
            subprocess.run(
                ["callgrind_control", flag, str(worker.pid)], check=True, capture_output=True
            )

        started = 0.0
        took = 0.0

        async def go() -> None:
            nonlocal started, took
            async with connect(url, job) as system:
                if args.paced:
                    await paced(system, WARMUP, args.paced)
                    control("-i=on")
                    redis_cli(port, "CONFIG", "RESETSTAT")
                    started = time.monotonic()
                    await paced(system, n, args.paced)
                for block in () if args.paced else (WARMUP, n):
                    if block == n:
                        # The tasks wait, all of them, before the worker goes on: its
                        # claims take what its idle workers ask for, whatever the timing.
                        control("-i=on")
                        os.kill(worker.pid, signal.SIGSTOP)
                        redis_cli(port, "CONFIG", "RESETSTAT")
                    receipts = await system.submit_many("job", range(block))
                    if block == n:
                        started = time.monotonic()
                        os.kill(worker.pid, signal.SIGCONT)
                    total = 0
                    with trio.fail_after(3600):
                        for receipt in receipts:
                            total += await receipt
                    assert total == block * (block - 1) // 2, total
                took = time.monotonic() - started
                COMMANDS.append(commands_per_task(port, n))
                if args.idle:
                    # The tasks' part; then the idle worker alone for `--idle` seconds.
                    control("--dump=tasks")
                    await trio.sleep(args.idle)
                    control("--dump=idle")
                control("-i=off")

        trio.run(go)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        usage = stop(worker)
        if cpu:  # microseconds
            SPLIT.append((usage.ru_utime, usage.ru_stime))
            return round(1e6 * (usage.ru_utime + usage.ru_stime))
        if args.profile or args.pyspy:
            return 0
        if not args.idle:
            return instructions(out)
        tasks, idle = (instructions(part) for part in sorted(out.parent.glob(out.name + ".*")))
        rate = idle / args.idle
        BACKGROUND.append((took, rate, tasks))
        return round(tasks - rate * took)
    finally:
        log.close()
        subprocess.run(["redis-cli", "-p", str(port), "SHUTDOWN", "NOSAVE"], capture_output=True)
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)


async def paced(system: Any, n: int, k: int) -> None:
    """`--paced K`: n tasks in batches of k, each batch submitted (one `submit_many`) once
    every result of the one before is in: the worker's claims take k tasks each and its
    outcome writes are as small, as at a steady rate well below the maximum (where a
    claim takes the few tasks that came since the last one)."""
    for start in range(0, n, k):
        block = range(start, min(start + k, n))
        receipts = await system.submit_many("job", block)
        total = 0
        with trio.fail_after(600):
            for receipt in receipts:
                total += await receipt
        assert total == sum(block), total


def redis_cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return done.stdout


def commands_per_task(port: int, n: int) -> dict[str, float]:
    """Redis's commands (INFO commandstats) per task since its last RESETSTAT."""
    stats = redis_cli(port, "INFO", "commandstats")
    calls = re.finditer(r"cmdstat_(\w+):calls=(\d+)", stats)
    return {m.group(1): int(m.group(2)) / n for m in calls}


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def worker_argv(url: str, concurrency: int) -> list[str]:
    command = [sys.executable, "-m", "queueing", "worker", "redis_worker_cost:job"]
    return [*command, "--broker", url, "--concurrency", str(concurrency)]


def worker_env(url: str, args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT}",
        "PYTHONHASHSEED": "0",
        "BENCH_WORKER_URL": url,
        "BENCH_WORKER_BODY": args.body,
        "BENCH_WORKER_CLIENT": args.client,
        "BENCH_WORKER_QUIET": "1" if args.quiet else "",
    }


def spy_on(pid: int, into: str) -> subprocess.Popen[bytes]:
    """py-spy recording process `pid` (raw, 1,000 samples a second) into `into`."""
    tool = ROOT / ".bench-venv" / "tools" / "bin" / "py-spy"
    argv = [str(tool), "record", "--pid", str(pid), "-r", "1000", "-f", "raw", "-o", into]
    return subprocess.Popen(
        [*argv, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def profiled(argv: list[str], into: str) -> list[str]:
    """The worker's command line (`worker_argv`) run under cProfile, its stats dumped into
    `into`."""
    # cProfile timed by CPU time: time a loaded machine gave others is not counted.
    code = (
        "import cProfile, runpy, sys, time; p = cProfile.Profile(time.process_time); "
        "sys.argv[0] = 'queueing'; p.enable()\n"
        "try: runpy.run_module('queueing', run_name='__main__')\n"
        f"finally: p.disable(); p.dump_stats({into!r})"
    )
    return [sys.executable, "-c", code, *argv[3:]]


def stop(worker: subprocess.Popen[bytes]) -> Any:
    """SIGINT the worker and reap it: its rusage."""
    worker.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(worker.pid, 0)
    worker.returncode = os.waitstatus_to_exitcode(status)
    err = worker.stderr.read().decode() if worker.stderr else ""
    if worker.returncode not in (0, -signal.SIGINT, 130):
        raise SystemExit(f"worker exited {worker.returncode}: {err[-2000:]}")
    return usage


def run_once(n: int, args: argparse.Namespace, callgrind: Path | None) -> float:
    """One private redis-server, one worker draining n tasks: its CPU seconds (or, with
    `callgrind`, its instructions)."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="redis-worker-cost-"))
    server = _common.start_redis_server(port, work)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_port(port)
        submit(url, n)  # the tasks wait before the worker starts
        subprocess.run(["redis-cli", "-p", str(port), "CONFIG", "RESETSTAT"], capture_output=True)
        env = worker_env(url, args)
        argv = worker_argv(url, args.concurrency)
        if args.profile:
            argv = profiled(argv, args.profile)
        if callgrind is not None:
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *argv]
        worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spy = spy_on(worker.pid, args.pyspy) if args.pyspy else None

        async def drained() -> None:
            async with coredis.Redis.from_url(url, decode_responses=True) as client:
                while True:
                    # Every task ran: the stream's group has no pending entry and none new.
                    groups = await client.xinfo_groups(ready)
                    if groups and all(
                        int(g["pending"]) == 0 and int(g.get("lag") or 0) == 0 for g in groups
                    ):
                        return
                    await trio.sleep(0.05)

        keys = subprocess.run(
            ["redis-cli", "-p", str(port), "--scan", "--pattern", "*ready*"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(keys) == 1, keys
        ready = keys[0]
        trio.run(drained)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        worker.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(worker.pid, 0)
        worker.returncode = os.waitstatus_to_exitcode(status)
        err = worker.stderr.read().decode() if worker.stderr else ""
        stats = subprocess.run(
            ["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True
        ).stdout
        calls = {
            m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", stats)
        }
        COMMANDS.append({name: count / n for name, count in calls.items()})
        if worker.returncode not in (0, -signal.SIGINT, 130):
            raise SystemExit(f"worker exited {worker.returncode}: {err[-2000:]}")
        SPLIT.append((usage.ru_utime, usage.ru_stime))
        return usage.ru_utime + usage.ru_stime
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "SHUTDOWN", "NOSAVE"], capture_output=True)
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)


def instructions(path: Path) -> int:
    text = path.read_text()
    # With the instrumentation toggled, "summary" is 0: "totals" has the count.
    totals = re.search(r"^totals: (\d+)", text, re.MULTILINE) or re.search(
        r"^summary: (\d+)", text, re.MULTILINE
    )
    if totals is None:
        raise RuntimeError("no totals in callgrind's output")
    return int(totals.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=4000, help="tasks (the large run: 3N)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs for CPU times")
    parser.add_argument("--concurrency", type=int, default=8, help="the worker's workers")
    parser.add_argument("--body", choices=("noop", "sleep0", "incr"), default="noop")
    parser.add_argument(
        "--client",
        choices=("own", "shared"),
        default="own",
        help="incr: a coredis client per worker, or one for the process's workers",
    )
    parser.add_argument("--callgrind", action="store_true", help="count instructions")
    parser.add_argument("--cg-n", type=int, default=1000, help="N under callgrind")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="callgrind: the worker's timed loops (figures, heartbeat, epoch probe, "
        "promoter) wait an hour between rounds, so that the count is the tasks' own",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="callgrind: also count the idle worker this many seconds, and take its rate "
        "(timed loops: heartbeat, promoter, probes, blocking claims) times the tasks' "
        "duration off the count",
    )
    parser.add_argument(
        "--paced",
        type=int,
        default=0,
        metavar="K",
        help="callgrind: submit the tasks in batches of K, each once the last one's results "
        "are in (claims and outcome writes of K tasks, as at a steady rate), not all at once",
    )
    parser.add_argument("--run", type=int, default=0, help="one run of this many tasks")
    parser.add_argument("--pyspy", default="", help="py-spy the worker (raw) into this file")
    parser.add_argument(
        "--profile",
        default="",
        help="cProfile the worker into this file (with --paced: a paced run, not a count)",
    )
    args = parser.parse_args()

    if args.run:
        cpu = run_once(args.run, args, None)
        print(", ".join(f"{k} {v:.3f}" for k, v in sorted(COMMANDS[-1].items())))
        print(f"user {SPLIT[-1][0]:.2f} s, sys {SPLIT[-1][1]:.2f} s")
        print(
            f"one run, {args.run} tasks: worker CPU {cpu:.2f} s "
            f"({1e6 * cpu / args.run:.1f} us/task)"
        )
        return 0
    per = []
    for _ in range(args.repeat):
        if args.paced:  # paced runs (CPU time), start-up and warm-up cancel out
            folder = Path(tempfile.mkdtemp(prefix="redis-worker-cpu-"))
            small = run_callgrind(args.n, args, folder / "small", cpu=True) / 1e6
            large = run_callgrind(3 * args.n, args, folder / "large", cpu=True) / 1e6
            shutil.rmtree(folder, ignore_errors=True)
            (su, ss), (lu, ls) = SPLIT[-2:]
            print(
                f"  pair: user {1e6 * (lu - su) / (2 * args.n):.1f} us/task, "
                f"sys {1e6 * (ls - ss) / (2 * args.n):.1f} us/task"
            )
        else:
            small = run_once(args.n, args, None)
            large = run_once(3 * args.n, args, None)
        per.append(1e6 * (large - small) / (2 * args.n))
    per.sort()
    if per:
        print(
            f"worker CPU per task ({args.body}; N={args.n} and {3 * args.n}): "
            f"best {per[0]:.1f} us, "
            f"median {statistics.median(per):.1f} us; runs {', '.join(f'{p:.1f}' for p in per)}"
        )
    if args.callgrind or (args.paced and (args.profile or args.pyspy)):
        out = Path(tempfile.mkdtemp(prefix="redis-worker-cg-"))
        per_task = run_callgrind(args.cg_n, args, out / "callgrind.out") / args.cg_n
        print(f"worker instructions per task (callgrind, N={args.cg_n}): {per_task / 1000:.1f}k")
        if BACKGROUND:
            took, rate, tasks = BACKGROUND[-1]
            print(
                f"  before the idle rate is taken off: {tasks / args.cg_n / 1000:.1f}k "
                f"(the tasks took {took:.1f} s; idle worker {rate / 1e6:.2f}M instructions/s)"
            )
        print(", ".join(f"{k} {v:.3f}" for k, v in sorted(COMMANDS[-1].items())))
        print(f"callgrind files in {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

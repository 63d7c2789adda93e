"""The client process's cost per task in the Redis throughput run (issue #15).

Runs what `bench/redis_bench.py --only ours --procs 1` runs (`bench/peers/drive.py ours
throughput N`: 64 concurrent `await system.submit("job", i)`, then `await receipt` for
each), against a private redis-server and one worker process
(`queueing worker ours_tasks:job --concurrency 8`), and measures the client process alone:

- `--callgrind`: its instructions under `valgrind --tool=callgrind` for N and 3N tasks;
  the cost per task is their difference over 2N (start-up, imports and shutdown cancel
  out). Under callgrind the client is the slowest process, so its batches are as large as
  its 64 submitters make them. Also, the same way, its allocations of objects the garbage
  collector tracks (calls of CPython's `_PyObject_GC_Link`: an object taken from a free
  list, as many tuples, lists and dicts are, is not counted, nor does it count toward a
  collection) and its collections (calls of `gc_collect_main`, any generation).
- `--cpu K`: K runs of N tasks at full speed, the client's CPU (user + system, getrusage
  of the child) per task, best and median. It includes the start-up (about 0.4 s of CPU)
  and moves with the machine's load (a slower worker means smaller batches): compare two
  trees in alternating runs (`--root`).

    python bench/client_cost.py --callgrind -n 1000
    python bench/client_cost.py --cpu 5 -n 20000 --root /path/to/another/checkout

`--root`: the source tree whose `queueing` is imported (default: this one), to compare
two versions with the same script.

`--rate R --seconds S`: the paced client instead (`drive.py ours latency R S`, the
bench's latency run: a submit due every 1/R s, each then waiting for its result with
`result(timeout=30)`), with its small batches. `--callgrind` then runs S and 3S seconds
and divides by the 2RS tasks between them; under callgrind the client keeps pace only
at a low rate (a few hundred a second), where each round trip carries about one task.
`--cpu K` runs K paced runs at full speed (warm-up and start-up included, as above).

    python bench/client_cost.py --callgrind --rate 200 --seconds 5
    python bench/client_cost.py --cpu 3 --rate 7900 --seconds 8
    python bench/client_cost.py --profile /tmp/client.prof --rate 7900 --seconds 8

`--profile FILE`: one run of the client under cProfile (its process CPU clock), the
profile saved to FILE and its top functions by own time printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Setup:
    """A private redis-server, and the environment of the worker and the client."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peers = root / "bench" / "peers"
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.env = {
            **os.environ,
            "PYTHONPATH": f"{self.peers}:{root}",
            "BENCH_REDIS_URL": self.url,
            "PYTHONHASHSEED": "0",
        }
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [server, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        self.redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        time.sleep(0.3)

    def close(self) -> None:
        self.redis.terminate()
        self.redis.wait()

    def run(
        self, wrap: list[str], n: int, client: list[str] | None = None, paced: str = ""
    ) -> tuple[dict[str, Any], float]:
        """One throughput run of n tasks (the client under `wrap`): its JSON line, and the
        client's CPU seconds. `client`: another client's command (bench/client_gc.py);
        `paced`: a paced run of n tasks at this rate (tasks a second) instead."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "flushall"], check=True, capture_output=True
        )
        argv = [sys.executable, "-m", "queueing", "worker", "ours_tasks:job"]
        worker = subprocess.Popen(
            [*argv, "--broker", self.url, "--concurrency", "8"],
            cwd=self.peers,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            drive = [sys.executable, str(self.peers / "drive.py"), "ours"]
            if paced and client is None:
                client = [*drive, "latency", paced, repr(n / float(paced))]
            ready = [*drive, "ready", "1", "60"]
            subprocess.run(ready, cwd=self.peers, env=self.env, check=True, capture_output=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [*wrap, *(client or [*drive, "throughput", str(n)])],
                cwd=self.peers,
                env=self.env,
                check=True,
                capture_output=True,
                text=True,
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            worker.terminate()
            worker.wait()
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        if "error" in figures:  # (drive.py exits 0 either way: its last line says)
            raise RuntimeError(f"the client failed: {figures['error']}")
        return figures, cpu


#: CPython's functions whose calls `--callgrind` counts: a tracked object allocated (not
#: from a free list), and a collection of any generation.
COUNTED = {"_PyObject_GC_Link": "tracked allocations", "gc_collect_main": "collections"}


def calls_to(text: str, names: Iterable[str]) -> dict[str, int]:
    """The calls of these functions in a callgrind output (any caller): each `calls=` line
    follows the `cfn=` line that names the function called (by its number once named)."""
    wanted, named, counts = set(names), {}, dict.fromkeys(names, 0)
    callee = ""
    for line in text.splitlines():
        if line.startswith(("fn=(", "cfn=(")):
            number, _, name = line.partition("=")[2].partition(" ")
            if name:
                named[number] = name
            if line.startswith("cfn="):
                callee = named.get(number, "")
        elif line.startswith("calls=") and callee in wanted:
            counts[callee] += int(line[6:].split()[0])
    return counts


def instructions(
    setup: Setup, n: int, paced: str = "", client: list[str] | None = None
) -> tuple[int, dict[str, int]]:
    """The client's instructions in a run of n tasks, and its calls of `COUNTED`.
    `client`: another client's command (bench/client_gc.py `--callgrind`)."""
    out = Path(f"/tmp/client_cost.{os.getpid()}.{n}.callgrind")
    try:
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        figures, _ = setup.run(wrap, n, client=client, paced=paced)
        if paced:
            print(f"  paced run of {n}: {json.dumps(_brief(figures))}")
        text = out.read_text()
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if found is None:
            raise RuntimeError("no totals in callgrind's output")
        return int(found.group(1)), calls_to(text, COUNTED)
    finally:
        out.unlink(missing_ok=True)


def _brief(figures: dict[str, Any]) -> dict[str, Any]:
    """A paced run's figures without its list of latencies."""
    keys = ("count", "p50", "p99", "started_rate", "client_cpu_us", "error_count")
    return {k: figures[k] for k in keys if k in figures}


#: The client under cProfile, timed by its process's CPU clock (not the wall's: other
#: processes' turns on the cores are not its own).
PROFILED = """
import cProfile, json, runpy, sys, time
sys.argv = sys.argv[2:]
sys.path.insert(0, sys.argv[0].rpartition("/")[0])
drive = runpy.run_path(sys.argv[0], run_name="drive")  # its __main__ part ends in os._exit
profiler = cProfile.Profile(time.process_time)
try:
    out = profiler.runcall(drive["main"], sys.argv[1:])
finally:
    profiler.dump_stats({out!r})
print(json.dumps(out), flush=True)
"""


#: The client sampled: every millisecond of its CPU (`ITIMER_PROF`; the kernel fires it
#: at its own tick, every 4 ms of CPU here) the Python stack it is in is counted (little
#: overhead, where cProfile's hook on every call, builtins included, tripled the client's
#: CPU and so changed its batches). A sample taken in C code (a socket's send, say) counts
#: for the Python function that called it. Each sample is
#: a stack of "file:line(function)" frames, outermost first; written as JSON counts.
SAMPLED = """
import collections, json, runpy, signal, sys
sys.argv = sys.argv[2:]
sys.path.insert(0, sys.argv[0].rpartition("/")[0])
drive = runpy.run_path(sys.argv[0], run_name="drive")
stacks = collections.Counter()
def sample(_, frame):
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{{code.co_filename.rpartition('/')[2]}}:{{code.co_name}}")
        frame = frame.f_back
    stacks[";".join(reversed(names[:-1] if len(names) > 1 else names))] += 1
signal.signal(signal.SIGPROF, sample)
signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
try:
    out = drive["main"](sys.argv[1:])
finally:
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    with open({out!r}, "w") as f:
        json.dump(stacks, f)
print(json.dumps(out), flush=True)
"""


def report_samples(path: Path, top: int = 45) -> None:
    """Own and inclusive samples by function, from `SAMPLED`'s counts."""
    stacks: dict[str, int] = json.loads(path.read_text())
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = sum(stacks.values())
    for stack, count in stacks.items():
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
    print(f"{total} samples")
    for title, table in (("own", own), ("inclusive", inclusive)):
        print(f"-- by {title} samples")
        for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            print(f"{count / total * 100:6.1f}%  {name}")


def sampled(setup: Setup, n: int, paced: str, out: Path) -> None:
    """One run of the client sampled (`SAMPLED`), the counts saved to `out`."""
    wrap = [sys.executable, "-c", SAMPLED.format(out=str(out))]
    figures, cpu = setup.run(wrap, n, paced=paced)
    print(f"{json.dumps(_brief(figures))}; client CPU {cpu / n * 1e6:.1f} us/task (sampled)")
    report_samples(out)


def profile(setup: Setup, n: int, paced: str, out: Path) -> None:
    """One run of the client under cProfile (process CPU time), saved to `out`."""
    import pstats

    # The client's command after `-c ...`: argv[0] is drive.py's interpreter, dropped.
    wrap = [sys.executable, "-c", PROFILED.format(out=str(out))]
    figures, cpu = setup.run(wrap, n, paced=paced)
    print(f"{json.dumps(_brief(figures))}; client CPU {cpu / n * 1e6:.1f} us/task (profiled)")
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callgrind", action="store_true", help="instructions per task")
    parser.add_argument("--cpu", type=int, metavar="K", help="K runs: CPU per task")
    parser.add_argument("-n", type=int, default=1000, help="tasks per run (callgrind: N, 3N)")
    parser.add_argument("--root", type=Path, default=HERE.parent, help="the tree to import")
    parser.add_argument("--rate", type=float, help="a paced run at R tasks a second")
    parser.add_argument("--seconds", type=float, default=5.0, help="of a paced run")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="cProfile the client")
    parser.add_argument("--sample", type=Path, metavar="FILE", help="sample the client's stacks")
    args = parser.parse_args()
    if not (args.callgrind or args.cpu or args.profile or args.sample):
        parser.error("say what to measure: --callgrind, --cpu K, --profile or --sample FILE")
    paced = ""
    if args.rate:
        paced = f"{args.rate:g}"
        args.n = round(args.rate * args.seconds)
    setup = Setup(args.root.resolve())
    try:
        if args.profile:
            profile(setup, args.n, paced, args.profile)
        if args.sample:
            sampled(setup, args.n, paced, args.sample)
        if args.callgrind:
            (small, few), (large, many) = (
                instructions(setup, args.n, paced),
                instructions(setup, 3 * args.n, paced),
            )
            print(f"callgrind: I({args.n})={small:,}  I({3 * args.n})={large:,}")
            print(f"client instructions per task: {(large - small) / (2 * args.n):,.0f}")
            for name, what in COUNTED.items():
                per_task = (many[name] - few[name]) / (2 * args.n)
                counted = f"{name}: {few[name]:,}, {many[name]:,}"
                print(f"client {what} per task: {per_task:.2f} ({counted})")
        if args.cpu:
            per_task = []
            for _ in range(args.cpu):
                result, cpu = setup.run([], args.n, paced=paced)
                per_task.append(cpu / args.n * 1e6)
                if paced:
                    print(f"{json.dumps(_brief(result))}, whole process {per_task[-1]:.1f} us/task")
                    continue
                print(f"{result['rate']:,.0f} tasks/s, client CPU {per_task[-1]:.1f} us/task")
            print(
                f"client CPU per task: best {min(per_task):.1f} us, "
                f"median {statistics.median(per_task):.1f} us"
            )
    finally:
        setup.close()


if __name__ == "__main__":
    main()

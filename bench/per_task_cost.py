"""The in-memory cost of one task, measured deterministically (instructions, call counts).

Wall-clock rates (bench/queue_bench.py) move with the machine's load; instruction counts do
not. This runs what queue_bench's "submit each" contender runs (a system with the memory
broker, 8 workers of a no-op handler; `await system.submit(...)` per task, then
`await receipt` per receipt) for N tasks, and reports:

- `--callgrind`: the instructions of whole runs under `valgrind --tool=callgrind` for N=2000
  and N=6000; the cost per task is their difference over 4000 (start-up, imports and
  shutdown cancel out).
- `--calls`: cProfile's call counts of the same runs, per task (the difference of the two
  runs over 4000): every function on the hot path and how often it runs for one task.
- `--wall`: the best and median of 7 timed runs (in-process; for a quick check only: use
  bench/queue_bench.py for the comparison with the peers).

    python bench/per_task_cost.py --callgrind --calls
    python bench/per_task_cost.py --callgrind --body sleep0   # a handler that awaits once
    python bench/per_task_cost.py --run 2000      # one run (what callgrind measures)

Needs valgrind for `--callgrind` (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common
import trio
import trio.testing

from queueing import Queue, QueueSystem, Worker, run_system

SMALL, LARGE = 2000, 6000
WORKERS = 8


class Noop(Worker):
    """Returns its payload."""

    async def handle(self, payload: int) -> int:
        return payload


class Sleep0(Worker):
    """Yields once (`await trio.sleep(0)`, an awaiting handler without I/O), then returns
    its payload: what the worker costs when its handler awaits, set against `Noop`'s."""

    async def handle(self, payload: int) -> int:
        await trio.sleep(0)  # noqa: ASYNC115 (what a handler would write)
        return payload


BODIES: dict[str, type[Worker]] = {"noop": Noop, "sleep0": Sleep0}
#: The handler (`--body`): "noop" or "sleep0".
body = "noop"


def run(n: int, profile: cProfile.Profile | None = None) -> float:
    """Submit n tasks, then await every receipt; seconds taken (the submit-await part)."""

    async def main(system: QueueSystem) -> float:
        await trio.testing.wait_all_tasks_blocked()
        submit = system.submit
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        receipts = [await submit("bench", i) for i in range(n)]
        total = 0
        for receipt in receipts:
            total += await receipt
        elapsed = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        if total != n * (n - 1) // 2:
            raise AssertionError(f"wrong results: sum {total} for {n} tasks")
        return elapsed

    queue = Queue("bench", BODIES[body], workers=WORKERS, maxsize=max(n, 10_000))
    seconds: float = run_system(queue, main=main)
    return seconds


def instructions(n: int) -> int:
    """Instructions of one whole run of n tasks under callgrind (a fixed hash seed)."""
    command = [sys.executable, __file__, "--run", str(n), "--body", body]
    return _common.callgrind_totals(command)["Ir"]


def calls(n: int) -> dict[tuple[str, int, str], tuple[int, float]]:
    """cProfile of one run of n tasks: (calls, own seconds) by function."""
    profile = cProfile.Profile()
    run(n, profile)
    stats = pstats.Stats(profile)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return {key: (value[1], value[2]) for key, value in entries.items()}


def opcodes(n: int) -> dict[tuple[str, int, str], int]:
    """Bytecodes executed by function in one whole run of n tasks (`sys.settrace` with
    opcode events: slow, but exact, and the interpreter's loop is most of a task's cost)."""
    counts: dict[Any, int] = {}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            code = frame.f_code
            key = (code.co_filename, code.co_firstlineno, code.co_name)
            counts[key] = counts.get(key, 0) + 1
        return tracer

    sys.settrace(tracer)
    try:
        run(n)
    finally:
        sys.settrace(None)
    return counts


def where(file: str, line: int, name: str) -> str:
    root = f"{Path(__file__).resolve().parent.parent}/"
    for marker in ("site-packages/", root):
        file = file.split(marker)[-1]
    return f"{name} ({file}:{line})" if line else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=int, metavar="N", help="one run of N tasks, nothing else")
    parser.add_argument("--callgrind", action="store_true", help="instructions per task")
    parser.add_argument("--calls", action="store_true", help="cProfile call counts per task")
    parser.add_argument("--opcodes", action="store_true", help="bytecodes per task, by function")
    parser.add_argument("--wall", action="store_true", help="best and median of 7 runs")
    parser.add_argument("--min", type=float, default=0.5, help="--calls: smallest per task shown")
    parser.add_argument(
        "--body", choices=tuple(BODIES), default="noop", help="the handler: sleep0 awaits once"
    )
    args = parser.parse_args()
    global body
    body = args.body
    if args.run is not None:
        run(args.run)
        return
    if not (args.callgrind or args.calls or args.opcodes or args.wall):
        parser.error("say what to measure: --callgrind, --calls, --opcodes and/or --wall")
    if args.callgrind:
        with ThreadPoolExecutor(2) as pool:  # two processes: one per core
            small, large = pool.map(instructions, (SMALL, LARGE))
        per_task = (large - small) / (LARGE - SMALL)
        print(f"callgrind: I({SMALL})={small:,}  I({LARGE})={large:,}")
        print(f"instructions per task: {per_task:,.0f}")
    if args.calls:
        small, large = calls(SMALL), calls(LARGE)
        rows = []
        for key, (count, own) in large.items():
            was = small.get(key, (0, 0.0))
            per = (count - was[0]) / (LARGE - SMALL)
            if per >= args.min:
                rows.append((per, max(0.0, own - was[1]) / (LARGE - SMALL) * 1e6, where(*key)))
        rows.sort(key=lambda row: (-row[0], row[2]))
        print(f"per task (cProfile, runs of {SMALL} and {LARGE}): calls, own µs (profiled)")
        for per, micros, name in rows:
            print(f"  {per:7.3f}  {micros:6.2f}  {name}")
        print(f"  {sum(row[0] for row in rows):7.3f}  in all (listed)")
    if args.opcodes:
        small_ops, large_ops = opcodes(SMALL), opcodes(LARGE)
        per_fn = sorted(
            (
                ((count - small_ops.get(key, 0)) / (LARGE - SMALL), where(*key))
                for key, count in large_ops.items()
            ),
            key=lambda row: (-row[0], row[1]),
        )
        print(f"bytecodes per task (runs of {SMALL} and {LARGE}), by function:")
        for per, name in per_fn:
            if per >= args.min:
                print(f"  {per:7.1f}  {name}")
        print(f"  {sum(per for per, _ in per_fn):7.1f}  in all")
    if args.wall:
        run(SMALL)  # warm-up
        rates = [LARGE / run(LARGE) for _ in range(7)]
        print(
            f"wall: best {max(rates):,.0f}/s, median {statistics.median(rates):,.0f}/s "
            f"({LARGE} tasks, 7 runs)"
        )


if __name__ == "__main__":
    main()

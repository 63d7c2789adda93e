"""Observability overhead: the per-task cost of the in-process queue with each option on.

Every variant runs the same job as `queue_bench.py`'s "ours": submit N no-op tasks to a
pool of 8 workers (`memory://`), then await every receipt. Variants:

- off: nothing enabled (the default; compare with an older checkout for "unchanged");
- metrics: `queueing.metrics.register(system, registry)` (prometheus-client, the
  `metrics` extra); the timed part ends with a fold of the histograms' observations
  (what a scrape does with them: a per-task cost), and a scrape after it (untimed: a
  cost per scrape, not per task) checks the output;
- counters: the same with `histograms=False` (counters and gauges only);
- tracing-api: `queueing.tracing.instrument(system)` with OpenTelemetry's API alone (no
  SDK: spans are no-ops; what an application pays before it sets up an SDK);
- tracing: `queueing.tracing.instrument(system, provider)` with the OpenTelemetry SDK
  and an exporter that drops the spans (the `otel` extra, plus opentelemetry-sdk);
- progress: nothing enabled, and each task calls `self.progress(1, 1)` once.

Two measurements, each of the timed part only (the submits and the awaits, after the
system started and before it stops):

- rounds (the default): the process's CPU time (`time.process_time`: the bench is one
  process, so other processes on a busy machine do not count, though they still disturb
  its caches) and the wall clock, in µs per task. Each round runs every variant once,
  in a rotated order, so that a change in the machine's load falls on all of them; the
  overhead of a variant is its time over "off"'s in the same round (paired), and the
  median of those ratios is shown beside each variant's best and median.
- `--callgrind`: instructions per task under `valgrind --tool=callgrind` (not moved by
  the machine's load): whole runs of 2,000 and 6,000 tasks per variant, the difference
  over 4,000 (start-up, imports and shutdown cancel out), as bench/per_task_cost.py does.

    python bench/observe_bench.py               # N=5k, 21 rounds
    python bench/observe_bench.py --quick       # N=2k, 7 rounds
    python bench/observe_bench.py --callgrind   # instructions per task (needs valgrind)
    python bench/observe_bench.py --only off    # one variant (e.g. on an older checkout)
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _common
import trio
import trio.testing

from queueing import Queue, QueueSystem, Worker, open_system

WORKERS = 8
#: The two run lengths of `--callgrind` (their difference is what is counted).
SMALL, LARGE = 2000, 6000


#: What enabling a variant returns: what to run within the timed part, after the last task
#: (the rest of the per-task work: the fold of the histograms' observations), and what to
#: run after it (a scrape, to check the output: a cost per scrape, not per task).
Finish = tuple[Callable[[], None], Callable[[], None]] | None


class Noop(Worker[int, int]):
    async def handle(self, payload: int) -> int:
        return payload


class Reports(Worker[int, int]):
    async def handle(self, payload: int) -> int:
        self.progress(1, 1)
        return payload


def _metrics(system: QueueSystem, histograms: bool = True) -> Finish:
    import prometheus_client

    from queueing import metrics

    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register(system, registry, histograms=histograms)

    def fold() -> None:
        # What a scrape does with each task's observations (counted: a per-task cost).
        for pair in collector._histograms.values():
            for histogram in pair:
                histogram.fold()

    def scrape() -> None:
        assert b"queueing_tasks_total" in prometheus_client.generate_latest(registry)

    return fold, scrape


def _tracing(system: QueueSystem) -> Finish:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from queueing import tracing

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    tracing.instrument(system, tracer_provider=provider)
    return None


def _counters(system: QueueSystem) -> Finish:
    return _metrics(system, histograms=False)


def _tracing_api(system: QueueSystem) -> Finish:
    from queueing import tracing

    tracing.instrument(system)  # the global provider: a no-op without an SDK set up
    return None


VARIANTS: dict[str, tuple[type[Worker[int, int]], Callable[[QueueSystem], Finish] | None]] = {
    "off": (Noop, None),
    "metrics": (Noop, _metrics),
    "counters": (Noop, _counters),
    "tracing-api": (Noop, _tracing_api),
    "tracing": (Noop, _tracing),
    "progress": (Reports, None),
}


def run(variant: str, n: int, check: bool = True) -> tuple[float, float]:
    """Seconds per task of one run of `variant`: (CPU time of this process, wall clock).
    `check`: scrape the metrics afterwards (untimed)."""
    worker, enable = VARIANTS[variant]

    async def main() -> tuple[float, float]:
        queue = Queue("bench", worker, workers=WORKERS, maxsize=max(n, 10_000))
        async with open_system(queue) as system:
            finish = enable(system) if enable is not None else None
            await trio.testing.wait_all_tasks_blocked()
            submit = system.submit
            cpu, wall = time.process_time(), time.perf_counter()
            receipts = [await submit("bench", i) for i in range(n)]
            total = 0
            for receipt in receipts:
                total += await receipt
            if finish is not None:
                finish[0]()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if finish is not None and check:
                finish[1]()
            assert total == n * (n - 1) // 2, total
            return cpu / n, wall / n

    gc.collect()
    return trio.run(main)


def instructions(variant: str, n: int) -> int:
    """Instructions of one whole run of `variant` with n tasks under callgrind."""
    command = [sys.executable, __file__, "--run", str(n), "--only", variant]
    return _common.callgrind_totals(command)["Ir"]


def callgrind(variants: list[str]) -> None:
    jobs = [(variant, n) for variant in variants for n in (SMALL, LARGE)]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
    per_task = {v: (counts[v, LARGE] - counts[v, SMALL]) / (LARGE - SMALL) for v in variants}
    base = per_task[variants[0]]
    print(f"instructions per task (callgrind, runs of {SMALL} and {LARGE} tasks)")
    print(f"{'variant':<12} {'per task':>10} {'vs ' + variants[0]:>10}")
    for variant, count in per_task.items():
        print(f"{variant:<12} {count:>10,.0f} {count / base - 1:>+10.1%}")


def rounds(variants: list[str], n: int, count: int) -> None:
    print(_common.machine())
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    print(f"{n} no-op tasks per run, {WORKERS} workers, memory://, {count} rounds")
    for variant in variants:
        run(variant, min(n, 2_000))  # warm-up
    cpu: dict[str, list[float]] = {variant: [] for variant in variants}
    wall: dict[str, list[float]] = {variant: [] for variant in variants}
    for i in range(count):
        shift = i % len(variants)
        for variant in variants[shift:] + variants[:shift]:  # rotated: no fixed order
            c, w = run(variant, n)
            cpu[variant].append(c)
            wall[variant].append(w)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    base = variants[0]
    print(
        f"µs per task; 'vs {base}': the median over rounds of the ratio to {base}'s time in"
        " the same round"
    )
    print(
        f"{'variant':<12} {'CPU best':>9} {'median':>8} {'vs ' + base:>8}   "
        f"{'wall best':>9} {'median':>8} {'vs ' + base:>8}"
    )
    for variant in variants:
        figures = []
        for times in (cpu, wall):
            runs = times[variant]
            paired = statistics.median(t / b for t, b in zip(runs, times[base], strict=True))
            figures.append(
                f"{min(runs) * 1e6:>9.2f} {statistics.median(runs) * 1e6:>8.2f} {paired - 1:>+8.1%}"
            )
        print(f"{variant:<12} {figures[0]}   {figures[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5_000, help="tasks per run")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="N=2k, 7 rounds")
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--callgrind", action="store_true", help="instructions per task")
    parser.add_argument("--run", type=int, metavar="N", help="one run of N tasks, nothing else")
    args = parser.parse_args()
    variants = args.only or list(VARIANTS)
    if args.run is not None:
        for variant in variants:
            run(variant, args.run, check=False)  # a scrape's cost is not a task's
    elif args.callgrind:
        callgrind(variants)
    else:
        n, count = (2_000, 7) if args.quick else (args.n, args.rounds)
        rounds(variants, n, count)


if __name__ == "__main__":
    main()

"""Observability overhead: the per-task cost of the in-process queue with each option on.

Every variant runs the same job as `queue_bench.py`'s "ours": submit N no-op tasks to a
pool of 8 workers (`memory://`), then await every receipt; the figure is microseconds per
task (wall clock of the whole job / N). Variants:

- off: nothing enabled (the default; compare with an older checkout for "unchanged");
- metrics: `queueing.metrics.register(system, registry)` (prometheus-client, the
  `metrics` extra), the registry scraped once at the end;
- counters: the same with `histograms=False` (counters and gauges only);
- tracing-api: `queueing.tracing.instrument(system)` with OpenTelemetry's API alone (no
  SDK: spans are no-ops; what an application pays before it sets up an SDK);
- tracing: `queueing.tracing.instrument(system, provider)` with the OpenTelemetry SDK
  and an exporter that drops the spans (the `otel` extra, plus opentelemetry-sdk);
- progress: nothing enabled, and each task calls `self.progress(1, 1)` once.

Variants run in rounds (each once per round, after an untimed warm-up) so that a busy
machine disturbs them alike; best and median of the rounds are shown.

    python bench/observe_bench.py             # N=20k, 7 rounds
    python bench/observe_bench.py --quick     # N=5k, 3 rounds
    python bench/observe_bench.py --only off  # one variant (e.g. on an older checkout)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import _common
import trio
import trio.testing

from queueing import Queue, QueueSystem, Worker, open_system

WORKERS = 8


class Noop(Worker[int, int]):
    async def handle(self, payload: int) -> int:
        return payload


class Reports(Worker[int, int]):
    async def handle(self, payload: int) -> int:
        self.progress(1, 1)
        return payload


def _metrics(system: QueueSystem, histograms: bool = True) -> Callable[[], None]:
    import prometheus_client

    from queueing import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.register(system, registry, histograms=histograms)

    def scrape() -> None:
        assert b"queueing_tasks_total" in prometheus_client.generate_latest(registry)

    return scrape


def _tracing(system: QueueSystem) -> Callable[[], None]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from queueing import tracing

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    tracing.instrument(system, tracer_provider=provider)
    return lambda: None


def _counters(system: QueueSystem) -> Callable[[], None]:
    return _metrics(system, histograms=False)


def _tracing_api(system: QueueSystem) -> Callable[[], None]:
    from queueing import tracing

    tracing.instrument(system)  # the global provider: a no-op without an SDK set up
    return lambda: None


VARIANTS: dict[str, tuple[type[Worker[int, int]], Callable[[QueueSystem], Any] | None]] = {
    "off": (Noop, None),
    "metrics": (Noop, _metrics),
    "counters": (Noop, _counters),
    "tracing-api": (Noop, _tracing_api),
    "tracing": (Noop, _tracing),
    "progress": (Reports, None),
}


def run(variant: str, n: int) -> float:
    """Seconds per task of one run of `variant`."""
    worker, enable = VARIANTS[variant]

    async def main() -> float:
        queue = Queue("bench", worker, workers=WORKERS, maxsize=max(n, 10_000))
        async with open_system(queue) as system:
            finish = enable(system) if enable is not None else None
            await trio.testing.wait_all_tasks_blocked()
            submit = system.submit
            start = time.perf_counter()
            receipts = [await submit("bench", i) for i in range(n)]
            total = 0
            for receipt in receipts:
                total += await receipt
            elapsed = time.perf_counter() - start
            if finish is not None:
                finish()
            assert total == n * (n - 1) // 2, total
            return elapsed / n

    gc.collect()
    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="N=5k, 3 rounds")
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS))
    args = parser.parse_args()
    n, rounds = (5_000, 3) if args.quick else (args.n, args.rounds)
    variants = args.only or list(VARIANTS)
    print(_common.machine())
    print(f"{n} no-op tasks per run, {WORKERS} workers, memory://, {rounds} rounds")
    for variant in variants:
        run(variant, min(n, 2_000))  # warm-up
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            times[variant].append(run(variant, n))
    base = min(times[variants[0]])
    header = f"{'variant':<10} {'best µs/task':>13} {'median':>8} {'spread':>8}"
    print(f"{header} {'vs ' + variants[0]:>9}")
    for variant, runs in times.items():
        best = min(runs)
        spread = (max(runs) - best) / best
        print(
            f"{variant:<10} {best * 1e6:>13.2f} {statistics.median(runs) * 1e6:>8.2f} "
            f"{spread:>8.0%} {best / base - 1:>+9.1%}"
        )


if __name__ == "__main__":
    main()

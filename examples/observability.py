"""Observability: progress, Prometheus metrics, OpenTelemetry traces, JSON logs and the
web dashboard of a queue, all on this machine's loopback.

    pip install -e ".[examples,metrics,otel,dashboard]" opentelemetry-sdk
    python examples/observability.py              # runs a few seconds, prints what it saw
    python examples/observability.py --serve      # then keeps serving (Ctrl-C)

A `resize` queue whose handler reports progress (`self.progress`) and logs a line per
image. The program serves the system's metrics at http://127.0.0.1:PORT/metrics (as
`queueing worker --metrics-port PORT` does) and its dashboard (as `--dashboard-port`
does; examples/dashboard.py shows more of it), submits a batch, follows one task live with
`receipt.watch()`, scrapes its own metrics endpoint, and prints the trace of one task
(with the OpenTelemetry SDK installed; traces go through `opentelemetry-api` only, so
without an SDK they cost nothing and go nowhere). Log lines go to stderr as JSON, each line
about a task with its `queue`, `task_id` and `attempt`. Docs:
docs/concepts/observability.md.
"""

import json
import logging
import sys
from functools import partial
from typing import Any

import trio

from queueing import Queue, QueueSystem, TaskFields, Worker, open_system

try:
    import httpx
    import prometheus_client

    from queueing import metrics, tracing
    from queueing.dashboard import serve_dashboard
except ImportError as exc:  # pragma: no cover - the message is the point
    sys.exit(
        f"This example needs the metrics, otel and dashboard extras ({exc.name} is missing):\n"
        '  pip install -e ".[examples,metrics,otel,dashboard]"'
    )

log = logging.getLogger("resizer")
BATCH = 8
STEPS = 10


class JsonLines(logging.Formatter):
    """One JSON object per line, with the task's fields (python-json-logger does the same
    with `JsonFormatter("%(levelname)s %(name)s %(message)s %(queue)s %(task_id)s")`)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for field in ("queue", "task_id", "attempt"):
            doc[field] = getattr(record, field, None)
        return json.dumps(doc)


def json_logs() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    handler.addFilter(TaskFields())  # a handler's own lines get the task's fields too
    logging.basicConfig(level=logging.INFO, handlers=[handler])


class Resize(Worker):
    async def handle(self, image: int) -> str:
        log.info("resizing image %d", image)
        for step in range(1, STEPS + 1):
            await trio.sleep(0.05)
            self.progress(step, STEPS, note=f"pass {step}")
        return f"image-{image}.jpg"


resize = Queue("resize", Resize, workers=4)


def trace_tree() -> tuple[Any, Any] | None:
    """An SDK tracer provider writing to memory, and its exporter, if the SDK is there."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def main(serve_forever: bool) -> None:
    registry = prometheus_client.CollectorRegistry()
    traces = trace_tree()
    async with open_system(resize) as system, trio.open_nursery() as nursery:
        metrics.register(system, registry)
        port = await nursery.start(metrics.serve, 0, "127.0.0.1", registry)
        print(f"Metrics:  http://127.0.0.1:{port}/metrics")
        dashboard = await nursery.start(partial(serve_dashboard, system, port=0))
        print(f"Dashboard: {dashboard.link}")
        if traces is not None:
            tracing.instrument(system, tracer_provider=traces[0])
        await run_batch(system)
        await scrape(port)
        if traces is not None:
            print_trace(traces[1])
        if serve_forever:
            print("Serving the metrics and the dashboard until Ctrl-C")
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()


async def run_batch(system: QueueSystem) -> None:
    receipts = [await system.submit("resize", image) for image in range(BATCH)]
    async for status in receipts[-1].watch():  # the last one waits its turn, then runs
        shown = "-"
        if status.progress is not None:
            shown = f"{status.progress.done:g}/{status.progress.total:g} {status.progress.note}"
        print(f"Watching: {status.id} {status.state.value:<9} {shown}")
    for receipt in receipts:
        await receipt


async def scrape(port: int) -> None:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    wanted = ('queueing_tasks_total{outcome="succeeded"', "queueing_task_duration_seconds_count")
    for line in text.splitlines():
        if line.startswith(wanted):
            print(f"Scraped:  {line}")


def print_trace(exporter: Any) -> None:
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)
    first = next(s for s in spans if s.name.startswith("send"))
    trace_id = first.context.trace_id
    for span in spans:
        if span.context.trace_id == trace_id:
            depth = 1 if span.parent is not None else 0
            print(f"Trace:    {'  ' * depth}{span.name} ({span.kind.name.lower()})")


if __name__ == "__main__":
    json_logs()
    trio.run(main, "--serve" in sys.argv[1:])

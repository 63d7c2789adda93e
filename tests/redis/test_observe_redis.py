"""Observability across processes over Redis: progress followed from a client, `queueing
inspect` showing it, metrics scraped from a `queueing worker --metrics-port` over HTTP,
lease reclaims counted, and traces whose `process` spans are children of another
system's `send` spans (the context travels in the task's envelope)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis_helpers import start_worker, stop_workers

from queueing import (
    Pipeline,
    Queue,
    TaskState,
    TaskStatus,
    Worker,
    connect,
    metrics,
    open_system,
    tracing,
)
from queueing.cli import main as cli

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

#: The longest a worker process gets to start serving (a loaded 2-core machine).
START = 30.0
#: The longest a test waits for something that must happen.
WAIT = 20.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def logs_of(folder: Path) -> str:
    return "".join(path.read_text() for path in folder.glob("worker-*.log"))


def metrics_port(folder: Path, process: subprocess.Popen[bytes]) -> int:
    """The port a worker serves metrics on, from the line it logs at start."""
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the worker died:\n{logs_of(folder)}"
        match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", logs_of(folder))
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no metrics served within {START}s:\n{logs_of(folder)}")


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[int]:
    """`queueing worker observe_tasks --metrics-port 0` running; yields its metrics port."""
    process = start_worker(redis_url, "observe_tasks", tmp_path, "--metrics-port", "0")
    try:
        yield metrics_port(tmp_path, process)
    finally:
        stop_workers([process])
    assert process.returncode == 0, logs_of(tmp_path)


async def test_a_client_follows_the_progress_of_a_task_run_by_a_worker_process(
    redis_url: str, worker: int
) -> None:
    seen: list[TaskStatus] = []
    async with connect(redis_url) as system:
        receipt = await system.submit("steps", {"steps": 20, "every": 0.05})
        with trio.fail_after(WAIT):
            async for status in receipt.watch(interval=0.05):
                seen.append(status)
    assert seen[-1].state is TaskState.SUCCEEDED
    dones = [status.progress.done for status in seen if status.progress is not None]
    assert len(dones) >= 3  # followed live, not only at the end
    assert dones == sorted(dones)
    assert {status.state for status in seen[:-1]} <= {TaskState.PENDING, TaskState.RUNNING}


async def test_inspect_shows_the_progress_of_a_running_task(redis_url: str, worker: int) -> None:
    async with connect(redis_url) as system:
        receipt = await system.submit("steps", {"steps": 40, "every": 0.1})
        with trio.fail_after(WAIT):
            async for status in receipt.watch(interval=0.05):
                if status.progress is not None and status.progress.done >= 2:
                    break

        def inspect(*options: str) -> Any:
            return CliRunner().invoke(cli, ["inspect", receipt.id, "--broker", redis_url, *options])

        text = await trio.to_thread.run_sync(inspect)
        as_json = await trio.to_thread.run_sync(inspect, "--json")
        await receipt.cancel()
    assert text.exit_code == 0, text.output
    line = next(line for line in text.output.splitlines() if line.startswith("progress"))
    assert re.search(r"progress\s+\d+/40 \(\d+%\) step \d+ of 40, ", line), line
    assert as_json.exit_code == 0, as_json.output
    assert '"progress": {' in as_json.output
    assert '"total": 40' in as_json.output


async def test_metrics_are_scraped_from_a_worker_process(redis_url: str, worker: int) -> None:
    async with connect(redis_url) as system:
        receipts = [await system.submit("steps", {"steps": 1, "every": 0.01}) for _ in range(3)]
        for receipt in receipts:
            assert await receipt.result(timeout=WAIT) == 1
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{worker}/metrics")
    assert answer.status_code == 200
    found = samples(answer.text)
    steps = (("queue", "steps"),)
    assert found[("queueing_tasks_total", (("outcome", "succeeded"), *steps))] == 3
    assert found[("queueing_task_duration_seconds_count", steps)] == 3
    assert found[("queueing_queue_wait_seconds_count", steps)] == 3
    assert found[("queueing_workers", steps)] == 2
    assert found[("queueing_tasks_in_progress", steps)] == 0


class Hang(Worker):
    async def handle(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


async def test_histograms_of_an_in_process_system_over_redis_are_per_queue(
    redis_url: str,
) -> None:
    # Over a shared broker, the same per-task recording as in memory: each queue's counts,
    # buckets and sum under its own label (real time: lower bounds only).
    registry = CollectorRegistry()
    queues = [Queue("short", Hang, workers=4), Queue("long", Hang, workers=2)]
    async with open_system(*queues, broker=redis_url) as system:
        metrics.register(system, registry)
        receipts = await system.submit_many("short", [0.0] * 150)
        receipts += await system.submit_many("long", [0.06] * 6)
        for receipt in receipts:
            await receipt.result(timeout=WAIT)
        found = samples(generate_latest(registry).decode())

    def of(name: str, queue: str, **labels: str) -> float:
        return found[(name, tuple(sorted({"queue": queue, **labels}.items())))]

    duration = "queueing_task_duration_seconds"
    assert of(f"{duration}_count", "short") == 150
    assert of(f"{duration}_bucket", "short", le="+Inf") == 150
    assert of("queueing_queue_wait_seconds_count", "short") == 150
    assert of(f"{duration}_count", "long") == 6
    assert of(f"{duration}_bucket", "long", le="0.05") == 0  # each slept 0.06 s
    assert of(f"{duration}_bucket", "long", le="+Inf") == 6
    assert of(f"{duration}_sum", "long") >= 6 * 0.06
    assert of("queueing_queue_wait_seconds_count", "long") == 6
    assert of("queueing_tasks_total", "long", outcome="succeeded") == 6


async def test_a_task_reclaimed_after_its_process_died_is_counted(
    redis_server: Any, tmp_path: Path
) -> None:
    url = redis_server.url_with(prefix=f"reclaim{time.monotonic_ns() % 10**9}", lease=1)
    victim = start_worker(url, "observe_tasks:hang", tmp_path)
    registry = CollectorRegistry()
    try:
        async with connect(url, Queue("hang", Hang)) as client:
            receipt = await client.submit("hang", 0.5)
            with trio.fail_after(START):
                while (await receipt.status()).state is not TaskState.RUNNING:  # noqa: ASYNC110
                    await trio.sleep(0.05)  # another process: no event to wait on
            victim.kill()  # SIGKILL: its lease runs out, nobody settles the task
            victim.wait()
            async with open_system(Queue("hang", Hang), broker=url) as system:
                metrics.register(system, registry)
                assert await receipt.result(timeout=WAIT) == 0.5
                found = samples(generate_latest(registry).decode())
    finally:
        stop_workers([victim])
    assert found[("queueing_lease_reclaims_total", (("queue", "hang"),))] == 1
    assert found[("queueing_tasks_total", (("outcome", "succeeded"), ("queue", "hang")))] == 1


class Stage(Worker):
    async def handle(self, text: str) -> str:
        return text + "+"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_process_spans_are_children_of_a_clients_send_spans(
    redis_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    stages = [Queue(name, Stage) for name in ("fetch", "store")]
    pipeline = Pipeline("ingest", stages)  # type: ignore[arg-type]
    tracer = provider.get_tracer("app")
    async with open_system(pipeline, broker=redis_url) as served:
        tracing.instrument(served, tracer_provider=provider)
        async with connect(redis_url) as client:
            tracing.instrument(client, tracer_provider=provider)
            with tracer.start_as_current_span("request"):
                single = await client.submit("store", "alone")
                run = await client.submit("ingest", "page")
            assert await single.result(timeout=WAIT) == "alone+"
            assert await run.result(timeout=WAIT) == "page++"
    spans = exporter.get_finished_spans()
    (request,) = [span for span in spans if span.name == "request"]
    assert {span.context.trace_id for span in spans} == {request.context.trace_id}
    by_id = {span.context.span_id: span for span in spans}
    chains = []
    for span in spans:
        if span.name.startswith("process store"):
            chain = []
            current: ReadableSpan | None = span
            while current is not None:
                chain.append(current.name)
                parent = parent_of(current)
                current = by_id.get(parent) if parent is not None else None
            chains.append(chain)
    assert sorted(chains) == [
        ["process store", "send store", "process fetch", "send fetch", "request"],
        ["process store", "send store", "request"],
    ]


async def test_a_worker_serves_its_metrics_and_its_dashboard_together(
    redis_url: str, tmp_path: Path
) -> None:
    process = start_worker(
        redis_url, "observe_tasks", tmp_path, "--metrics-port", "0", "--dashboard-port", "0"
    )
    try:
        port = metrics_port(tmp_path, process)
        deadline = time.monotonic() + START
        while not (found := re.search(r"queueing dashboard: (http://\S+)/", logs_of(tmp_path))):
            assert time.monotonic() < deadline, logs_of(tmp_path)
            await trio.sleep(0.05)
        async with httpx.AsyncClient() as client:
            scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
            page = await client.get(found.group(1) + "/")
    finally:
        stop_workers([process])
    assert scrape.status_code == 200
    assert "queueing_workers" in scrape.text
    assert page.status_code == 200
    assert process.returncode == 0, logs_of(tmp_path)


async def test_a_slow_earlier_progress_write_never_lands_after_the_last(redis_url: str) -> None:
    # The first progress write to Redis is slowed down (0.5 s) while the handler reports
    # again and returns: the outcome waits for that write, then the last report is
    # written, so the stored progress is the last report (it was "half" now and then).
    from queueing.brokers.redis import RedisBroker

    broker = RedisBroker(redis_url)
    store = broker.store_progress
    writes = 0

    async def slow_first(queue: Any, updates: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 1:
            await trio.sleep(0.5)
        await store(queue, updates)

    broker.store_progress = slow_first  # type: ignore[method-assign]

    class TwoReports(Worker):
        async def handle(self, steps: int) -> int:
            self.progress(2, steps, note="half")
            await trio.sleep(0.05)  # the publisher takes "half" and starts writing it
            self.progress(steps, steps, note="all")
            return steps

    async with open_system(Queue("two-reports", TwoReports), broker=broker) as system:
        receipt = await system.submit("two-reports", 4)
        assert await receipt == 4
        at_outcome = (await receipt.status()).progress
        await trio.sleep(1.0)
        later = (await system.receipt(receipt.id).status()).progress
    assert writes >= 2
    assert at_outcome is not None
    assert at_outcome.note == "all"
    assert later is not None
    assert later.note == "all"

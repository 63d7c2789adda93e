"""OpenTelemetry traces (`queueing.tracing`) in one process, read back with the SDK's
in-memory exporter: spans, their parents, kinds and attributes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_fixed
from trace_tree import render

from queueing import (
    Pipeline,
    Queue,
    RetryPolicy,
    TaskFailed,
    Transient,
    Worker,
    open_system,
    tracing,
)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


class Traced(Worker):
    """Makes a span of its own inside the handler; fails on demand."""

    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("handler")

    async def handle(self, job: dict[str, Any]) -> str:
        with self.tracer.start_as_current_span("inside"):
            await trio.sleep(0.01)
        if job.get("fail") == "transient" and self.attempt < job.get("until", 99):
            raise Transient("try again")
        if job.get("fail") == "value":
            raise ValueError("bad job")
        return "ok"


def traced(provider: TracerProvider, name: str = "jobs") -> Queue:
    retry = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1))
    return Queue(name, Traced, worker_args=(provider,), retry=retry)


def by_name(spans: Any) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_task_makes_a_send_span_and_a_process_span_under_it(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_system(traced(provider)) as system:
        tracing.instrument(system, tracer_provider=provider)
        receipt = await system.submit("jobs", {})
        assert await receipt == "ok"
    spans = by_name(exporter.get_finished_spans())
    (send,) = spans["send jobs"]
    (process,) = spans["process jobs"]
    (inside,) = spans["inside"]
    assert (send.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert send.context.trace_id == process.context.trace_id == inside.context.trace_id
    assert parent_of(process) == send.context.span_id
    assert parent_of(inside) == process.context.span_id  # the handler's spans nest inside
    assert send.attributes == {
        "messaging.system": "queueing",
        "messaging.destination.name": "jobs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": receipt.id,
    }
    assert process.attributes is not None
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == receipt.id
    assert process.attributes["queueing.attempt"] == 1
    assert process.attributes["queueing.outcome"] == "succeeded"
    assert process.status.status_code is StatusCode.UNSET


async def test_the_send_span_is_a_child_of_the_submitters_span(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    async with open_system(traced(provider)) as system:
        tracing.instrument(system, tracer_provider=provider)
        with tracer.start_as_current_span("request") as request:
            receipt = await system.submit("jobs", {})
        await receipt
    (send,) = by_name(exporter.get_finished_spans())["send jobs"]
    assert parent_of(send) == request.get_span_context().span_id


async def test_each_attempt_is_a_process_span_of_the_same_send(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_system(traced(provider)) as system:
        tracing.instrument(system, tracer_provider=provider)
        assert await (await system.submit("jobs", {"fail": "transient", "until": 3})) == "ok"
    spans = by_name(exporter.get_finished_spans())
    (send,) = spans["send jobs"]
    attempts = sorted(spans["process jobs"], key=lambda span: span.start_time or 0)
    assert [span.attributes["queueing.attempt"] for span in attempts] == [1, 2, 3]  # type: ignore[index]
    assert [span.attributes["queueing.outcome"] for span in attempts] == [  # type: ignore[index]
        "scheduled",
        "scheduled",
        "succeeded",
    ]
    assert {parent_of(span) for span in attempts} == {send.context.span_id}
    assert [span.status.status_code for span in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attempts[0].events[0].name == "exception"
    assert attempts[0].events[0].attributes["exception.type"] == "queueing._exceptions.Transient"  # type: ignore[index]


async def test_a_failed_task_ends_its_span_in_error(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_system(traced(provider)) as system:
        tracing.instrument(system, tracer_provider=provider)
        assert isinstance(
            await outcome_of(await system.submit("jobs", {"fail": "value"})), TaskFailed
        )
    (process,) = by_name(exporter.get_finished_spans())["process jobs"]
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "ValueError: bad job"
    assert process.attributes is not None
    assert process.attributes["queueing.outcome"] == "failed"


class Stage(Worker):
    async def handle(self, text: str) -> str:
        return text + "+"


async def test_pipeline_stages_chain_in_one_trace(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    first, second, third = (Queue(name, Stage) for name in ("fetch", "resize", "store"))
    pipeline = Pipeline("ingest", [first, second, third])  # type: ignore[arg-type]
    async with open_system(pipeline) as system:
        tracing.instrument(system, tracer_provider=provider)
        assert await (await system.submit("ingest", "page")) == "page+++"
    assert render(exporter.get_finished_spans()) == (
        "send fetch (producer)\n"
        "└── process fetch (consumer) attempt=1 outcome=succeeded\n"
        "    └── send resize (producer)\n"
        "        └── process resize (consumer) attempt=1 outcome=succeeded\n"
        "            └── send store (producer)\n"
        "                └── process store (consumer) attempt=1 outcome=succeeded\n"
    )
    spans = by_name(exporter.get_finished_spans())
    (process,) = spans["process resize"]
    assert process.attributes is not None
    assert process.attributes["queueing.pipeline"] == "ingest"
    assert str(process.attributes["queueing.pipeline.run"]).startswith("ingest:")


class Blocking(Worker):
    """A sync handler, in a thread: its spans nest in the attempt's span all the same."""

    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("handler")

    def handle(self, number: int) -> int:
        with self.tracer.start_as_current_span("blocking work"):
            return number * 2


async def test_a_sync_handlers_spans_are_children_of_its_attempt(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_system(Queue("blocking", Blocking, worker_args=(provider,))) as system:
        tracing.instrument(system, tracer_provider=provider)
        assert await (await system.submit("blocking", 21)) == 42
    spans = by_name(exporter.get_finished_spans())
    (process,) = spans["process blocking"]
    (work,) = spans["blocking work"]
    assert parent_of(work) == process.context.span_id


async def test_submit_many_sends_a_span_per_task(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_system(traced(provider)) as system:
        tracing.instrument(system, tracer_provider=provider)
        receipts = await system.submit_many("jobs", [{}, {}, {}])
        for receipt in receipts:
            await receipt
    spans = by_name(exporter.get_finished_spans())
    sends = {span.context.span_id for span in spans["send jobs"]}
    assert len(sends) == 3
    assert {parent_of(span) for span in spans["process jobs"]} == sends


async def test_close_stops_tracing(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_system(traced(provider)) as system:
        tracing.instrument(system, tracer_provider=provider).close()
        await (await system.submit("jobs", {}))
    assert [span.name for span in exporter.get_finished_spans()] == ["inside"]


async def test_without_tracing_no_context_travels(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # The handler's span has no parent: nothing set up a `process` span around it.
    async with open_system(traced(provider)) as system:
        await (await system.submit("jobs", {}))
    (inside,) = exporter.get_finished_spans()
    assert inside.parent is None
    assert trace.get_current_span() is trace.INVALID_SPAN


DOCS = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "observability.md"
#: The trace tree docs/concepts/observability.md shows, as this test renders it.
DOCS_TREE = """\
POST /pages (internal)
└── send fetch (producer)
    ├── process fetch (consumer) attempt=1 outcome=scheduled
    └── process fetch (consumer) attempt=2 outcome=succeeded
        └── send thumbs (producer)
            └── process thumbs (consumer) attempt=1 outcome=succeeded
                └── resize image (internal)
"""


async def test_the_trace_tree_in_the_docs_is_what_a_pipeline_with_a_retry_makes(
    autojump_clock: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")

    class Fetch(Worker):
        async def handle(self, url: str) -> str:
            if self.attempt == 1:
                raise Transient("timeout")
            return url

    class Thumbs(Worker):
        async def handle(self, body: str) -> str:
            with tracer.start_as_current_span("resize image"):
                return body

    retry = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(0.01))
    fetch, thumbs = Queue("fetch", Fetch, retry=retry), Queue("thumbs", Thumbs)
    async with open_system(Pipeline("ingest", [fetch, thumbs])) as system:  # type: ignore[list-item]
        tracing.instrument(system, tracer_provider=provider)
        with tracer.start_as_current_span("POST /pages"):
            receipt = await system.submit("ingest", "https://example.org")
        await receipt
    assert render(exporter.get_finished_spans()) == DOCS_TREE
    assert DOCS_TREE in DOCS.read_text()

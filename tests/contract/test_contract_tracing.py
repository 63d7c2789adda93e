"""Traces (`queueing.tracing`): the trace context a task carries survives its broker, so
each attempt's `process` span is a child of its `send` span, the same on every broker."""

from __future__ import annotations

import pytest
import trio
from contract_workers import Echo, outcome_of, pipeline, serve
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from queueing import Queue, tracing


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def chain(spans: tuple[ReadableSpan, ...], name: str) -> list[str]:
    """The names from the span called `name` up to its trace's root."""
    by_id = {span.context.span_id: span for span in spans}
    (span,) = [span for span in spans if span.name == name]
    names = []
    current: ReadableSpan | None = span
    while current is not None:
        names.append(current.name)
        parent = current.parent.span_id if current.parent is not None else None
        current = by_id.get(parent) if parent is not None else None
    return names


async def test_an_attempt_is_a_child_of_its_submit(
    broker: str,
    clock: trio.abc.Clock | None,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    async with serve(broker, Queue("echo", Echo)) as system:
        tracing.instrument(system, tracer_provider=provider)
        with provider.get_tracer("app").start_as_current_span("request"):
            receipt = await system.submit("echo", "hello")
        assert await outcome_of(receipt) == "hello"
    assert chain(exporter.get_finished_spans(), "process echo") == [
        "process echo",
        "send echo",
        "request",
    ]


async def test_pipeline_stages_chain_in_one_trace(
    broker: str,
    clock: trio.abc.Clock | None,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    flow = pipeline("flow", Queue("first", Echo), Queue("second", Echo))
    async with serve(broker, flow) as system:
        tracing.instrument(system, tracer_provider=provider)
        assert await outcome_of(await system.submit("flow", "page")) == "page"
    spans = exporter.get_finished_spans()
    assert chain(spans, "process second") == [
        "process second",
        "send second",
        "process first",
        "send first",
    ]
    assert len({span.context.trace_id for span in spans}) == 1

"""OpenTelemetry traces of a queue system (the `otel` extra: `opentelemetry-api`).

    from queueing import tracing

    async with open_system(...) as system:
        tracing.instrument(system)    # spans go to OpenTelemetry's global tracer provider

Spans, attributes and how a trace crosses processes: docs/concepts/observability.md.
"""

from ._tracing import Tracing as Tracing
from ._tracing import instrument as instrument

__all__ = ["Tracing", "instrument"]

"""OpenTelemetry traces of a queue system, through `opentelemetry-api` only (the `otel`
extra; which SDK and exporter, if any, is the application's choice).

Spans follow the messaging semantic conventions:

- `send <queue>` (kind PRODUCER) around each hand-over of a task to the broker: a
  submit (a child of whatever span is current there), and a pipeline stage's result going
  on to the next stage (a child of that stage's `process` span). Its context is written
  into the task (`Task.trace`, W3C trace context through the global propagator), which
  carries it to whichever process runs it;
- `process <queue>` (kind CONSUMER) around each attempt, a child of the `send` span
  whose context the task carries; it is the current span while the handler runs, so the
  handler's own spans are its children.

Attributes: `messaging.system` ("queueing"), `messaging.destination.name` (the queue),
`messaging.operation.type` and `.name` ("send", "process"), `messaging.message.id` (the
task id); on `process` spans also `queueing.attempt`, `queueing.outcome` (the task's state
once the attempt ended: "succeeded", "scheduled" for a retry, "dead-lettered"...) and, for a
pipeline's stage, `queueing.pipeline` and `queueing.pipeline.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from ._observe import Hooks, add_hooks
from ._task import Task, TaskState, trace_of

if TYPE_CHECKING:
    from ._runtime import QueueRuntime
    from ._system import QueueSystem

#: `messaging.system` of every span.
SYSTEM = "queueing"
_SUCCEEDED = TaskState.SUCCEEDED


def _version() -> str:
    try:
        return version("trio-queueing")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "0"


class Tracing:
    """The tracing of one `QueueSystem` (see `instrument`); `close()` ends it."""

    def __init__(self, system: QueueSystem, tracer_provider: TracerProvider | None) -> None:
        self.tracer = trace.get_tracer("queueing", _version(), tracer_provider=tracer_provider)
        # The `process` span of each attempt running now, and the context token that made
        # it current (detached when the attempt ends, in the same trio task).
        self._running: dict[Task, tuple[trace.Span, object]] = {}

        def hooks(rt: QueueRuntime) -> Hooks:
            queue = rt.name
            return Hooks(
                sending=lambda task: self._send(queue, task),
                starting=lambda task: self._start(queue, task),
                ended=self._end,
            )

        self._unhook: Callable[[], None] | None = add_hooks(system._runtimes, hooks)

    def close(self) -> None:
        """Stop tracing this system (attempts running now still end their spans)."""
        if self._unhook is not None:
            self._unhook()
            self._unhook = None

    def _attributes(self, queue: str, task: Task, operation: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.message.id": task.id,
        }
        if task.run is not None:
            attributes["queueing.pipeline"] = task.route or ""
            attributes["queueing.pipeline.run"] = task.run
        return attributes

    def _send(self, queue: str, task: Task) -> Callable[[BaseException | None], None] | None:
        span = self.tracer.start_span(
            f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(queue, task, "send"),
        )
        if not span.get_span_context().is_valid:
            return None  # no SDK, no trace around: nothing to carry, nothing to end
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        task.trace = carrier or None

        def sent(error: BaseException | None) -> None:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()

        return sent

    def _start(self, queue: str, task: Task) -> None:
        carried = trace_of(task)
        # A task submitted without tracing starts a trace of its own (not a child of
        # whatever the worker's task happens to have as its context).
        parent = propagate.extract(carried) if carried else context.Context()
        attributes = self._attributes(queue, task, "process")
        attributes["queueing.attempt"] = task.attempts
        span = self.tracer.start_span(
            f"process {queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        if not span.get_span_context().is_valid:
            return  # no SDK, no trace carried: nothing to make current, nothing to end
        token = context.attach(trace.set_span_in_context(span))
        self._running[task] = (span, token)

    def _end(self, task: Task, started: float, error: BaseException | None) -> None:
        entry = self._running.pop(task, None)
        if entry is None:
            return  # started before this tracing was on
        span, token = entry
        context.detach(token)  # type: ignore[arg-type]
        span.set_attribute("queueing.outcome", task.state.value)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif task.state.final and task.state is not _SUCCEEDED:
            message = f"{task.error.type}: {task.error.message}" if task.error else ""
            span.set_status(Status(StatusCode.ERROR, message or task.state.value))
        span.end()


def instrument(system: QueueSystem, *, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace the system's tasks: `send` spans on submits, `process` spans around
    attempts, the context carried by each task to the process that runs it.

    Instrument both sides: the submitting process (its `send` spans and the context its
    tasks carry) and each worker process (their `process` spans); `queueing worker
    --otel` does it for a worker.

    Args:
        system: a running system (`open_system`, `run_system`'s `main`, `connect`).
        tracer_provider: where spans go (default: OpenTelemetry's global provider, a
            no-op until the application sets one up with an SDK).

    Returns:
        The `Tracing`; its `close()` stops tracing the system.
    """
    return Tracing(system, tracer_provider)

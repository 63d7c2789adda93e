"""A text rendering of finished spans as trees (import as `trace_tree`): the docs show
one (docs/concepts/observability.md), and the tests compare against it."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

#: The attributes a rendering shows after a span's name (`queueing.` left out).
SHOWN = ("queueing.attempt", "queueing.outcome")


def _line(span: ReadableSpan) -> str:
    kind = span.kind.name.lower()
    attributes = span.attributes or {}
    shown = [f"{key.split('.', 1)[1]}={attributes[key]}" for key in SHOWN if key in attributes]
    return " ".join([f"{span.name} ({kind})", *shown])


def render(spans: Sequence[ReadableSpan]) -> str:
    """Each trace as a tree, children in start order, one line per span."""
    ids = {span.context.span_id for span in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└── " if last else "├── ")
        lines.append(prefix + branch + _line(span))
        below = children.get(span.context.span_id, [])
        inner = prefix if root else prefix + ("    " if last else "│   ")
        for index, child in enumerate(below):
            walk(child, inner, index == len(below) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    return "".join(line + "\n" for line in lines)

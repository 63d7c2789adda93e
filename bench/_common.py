"""Small helpers shared by the benchmarks in bench/ (timing, formatting, machine line).

A benchmark imports it as `import _common` (bench/ is on `sys.path` when a bench runs as
`python bench/NAME_bench.py`).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence

import trio

Timing = tuple[int, float]
"""(operations, seconds) of one run."""


def machine() -> str:
    """One line naming the interpreter, trio and the CPU count."""
    return (
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, {os.cpu_count()} CPU(s), {platform.system()} "
        f"{platform.machine()}"
    )


def rate_of(timing: Timing) -> float:
    count, seconds = timing
    return count / seconds if seconds > 0 else float("inf")


def best(runs: Sequence[Timing]) -> float:
    """Operations per second of the fastest run (the one least disturbed by the machine)."""
    return max(rate_of(run) for run in runs)


def median(runs: Sequence[Timing]) -> float:
    return statistics.median(rate_of(run) for run in runs)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The `p`-th percentile (nearest rank) of an already sorted sequence."""
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def verdict(ok: bool) -> str:
    """PASS/MISS with rich markup."""
    return "[green]PASS[/]" if ok else "[red]MISS[/]"

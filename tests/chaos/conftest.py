"""The chaos scenarios' table: each scenario fills one row (`scenario` fixture); the run
prints them as one table at the end, and writes it (Markdown) to the file named by
`$QUEUEING_CHAOS_TABLE` (`nox -s chaos` sets it to bench/results/chaos.md)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from chaos_helpers import Inconclusive


@attrs.define
class Row:
    """One scenario's figures. `lost` counts receipts that ended `TaskLost` (detected),
    `unresolved` those that never ended (a broken promise everywhere)."""

    scenario: str
    broker: str
    promise: str
    tasks: int = 0
    lost: int = 0
    unresolved: int = 0
    duplicated: int = 0
    recovery: float | None = None
    memory: dict[str, float] = attrs.Factory(dict)
    result: str = "not run"

    def cells(self) -> list[str]:
        recovery = "-" if self.recovery is None else f"{self.recovery:.1f}"
        memory = ", ".join(f"{label} {mb:.0f}" for label, mb in self.memory.items() if mb)
        return [
            self.scenario,
            self.broker,
            f"{self.tasks:,}",
            str(self.lost),
            str(self.unresolved),
            str(self.duplicated),
            recovery,
            memory or "-",
            self.promise,
            self.result,
        ]


HEADER = [
    "scenario",
    "broker",
    "tasks",
    "lost (TaskLost)",
    "unresolved",
    "duplicated",
    "recovery s",
    "peak RSS MB",
    "promise",
    "result",
]
ROWS: list[Row] = []


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Row:
    """This scenario's row; the test sets `scenario`, `broker`, `promise`, then figures."""
    row = Row(request.node.name, "", "")
    ROWS.append(row)
    request.node.chaos_row = row
    return row


#: The longest reason a `result` cell quotes.
WHY_CHARS = 160


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in `error`, out of their groups (pytest-trio raises a test's own
    failure in a trio nursery's `ExceptionGroup`)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def why(error: BaseException) -> str:
    """The first line of each failure, for a table cell: an assertion's own message (or the
    compared values), another exception's type and message."""
    lines = []
    for leaf in leaves(error):
        text = str(leaf) if isinstance(leaf, AssertionError) else f"{type(leaf).__name__}: {leaf}"
        lines.append((text.strip().splitlines() or [type(leaf).__name__])[0].strip())
    line = "; ".join(lines)
    if len(line) > WHY_CHARS:
        line = line[: WHY_CHARS - 3] + "..."
    return line.replace("|", "\\|")


def verdict(when: str, error: BaseException | None) -> str:
    """A row's `result`: `kept`; `BROKEN: why` only when the scenario ran and a promise
    failed; `inconclusive: why` when the fault did not strike as planned (the run proves
    nothing either way); `not run: why` when the harness failed before the scenario."""
    if error is None:
        return "kept"
    if when == "setup":
        return f"not run: {why(error)}"
    if all(isinstance(leaf, Inconclusive) for leaf in leaves(error)):
        return f"inconclusive: {why(error)}"
    return f"BROKEN: {why(error)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    row = getattr(item, "chaos_row", None)
    if row is None or report.skipped:
        return
    error = call.excinfo.value if call.excinfo is not None and report.failed else None
    if report.when == "call" or (report.when == "setup" and error is not None):
        row.result = verdict(report.when, error)
    elif report.when == "teardown" and error is not None:
        # The scenario's verdict stands; the harness failed after it (stopping a process).
        row.result += f" (teardown error: {why(error)})"


#: The table's order: brokers as the docs list them, scenarios in the order they ran.
BROKERS = ("memory", "sqlite", "redis", "amqp")


def table() -> str:
    rows = sorted(ROWS, key=lambda row: BROKERS.index(row.broker) if row.broker in BROKERS else 9)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def caption() -> str:
    """When and where the table was measured."""
    try:
        version = (
            subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            )
            .stdout.split("v=")[1]
            .split()[0]
        )
    except (OSError, IndexError):
        version = "not installed"
    return (
        f"_`nox -s chaos`, {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, redis-server {version}._\n\n"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    text = caption() + table()
    terminalreporter.write_sep("=", "chaos scenarios")
    terminalreporter.write(text)
    path = os.environ.get("QUEUEING_CHAOS_TABLE")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        terminalreporter.write_line(f"(written to {path})")

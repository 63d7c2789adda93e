"""Shared helpers for the processing-queue tests (import as `queueing_helpers`).

Time-based tests take pytest-trio's `autojump_clock` fixture (a `MockClock` with
`autojump_threshold=0`): sleeps and backoffs cost no real time, and `trio.current_time()`
tells exactly when something happened.
"""

from __future__ import annotations

from typing import Any

import queueing


async def outcome_of(receipt: queueing.Receipt) -> Any:
    """The receipt's result, or the `TaskFailed` it raises (for asserting on either)."""
    try:
        return await receipt
    except queueing.TaskFailed as exc:
        return exc

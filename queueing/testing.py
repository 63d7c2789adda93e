"""Pytest plugin for testing your own queues (registered through the ``pytest11`` entry
point, like ``actors.testing``).

Fixtures:

- ``open_queues``: ``async with open_queues(*queues_and_pipelines) as system:`` runs them in
  the test's own trio run, with the in-process broker (``memory://``) whatever
  ``QUEUEING_BROKER`` says, and shuts them down at the end of the block. Needs pytest-trio
  (``trio_mode = true``, or mark the test ``@pytest.mark.trio``).

With pytest-trio's ``autojump_clock`` fixture (``trio.testing.MockClock(autojump_threshold=0)``)
the queues run on mock time: retry backoffs, delays, ``expires=`` and timeouts are skipped
as soon as nothing else can run, so a test of two 600 s backoffs takes milliseconds. Time
jumps only when every task waits: a sync ``def handle`` runs in a thread, and mock time
jumps past a queue's ``timeout`` while the thread works (give such a queue
``timeout=None`` in clock tests, with ``attrs.evolve``). docs/how-to/testing.md has examples.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from ._open import open_system
from ._queue import Pipeline, Queue
from ._system import QueueSystem

#: Seconds running tasks get to finish when an `open_queues` block ends (mock seconds
#: under the autojump clock).
TEST_SHUTDOWN_TIMEOUT = 5.0


@asynccontextmanager
async def open_queues(
    *specs: Queue[Any] | Pipeline,
    shutdown_timeout: float = TEST_SHUTDOWN_TIMEOUT,
    **options: Any,
) -> AsyncIterator[QueueSystem]:
    """Run queues and pipelines in this trio run for a test: `open_system()` on the
    in-process broker, whatever `QUEUEING_BROKER` says.

    Args:
        specs: the `Queue`s and `Pipeline`s to serve (change what a test needs with
            `attrs.evolve(queue, worker_kwargs=..., retry=...)`).
        shutdown_timeout: seconds running tasks get to finish at the end of the block.
        options: the other options of `open_system()` (`broker=` to test another one).
    """
    options.setdefault("broker", "memory://")
    async with open_system(*specs, shutdown_timeout=shutdown_timeout, **options) as system:
        yield system


@pytest.fixture(name="open_queues")
def open_queues_fixture() -> Callable[..., AbstractAsyncContextManager[QueueSystem]]:
    """`open_queues`, as a fixture: `async with open_queues(my_queue) as system:`."""
    return open_queues

"""Pytest plugin for testing actors (registered through the ``pytest11`` entry point).

Fixtures:

- ``actor_system``: a running `ActorSystem`, shut down after the test. Needs pytest-trio
  (``trio_mode = true``, or mark the test ``@pytest.mark.trio``).

Time-based behaviour (backoff, timeouts, restarts) is best tested with pytest-trio's
``autojump_clock`` fixture (``trio.testing.MockClock(autojump_threshold=0)``): sleeps are
skipped, so such tests take milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._system import ActorSystem, open_system


@pytest.fixture
async def actor_system() -> AsyncIterator[ActorSystem]:
    """A running actor system with default settings."""
    async with open_system(name="test") as system:
        yield system

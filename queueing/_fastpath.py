"""Amortized checkpoints for hot paths.

Every public async function is a cancellation point; most calls here skip the scheduler
round trip and only every `EVERY`-th call yields, so a loop of fast calls stays fair to
other tasks without paying a context switch per call (see docs/performance.md).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import trio

EVERY = 64

#: Count one fast call; True when this one should yield to the scheduler (every
#: `EVERY`-th call). For hot paths that inline `checkpoint()`: `await
#: checkpoint_if_cancelled()` on every call, and `await cancel_shielded_checkpoint()` when
#: this returns True. `next` over a cycle: a call into C, no Python frame (it runs twice
#: per task: at submit and at `await receipt`).
due: Callable[[], bool] = functools.partial(next, itertools.cycle((False,) * (EVERY - 1) + (True,)))


async def checkpoint() -> None:
    await trio.lowlevel.checkpoint_if_cancelled()
    if due():
        await trio.lowlevel.cancel_shielded_checkpoint()

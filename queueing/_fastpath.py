"""Amortized checkpoints for hot paths.

Every public async function is a cancellation point; most calls here skip the scheduler
round trip and only every `EVERY`-th call yields, so a loop of fast calls stays fair to
other tasks without paying a context switch per call (see docs/performance.md).
"""

from __future__ import annotations

import trio

EVERY = 64
_count = 0


async def checkpoint() -> None:
    global _count
    await trio.lowlevel.checkpoint_if_cancelled()
    _count += 1
    if _count >= EVERY:
        _count = 0
        await trio.lowlevel.cancel_shielded_checkpoint()

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
    await trio.lowlevel.checkpoint_if_cancelled()
    if due():
        await trio.lowlevel.cancel_shielded_checkpoint()


def due() -> bool:
    """Count one fast call; True when this one should yield to the scheduler.

    For hot paths that inline `checkpoint()`: `await checkpoint_if_cancelled()` on every
    call, and `await cancel_shielded_checkpoint()` when this returns True.
    """
    global _count
    _count += 1
    if _count >= EVERY:
        _count = 0
        return True
    return False

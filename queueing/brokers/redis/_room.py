"""Waiting for room in a full queue: one blocking read per queue, whoever waits.

Every recorded outcome pushes a token to the queue's `room` list (`finish.lua`). A
submitter that found the queue full waits for a token. However many submitters wait in
this process, one of them pops tokens with short `BLPOP`s on their behalf and wakes them
all when one comes (they try again; `accept` decides). A `BLPOP` per waiter would hold
one connection of the client's pool each: with dozens of waiters every other command of
the process (claims, outcome writes) would queue behind them.
"""

from __future__ import annotations

import functools
from typing import Any

import trio

from .._contract import QueueInfo
from . import _keys as k
from ._calls import Calls

#: The longest and shortest one blocking read for room waits (a cancellation waits for it:
#: see Calls._attempt; Redis takes no shorter timeout).
ROOM_BLOCK = 0.05
ROOM_BLOCK_MIN = 0.01


class _Waiters:
    __slots__ = ("handed", "lot", "reading")

    def __init__(self) -> None:
        self.lot = trio.lowlevel.ParkingLot()
        self.reading = False
        self.handed = 0  # tokens popped for waiters, not taken by one yet


class Room:
    """`wait_room` for the queues of one client."""

    def __init__(self, calls: Calls, keys: k.Keys) -> None:
        self.calls = calls
        self.keys = keys
        self._queues: dict[str, _Waiters] = {}

    async def wait(self, queue: QueueInfo, timeout: float) -> None:
        """Return when a token came for this caller (the queue may have room), or after
        `timeout`. A token is room for one task: as many waiters go on as tokens came."""
        waiters = self._queues.get(queue.name)
        if waiters is None:
            waiters = self._queues[queue.name] = _Waiters()
        deadline = trio.current_time() + timeout
        while True:
            if waiters.handed:
                waiters.handed -= 1
                await trio.lowlevel.checkpoint()
                return
            left = deadline - trio.current_time()
            if left <= 0:
                await trio.lowlevel.checkpoint()
                return
            if waiters.reading:  # another waiter reads for us all
                with trio.move_on_at(deadline):
                    await waiters.lot.park()
                continue
            waiters.reading = True
            got = 0
            try:
                got = await self._read(queue.name, left, len(waiters.lot))
            finally:
                waiters.reading = False
                waiters.handed = min(waiters.handed + max(got - 1, 0), k.ROOM_TOKENS)
                # Those a token came for, and one more to read from now on.
                waiters.lot.unpark(count=max(got - 1, 0) + 1)
            if got:
                return

    async def _read(self, name: str, timeout: float, others: int) -> int:
        """Pop tokens within `timeout` seconds, in short blocking reads: one, and then at
        once up to `others` more (for the other waiters); returns how many."""
        room = self.keys.room(name)
        deadline = trio.current_time() + timeout
        while True:
            left = deadline - trio.current_time()
            if left <= 0:
                return 0
            step = max(min(left, ROOM_BLOCK), ROOM_BLOCK_MIN)
            pop = functools.partial(self.calls.fast.blpop, [room], timeout=step)
            if await self.calls.retrying("wait for room", pop, wait=step):
                break
        if not others:
            return 1
        count = min(others, k.ROOM_TOKENS)

        async def more() -> int:
            popped: Any = await self.calls.fast.lpop(room, count)
            return len(popped) if isinstance(popped, list) else 0

        return 1 + await self.calls.retrying("wait for room", more)

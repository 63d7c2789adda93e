"""Batched writes to the results store: outcome writes wait for the next round trip.

Writes (`finish`, `move`, `confirm`, `reject` script calls) are queued as `Op`s: a claim's
check or a batch of submits sends them in the same round trip as its own call, and the
flush loop sends what nobody took. Each `Op`'s `then` gets its answer (the broker
acknowledges a message there, once its outcome is stored). A lazy write (a submit's
confirm: nothing waits for it) waits up to `LAZY_WAIT` for such a round trip (the next
submit's reserve, mostly) before the flush loop sends it alone. And while a claim holds
deliveries it is about to check (a `Ride`: from the claim's start to its check's send), the
flush loop leaves the writes to that check: a worker that settles a task asks for the next
one at once, so its outcome rides the check of that claim instead of a round trip alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ..redis._calls import Calls

log = logging.getLogger("queueing.rabbitmq")

#: Writes sent in one round trip; queued beyond `WRITES_CONGESTED`, `settle` waits.
WRITES_BATCH = 1000
WRITES_CONGESTED = 2000
#: Seconds lazy writes alone wait for another round trip to take them along.
LAZY_WAIT = 0.02


async def _nothing() -> None:
    pass


class Op:
    """One batched write: a script call, and what to do with its answer."""

    __slots__ = ("args", "keys", "script", "then")

    def __init__(
        self,
        script: str,
        keys: list[str],
        args: list[Any],
        then: Callable[[Any], None] | None = None,
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.then = then


class Ride:
    """A claim about to send its check, which takes the queued writes along; `off()`
    once it did (or will not): the flush loop sends them itself again."""

    __slots__ = ("on", "writes")

    def __init__(self, writes: Writes) -> None:
        self.writes = writes
        self.on = True
        writes.riders += 1

    def off(self) -> None:
        if self.on:
            self.on = False
            writes = self.writes
            writes.riders -= 1
            if not writes.riders and writes._riders_lot:
                writes._riders_lot.unpark_all()


class Writes:
    """The queue of writes, and the loop that sends them."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.ops: list[Op] = []
        self._ops_lot = trio.lowlevel.ParkingLot()
        self._eager_lot = trio.lowlevel.ParkingLot()
        self._flushed = trio.lowlevel.ParkingLot()
        #: Whether a write that is not lazy may be queued.
        self._eager = False
        #: Awaited after writes were answered (the broker sends the acknowledgements their
        #: callbacks asked for, in the same task: no hop to another).
        self.after_written: Callable[[], Awaitable[None]] = _nothing
        #: Called with True before the callbacks of writes whose `after_written` follows,
        #: and False after them (the broker's ack task need not wake for those acks).
        self.hush: Callable[[bool], None] = lambda on: None
        #: Claims about to send a check that takes the queued writes along (`Ride`).
        self.riders = 0
        self._riders_lot = trio.lowlevel.ParkingLot()

    def ride(self) -> Ride:
        """A claim with deliveries in hand: the writes queued until its check is sent
        go with the check (`Ride.off()` when it is sent, or the claim ends without)."""
        return Ride(self)

    def push(self, op: Op, *, lazy: bool = False) -> None:
        self.ops.append(op)
        if not lazy:
            self._eager = True
            if self._eager_lot:
                self._eager_lot.unpark_all()
        if self._ops_lot:
            self._ops_lot.unpark_all()

    @property
    def congested(self) -> bool:
        return len(self.ops) > WRITES_CONGESTED

    async def relieve(self) -> None:
        """Wait while more writes are queued than Redis keeps up with."""
        while self.congested:
            await self._flushed.park()

    def take(self) -> list[Op]:
        batch = self.ops[:WRITES_BATCH]
        del self.ops[:WRITES_BATCH]
        if not self.ops:
            self._eager = False
        return batch

    def fill(self, pipe: Any, batch: Sequence[Op]) -> list[Any]:
        return [self.calls.script(pipe, op.script, op.keys, op.args) for op in batch]

    def answered(
        self, batch: Sequence[Op], answers: Sequence[Any], *, written: bool = False
    ) -> None:
        """After a batch was written: hand each answer on, wake whoever waits. `written`:
        the caller awaits `after_written` next (`hush` is on meanwhile)."""
        if written:
            self.hush(True)
        try:
            for op, answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    log.error("redis %s (keys %s) failed: %s", op.script, op.keys[:2], answer)
                elif op.then is not None:
                    op.then(answer)
        finally:
            if written:
                self.hush(False)
        if not self.congested:
            self._flushed.unpark_all()

    async def flush(self) -> None:
        """Wait until every write queued so far has been sent."""
        while self.ops:
            with trio.move_on_after(self.calls.block):
                await self._flushed.park()
        await trio.lowlevel.checkpoint()

    async def flush_loop(self) -> None:
        while True:
            if not self.ops:
                self._flushed.unpark_all()
                await self._ops_lot.park()
                # Let a claim woken at the same time take these writes along with its
                # check (one round trip instead of two).
                await trio.lowlevel.checkpoint()
                continue
            if self.riders and not self.congested:
                # A claim sends its check in a moment: these writes go with it.
                await self._riders_lot.park()
                continue
            if not self._eager:
                # Lazy writes only: the next submit's round trip may take them along.
                with trio.move_on_after(LAZY_WAIT) as waited:
                    await self._eager_lot.park()
                if not waited.cancelled_caught or not self.ops:
                    continue
            batch = self.take()
            answers = await self.calls.pipelined(
                "write outcomes", functools.partial(self.fill, batch=batch)
            )
            self.answered(batch, answers, written=True)
            await self.after_written()

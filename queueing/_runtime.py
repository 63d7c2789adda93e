"""The live side of one queue in this process: ready tasks, idle workers, counters."""

from __future__ import annotations

import inspect
from collections import deque
from typing import TYPE_CHECKING, Any

import cattrs
import trio

from ._convert import Codec, handler_types
from ._stats import Latency

if TYPE_CHECKING:
    from actors import ActorRef

    from ._queue import Queue
    from ._task import Envelope


class QueueRuntime:
    """Ready tasks in arrival order and the workers waiting for them (no prefetch: a task
    leaves this deque only when a worker is free to run it)."""

    def __init__(self, spec: Queue, converter: cattrs.Converter) -> None:
        self.spec = spec
        self.name = spec.name
        self.ttl = spec.result_ttl
        payload_type, result_type = handler_types(spec.worker.handle)
        self.payload_codec = Codec(converter, payload_type, spec.name)
        self.result_codec = Codec(converter, result_type, spec.name)
        # Payloads submit may take as they are (no converter, no size count): an int of at
        # most 24 bytes of JSON, a str at most 6 bytes a character (escapes) plus quotes.
        limit = spec.max_payload
        self.direct_int = payload_type in (Any, int) and limit >= 24
        self.direct_str = (limit - 2) // 6 if payload_type in (Any, str) else -1
        self.sync = not inspect.iscoroutinefunction(spec.worker.handle)
        self.limiter = trio.CapacityLimiter(spec.threads or spec.workers) if self.sync else None
        self.ready: deque[Envelope] = deque()
        self.idle = trio.lowlevel.ParkingLot()
        # Counts kept here because a ParkingLot's len() is a Python call (these are read
        # once or twice per task): workers parked in `idle` (woken or not), workers
        # unparked that have not run yet, submitters waiting for room.
        self.parked = 0
        self.waking = 0
        self.room_waiters = 0
        # A broker that fetches (Redis) waits here until a worker goes idle.
        self.hungry = trio.lowlevel.ParkingLot()
        self.pool: ActorRef | None = None
        self.in_flight = 0
        self.maxsize = spec.maxsize
        self.outstanding = 0  # accepted, without an outcome yet (the memory broker's count)
        self.scheduled = 0
        self.submitted = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.cancelled = 0
        self.expired = 0
        self.latency = Latency()

    def push(self, env: Envelope) -> None:
        self.ready.append(env)
        if self.parked and not self.waking:
            self.wake()

    def push_front(self, env: Envelope) -> None:
        self.ready.appendleft(env)
        if self.parked and not self.waking:
            self.wake()

    def wake(self) -> None:
        """Wake one idle worker. Workers wake in a chain, not all at once: a worker that
        takes a task and sees more waiting wakes the next (one scheduler round trip per
        worker that finds work, none for workers that would find the deque empty)."""
        if self.idle.unpark():  # none if the parked one is being cancelled right now
            self.waking += 1

    def restarts(self) -> int:
        if self.pool is None or not self.pool.is_alive:
            return 0
        from actors import Supervisor

        pool = self.pool._cell.instance
        if not isinstance(pool, Supervisor):
            return 0
        return sum(ref.stats().restarts for ref in pool.children)

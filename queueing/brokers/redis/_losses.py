"""Data that Redis lost: noticed cheaply, logged once per event.

Redis loses data when it restarts without persistence, on `FLUSHALL`/`FLUSHDB`, or when it
restarts after an `appendfsync everysec` AOF missed its last second. Nothing tells a client
so; what shows it:

- the epoch key (`{prefix}:epoch`, a random token written once by the first process
  that connects): gone or changed means the data set was flushed or replaced. Every
  process reads it every `PROBE_EVERY` seconds and right after a lost connection comes
  back;
- a task record that was there and is gone (the receipt side's sweeps find it, and a
  sweep follows every reconnect), a held task's record gone at `renew`, an outcome
  written for a task without a record.

The receipt side answers with `LOST` records (see `_receipts`), the worker side drops the
tasks it holds whose records are gone; this module only tells the user, once per event.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio

from ..._task import ErrorInfo, Task, TaskState
from .._contract import queue_of
from . import _keys as k
from ._calls import Calls

log = logging.getLogger("queueing.redis")

#: Seconds between two reads of the epoch key.
PROBE_EVERY = 1.0
#: Signs of a loss closer than this (seconds) to the previous one belong to the same event.
EVENT_GAP = 10.0

#: The error of a task whose record Redis lost.
LOST_ERROR = ErrorInfo(
    "TaskLost",
    "Redis lost the task's record (a restart without persistence, a FLUSHALL, or the last "
    "second of an everysec AOF): whether it ran is unknown",
)


def lost_record(task_id: str) -> Task:
    """The record `wait_settled` reports for an id whose record Redis lost."""
    task = Task(task_id, queue_of(task_id), None, 0.0)
    task.settle(TaskState.LOST, None, LOST_ERROR, time.time())
    return task


class Losses:
    """The epoch probe and the once-per-event warning."""

    def __init__(self, calls: Calls, keys: k.Keys) -> None:
        self.calls = calls
        self.keys = keys
        self.key = keys.epoch()
        self.epoch: str | None = None
        #: On a Redis Cluster, the queues (shards) whose nodes are watched too: each has an
        #: epoch key under its own tag, since one node can lose its data alone.
        self.names: Callable[[], Iterable[str]] | None = None
        self._epochs: dict[str, str] = {}
        #: Called when the epoch changed (the receipt side sweeps at once).
        self.on_loss: list[Callable[[], None]] = []
        self._last = -math.inf
        self._lot = trio.lowlevel.ParkingLot()
        calls.on_reconnect.append(self.probe_now)

    def probe_now(self) -> None:
        """Read the epoch(s) now (after a reconnect, or a new queue to watch)."""
        self._lot.unpark_all()

    async def start(self) -> None:
        """At connect: adopt the epoch (writing it if there is none)."""
        self.epoch = await self._read()

    async def _read(self) -> str:
        from coredis.tokens import PureToken

        token = secrets.token_hex(8)
        keys = [self.key]
        if self.names is not None:
            keys += [self.keys.of(name, "epoch") for name in self.names()]

        def fill(pipe: Any) -> list[Any]:
            calls = []
            for key in keys:
                calls += [pipe.set(key, token, condition=PureToken.NX), pipe.get(key)]
            return calls

        answers = await self.calls.pipelined("read the epoch", fill)
        tokens = [token if value is None else str(value) for value in answers[1::2]]
        for key, current in zip(keys[1:], tokens[1:], strict=True):
            before = self._epochs.get(key)
            self._epochs[key] = current
            if before is not None and before != current:
                self.note(f"the node that holds {key} lost its data (restarted empty, or flushed)")
                for callback in self.on_loss:
                    callback()
        return tokens[0]

    async def probe_loop(self) -> None:
        """Background: read the epoch every `PROBE_EVERY` seconds (at once after a
        reconnect); a change is a loss event."""
        while True:
            with trio.move_on_after(PROBE_EVERY):
                await self._lot.park()
            current = await self._read()
            if self.epoch is not None and current != self.epoch:
                self.note(
                    "its data set was flushed or replaced (a FLUSHALL, or a restart without "
                    "persistence)"
                )
                for callback in self.on_loss:
                    callback()
            self.epoch = current

    def note(self, what: str) -> None:
        """A sign of lost data: warned about unless it belongs to the event warned of (the
        previous sign came less than `EVENT_GAP` seconds before)."""
        now = trio.current_time()
        if now - self._last > EVENT_GAP:
            log.warning(
                "Redis lost data: %s. Receipts of tasks whose records are gone end with "
                "TaskLost; tasks held here whose records are gone are dropped (this is "
                "logged once per event)",
                what,
            )
        self._last = now

"""Receipts: lookup, wait_settled, wait_room, and the reader of wake-up notices.

The stored record is what counts. The `replies` stream of a client (per queue) and the
`done` stream of a queue carry only task ids, as wake-ups: the reader loop turns them into
ids to check, and `wait_settled` checks them with `outcomes.lua`, which sends back only the
records that have an outcome. A notice can be lost (a stream trimmed while its reader was
paused, a stream expired, a Redis restart): every id waited for is checked when first seen,
and again by a sweep, which runs every `SWEEP_EVERY` seconds, after a reconnect or a
restart of the reader, and at once when a read shows that entries were trimmed unread.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

import trio

from ..._task import Task
from .._contract import QueueInfo, queue_of
from . import _keys as k
from ._batch import Batcher
from ._calls import Calls
from ._wire import task_from_record

log = logging.getLogger("queueing.redis")

#: Records per `outcomes.lua` call, and calls per round trip, when checking ids.
CHECK_CHUNK = 500
CHECK_PIPELINE = 20
#: Seconds between two sweeps of every id waited for (lost notices are found by then).
SWEEP_EVERY = 15.0
#: Notices read per stream in one read.
READ_COUNT = 1000
#: Ids woken and not yet looked at beyond which they are dropped for a sweep instead.
WOKEN_CAP = 100_000
#: The longest and shortest one wait for room blocks (a cancellation waits for it: see
#: Calls._attempt; Redis takes no shorter timeout).
ROOM_BLOCK = 0.05
ROOM_BLOCK_MIN = 0.01


def _stream_id(ident: str) -> tuple[int, int]:
    ms, _, seq = ident.partition("-")
    return int(ms), int(seq or 0)


class Receipts:
    """What a client reads: records, outcomes, and room in a full queue."""

    def __init__(self, calls: Calls, keys: k.Keys, batcher: Batcher, client_id: str) -> None:
        self.calls = calls
        self.keys = keys
        self.batcher = batcher
        self.client_id = client_id
        #: Ids seen by `wait_settled` and checked once, without an outcome then.
        self._known: set[str] = set()
        #: Ids a notice arrived for since the last check.
        self._woken: set[str] = set()
        #: Of the known ids, those another client submitted (their wake-up is in `done`),
        #: by queue or pipeline.
        self._foreign: dict[str, set[str]] = {}
        #: Where the reader reads each stream from.
        self._cursors: dict[str, str] = {}
        #: `wait_settled` calls in progress (the reader reads only while someone waits).
        self._waiting = 0
        self._wake = trio.lowlevel.ParkingLot()
        self._reader_lot = trio.lowlevel.ParkingLot()
        self._sweep_at = 0.0
        self._sweep_now = False
        batcher.on_replied = self._new_stream
        calls.on_reconnect.append(self._request_sweep)

    def _new_stream(self) -> None:
        self._reader_lot.unpark_all()

    def _request_sweep(self) -> None:
        self._sweep_now = True
        self._wake.unpark_all()

    # -- lookups ----------------------------------------------------------------------------

    async def lookup(self, task_id: str) -> Task | None:
        if not queue_of(task_id):
            return None
        record = self.keys.task(task_id)
        fields = await self.calls.retrying(
            "lookup", lambda: self.calls.client.hmget(record, ["s", "m", "o", "w"])
        )
        state, meta, outcome, working = fields
        if state is None:
            return None
        return task_from_record(task_id, state, meta, outcome, working)

    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        # Finishing tasks push tokens to `room`: wait for one, in short blocking reads.
        room = self.keys.room(queue.name)
        deadline = trio.current_time() + timeout
        while True:
            left = deadline - trio.current_time()
            if left <= 0:
                await trio.lowlevel.checkpoint()
                return
            step = max(min(left, ROOM_BLOCK), ROOM_BLOCK_MIN)
            pop = functools.partial(self.calls.client.blpop, [room], timeout=step)
            got = await self.calls.retrying("wait for room", pop, wait=step)
            if got:
                return

    # -- waiting for outcomes ---------------------------------------------------------------

    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        deadline = trio.current_time() + timeout
        self._waiting += 1
        self._reader_lot.unpark_all()
        try:
            while True:
                found = await self._poll(task_ids)
                if found or trio.current_time() >= deadline:
                    await trio.lowlevel.checkpoint()
                    return found
                with trio.move_on_at(min(deadline, self._sweep_at)):
                    await self._wake.park()
        finally:
            self._waiting -= 1

    async def _poll(self, ids: Collection[str]) -> list[Task]:
        """Check what may have an outcome: ids woken by a notice, ids not seen before, and,
        when a sweep is due, every id waited for."""
        # A set (a dict's keys, say) is used as it is: no copy of tens of thousands of ids.
        waited = ids if isinstance(ids, AbstractSet) else set(ids)
        check: list[str] = []
        fresh: set[str] = set()
        if self._woken:
            woken, self._woken = self._woken, set()
            for i in woken:
                if i not in waited:
                    continue  # not waited for (any more, or not yet: then it is fresh later)
                if i in self._known:
                    check.append(i)
                else:
                    fresh.add(i)
        now = trio.current_time()
        sweep = self._sweep_now or now >= self._sweep_at
        # The ids the engine waits for change by the ones we return (dropped from both) and
        # new ones; a count that differs means some are new (or dropped: prune them).
        if sweep or len(waited) != len(self._known):
            fresh.update(i for i in waited - self._known if queue_of(i))
            self._known.intersection_update(waited)
            for members in self._foreign.values():
                members.intersection_update(waited)
        if sweep:
            self._sweep_now = False
            self._sweep_at = now + SWEEP_EVERY
            check = list(self._known)
        if not check and not fresh:
            return []
        settled = await self._check(check, list(fresh))
        self._known.update(fresh)
        for task in settled:
            self._known.discard(task.id)
            self._foreign.get(queue_of(task.id), set()).discard(task.id)
        return settled

    async def _check(self, known: Iterable[str], fresh: list[str]) -> list[Task]:
        """Read the records of some ids; returns those with an outcome. Of `fresh` ids, the
        ones another client submitted get their queue's `done` stream read from now on."""
        calls: list[tuple[str, list[str], bool]] = []  # (name, ids, fresh)
        for ids, is_fresh in ((list(dict.fromkeys(known)), False), (fresh, True)):
            by_name: dict[str, list[str]] = {}
            for task_id in ids:
                by_name.setdefault(queue_of(task_id), []).append(task_id)
            for name, members in by_name.items():
                for i in range(0, len(members), CHECK_CHUNK):
                    calls.append((name, members[i : i + CHECK_CHUNK], is_fresh))
        # The `done` streams of fresh ids' queues not read yet: where they stand now, read
        # in the same round trip and before the records (a notice after it is not missed).
        positions = sorted({name for name, _, is_fresh in calls if is_fresh} - self._foreign_read())
        settled: list[Task] = []
        for start in range(0, len(calls), CHECK_PIPELINE):
            part = calls[start : start + CHECK_PIPELINE]
            heads = positions if start == 0 else []

            def fill(pipe: Any, part: list[Any] = part, heads: list[str] = heads) -> list[Any]:
                marks = [pipe.xrevrange(self.keys.done(name), count=1) for name in heads]
                reads = [
                    self.calls.script(
                        pipe, "outcomes", [self.keys.task(i) for i in ids], ["1" if f else "0"]
                    )
                    for _, ids, f in part
                ]
                return [*marks, *reads]

            answers = await self.calls.pipelined("read outcomes", fill)
            for name, mark in zip(heads, answers, strict=False):
                if not isinstance(mark, Exception):
                    self._mark(name, mark)
            for (name, ids, _), answer in zip(part, answers[len(heads) :], strict=True):
                if isinstance(answer, Exception):
                    raise answer
                settled += self._read_answer(name, ids, answer)
        for name in positions:  # no id of another client's there after all
            if not self._foreign.get(name):
                self._cursors.pop(self.keys.done(name), None)
        return settled

    def _mark(self, name: str, newest: Any) -> None:
        # Only for streams not read now (see `_check`): an older position is stale.
        self._cursors[self.keys.done(name)] = str(newest[0].identifier) if newest else "0-0"

    def _read_answer(self, name: str, ids: list[str], answer: list[Any]) -> list[Task]:
        settled = []
        for j in range(0, len(answer), 4):
            index, state, second, meta = answer[j : j + 4]
            task_id = ids[int(index) - 1]
            if state:
                try:
                    settled.append(task_from_record(task_id, str(state), meta, second))
                except (ValueError, TypeError, KeyError) as exc:
                    log.error("task %s: unreadable record (%s)", task_id, exc)
            elif str(second) != self.client_id:
                self._foreign.setdefault(name, set()).add(task_id)
                self._reader_lot.unpark_all()
        return settled

    def _foreign_read(self) -> set[str]:
        return {name for name, members in self._foreign.items() if members}

    # -- the reader of notices --------------------------------------------------------------

    def _streams(self) -> dict[str, str]:
        """What to read: nothing while no one waits (a process that only submits follow-up
        work does not read notices it would drop)."""
        streams: dict[str, str] = {}
        if not self._known and not self._waiting:
            return streams
        for name in self.batcher.replied:
            key = self.keys.replies(name, self.client_id)
            # From the start, never "$": the stream is ours alone, and "$" would miss a
            # notice written before the first read.
            streams[key] = self._cursors.setdefault(key, "0-0")
        for name in self._foreign_read():
            key = self.keys.done(name)
            streams[key] = self._cursors.setdefault(key, "0-0")
        return streams

    async def reader_loop(self) -> None:
        """Background: read notices from our replies streams and from the done streams of
        queues with ids another client submitted; wake `wait_settled`."""
        self._request_sweep()  # (re)started: what was written while no one read is checked
        block_ms = int(self.calls.block * 1000)
        while True:
            streams = self._streams()
            if not streams:
                await self._reader_lot.park()
                continue
            # No more than a stream keeps: a reader that fell behind past the cap then gets
            # a full read, which makes it look for a gap (`_check_gap`).
            count = min(READ_COUNT, k.REPLIES_MAXLEN, k.DONE_MAXLEN)
            read = functools.partial(self.calls.client.xread, streams, count=count, block=block_ms)
            answer = await self.calls.retrying("read notices", read, background=True)
            for key, entries in (answer or {}).items():
                if not entries:
                    continue
                before = streams[key]
                self._cursors[key] = str(entries[-1].identifier)
                self._woken.update(str(e.field_values.get("id", "")) for e in entries)
                if len(self._woken) > WOKEN_CAP:  # no one looked for long: sweep instead
                    self._woken.clear()
                    self._request_sweep()
                if len(entries) >= count:
                    await self._check_gap(key, before)
            if answer:
                self._wake.unpark_all()

    async def _check_gap(self, key: str, before: str) -> None:
        """A full read: maybe we fell behind past the stream's cap. If its oldest entry is
        newer than where we stood, entries were trimmed unread: sweep."""
        first = await self.calls.retrying(
            "read notices", lambda: self.calls.client.xrange(key, count=1)
        )
        if first and _stream_id(str(first[0].identifier)) > _stream_id(before):
            log.warning("notices in %s were trimmed before they were read: checking all", key)
            self._request_sweep()

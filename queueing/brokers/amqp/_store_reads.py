"""The receipt side of the results store: lookups, outcomes waited for, room in a queue.

The stored record is what counts. A worker that records an outcome also adds a notice to
the `replies` stream of the client that submitted the task (one stream per client and
queue, in Redis), in the same script: the notice carries the outcome it stored (unless it
is long), so `wait_settled` needs no second read for it; a notice with only the id is a
wake-up, and the record is read with `outcomes.lua`. Ids not seen yet are read at once; ids another
client submitted (found by id) get no wake-up and are read every `FOREIGN_POLL` seconds;
and every id waited for is read again every `SWEEP_EVERY` seconds and after a lost
connection, so a lost or trimmed notice delays a receipt, never loses it.

A record that was there and is gone, without an outcome (Redis restarted without
persistence, or was flushed), is reported LOST once it is still gone `LOST_AFTER` seconds
later.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection
from collections.abc import Set as AbstractSet
from typing import Any

import trio

from ..._task import ErrorInfo, Task, TaskState
from .._contract import QueueInfo, queue_of
from ..redis import _keys as k
from ..redis._wire import task_from_outcome, task_from_record
from ._store import Store, StoreCalls

log = logging.getLogger("queueing.rabbitmq")

#: Records per `outcomes.lua` call, and calls per round trip.
CHECK_CHUNK = 500
CHECK_PIPELINE = 20
#: Seconds between two reads of every record waited for (lost notices are found by then).
SWEEP_EVERY = 15.0
#: Seconds between two reads of the records of tasks other clients submitted.
FOREIGN_POLL = 0.25
#: Seconds a record seen before must stay gone before its task is reported LOST.
LOST_AFTER = 1.0
#: Notices read per stream in one read.
READ_COUNT = 1000
#: Ids woken and not yet looked at beyond which they are dropped for a sweep instead.
WOKEN_CAP = 100_000
#: The longest and shortest one wait for room blocks (Redis takes no shorter timeout).
ROOM_BLOCK = 0.05
ROOM_BLOCK_MIN = 0.01
_LOST = ErrorInfo(
    "TaskLost",
    "its record is gone from the results store without an outcome (Redis restarted "
    "without persistence, or was flushed): whether it ran is unknown",
)


def _stream_id(ident: str) -> tuple[int, int]:
    ms, _, seq = ident.partition("-")
    return int(ms), int(seq or 0)


_FINAL = frozenset(state.value for state in TaskState if state.final)


def _from_notice(task_id: str, state: str, meta: str, outcome: str) -> Task:
    """The record a notice carries. What a receipt takes from it is the outcome, so a
    plain task's comes from the outcome alone (as the Redis broker's notices), without
    decoding its meta; a pipeline's (its meta names a route) is read in full."""
    if outcome and state in _FINAL and '"route":' not in meta:
        return task_from_outcome(task_id, outcome)
    return task_from_record(task_id, state, meta, outcome)


class Reads:
    """What a client reads: records, outcomes, and room in a full queue."""

    def __init__(self, calls: StoreCalls, keys: k.Keys, store: Store) -> None:
        self.calls = calls
        self.keys = keys
        self.store = store
        self.client_id = store.client_id
        #: Ids waited for (told by `expect`, or found by a sweep), without an outcome yet.
        self._known: set[str] = set()
        #: Of those, others' ids not read yet.
        self._unread: set[str] = set()
        #: Of those, the ones another client submitted (no wake-up comes for them).
        self._foreign: set[str] = set()
        #: Ids whose record was read at least once (so a gone record means a loss).
        self._present: set[str] = set()
        #: Ids whose record was found gone, and when.
        self._missing: dict[str, float] = {}
        #: Ids a notice arrived for since the last read, with the outcome it carried
        #: (state, meta, outcome), or None.
        self._woken: dict[str, tuple[str, str, str] | None] = {}
        #: Notices of ids expected but not waited for yet, and when they came.
        self._early: dict[str, tuple[tuple[str, str, str] | None, float]] = {}
        self._cursors: dict[str, str] = {}
        self._waiting = 0
        self._wake = trio.lowlevel.ParkingLot()
        self._reader_lot = trio.lowlevel.ParkingLot()
        self._sweep_at = 0.0
        self._sweep_now = False
        self._foreign_at = 0.0
        store.on_replied = self._new_stream
        calls.on_reconnect.append(self._request_sweep)

    def _new_stream(self) -> None:
        self._reader_lot.unpark_all()

    def _request_sweep(self) -> None:
        self._sweep_now = True
        self._wake.unpark_all()

    # -- lookups ----------------------------------------------------------------------

    async def lookup(self, task_id: str) -> Task | None:
        if not queue_of(task_id):
            return None
        record = self.keys.task(task_id)
        state, meta, outcome, working, due, client = await self.calls.retrying(
            "lookup", lambda: self.calls.client.hmget(record, ["s", "m", "o", "w", "d", "r"])
        )
        if state is None:
            return None
        task = task_from_record(task_id, state, meta, outcome, working)
        if not task.state.final:
            self.expect(task_id, own=client == self.client_id, stored=True)
        if task.state is TaskState.SCHEDULED and due and int(due) <= time.time() * 1000:
            task.state = TaskState.PENDING  # due: RabbitMQ moved it to the queue by now
        return task

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
            pop = functools.partial(self.calls.fast.blpop, [room], timeout=step)
            if await self.calls.retrying("wait for room", pop, wait=step):
                return

    # -- waiting for outcomes ---------------------------------------------------------

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
                wake_at = self._sweep_at
                if self._foreign:
                    wake_at = min(wake_at, self._foreign_at)
                if self._missing:
                    wake_at = min(wake_at, min(self._missing.values()) + LOST_AFTER)
                with trio.move_on_at(min(deadline, wake_at)):
                    await self._wake.park()
        finally:
            self._waiting -= 1

    def expect(self, task_id: str, *, own: bool, stored: bool) -> None:
        """A task this process will wait for (submitted here, or found by id): `own` if
        this client submitted it (a notice comes), `stored` if its record exists now.
        Another client's task is read at once, then every `FOREIGN_POLL` seconds."""
        self._known.add(task_id)
        if stored:
            self._present.add(task_id)
        if not own:
            self._foreign.add(task_id)
            self._unread.add(task_id)
            self._wake.unpark_all()

    async def _poll(self, ids: Collection[str]) -> list[Task]:
        """Read what may have an outcome: ids woken by a notice, others' ids not read yet
        or when their poll is due, and every id waited for when a sweep is due."""
        waited = ids if isinstance(ids, AbstractSet) else set(ids)
        check: set[str] = set()
        carried: list[Task] = []
        if self._woken or self._early:
            woken, self._woken = self._woken, {}
            if self._early:
                # Notices that came before the engine waited for their ids (a task that
                # ended before its submit returned): theirs now, or dropped after a while.
                early, self._early = self._early, {}
                now = trio.current_time()
                for i, (record, since) in early.items():
                    if i in waited:
                        woken.setdefault(i, record)
                    elif now - since < SWEEP_EVERY:
                        self._early[i] = (record, since)
            for i, record in woken.items():
                if i not in waited:
                    if len(self._early) < WOKEN_CAP:
                        self._early[i] = (record, trio.current_time())
                    continue
                if record is not None:
                    try:
                        carried.append(_from_notice(i, *record))
                    except (ValueError, TypeError, KeyError) as exc:
                        log.error("task %s: unreadable notice (%s)", i, exc)
                    else:
                        self._forget(i)
                        continue
                check.add(i)
        if self._unread:
            check.update(self._unread & waited)
            self._unread.clear()
        now = trio.current_time()
        if self._sweep_now or now >= self._sweep_at:
            # Every id waited for, and any the engine waits for that this side was not
            # told of (a safety net: accept, lookup and runs.start tell it).
            self._sweep_now = False
            self._sweep_at = now + SWEEP_EVERY
            self._known.update(i for i in waited - self._known if queue_of(i))
            for kept in (self._known, self._foreign, self._present):
                kept.intersection_update(waited)
            for gone in [i for i in self._missing if i not in waited]:
                del self._missing[gone]
            check.update(self._known)
        else:
            if self._foreign and now >= self._foreign_at:
                check.update(self._foreign & waited)
                self._foreign_at = now + FOREIGN_POLL
            check.update(i for i, since in self._missing.items() if now - since >= LOST_AFTER)
        if not check:
            return carried
        return carried + await self._read(list(check))

    async def _read(self, ids: list[str]) -> list[Task]:
        """Read the records of `ids`: the settled ones come back; the others are noted."""
        by_name: dict[str, list[str]] = {}
        for task_id in ids:
            by_name.setdefault(queue_of(task_id), []).append(task_id)
        calls = [
            members[i : i + CHECK_CHUNK]
            for members in by_name.values()
            for i in range(0, len(members), CHECK_CHUNK)
        ]
        settled: list[Task] = []
        for start in range(0, len(calls), CHECK_PIPELINE):
            part = calls[start : start + CHECK_PIPELINE]

            def fill(pipe: Any, part: list[list[str]] = part) -> list[Any]:
                return [
                    self.calls.script(pipe, "outcomes", [self.keys.task(i) for i in chunk], ["1"])
                    for chunk in part
                ]

            answers = await self.calls.pipelined("read outcomes", fill)
            for chunk, answer in zip(part, answers, strict=True):
                if isinstance(answer, Exception):
                    raise answer
                settled += self._note(chunk, answer)
        return settled

    def _note(self, ids: list[str], answer: list[Any]) -> list[Task]:
        settled = []
        now = trio.current_time()
        for j in range(0, len(answer), 4):
            index, state, second, meta = answer[j : j + 4]
            task_id = ids[int(index) - 1]
            state = str(state)
            if state == "~":  # no outcome yet
                self._present.add(task_id)
                self._missing.pop(task_id, None)
                if str(second) != self.client_id:
                    self._foreign.add(task_id)
                else:
                    self._foreign.discard(task_id)
                continue
            if not state:  # no record
                if task_id not in self._present or task_id in self.store.starting:
                    continue  # not stored yet (a run whose start waits for room), or never
                since = self._missing.setdefault(task_id, now)
                if now - since < LOST_AFTER:
                    continue
                log.error("task %s: its record is gone without an outcome: LOST", task_id)
                task = self._lost(task_id)
            else:
                try:
                    task = task_from_record(task_id, state, meta, second)
                except (ValueError, TypeError, KeyError) as exc:
                    log.error("task %s: unreadable record (%s)", task_id, exc)
                    continue
            settled.append(task)
            self._forget(task_id)
        return settled

    def _forget(self, task_id: str) -> None:
        for kept in (self._known, self._foreign, self._present, self._unread):
            kept.discard(task_id)
        self._missing.pop(task_id, None)

    @staticmethod
    def _lost(task_id: str) -> Task:
        task = Task(task_id, queue_of(task_id), None, 0.0)
        task.settle(TaskState.LOST, None, _LOST, time.time())
        return task

    # -- the reader of notices --------------------------------------------------------

    def _streams(self) -> dict[str, str]:
        """What to read: nothing while no one waits."""
        streams: dict[str, str] = {}
        if not self._known and not self._waiting:
            return streams
        for name in self.store.replied:
            key = self.keys.replies(name, self.client_id)
            # From the start, never "$": the stream is ours alone, and "$" would miss a
            # notice written before the first read.
            streams[key] = self._cursors.setdefault(key, "0-0")
        return streams

    async def reader_loop(self) -> None:
        """Background: read notices from our replies streams; wake `wait_settled`."""
        self._request_sweep()  # (re)started: what was written while no one read is read
        block_ms = int(self.calls.block * 1000)
        count = min(READ_COUNT, k.REPLIES_MAXLEN)
        while True:
            streams = self._streams()
            if not streams:
                await self._reader_lot.park()
                continue
            read = functools.partial(self.calls.fast.xread, streams, count=count, block=block_ms)
            answer = await self.calls.retrying("read notices", read, background=True)
            for key, entries in (answer or {}).items():
                if not entries:
                    continue
                before = streams[key]
                self._cursors[key] = str(entries[-1].identifier)
                woken = self._woken
                for entry in entries:
                    fields = entry.field_values
                    carried = str(fields.get("r", "")).split("\n", 2)
                    woken[str(fields.get("id", ""))] = (
                        (carried[0], carried[1], carried[2]) if len(carried) == 3 else None
                    )
                if len(self._woken) > WOKEN_CAP:  # no one looked for long: sweep instead
                    self._woken.clear()
                    self._request_sweep()
                if len(entries) >= count:
                    await self._check_gap(key, before)
            if answer:
                self._wake.unpark_all()

    async def _check_gap(self, key: str, before: str) -> None:
        """A full read: if the stream's oldest entry is newer than where we stood,
        entries were trimmed unread: sweep."""
        first = await self.calls.retrying(
            "read notices", lambda: self.calls.client.xrange(key, count=1)
        )
        if first and _stream_id(str(first[0].identifier)) > _stream_id(before):
            log.warning("notices in %s were trimmed before they were read: reading all", key)
            self._request_sweep()

"""Receipts: lookup, wait_settled, and the reader of notices.

The stored record is what counts; notices are how a client learns of it early. When a task
gets its outcome, `finish.lua` appends a notice to the `replies` stream of the client that
submitted it (one per queue), carrying a copy of the outcome unless it is longer than
`NOTICE_OUTCOME_MAX`, and one with the id only to the queue's `done` stream while a
client reads it (it keeps it: `watch.lua`, with each read of records). The reader
loop reads them while someone waits: a notice with an outcome resolves its id without a
read; the others (long outcomes, pipeline runs, `done` for ids another client submitted)
wake their ids, which `wait_settled` checks with `outcomes.lua`.

A notice is never the only copy, and may be lost (a stream trimmed while its reader was
paused, a stream expired, a Redis restart): every id waited for is checked by a sweep,
every `SWEEP_EVERY` seconds, after a reconnect or a restart of the reader, at once when a
read shows that notices were trimmed unread, and when Redis lost data (see `_losses`).
An id `wait_settled` has not seen before is read at once, unless this client submitted
it (Redis accepted it from here: its notice comes here).

Lost records: an id whose record was seen (read, or accepted from this client) and is
found gone is read again `LOST_CONFIRM` seconds later; still gone, it comes back as a
record in state `LOST`. An id whose record was never seen (a pipeline run whose start
waits for room, an id another client is still submitting) waits on.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Collection, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

import trio

from ..._results import Lot
from ..._task import Task, TaskState, new_task
from .._contract import queue_of
from . import _keys as k
from ._batch import Batcher
from ._calls import Calls
from ._losses import Losses, lost_record
from ._reads import read_outcomes
from ._wire import task_from_outcome, task_from_record

log = logging.getLogger("queueing.redis")

#: Seconds between two sweeps of every id waited for (lost notices are found by then).
SWEEP_EVERY = 15.0
#: Seconds between finding a record gone and reading it again (still gone: LOST).
LOST_CONFIRM = 2.0
#: Notices read per stream in one read.
READ_COUNT = 1000
#: Ids woken (or outcomes arrived) and not yet looked at beyond which they are dropped
#: for a sweep instead.
WOKEN_CAP = 100_000
#: Ids accepted from here and not waited for yet, and outcomes that arrived for ids not
#: waited for (yet), kept at most (the oldest go first: such an id is then read when it
#: is waited for).
EXPECTED_CAP = 20_000
EARLY_CAP = 20_000
#: Seconds between two calls that keep the `done` stream of a queue read here (see
#: `k.DONE_WATCH_TTL`), made with a read of records (a sweep's, at the latest).
WATCH_EVERY = 5.0
#: Scheduler turns `wait_settled` looks again for outcomes that came before their callers
#: had their receipts (`Receipts._lagging`), before it waits for the next notice instead.
LAG_TURNS = 3


def _stream_id(ident: str) -> tuple[int, int]:
    ms, _, seq = ident.partition("-")
    return int(ms), int(seq or 0)


def _notes(fields: dict[Any, Any] | None) -> list[tuple[str, str]]:
    """The notices of one stream entry, as (task id, outcome or ''): `finish.lua` writes
    one entry per call whose fields are the task ids, each with its outcome ('' when it is
    read from the record); a pipeline run's notice (and a replies stream's opening, whose
    id is '') is one `id` field, with its outcome in `o` if any."""
    if not fields:
        return []
    if "id" in fields:
        return [(str(fields["id"]), str(fields.get("o") or ""))]
    return [(str(task_id), str(outcome or "")) for task_id, outcome in fields.items()]


#: The outcome of a plain success as `encode_outcome` writes it (the bulk of the notices):
#: read without decoding the whole document. The result is what lies between the head and
#: the last `_SUCCESS_MARK` (the text after the mark holds no quote, so no later mark can
#: fall within the tail: the last one is the only place the tail can start). Found with
#: `str.rfind`, not a greedy `(.*)` that backtracks over the result character by character.
_SUCCESS_HEAD = '{"state":"succeeded","result":'
_SUCCESS_MARK = ',"error":null,"attempts":'
_SUCCESS_TAIL = re.compile(
    r'(\d+),"deliveries":(\d+),"finished_at":([-+.0-9eE]+),"stage":0,"fanned":false\}\Z'
)
_HEAD_LENGTH = len(_SUCCESS_HEAD)
_MARK_LENGTH = len(_SUCCESS_MARK)
_SUCCEEDED = TaskState.SUCCEEDED
_match_tail = _SUCCESS_TAIL.match


def notice_task(task_id: str, outcome: str) -> Task:
    """`task_from_outcome`, with a plain success read by one match of its tail (its result
    alone decoded, an integer without the JSON decoder); any other outcome goes the general
    way. Raises as `task_from_outcome` does for an unreadable one."""
    found = None
    if outcome.startswith(_SUCCESS_HEAD):
        cut = outcome.rfind(_SUCCESS_MARK)
        if cut >= _HEAD_LENGTH:
            found = _match_tail(outcome, cut + _MARK_LENGTH)
    if found is None:
        return task_from_outcome(task_id, outcome)
    result = outcome[_HEAD_LENGTH:cut]
    attempts, deliveries, finished = found.groups()
    task = new_task(task_id, queue_of(task_id), None, 0.0, None, 0.0)
    task.state = _SUCCEEDED
    task.result = int(result) if result.isdigit() and result.isascii() else json.loads(result)
    task.attempts = int(attempts)
    task.deliveries = int(deliveries)
    task.finished_at = float(finished)
    return task


def _trim(kept: dict[str, Any], cap: int) -> None:
    """Drop the oldest of `kept` beyond `cap`."""
    over = len(kept) - cap
    if over > 0:
        for key in list(itertools.islice(kept, over)):
            del kept[key]


class Receipts:
    """What a client reads: records and outcomes."""

    def __init__(
        self, calls: Calls, keys: k.Keys, batcher: Batcher, client_id: str, losses: Losses
    ) -> None:
        self.calls = calls
        self.keys = keys
        self.batcher = batcher
        self.client_id = client_id
        self.losses = losses
        #: Ids waited for whose record was seen, without an outcome as far as we know.
        self._known: set[str] = set()
        #: Ids waited for whose record was not there when first read.
        self._unseen: set[str] = set()
        #: Ids Redis accepted from this client, not waited for yet (their notices come here).
        self._expected: dict[str, None] = {}
        #: Pipeline runs being started (or waiting for room): no record yet, or no more.
        self.starting: set[str] = set()
        #: Outcomes that came with notices since the last look, and those that came for ids
        #: not waited for (yet).
        self._arrived: dict[str, Task] = {}
        self._early: dict[str, Task] = {}
        #: Ids a notice without an outcome arrived for since the last look.
        self._woken: set[str] = set()
        #: Ids accepted from here whose outcome came before their submit's caller had its
        #: receipt (the notice was read before, or just after, the submit's answer was
        #: handed over): the caller watches the id in its next step, and `wait_settled`
        #: looks again then, not at the next notice read (which may be a second away).
        self._lagging: set[str] = set()
        #: Turns `wait_settled` looked again since an id was last added to `_lagging`.
        self._lag_turns = 0
        #: Ids whose record was seen, then found gone: when it was first found gone.
        self._missing: dict[str, float] = {}
        #: Of the known ids, those another client submitted (their wake-up is in `done`),
        #: by queue or pipeline.
        self._foreign: dict[str, set[str]] = {}
        #: Hands a notice's outcome straight to its receipt (`Broker.on_outcome`): True if
        #: it was waited for. None: outcomes wait for `wait_settled`.
        self.deliver: Callable[[Task], bool] | None = None
        #: Where the reader reads each stream from.
        self._cursors: dict[str, str] = {}
        #: When the `done` stream of each queue read here was last kept (`watch.lua`).
        self._watched: dict[str, float] = {}
        #: `wait_settled` calls in progress (the reader reads only while someone waits).
        self._waiting = 0
        # (Its deadline kept by the run's timer of receipts: no cancel scope per park.)
        self._wake = Lot()
        self._reader_lot = trio.lowlevel.ParkingLot()
        self._sweep_at = 0.0
        self._sweep_now = False
        self._recheck_at = math.inf
        batcher.on_replied = self._new_stream
        batcher.on_accepted = self.expect
        calls.on_reconnect.append(self._request_sweep)
        losses.on_loss.append(self._request_sweep)

    def _new_stream(self) -> None:
        self._reader_lot.unpark_all()

    def _request_sweep(self) -> None:
        self._sweep_now = True
        self._wake.unpark_all()

    def expect(self, ids: Iterable[str]) -> None:
        """Redis accepted these from this client: their records exist, their notices come
        here (they need no read when first waited for)."""
        expected = self._expected
        early, arrived = self._early, self._arrived
        if early or arrived:  # (rare) outcomes not handed over yet: some may be these
            for task_id in ids:
                if task_id in early or task_id in arrived:  # its notice came first
                    self._lagging.add(task_id)
                    self._lag_turns = 0
                    self._wake.unpark_all()
                else:
                    expected[task_id] = None
        else:
            for task_id in ids:
                expected[task_id] = None
        _trim(expected, EXPECTED_CAP)

    # -- lookups ----------------------------------------------------------------------------

    async def lookup(self, task_id: str) -> Task | None:
        if not queue_of(task_id):
            return None
        keys = [self.keys.task(task_id), self.keys.ready(self.keys.home(task_id))]
        state, meta, outcome, working = await self.calls.eval("lookup", "lookup", keys, [])
        if state is None:
            return None
        return task_from_record(task_id, state, meta, outcome, working)

    # -- waiting for outcomes ---------------------------------------------------------------

    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        deadline = trio.current_time() + timeout
        self._waiting += 1
        self._reader_lot.unpark_all()
        try:
            while True:
                found = await self._poll(task_ids)
                lagging = self._lagging
                if lagging and found:
                    lagging.difference_update([task.id for task in found])
                if found or trio.current_time() >= deadline:
                    await trio.lowlevel.checkpoint()
                    return found
                if lagging:
                    # Outcomes that came before their callers had their receipts: each
                    # caller, rescheduled, watches its id in its next step. Look again after
                    # each of a few turns (one whose caller never watches it, cancelled or
                    # gone, is left to the next look, as any outcome not waited for).
                    if self._lag_turns < LAG_TURNS:
                        self._lag_turns += 1
                        await trio.lowlevel.checkpoint()
                        continue
                    lagging.clear()
                await self._wake.park_until(min(deadline, self._sweep_at, self._recheck_at))
        finally:
            self._waiting -= 1

    def _new_ids(self, waited: AbstractSet[str], found: list[Task]) -> list[str]:
        """The ids waited for that were not seen before (`found` now are not new)."""
        known, unseen = self._known, self._unseen
        skip = {task.id for task in found}
        try:
            # The engine's live set is a dict's keys: ids watched since the last look come
            # last, after every id seen then (each one is known, unseen, or was returned and
            # dropped from the set): walk back to the first one seen.
            back = reversed(waited)  # type: ignore[call-overload]
        except TypeError:
            return [i for i in waited if i not in known and i not in unseen and i not in skip]
        new = []
        for i in back:
            if i in known or i in unseen:
                break
            if i not in skip:
                new.append(i)
        return new

    async def _poll(self, ids: Collection[str]) -> list[Task]:
        """Outcomes that came with notices, and reads of what may have an outcome: ids woken
        by a notice, ids not seen before, ids found gone once, and, when a sweep is due,
        every id waited for."""
        # A set (a dict's keys, say) is used as it is: no copy of tens of thousands of ids.
        waited = ids if isinstance(ids, AbstractSet) else set(ids)
        found: list[Task] = []
        if self._arrived:
            arrived, self._arrived = self._arrived, {}
            early = self._early
            for task_id, task in arrived.items():
                if task_id in waited:
                    found.append(task)
                else:
                    early[task_id] = task
            _trim(early, EARLY_CAP)
            self._forget(found)
        fresh: list[str] = []
        for task_id in self._new_ids(waited, found):
            early_task = self._early.pop(task_id, None)
            if early_task is not None:
                found.append(early_task)
            elif task_id in self._expected:
                del self._expected[task_id]
                self._known.add(task_id)  # its notice comes here, or a sweep finds it
            else:
                fresh.append(task_id)
        check: list[str] = []
        if self._woken:
            woken, self._woken = self._woken, set()
            check = [i for i in woken if i in self._known or i in self._unseen]
        now = trio.current_time()
        if self._sweep_now or now >= self._sweep_at:
            self._sweep_now = False
            self._sweep_at = now + SWEEP_EVERY
            for kept in (self._known, self._unseen, self.starting):
                kept.intersection_update(waited)
            for members in self._foreign.values():
                members.intersection_update(waited)
            check = [*self._known, *self._unseen]
            # Any id waited for and in no set (a read that failed before it was noted).
            seen = {*fresh, *(task.id for task in found)}
            fresh += [
                i
                for i in waited
                if i not in self._known and i not in self._unseen and i not in seen
            ]
        elif self._missing and now >= self._recheck_at:
            check += [i for i in self._missing if i in self._known]
        if check or fresh:
            try:
                found += await self._check(check, fresh, now)
            except BaseException:
                for task in found:  # handed out at the next look
                    self._arrived[task.id] = task
                raise
        return found

    def _forget(self, settled: Iterable[Task]) -> None:
        known, unseen, missing = self._known, self._unseen, self._missing
        foreign = self._foreign  # usually empty: no id another client submitted
        for task in settled:
            task_id = task.id
            known.discard(task_id)
            if unseen:
                unseen.discard(task_id)
            if missing:
                missing.pop(task_id, None)
            if foreign:
                members = foreign.get(self.keys.home(task_id))
                if members:
                    members.discard(task_id)

    async def _check(self, known: list[str], fresh: list[str], now: float) -> list[Task]:
        """Read the records of some ids; returns those with an outcome (or LOST). Of `fresh`
        ids, the ones another client submitted get their queue's `done` stream read from now
        on."""
        # The `done` streams of fresh ids' queues not read yet: where they stand now, read
        # in the same round trip and before the records (a notice after it is not missed).
        names = {self.keys.home(task_id) for task_id in fresh}
        read_here = self._foreign_read()
        positions = sorted(names - read_here)
        settled: list[Task] = []
        gone: list[str] = []
        # The `done` streams read here are kept while they are read (outcomes are written
        # there only then); one found gone (a reader that let it lapse: notices missed)
        # makes a sweep.
        watched = self._watched
        due = [n for n in read_here if now - watched.get(n, -math.inf) >= WATCH_EVERY]
        reads = await read_outcomes(self.calls, self.keys, known, fresh, positions, due)
        for name in (*positions, *due):
            watched[name] = now
        if any(name in due for name in reads.made):
            self._sweep_at = now  # at the next look, which comes at once
            self._request_sweep()
        for name, newest in reads.positions.items():
            # Only for streams not read now: an older position is stale.
            self._cursors[self.keys.done(name)] = newest
        for name, ids, is_fresh, answer in reads.answers:
            gone += self._read_answer(name, ids, is_fresh, answer, settled)
        for name in positions:  # no id of another client's there after all
            if not self._foreign.get(name):
                self._cursors.pop(self.keys.done(name), None)
        self._forget(settled)
        if known:  # what was there after all (a false alarm, or a run started since)
            absent = set(gone)
            for task_id in known:
                if task_id not in absent:
                    self._missing.pop(task_id, None)
                    if task_id in self._unseen:
                        self._unseen.discard(task_id)
                        self._known.add(task_id)
        return settled + self._gone(gone, now)

    def _gone(self, ids: list[str], now: float) -> list[Task]:
        """Records found gone: an id seen before is LOST once it is still gone
        `LOST_CONFIRM` seconds after it was first found so; others wait on."""
        lost: list[Task] = []
        first_time = 0
        for task_id in ids:
            if task_id not in self._known or task_id in self.starting:
                self._unseen.add(task_id)
                self._known.discard(task_id)
                continue
            since = self._missing.setdefault(task_id, now)
            if since == now:
                first_time += 1
            elif now - since >= LOST_CONFIRM:
                lost.append(lost_record(task_id))
        if first_time:
            self.losses.note(f"the records of {first_time} task(s) waited for here are gone")
        self._forget(lost)
        self._recheck_at = min(self._missing.values(), default=math.inf) + LOST_CONFIRM
        return lost

    def _read_answer(
        self, name: str, ids: list[str], is_fresh: bool, answer: list[Any], settled: list[Task]
    ) -> list[str]:
        """Records with an outcome go to `settled`; returns the ids without a record. Fresh
        ids with a record become known."""
        gone = []
        for j in range(0, len(answer), 4):
            index, state, second, meta = answer[j : j + 4]
            task_id = ids[int(index) - 1]
            if state == "?":
                gone.append(task_id)
            elif state:
                try:
                    settled.append(task_from_record(task_id, str(state), meta, second))
                except (ValueError, TypeError, KeyError) as exc:
                    log.error("task %s: unreadable record (%s)", task_id, exc)
            else:  # fresh, without an outcome
                self._known.add(task_id)
                if str(second) != self.client_id:
                    self._foreign.setdefault(name, set()).add(task_id)
                    self._reader_lot.unpark_all()
        if is_fresh:  # never seen: not lost, waited for
            self._unseen.update(gone)
            return []
        return gone

    def _foreign_read(self) -> set[str]:
        return {name for name, members in self._foreign.items() if members}

    # -- the reader of notices --------------------------------------------------------------

    def _streams(self, only: str | None = None) -> dict[str, str]:
        """What to read: nothing while no one waits (a process that only submits follow-up
        work does not read notices it would drop). `only`: the streams of that queue
        (pipeline) alone, one hash tag (a Redis Cluster reads each tag on its own)."""
        streams: dict[str, str] = {}
        if not self._known and not self._waiting:
            return streams
        for name in self.batcher.replied:
            if only is not None and name != only:
                continue
            key = self.keys.replies(name, self.client_id)
            # From the start, never "$": the stream is ours alone, and "$" would miss a
            # notice written before the first read.
            streams[key] = self._cursors.setdefault(key, "0-0")
        for name in self._foreign_read():
            if only is not None and name != only:
                continue
            key = self.keys.done(name)
            streams[key] = self._cursors.setdefault(key, "0-0")
        return streams

    async def reader_loop(self) -> None:
        """Background: read notices from our replies streams and from the done streams of
        queues with ids another client submitted; wake `wait_settled`. On a Redis Cluster,
        one reader per queue (pipeline), since one read takes keys of one slot only."""
        self._request_sweep()  # (re)started: what was written while no one read is checked
        if not self.calls.cluster:
            await self._read_loop(None)
            return
        async with trio.open_nursery() as nursery:
            reading: set[str] = set()
            while True:
                for name in (set(self.batcher.replied) | self._foreign_read()) - reading:
                    reading.add(name)
                    nursery.start_soon(self._read_loop, name)
                await self._reader_lot.park()

    async def _read_loop(self, only: str | None) -> None:
        block_ms = int(self.calls.block * 1000)
        while True:
            streams = self._streams(only)
            if not streams:
                await self._reader_lot.park()
                continue
            # No more than a stream keeps: a reader that fell behind past the cap then gets
            # a full read, which makes it look for a gap (`_check_gap`).
            count = min(READ_COUNT, k.REPLIES_MAXLEN, k.DONE_MAXLEN)
            read = functools.partial(self.calls.fast.xread, streams, count=count, block=block_ms)
            answer = await self.calls.retrying("read notices", read, background=True)
            for key, entries in (answer or {}).items():
                if not entries:
                    continue
                before = streams[key]
                self._cursors[key] = str(entries[-1].identifier)
                self._notices(entries)
                if len(entries) >= count:
                    await self._check_gap(key, before)
            if answer:
                self._wake.unpark_all()

    def _notices(self, entries: Any) -> None:
        """Take in notices: an outcome goes straight to its receipt if one waits for it
        (`deliver`), else it waits for `wait_settled`; an id without one is woken (its
        record is read)."""
        arrived, woken, expected, deliver = self._arrived, self._woken, self._expected, self.deliver
        delivered: list[Task] = []
        for entry in entries:
            for task_id, outcome in _notes(entry.field_values):
                accepted_here = expected.pop(task_id, 0) is None
                if not outcome:
                    woken.add(task_id)
                    continue
                try:
                    task = notice_task(task_id, outcome)
                except (ValueError, TypeError, KeyError):
                    woken.add(task_id)  # unreadable here: the record is read instead
                    continue
                # Handed over here, the outcome reaches its receipt in this turn of the
                # scheduler, not after `wait_settled`'s caller wakes and hands it over.
                if deliver is not None and task.state.final and deliver(task):
                    delivered.append(task)
                else:
                    arrived[task_id] = task
                    # Accepted from here and not waited for yet: its submit's caller has
                    # its answer and watches the id in its next step (see `_lagging`).
                    if accepted_here:
                        self._lagging.add(task_id)
                        self._lag_turns = 0
        if delivered:
            self._forget(delivered)
        if len(woken) + len(arrived) > WOKEN_CAP:  # no one looked for long: sweep instead
            woken.clear()
            arrived.clear()
            self._request_sweep()

    async def _check_gap(self, key: str, before: str) -> None:
        """A full read: maybe we fell behind past the stream's cap. If its oldest entry is
        newer than where we stood, entries were trimmed unread: sweep."""
        first = await self.calls.retrying(
            "read notices", lambda: self.calls.client.xrange(key, count=1)
        )
        if first and _stream_id(str(first[0].identifier)) > _stream_id(before):
            log.warning("notices in %s were trimmed before they were read: checking all", key)
            self._request_sweep()

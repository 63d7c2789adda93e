"""The consumer side: claim, reclaim, and promoting due tasks (leases: `_leases`).

A claim is one round trip when entries are ready: a plain `XREADGROUP` (without waiting)
reads them for this process's consumer, with an `EXISTS` of the queue's `ranked` key
beside it: a queue seen ranked (or fair) is claimed through `claim.lua` from then on (its
tasks wait outside the stream). The outcomes waiting to be written go in the same round
trip. The entries are not read inside a script: there each one is converted into Lua
values and back, which costs Redis more than the rest of the claim. When nothing is ready,
a blocking `XREADGROUP` waits. An entry says itself that it is live, and whose task it
is (its `x` field: lua/_entry.lua); an entry written without it (by a ranked queue's
claim) is named by the queue's `live` hash (checked by `check.lua`, with the record).

A claimed entry sits in the ready stream's group pending list (PEL) under this process's
consumer name; it stays ours while `renew` resets its idle time. Entries idle longer than
the lease belonged to a process that stopped renewing: `claim` takes them over with
`XAUTOCLAIM`, their delivery count kept. Every entry read is checked before it is handed
out: it must parse (`BadEntry`) and show itself live (`x`), or be named by `live`, or else
be the entry its task's record names (`check.lua`); anything else is dead-lettered with
the reason and never run.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..._task import Task
from .._contract import QueueInfo
from . import _keys as k
from ._batch import Batcher, Op
from ._calls import Calls
from ._wire import BadEntry, bad_entry_letter, decode_envelope

log = logging.getLogger("queueing.redis")

#: Due tasks moved per `promote.lua` call.
PROMOTE_BATCH = 500
#: The longest a promoter sleeps (others' delays and retries are seen within this).
PROMOTE_IDLE = 1.0
#: Reclaims per lease: how often a claim looks for entries whose lease ran out.
RECLAIMS_PER_LEASE = 3


#: Entries read from a stream (id, fields); the delivery counts of reclaimed ones; what
#: `live` says of each (None: not read yet).
Entries = list[tuple[str, dict[Any, Any]]]
Counts = dict[str, int] | None
Owners = list[str | None] | None


def _fields(flat: Sequence[Any]) -> dict[Any, Any]:
    """A stream entry's fields from the flat list a script returns."""
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _is_ranked(answer: Any) -> bool:
    """Whether claim.lua's answer is a ranked queue's (`'ranked', ids...`)."""
    return bool(answer[0] == "ranked")  # an entry read is a list (responses are str)


def _is_fair(answer: Any) -> bool:
    """Whether claim.lua's answer is a fair queue's (`'fair', heads...`)."""
    return bool(answer[0] == "fair")


def next_of_flows(heads: Sequence[Any], n: int, weight_of: Callable[[str], float]) -> list[str]:
    """The next `n` task ids of a fair queue (at most), from claim.lua's first heads: the
    contract's order (highest priority, lowest S, the flow tagged first), S += 1 / weight
    for a flow's next task, as take.lua takes them."""
    order: list[tuple[int, float, int, str, str, list[str]]] = []
    for member, score, priority, tenant, ids in heads:
        if ids:
            order.append((-int(priority), float(score), 0, str(member), str(tenant), list(ids)))
    heapq.heapify(order)
    picks: list[str] = []
    tagged = 0
    while order and len(picks) < n:
        level, start, _, member, tenant, ids = heapq.heappop(order)
        picks.append(str(ids.pop(0)))
        if ids:  # a new tag: after every tag set so far
            tagged += 1
            start += 1 / weight_of(tenant)
            heapq.heappush(order, (level, start, tagged, member, tenant, ids))
    return picks


def _read_entries(answer: Any) -> tuple[Entries, Counts, Owners]:
    """Entries claim.lua or take.lua read, with what `live` says of each."""
    entries = [(str(ident), _fields(flat)) for ident, flat, _ in answer]
    return entries, None, [None if owner is None else str(owner) for _, _, owner in answer]


def _is_wake(fields: dict[Any, Any]) -> bool:
    """Whether an entry is a wake-up a queue's ranking wrote (no task: see claim.lua)."""
    return "wake" in fields and "env" not in fields


def _owner(ident: str, fields: dict[Any, Any]) -> str | None:
    """The submitting client of an entry whose `x` field shows it live (see
    lua/_entry.lua: its own id, a space, the client); None for any other entry."""
    x = fields.get("x")
    if x is None:
        return None
    x = str(x)
    n = len(ident)
    if x[n : n + 1] == " " and x.startswith(ident):
        return x[n + 1 :]
    return None


def _entries(read: Any) -> Entries:
    """Entries as coredis returns them (`StreamEntry`s), as (id, fields)."""
    return [(str(entry.identifier), dict(entry.field_values or {})) for entry in read]


class Consumer:
    """Claims (with reclaims of expired leases) and the promoters of the queues this
    process serves; `held` is what it claimed (its leases: see `_leases`)."""

    def __init__(
        self,
        calls: Calls,
        keys: k.Keys,
        batcher: Batcher,
        *,
        consumer: str,
        lease: float,
        max_dead_letters: int,
        clock: Callable[[], float],
    ) -> None:
        self.calls = calls
        self.keys = keys
        self.batcher = batcher
        self.consumer = consumer
        self.lease = lease
        self.max_dead_letters = max_dead_letters
        self.clock = clock
        #: Claimed tasks not yet settled, retried or released, by queue and entry id.
        self.held: dict[str, dict[str, Task]] = {}
        self._reclaim_at: dict[str, float] = {}
        self._reclaim_from: dict[str, str] = {}
        self._promoters: dict[str, trio.lowlevel.ParkingLot] = {}
        #: Per fair queue, the first heads the last claim left (see `_take_fair`).
        self._fair_heads: dict[str, list[Any]] = {}
        #: The queues seen ranked (or fair): claimed through claim.lua (see `_take`).
        self._ranked: set[str] = set()

    # -- claim ------------------------------------------------------------------------------

    async def claim(self, queue: QueueInfo, n: int, wait: float) -> list[Task]:
        entries, counts, owners = await self._take(queue, n, wait)
        try:
            # The caller's cancellation, if it came while Redis handed us entries.
            await trio.lowlevel.checkpoint_if_cancelled()
            return await self._admit(queue, entries, counts, owners)
        except trio.Cancelled:
            if entries:
                with trio.CancelScope(shield=True):
                    await self._give_back(queue.name, entries, counts or {})
            raise

    async def probe(self, queues: Sequence[QueueInfo]) -> list[QueueInfo]:
        """Of these queues (a sharded queue's shards), those that may have tasks to claim
        now, in their order; all asked in one round trip (`probe.lua`, read-only)."""
        if not queues:
            return []

        def fill(pipe: Any) -> list[Any]:
            return [
                self.calls.script(
                    pipe,
                    "probe",
                    [
                        self.keys.ready(queue.name),
                        self.keys.ranked(queue.name),
                        self.keys.waiting(queue.name),
                    ],
                    [],
                )
                for queue in queues
            ]

        answers = await self.calls.pipelined("probe shards", fill)
        # A probe that failed says nothing: the claim finds out.
        return [
            queue
            for queue, answer in zip(queues, answers, strict=True)
            if isinstance(answer, Exception) or answer == 1
        ]

    async def _take(self, queue: QueueInfo, n: int, wait: float) -> tuple[Entries, Counts, Owners]:
        """Entries for a claim: reclaimed ones (with their delivery counts) when a reclaim
        is due and finds some, else new ones (with what `live` says of each, when known).
        Calls here leave a cancellation to `claim`."""
        name = queue.name
        ready = self.keys.ready(name)
        now = trio.current_time()
        if now >= self._reclaim_at.get(name, -math.inf):
            self._reclaim_at[name] = now + self.lease / RECLAIMS_PER_LEASE
            reclaimed, counts = await self._reclaim(queue, n)
            if reclaimed:
                return reclaimed, counts, None
        heads = self._fair_heads.pop(name, None)
        if heads:  # a fair queue: the next tasks guessed from what the last claim saw
            taken = await self._take_fair(queue, n, heads)
            if taken is not None:
                return taken
        wakes: list[str] = []
        if name not in self._ranked:
            # A plain read (the common case: entries in the stream), and whether the queue
            # is ranked, in one round trip.
            got, ranked = await self._read_new(name, n)
            if ranked:
                self._ranked.add(name)  # for good (see submit.lua)
            if got and not (ranked and all(_is_wake(fields) for _, fields in got)):
                entries = await self._drop_wakes(name, got)
                if entries is None:  # only wake-ups (the queue was ranked): look again
                    return await self._take(queue, n, wait)
                return entries, None, None
            # Only wake-ups (the queue was ranked just now): removed with the claim below.
            wakes = [ident for ident, _ in got]
        answer = None
        if name in self._ranked:
            keys = [
                ready,
                self.keys.live(name),
                self.keys.ranked(name),
                self.keys.waiting(name),
                *self.keys.fair(name),
            ]
            answer = await self._with_outcomes("claim", keys, [self.consumer, n], wakes)
        if answer and _is_fair(answer):
            if len(answer) == 1:  # no task may be taken: wait as on a ranked queue
                return await self._take_ranked(queue, n, [], wait)
            taken = await self._take_fair(queue, n, answer[1:])
            # None taken (another process took them first): look again.
            return taken if taken is not None else await self._take(queue, n, wait)
        if answer and _is_ranked(answer):
            return await self._take_ranked(queue, n, [str(i) for i in answer[1:]], wait)
        if answer:
            return _read_entries(answer)
        if wait <= 0:
            return [], None, None
        # Nothing ready: wait for entries in a blocking read.
        block = min(wait, self.calls.block)
        started = trio.current_time()
        with self.batcher.claim_waiting():
            read = await self.calls.retrying(
                "claim",
                lambda: self._read(ready, n, self.calls.fast, block),
                wait=block,
                deliver=False,
            )
        entries = await self._drop_wakes(name, _entries((read or {}).get(ready, ())))
        if entries is None:  # woken as the queue was ranked: claim from it now
            return await self._take(queue, n, wait - (trio.current_time() - started))
        return entries, None, None

    async def _drop_wakes(self, queue: str, entries: Entries) -> Entries | None:
        """`entries` without the wake-up entries a queue's ranking writes (acknowledged and
        removed here); None if there were only those."""
        wakes = [ident for ident, fields in entries if _is_wake(fields)]
        if not wakes:
            return entries
        ready = self.keys.ready(queue)

        def fill(pipe: Any) -> list[Any]:
            return [pipe.xack(ready, k.GROUP, wakes), pipe.xdel(ready, wakes)]

        await self.calls.pipelined("drop wake-ups", fill, deliver=False)
        rest = [(ident, fields) for ident, fields in entries if ident not in wakes]
        return rest or None

    async def _take_ranked(
        self, queue: QueueInfo, n: int, ids: list[str], wait: float
    ) -> tuple[Entries, Counts, Owners]:
        """A claim on a ranked queue (see submit.lua): the tasks claim.lua named, highest
        priority first, moved into the stream for this consumer; with none waiting, wait
        for a nudge (a ranked queue's submits do not write the stream)."""
        name = queue.name
        if ids:
            keys = [
                self.keys.ready(name),
                self.keys.live(name),
                self.keys.waiting(name),
                self.keys.envs(name),
                *(self.keys.record(name, i) for i in ids),
            ]
            answer = await self.calls.retrying(
                "claim",
                lambda: self.calls.script(self.calls.fast, "take", keys, [self.consumer, *ids]),
                deliver=False,
            )
            # None left (other processes took them): the caller claims again.
            return _read_entries(answer) if answer else ([], None, None)
        if wait > 0:
            nudge = self.keys.nudge(name)
            block = min(wait, self.calls.block)
            started = trio.current_time()
            with self.batcher.claim_waiting():
                woken = await self.calls.retrying(
                    "claim",
                    lambda: self.calls.fast.blpop([nudge], timeout=block),
                    wait=block,
                    deliver=False,
                )
            if woken:
                # A task came (or a token left by a submit someone else's claim served):
                # look again, waiting out what is left of this claim's wait.
                return await self._take(queue, n, wait - (trio.current_time() - started))
        return [], None, None

    async def _read_new(self, name: str, n: int) -> tuple[Entries, bool]:
        """New entries for a claim, without waiting: a plain `XREADGROUP`, and whether the
        queue is ranked (its tasks are then claimed through claim.lua), in one round trip
        with the outcomes waiting to be written (if any). Read inside a script, an entry is
        converted into Lua values and back, which costs Redis more than the rest of a
        claim. Calls here leave a cancellation to `claim`."""
        ready = self.keys.ready(name)
        ops = self.batcher.take()
        ranked = self.keys.ranked(name)

        def fill(pipe: Any) -> list[Any]:
            # The lean client's pipeline reads the entries as (id, fields) pairs at once
            # (no `StreamEntry` per entry, converted again here): a list; coredis's
            # answers in its own shape.
            entries_of = getattr(pipe, "xreadgroup_entries", None)
            read = (
                entries_of(k.GROUP, self.consumer, n, ready)
                if entries_of is not None
                else pipe.xreadgroup(k.GROUP, self.consumer, count=n, streams={ready: ">"})
            )
            return [*self.batcher.fill(pipe, ops), read, pipe.exists([ranked])]

        what = "write outcomes and claim" if ops else "claim"
        answers = await self.calls.pipelined(what, fill, deliver=False)
        if ops:
            self.batcher.answered(ops, answers[:-2])
        read, is_ranked = answers[-2:]
        for answer in (read, is_ranked):
            if isinstance(answer, Exception):
                raise answer
        if type(read) is list:
            return read, bool(is_ranked)
        return _entries((read or {}).get(ready, ())), bool(is_ranked)

    async def _with_outcomes(
        self, script: str, keys: list[str], args: list[Any], wakes: Sequence[str] = ()
    ) -> Any:
        """A claim's script call, with the outcomes waiting to be written (if any) in the
        same round trip, and the acknowledgment and removal of `wakes` (wake-up entries a
        read gave this consumer) before it. Calls here leave a cancellation to `claim`."""
        ops = self.batcher.take()
        if not ops and not wakes:
            return await self.calls.retrying(
                "claim",
                lambda: self.calls.script(self.calls.fast, script, keys, args),
                deliver=False,
            )
        ready = keys[0]

        def fill(pipe: Any) -> list[Any]:
            dropped = [pipe.xack(ready, k.GROUP, wakes), pipe.xdel(ready, wakes)] if wakes else []
            return [
                *dropped,
                *self.batcher.fill(pipe, ops),
                self.calls.script(pipe, script, keys, args),
            ]

        what = "write outcomes and claim" if ops else "claim"
        answers = await self.calls.pipelined(what, fill, deliver=False)
        self.batcher.answered(ops, answers[2 if wakes else 0 : -1])
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def _take_fair(
        self, queue: QueueInfo, n: int, heads: list[Any]
    ) -> tuple[Entries, Counts, Owners] | None:
        """A claim on a fair queue (see lua/_fair.lua): the tasks that come next by the
        `heads` claim.lua (or the last take_fair.lua) read, worked out with the tenants'
        weights, taken by take_fair.lua in the contract's order (entries in the stream
        come first, as claim.lua's). take_fair.lua answers with the heads it leaves, which
        the next claim guesses from: one round trip per claim while no other process takes
        the tasks guessed. None: nothing taken or read (the caller looks again)."""
        name = queue.name
        weighs = queue.weight_of
        weights = {
            tenant: float(weighs(tenant)) if weighs is not None and tenant else 1.0
            for tenant in {str(head[3]) for head in heads}
        }
        ids = next_of_flows(heads, n, weights.__getitem__)
        keys = [
            self.keys.ready(name),
            self.keys.live(name),
            self.keys.envs(name),
            *self.keys.fair(name),
            *(self.keys.record(name, i) for i in ids),
        ]
        pairs = [x for tenant, weight in weights.items() for x in (tenant, repr(weight))]
        args = [self.consumer, queue.tenant_concurrency or 0, n, len(weights), *pairs, *ids]
        read, left = await self._with_outcomes("take_fair", keys, args)
        if left:
            self._fair_heads[name] = list(left)
        return _read_entries(read) if read else None

    async def _give_back(self, queue: str, entries: Entries, counts: dict[str, int]) -> None:
        """Entries claimed for a caller that was cancelled before it got them: leave them
        idle for a whole lease, so that any process (this one too) reclaims them now, with
        the delivery count they had (the reclaim counts one more)."""
        ready = self.keys.ready(queue)
        by_count: dict[int, list[str]] = {}
        for ident, _ in entries:
            by_count.setdefault(counts.get(ident, 1) - 1, []).append(ident)

        def fill(pipe: Any) -> list[Any]:
            return [
                pipe.xclaim(
                    ready,
                    k.GROUP,
                    self.consumer,
                    0,
                    idents,
                    idle=int(self.lease * 1000),
                    retrycount=before,
                    justid=True,
                )
                for before, idents in by_count.items()
            ]

        await self.calls.pipelined("hand back", fill)
        self._reclaim_at[queue] = -math.inf

    def _read(self, ready: str, n: int, target: Any, block: float) -> Any:
        # BLOCK 0 would wait forever: the shortest wait is a millisecond.
        return target.xreadgroup(
            k.GROUP,
            self.consumer,
            count=n,
            block=max(int(block * 1000), 1),
            streams={ready: ">"},
        )

    async def _reclaim(self, queue: QueueInfo, n: int) -> tuple[Entries, Counts]:
        """Take over entries idle longer than the lease (their process stopped renewing)."""
        name = queue.name
        ready = self.keys.ready(name)
        start = self._reclaim_from.get(name, "0-0")
        answer = await self.calls.retrying(
            "reclaim",
            lambda: self.calls.client.xautoclaim(
                ready, k.GROUP, self.consumer, int(self.lease * 1000), start, count=n
            ),
            deliver=False,
        )
        # Where the next scan of the pending list goes on ("0-0": it was scanned to the end).
        self._reclaim_from[name] = str(answer[0]) if answer else "0-0"
        deleted = [str(i) for i in answer[2]] if answer and len(answer) > 2 else []
        if deleted:  # deleted (cancelled) while a stopped process held them
            await self.calls.retrying(
                "acknowledge",
                lambda: self.calls.client.xack(ready, k.GROUP, deleted),
                deliver=False,
            )
        held = self.held.get(name, {})
        # Our own entries come back too when the engine renewed late: they still run here
        # (XAUTOCLAIM gave them a fresh idle time, as a renewal does).
        entries = [
            (ident, fields)
            for ident, fields in _entries(answer[1] if answer else ())
            if fields and ident not in held
        ]
        entries = await self._drop_wakes(name, entries) or []
        if not entries:
            return [], None
        if self._reclaim_from[name] != "0-0":
            self._reclaim_at[name] = trio.current_time()  # more to look at: next claim

        def fill(pipe: Any) -> list[Any]:
            return [
                pipe.xpending(ready, k.GROUP, start=ident, end=ident, count=1)
                for ident, _ in entries
            ]

        counts: dict[str, int] = {}
        pending = await self.calls.pipelined("delivery counts", fill, deliver=False)
        for (ident, _), info in zip(entries, pending, strict=True):
            first = info[0] if isinstance(info, tuple) and info else None
            counts[ident] = int(getattr(first, "delivered", 1))
        log.warning(
            "queue %r: reclaimed %d task(s) whose lease (%gs) ran out",
            name,
            len(entries),
            self.lease,
        )
        return entries, counts

    async def _admit(
        self, queue: QueueInfo, entries: Entries, counts: Counts, owners: Owners
    ) -> list[Task]:
        """Check what was read: parse each entry; one that shows itself live (`x`, see
        lua/_entry.lua) or that `live` names is a task of ours (with its submitting
        client); any other is checked against its task's record by `check.lua` (an entry
        written without `x` by a ranked queue's claim, a forged or stale copy)."""
        if not entries:
            return []
        name = queue.name
        if owners is None:
            owners = [_owner(ident, fields) for ident, fields in entries]
        max_bytes = queue.max_payload + k.ENVELOPE_OVERHEAD
        now = self.clock()
        held = self.held.setdefault(name, {})
        tasks = []
        unnamed: list[tuple[str, Task, dict[Any, Any]]] = []
        base = k.base(name)
        shard = name != base
        for (ident, fields), owner in zip(entries, owners, strict=True):
            try:
                task = decode_envelope(fields, base, max_bytes)
                if shard and self.keys.home(task.id) != name:
                    raise BadEntry(f"task id {task.id!r} belongs to another shard than {name!r}")
            except BadEntry as exc:
                self.reject(name, ident, fields, str(exc), now)
                continue
            if owner is None:
                unnamed.append((ident, task, fields))
                continue
            task.handle = (ident, owner)
            task.deliveries = counts[ident] - 1 if counts else 0
            held[ident] = task
            tasks.append(task)
        if unnamed:
            tasks += await self._check(queue, unnamed, counts, now)
        return tasks

    async def _check(
        self,
        queue: QueueInfo,
        unnamed: list[tuple[str, Task, dict[Any, Any]]],
        counts: Counts,
        now: float,
    ) -> list[Task]:
        """Entries `live` does not name, checked against their tasks' records."""
        name = queue.name
        keys = [
            self.keys.ready(name),
            self.keys.live(name),
            *(self.keys.task(task.id) for _, task, _ in unnamed),
        ]
        verdicts = await self.calls.eval(
            "check claimed tasks", "check", keys, [ident for ident, _, _ in unnamed]
        )
        held = self.held.setdefault(name, {})
        tasks = []
        for (ident, task, fields), verdict in zip(unnamed, verdicts, strict=True):
            verdict = str(verdict)
            if verdict.startswith("+"):
                task.handle = (ident, verdict[1:])
                task.deliveries = (counts or {}).get(ident, 1) - 1
                held[ident] = task
                tasks.append(task)
            elif verdict == "?":
                reason = (
                    f"no task {task.id!r} was submitted (it has no record): not written by a "
                    "queueing client, or its record was lost"
                )
                self.reject(name, ident, fields, reason, now)
            elif verdict == "!":
                reason = (
                    f"not the entry task {task.id!r} was stored as (its record names another "
                    "one): a forged or stale copy; the task itself is left alone"
                )
                self.reject(name, ident, fields, reason, now)
            # "=": the task had an outcome; check.lua removed the entry
        return tasks

    def reject(
        self, queue: str, entry: str, fields: dict[Any, Any], reason: str, now: float
    ) -> None:
        """Dead-letter an entry that is not a task of ours (with the next write)."""
        log.warning("queue %r: entry %s is not a task (%s); dead-lettered", queue, entry, reason)
        letter = bad_entry_letter(k.base(queue), fields, reason, now)
        keys = [self.keys.ready(queue), self.keys.dead(queue)]
        self.batcher.push(Op("reject", keys, [entry, letter, self.max_dead_letters]))

    def forget(self, queue: str, task: Task) -> None:
        """A claimed task was settled, retried or released: no lease of ours to renew."""
        if task.handle is not None:
            self.held.get(queue, {}).pop(task.handle[0], None)

    # -- promoting due tasks ----------------------------------------------------------------

    def wake_promoter(self, queue: str) -> None:
        """A delayed task of ours was written: this process's promoter may sleep too long."""
        lot = self._promoters.get(queue)
        if lot is not None:
            lot.unpark_all()

    async def promote_loop(self, queue: str) -> None:
        """Background: move due tasks of `queue` from its delayed set to its ready stream;
        sleep until the earliest due time (at most `PROMOTE_IDLE`), or until woken."""
        lot = self._promoters.setdefault(queue, trio.lowlevel.ParkingLot())
        delayed, envs, ready, ranked = (
            self.keys.delayed(queue),
            self.keys.envs(queue),
            self.keys.ready(queue),
            self.keys.ranked(queue),
        )
        waiting, nudge = self.keys.waiting(queue), self.keys.nudge(queue)
        while True:
            now_ms = int(self.clock() * 1000)

            def fill(pipe: Any, now_ms: int = now_ms) -> list[Any]:
                return [
                    pipe.zrangebyscore(delayed, "-inf", now_ms, offset=0, count=PROMOTE_BATCH),
                    pipe.zrange(delayed, 0, 0, withscores=True),
                ]

            due, first = await self.calls.pipelined("promote", fill)
            if isinstance(due, Exception) or isinstance(first, Exception):
                raise due if isinstance(due, Exception) else first
            if due:
                ids = [str(i) for i in due]
                live = self.keys.live(queue)
                records = [self.keys.record(queue, i) for i in ids]
                fair = self.keys.fair(queue)
                keys = [delayed, envs, ready, live, waiting, ranked, nudge, *fair, *records]
                await self.calls.eval("promote", "promote", keys, [now_ms, k.NUDGE_TOKENS, *ids])
                continue
            wait = PROMOTE_IDLE
            if first:
                wait = float(first[0].score) / 1000 - self.clock()
            with trio.move_on_after(min(max(wait, 0.0), PROMOTE_IDLE)):
                await lot.park()

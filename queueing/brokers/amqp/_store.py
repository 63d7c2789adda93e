"""The results store of the RabbitMQ broker: task records and outcomes in Redis.

RabbitMQ keeps messages; the contract also needs records found by id (`lookup`, `cancel`,
`wait_settled`), a count of outstanding tasks checked atomically with each accept
(`maxsize`), ids seen before (`EXISTS`), and an outcome that the first writer wins. Those
live in Redis, one record per task (`{prefix:queue}:task:<id>`, the Redis broker's key
space and JSON formats), written by the scripts in lua/:

- `reserve.lua` stores a new task's record before its message is published (so a message
  never arrives before its record), with the message's nonce (its AMQP `message_id`);
- `check.lua` tells, for each delivered message, whether it is the one its record names;
  any other copy (published again after a lost confirm, a retry, a hand-back) is stale;
- `finish.lua` records an outcome (first one wins) before the message is acknowledged;
- `move.lua` points a record at a new message (a retry's, a hand-back's).

Writes of outcomes are batched (`_store_writes.py`): the outcomes queued for a queue go in
one `finish_many` call (`finish.lua` run per task, its shared keys sent once), and the
confirms of concurrent submits in one `confirm.lua` call; concurrent reserves share a
round trip.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..._task import MAX_PRIORITY, ErrorInfo, PipelineTask, Task, TaskState, priority_of, tenant_of
from .._contract import Admission, QueueInfo, queue_of
from ..redis import _keys as k
from ..redis._calls import Calls
from ..redis._calls import lua_sources as redis_lua_sources
from ..redis._wire import (
    apply_outcome,
    encode_meta,
    encode_outcome,
    task_from_record,
)
from ._store_writes import Op, Ride, Writes

log = logging.getLogger("queueing.rabbitmq")

#: The scripts in lua/, by name (each `name.lua`).
SCRIPTS = (
    "adopt",
    "adopt_fair",
    "back",
    "check",
    "confirm",
    "finish",
    "hand",
    "lease",
    "move",
    "outcomes",
    "pick",
    "reject",
    "renew",
    "reserve",
    "run",
    "stale",
    "take_dead",
    "unreserve",
)
#: The scripts that work on a queue's fair share (`lua/_fair.lua` is loaded in front).
FAIR_SCRIPTS = frozenset({"adopt_fair", "back", "finish", "hand", "lease", "pick", "reserve"})
#: Tasks of one queue per `reserve.lua` call.
RESERVE_CHUNK = 500
#: The longest outcome (characters of JSON) a notice carries along; a longer one is read
#: from the task's record.
NOTICE_OUTCOME_MAX = 4096
#: Tasks per `renew.lua` call.
RENEW_CHUNK = 500
#: Outcomes of one queue per `finish_many` call (queued `finish.lua` calls, joined).
FINISH_CHUNK = 200
#: How early (ms) a message may come back from a delay queue and still run (clocks of
#: processes differ a little); earlier, it made a hop of a delay longer than one delay
#: queue holds and goes back to a delay queue for the rest (`_holds.py`).
EARLY_SLACK = 60_000
#: `finish.lua`'s arguments per task.
FINISH_ARGS = 14
#: `finish.lua`'s arguments that are the same for every task of a queue (the result ttl,
#: the caps on dead letters and replies, the replies' ttl, the room tokens, the longest
#: outcome a notice carries, the queue's maxsize), by position (from 1), and the others.
FINISH_SHARED = (4, 8, 9, 10, 11, 13, 14)
FINISH_OWN = (1, 2, 3, 5, 6, 7, 12)
#: The body of `finish_many`: KEYS are `finish.lua`'s for the first task (the replies
#: stream left out), then each task's record and replies stream (its record again if it
#: has none); ARGV the arguments in `FINISH_SHARED` once, then each task's in
#: `FINISH_OWN`. One answer per task. The fair block's keys are read once (`BASE`), the
#: tables of one task's KEYS and ARGV filled in place, and the stats counts and the replies
#: streams' expiries of all the call's outcomes written once at its end (`BATCH`).
FINISH_MANY_LOOP = f"""
local shared = {{{", ".join(map(str, FINISH_SHARED))}}}
local own = {{{", ".join(map(str, FINISH_OWN))}}}
local k, a = {{}}, {{}}
for j = 2, BASE - 1 do k[j] = KEYS[j] end
for j = 1, {len(FINISH_SHARED)} do a[shared[j]] = ARGV[j] end
local out = {{}}
for i = 0, (#KEYS - BASE + 1) / 2 - 1 do
  k[1] = KEYS[BASE + 2 * i]
  for j = 1, {len(FINISH_OWN)} do
    a[own[j]] = ARGV[{len(FINISH_SHARED)} + {len(FINISH_OWN)} * i + j]
  end
  if a[12] ~= '' then k[BASE] = KEYS[BASE + 2 * i + 1] else k[BASE] = nil end
  out[i + 1] = finish_one(k, a)
end
for counter, n in pairs(BATCH.counts) do redis.call('HINCRBY', KEYS[3], counter, n) end
for stream, ttl in pairs(BATCH.expire) do redis.call('EXPIRE', stream, ttl) end
return out
"""
#: `finish.lua`'s first line: where it reads the fair block's keys (`finish_many` reads
#: them once per call instead).
FINISH_FAIR_KEYS = "local replies = KEYS[fair_keys(6)]"
#: Task ids per `confirm.lua` call (confirms of submits made meanwhile go in one).
CONFIRM_CHUNK = 1000

#: `reserve.lua`'s answers: 1 reserved, 0 full, 2 tenant full, -1 exists, -2 exists (our
#: own earlier send), 3 kept waiting in the store (a fair queue's), 4 the same, and the
#: queue turned fair with it.
RESERVED, FULL, TENANT_FULL, EXISTS, OURS_AGAIN, KEPT, TURNED_FAIR = 1, 0, 2, -1, -2, 3, 4
ADMISSIONS = {
    RESERVED: Admission.ACCEPTED,
    OURS_AGAIN: Admission.ACCEPTED,
    KEPT: Admission.ACCEPTED,
    TURNED_FAIR: Admission.ACCEPTED,
    FULL: Admission.FULL,
    TENANT_FULL: Admission.TENANT_FULL,
    EXISTS: Admission.EXISTS,
}
#: One task to reserve: (task, nonce, envelope, due ms or "", the client that waits for it).
Entry = tuple[Task, str, str, str, str]
#: `finish.lua` and `move.lua` answers for a message that is not the task's.
NOT_THIS_MESSAGE = -2
NO_RECORD = -1


@functools.cache
def lua_sources() -> dict[str, str]:
    """The text of every script, read from the package (lua/*.lua)."""
    folder = importlib.resources.files(__package__).joinpath("lua")

    def read(name: str) -> str:
        return folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")

    prelude = read("_fair") + "\n"
    sources = {name: (prelude if name in FAIR_SCRIPTS else "") + read(name) for name in SCRIPTS}
    # A standalone `finish.lua` writes its count and its stream's expiry itself.
    sources["finish"] = "local BATCH = nil\n" + sources["finish"]
    # `finish.lua` for many tasks of one queue: its text as a function of its own KEYS and
    # ARGV. The fair block stays in the call's KEYS, the same for every task of the call:
    # read once (BASE), not by each task's `fair_keys(6)`.
    finish = read("finish")
    if FINISH_FAIR_KEYS not in finish:
        raise RuntimeError(f"finish.lua no longer starts with {FINISH_FAIR_KEYS!r}")
    body = finish.replace(FINISH_FAIR_KEYS, "local replies = KEYS[BASE]", 1)
    sources["finish_many"] = (
        f"{prelude}local BASE = fair_keys(6)\nlocal BATCH = {{counts = {{}}, expire = {{}}}}\n"
        f"local function finish_one(KEYS, ARGV)\n{body}\nend\n" + FINISH_MANY_LOOP
    )
    return sources


def fair_keys(keys: k.Keys, queue: str) -> list[str]:
    """A queue's keys of fair share, in the order `lua/_fair.lua` takes them."""
    names = ["fair", *(f"fair:{what}" for what in FAIR_NAMES)]
    return [keys.of(queue, name) for name in names] + [
        keys.of(queue, f"fair:flows:{p}") for p in range(MAX_PRIORITY + 1)
    ]


#: The keys of `lua/_fair.lua`'s block after `fair`, in its order.
FAIR_NAMES = (
    "tasks",
    "tags",
    "aside",
    "freed",
    "run",
    "wait",
    "delayed",
    "env",
    "weight",
    "out",
    "leased",
    "again",
    "where",
)


class Finish(Op):
    """A queued `finish.lua` call in short: KEYS the task's record and its replies stream
    (its record if it has none), ARGV its own arguments (`FINISH_OWN`); the arguments it
    shares with every outcome of its queue (`FINISH_SHARED`) and the queue's other keys
    are `shared`'s, sent once per `finish_many` call (`join_finishes`)."""

    __slots__ = ("shared",)

    def __init__(
        self,
        shared: FinishShared,
        keys: list[str],
        args: list[Any],
        then: Callable[[Any], None] | None,
    ) -> None:
        super().__init__("finish", keys, args, then)
        self.shared = shared


class FinishShared:
    """What the outcomes of one queue share in a `finish_many` call: the queue's keys but
    a task's record and replies stream (`keys`: `finish.lua`'s KEYS 2.., the replies
    stream left out) and the arguments in `FINISH_SHARED` (`args`)."""

    __slots__ = ("args", "keys")

    def __init__(self, keys: list[str], args: tuple[Any, ...]) -> None:
        self.keys = keys
        self.args = args


def join_finishes(ops: list[Op]) -> list[Op]:
    """`ops` with each run of `Finish` writes of one queue (next to each other, so the
    order of writes stays as it was; with the same `FinishShared`, the store's one for
    the queue's current settings) joined into one `finish_many` call."""
    joined: list[Op] = []
    run: list[Finish] = []
    shared: FinishShared | None = None
    for op in ops:
        if type(op) is not Finish:
            if run:
                joined.append(_finish_many(run))
                run = []
            joined.append(op)
            continue
        if run and (op.shared is not shared or len(run) >= FINISH_CHUNK):
            joined.append(_finish_many(run))
            run = []
        if not run:
            shared = op.shared
        run.append(op)
    if run:
        joined.append(_finish_many(run))
    return joined


def _finish_many(run: list[Finish]) -> Op:
    first = run[0]
    keys = [first.keys[0], *first.shared.keys]
    args: list[Any] = list(first.shared.args)
    for op in run:
        keys += op.keys
        args += op.args

    def then(answers: Any) -> None:
        for op, answer in zip(run, answers, strict=True):
            if op.then is not None:
                op.then(answer)

    return Op("finish_many", keys, args, then)


class StoreCalls(Calls):
    """The Redis broker's resilient calls (`Calls`), with this broker's scripts."""

    async def load_scripts(self) -> None:
        for name, source in lua_sources().items():
            self._shas[name] = await self.client.script_load(source)
        # The Redis broker's rate limit script (`redis/_rates.py`): the same limits here.
        self._shas["rate"] = await self.client.script_load(redis_lua_sources()["rate"])


def _finish_own(task: Task, nonce: str, letter: str, reply: str) -> list[Any]:
    """`finish.lua`'s arguments in `FINISH_OWN` for `task` (its outcome set), in that
    order."""
    state = task.state
    return [nonce, state.value, encode_outcome(task), task.id, k.COUNTERS[state], letter, reply]


class Store(Writes):
    """Records, outcomes and the writes that change them (see the module doc)."""

    def __init__(self, calls: StoreCalls, keys: k.Keys, client_id: str) -> None:
        super().__init__(calls)
        self.calls: StoreCalls = calls
        self.keys = keys
        self.client_id = client_id
        self.max_dead_letters = 10_000
        #: Queues (and pipelines) this client submitted to: their replies streams are ours.
        self.replied: set[str] = set()
        #: Pipeline runs being started, or refused for want of room: their records may
        #: come and go (the receipt side does not take them for lost).
        self.starting: set[str] = set()
        self.on_replied: Callable[[], None] = lambda: None
        self._fair_keys: dict[str, list[str]] = {}
        #: Per queue, what its outcomes share in a `finish_many` call; replies streams by
        #: queue and client.
        self._shared: dict[str, FinishShared] = {}
        self._replies: dict[tuple[str, str], str] = {}

    def take(self) -> list[Op]:
        """The writes to send next, the outcomes of one queue joined into `finish_many`
        calls (one script call, and one set of shared keys, for many)."""
        return join_finishes(super().take())

    def fair_key(self, queue: str, name: str) -> str:
        """One key of the queue's fair share block ("fair", or one of `FAIR_NAMES`)."""
        return self.keys.of(queue, name if name == "fair" else f"fair:{name}")

    def fair_keys(self, queue: str) -> list[str]:
        """The queue's block of fair share keys (`lua/_fair.lua`)."""
        found = self._fair_keys.get(queue)
        if found is None:
            found = self._fair_keys[queue] = fair_keys(self.keys, queue)
        return found

    def note_replied(self, name: str) -> None:
        """This client waits for tasks of `name`: its replies stream there is ours."""
        if name not in self.replied:
            self.replied.add(name)
            self.on_replied()

    # -- reserving new tasks ------------------------------------------------------------

    async def reserve_batch(
        self, slots: Sequence[tuple[QueueInfo, Sequence[Entry]]]
    ) -> list[list[Admission]]:
        """Store the records of new tasks, per slot `(queue, [(task, nonce, envelope, due
        ms or "", waiting client or "")])`, in one round trip that also carries the writes
        queued meanwhile; the answers, per slot and task."""
        return [[ADMISSIONS[code] for code in codes] for codes in await self.reserve(slots)]

    async def reserve(self, slots: Sequence[tuple[QueueInfo, Sequence[Entry]]]) -> list[list[int]]:
        """`reserve_batch`, with `reserve.lua`'s codes (`RESERVED`, `KEPT`...)."""
        by_queue: dict[str, list[int]] = {}
        for index, (queue, _) in enumerate(slots):
            by_queue.setdefault(queue.name, []).append(index)
        calls: list[tuple[list[int], list[str], list[Any]]] = []
        now_ms = str(int(time.time() * 1000))
        for name, members in by_queue.items():
            base = [
                self.keys.outstanding(name),
                self.keys.stats(name),
                self.keys.of(name, "unconfirmed"),
                self.keys.envs(name),
                *self.fair_keys(name),
            ]
            info = slots[members[0]][0]
            head = [
                info.maxsize,
                self.client_id,
                k.ttl(info.result_ttl),
                now_ms,
                info.tenant_maxsize or 0,
            ]
            keys, args, part = list(base), list(head), []
            for index in members:
                for task, nonce, envelope, due, reply in slots[index][1]:
                    keys.append(self.keys.task(task.id))
                    args += (task.id, nonce, envelope, encode_meta(task), due, reply)
                    args += (tenant_of(task) or "", priority_of(task), index)
                part.append(index)
                if len(keys) - len(base) >= RESERVE_CHUNK:
                    calls.append((part, keys, args))
                    keys, args, part = list(base), list(head), []
            if part:
                calls.append((part, keys, args))
        ops = self.take()

        def fill(pipe: Any) -> list[Any]:
            reserves = [self.calls.script(pipe, "reserve", keys, args) for _, keys, args in calls]
            return [*self.fill(pipe, ops), *reserves]

        answers = await self.calls.pipelined("submit", fill)
        self.answered(ops, answers[: len(ops)])
        result: list[list[int]] = [[] for _ in slots]
        for (part, _, _), codes in zip(calls, answers[len(ops) :], strict=True):
            if isinstance(codes, Exception):
                raise codes
            it = iter(codes)
            for index in part:
                result[index] = [int(next(it)) for _ in slots[index][1]]
        return result

    async def unreserve(self, task_id: str, nonce: str) -> bool:
        """Take back a reservation whose message RabbitMQ refused."""
        name = queue_of(task_id)
        keys = [
            self.keys.task(task_id),
            self.keys.outstanding(name),
            self.keys.of(name, "unconfirmed"),
            self.keys.envs(name),
            self.keys.stats(name),
            self.keys.of(name, "fair:out"),
        ]
        return bool(
            await self.calls.eval("take back a submit", "unreserve", keys, [task_id, nonce])
        )

    def confirmed(self, queue: str, task_ids: list[str]) -> None:
        """RabbitMQ confirmed these tasks' messages: the janitor leaves them alone."""
        if task_ids:
            keys = [self.keys.of(queue, "unconfirmed"), self.keys.envs(queue)]
            last = self.ops[-1] if self.ops else None
            if (
                last is not None
                and last.script == "confirm"
                and last.keys == keys
                and len(last.args) + len(task_ids) <= CONFIRM_CHUNK
            ):
                # Not sent yet: one script call for the confirms of many submits.
                last.args.extend(task_ids)
                return
            # Lazy: the next reserve takes it along (nothing waits for it).
            self.push(Op("confirm", keys, list(task_ids)), lazy=True)

    # -- claimed tasks ------------------------------------------------------------------

    async def check(
        self, queue: str, pairs: Sequence[tuple[str, str]], ride: Ride | None = None
    ) -> list[str]:
        """`check.lua`'s verdict on delivered messages `(task id, nonce)`, sending the
        writes queued meanwhile in the same round trip (`ride`: the claim's, off once
        they are taken)."""
        keys = [self.keys.record(queue, task_id) for task_id, _ in pairs]
        # A message back more than EARLY_SLACK before its task's due time made a hop of a
        # long delay (its record says so): `check.lua` answers '>' for it.
        args = [int(time.time() * 1000 + EARLY_SLACK), *(nonce for _, nonce in pairs)]
        ops = self.take()
        if ride is not None:
            ride.off()

        def fill(pipe: Any) -> list[Any]:
            return [*self.fill(pipe, ops), self.calls.script(pipe, "check", keys, args)]

        answers = await self.calls.pipelined("check claimed tasks", fill, deliver=False)
        self.answered(ops, answers[:-1], written=True)
        if ops:
            await self.after_written()
        verdicts = answers[-1]
        if isinstance(verdicts, Exception):
            raise verdicts
        return [str(v) for v in verdicts]

    async def script_with_writes(
        self, what: str, name: str, keys: list[str], args: list[Any]
    ) -> Any:
        """One script call that first sends the writes queued so far, in the same round
        trip (a pick then sees the running slots that settled tasks gave back)."""
        ops = self.take()

        def fill(pipe: Any) -> list[Any]:
            return [*self.fill(pipe, ops), self.calls.script(pipe, name, keys, args)]

        answers = await self.calls.pipelined(what, fill, deliver=False)
        self.answered(ops, answers[:-1], written=True)
        if ops:
            await self.after_written()
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def finish(
        self,
        queue: QueueInfo,
        task: Task,
        nonce: str,
        reply: str,
        letter: str,
        then: Callable[[Any], None] | None,
    ) -> None:
        """Record `task`'s outcome (set on it already), batched; `then(answer)` after."""
        name = queue.name
        record = self.keys.task(task.id)
        if reply:
            replies = self._replies.get((name, reply))
            if replies is None:
                replies = self._replies[(name, reply)] = self.keys.replies(name, reply)
        else:
            replies = record
        args = _finish_own(task, nonce, letter, reply)
        self.push(Finish(self._finish_shared(queue), [record, replies], args, then))

    def _finish_shared(self, queue: QueueInfo) -> FinishShared:
        """What the outcomes of `queue` share (made again when its settings change)."""
        name = queue.name
        shared_args = self._finish_shared_args(k.ttl(queue.result_ttl), queue.maxsize)
        shared = self._shared.get(name)
        if shared is None or shared.args != shared_args:
            shared = self._shared[name] = FinishShared(self._finish_keys(name), shared_args)
        return shared

    def _finish_keys(self, queue: str) -> list[str]:
        """`finish.lua`'s KEYS but the task's record (first) and its replies stream (last,
        if it has one)."""
        return [
            self.keys.outstanding(queue),
            self.keys.stats(queue),
            self.keys.room(queue),
            self.keys.dead(queue),
            *self.fair_keys(queue),
        ]

    def _finish_shared_args(self, ttl: int, maxsize: int) -> tuple[Any, ...]:
        """`finish.lua`'s arguments in `FINISH_SHARED`, in that order."""
        return (
            ttl,
            self.max_dead_letters,
            k.REPLIES_MAXLEN,
            k.REPLIES_TTL,
            k.ROOM_TOKENS,
            NOTICE_OUTCOME_MAX,
            maxsize,
        )

    def _finish_call(
        self, queue: str, task: Task, nonce: str, reply: str, ttl: int, letter: str, maxsize: int
    ) -> tuple[list[str], list[Any]]:
        """One standalone `finish.lua` call: its KEYS and its `FINISH_ARGS` arguments, the
        shared and the task's own put in their places."""
        keys = [self.keys.task(task.id), *self._finish_keys(queue)]
        if reply:
            keys.append(self.keys.replies(queue, reply))
        args: list[Any] = [None] * FINISH_ARGS
        for at, value in zip(FINISH_SHARED, self._finish_shared_args(ttl, maxsize), strict=True):
            args[at - 1] = value
        for at, value in zip(FINISH_OWN, _finish_own(task, nonce, letter, reply), strict=True):
            args[at - 1] = value
        return keys, args

    def move(
        self,
        queue: str,
        task: Task,
        old: str,
        new: str,
        *,
        due_ms: str,
        counter: str,
        then: Callable[[Any], None] | None,
    ) -> None:
        """Point `task`'s record at its new message (batched)."""
        state = "scheduled" if due_ms else "pending"
        meta = encode_meta(task) if counter else ""
        args = [old, new, state, meta, due_ms, counter]
        self.push(Op("move", [self.keys.task(task.id), self.keys.stats(queue)], args, then))

    def reject(self, queue: str, letter: str) -> None:
        """Keep a dead letter of a message that is not a task of ours (batched)."""
        self.push(Op("reject", [self.keys.dead(queue)], [letter, self.max_dead_letters]))

    async def renew(
        self, queue: str, tasks: Sequence[tuple[Task, str]], *, lease: float | None = None
    ) -> list[Task]:
        """Of tasks run here `(task, nonce)`: those settled elsewhere (their outcome set on
        them) or whose record names another message now. With `lease` (seconds), tasks a
        fair queue handed out (`_fair.py`): the leases of the others are extended."""
        lost: list[Task] = []
        for start in range(0, len(tasks), RENEW_CHUNK):
            chunk = tasks[start : start + RENEW_CHUNK]
            keys = [self.keys.record(queue, task.id) for task, _ in chunk]
            args: list[Any] = [nonce for _, nonce in chunk]
            if lease is None:
                verdicts = await self.calls.eval("check running tasks", "renew", keys, args)
            else:
                keys = [*self.fair_keys(queue), *keys]
                args = [int((time.time() + lease) * 1000), *args]
                # Writes first: the claims' `hand.lua` calls go with them.
                verdicts = await self.script_with_writes("renew leases", "lease", keys, args)
            for (task, _), verdict in zip(chunk, verdicts, strict=True):
                verdict = str(verdict)
                if verdict == "+":
                    continue
                if verdict.startswith("="):
                    if task.state.final:
                        continue  # settled here meanwhile: nothing to tell
                    try:
                        apply_outcome(task, verdict[1:])
                    except (ValueError, TypeError, KeyError) as exc:
                        log.error("task %s: unreadable outcome (%s)", task.id, exc)
                lost.append(task)
        return lost

    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        """Settle a task CANCELLED unless it has an outcome; its record if this did it.
        (A pipeline run's own record is the broker's to cancel: `RabbitMQRuns.cancel`.)"""
        name = queue_of(task_id)
        if not name:
            return None
        record = self.keys.task(task_id)
        state, reply, meta, ttl, working = await self.calls.retrying(
            "cancel", lambda: self.calls.client.hmget(record, ["s", "r", "m", "t", "w"])
        )
        if state is None or state not in ("pending", "scheduled"):
            return None
        # `working`: a worker runs it now, and that attempt counts, as on every broker.
        task = task_from_record(task_id, state, meta, None, working)
        if isinstance(task, PipelineTask) and task.run is None:
            return task  # a run: the caller ends it through the run store
        task.settle(TaskState.CANCELLED, None, error, time.time())
        reply = str(reply or "")[: k.MAX_CLIENT_LENGTH]
        # maxsize 0: a room token whatever the count (the queue's limit is not known here).
        keys, args = self._finish_call(name, task, "", reply, int(ttl or k.MIN_TTL), "", 0)
        answer = await self.calls.eval("cancel", "finish", keys, args)
        return task if answer == 1 else None

    async def adopt(
        self, queue: str, before: float, nonce_prefix: str
    ) -> list[tuple[str, str, str, str]]:
        """The janitor's take-over of tasks reserved before `before` (wall clock) whose
        message was never confirmed: `(task id, new nonce, envelope, due ms or "")`."""
        unconfirmed = self.keys.of(queue, "unconfirmed")
        before_ms = int(before * 1000)
        found = await self.calls.eval(
            "find unconfirmed submits", "stale", [unconfirmed], [before_ms, RENEW_CHUNK]
        )
        if not found:
            return []
        ids = [str(i) for i in found]
        keys = [unconfirmed, self.keys.envs(queue), *(self.keys.record(queue, i) for i in ids)]
        now_ms = int(time.time() * 1000)
        answer = await self.calls.eval(
            "adopt unconfirmed submits", "adopt", keys, [now_ms, before_ms, nonce_prefix, *ids]
        )
        flat = [str(v) for v in answer]
        return [(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat), 4)]

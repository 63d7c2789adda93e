"""Batching: concurrent submits share one round trip, and outcome writes wait for the next.

Submits: every `accept` queues a slot; the submit loop sends all slots queued meanwhile in
one round trip, one `submit.lua` call per queue (up to `SUBMIT_CHUNK` tasks each), and
hands each caller its answer. Outcomes (`finish`, `retry`, `reject` calls) are queued as
`Op`s; the outcomes of one queue in a batch go as one `finish.lua` call (`Batch`). A
worker that finished a task is idle, so a claim follows: it sends them in the same round
trip as its read. The flush loop sends what no claim took within `FLUSH_TURNS` turns of
the scheduler (no timer: a claim in flight, or waiting in a blocking read, takes nothing
along, and is not waited for).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio

from ..._exceptions import BrokerError, SystemStopping
from ..._task import PipelineTask, Task, priority_of, tenant_of
from .._contract import Admission, QueueInfo, queue_of
from . import _keys as k
from . import _maxmemory
from ._calls import ATTEMPT_GRACE, Calls
from ._wire import encode_envelope, encode_meta, encode_plain

log = logging.getLogger("queueing.redis")

#: Slots sent in one pipeline by the submit loop.
SUBMIT_BATCH = 500
#: Submit round trips under way at once.
SUBMITS_IN_FLIGHT = 2
#: Tasks of one queue in one `submit.lua` call.
SUBMIT_CHUNK = 500
#: Outcome writes sent in one pipeline.
OPS_BATCH = 1000
#: Outcome writes waiting beyond which `settle` waits for them to be sent (backpressure).
OPS_CONGESTED = 2000
#: Tasks of one queue in one `finish.lua` call.
MERGE_CHUNK = 200
#: The scheduler's turns an outcome write waits for a claim to take it along before it is
#: sent alone (the claim a finished worker asks for starts within a couple).
FLUSH_TURNS = 3
#: Seconds between two openings of a replies stream by a client that submits: each one
#: makes it again if Redis lost it (a FLUSHALL) and pushes its TTL back.
REOPEN_EVERY = 60.0

#: `finish.lua`'s answer to a short call on a queue with tenants (see `Batcher.on_fair`).
_FAIR = "fair"
#: `submit.lua`'s answers: 1 accepted, 0 full, 2 tenant full, -1 exists, -2 exists (this
#: client's).
_ACCEPTED, _EXISTS_OURS = 1, -2
_ANSWERS = {
    1: Admission.ACCEPTED,
    0: Admission.FULL,
    2: Admission.TENANT_FULL,
    -1: Admission.EXISTS,
    -2: Admission.EXISTS,
}


def _staged(task: Task) -> bool:
    """A pipeline's stage task: no one waits for it by itself (its run is waited for), so
    its outcome sends no notice to the client that submitted it."""
    return isinstance(task, PipelineTask) and task.run is not None


_current_task = trio.lowlevel.current_task
_reschedule = trio.lowlevel.reschedule
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_ABORTED = trio.lowlevel.Abort.SUCCEEDED


def _check_id(queue: QueueInfo, task: Task) -> None:
    """A task id must name the queue (`<queue>:<unique>`) and fit `MAX_ID_LENGTH`."""
    task_id = task.id
    if queue_of(task_id) != k.base(queue.name):
        raise BrokerError(
            f"task id {task_id!r} does not name the queue {queue.name!r}: ids are <queue>:<unique>"
        )
    if len(task_id) > k.MAX_ID_LENGTH:
        shown = task_id[: k.MAX_ID_LENGTH // 4]
        raise BrokerError(
            f"task id {shown!r}... is {len(task_id)} characters, over the limit of "
            f"{k.MAX_ID_LENGTH}: use a shorter key"
        )


class _Slot:
    """One submit's tasks, waiting for their answer. Its caller sleeps until `wake` (no
    `trio.Event` per submit: the caller's task is rescheduled directly); a caller
    cancelled once its slot was sent waits on an event made then (`waiting`)."""

    __slots__ = ("answers", "compact", "done", "error", "event", "queue", "task", "tasks")

    def __init__(
        self, queue: QueueInfo, tasks: list[tuple[Any, ...]], compact: bool = False
    ) -> None:
        self.queue = queue
        # `submit.lua` arguments: id, envelope, meta, due (ms), reply, priority, tenant;
        # `compact`: plain tasks, ready now, waited for here: id, envelope, meta only
        # (sent in the script's compact form).
        self.tasks = tasks
        self.compact = compact
        self.answers: list[Admission] = []
        self.error: BaseException | None = None
        #: Answered (or failed): `answers` or `error` is final.
        self.done = False
        #: The caller's task while it sleeps in `wait`.
        self.task: trio.lowlevel.Task | None = None
        self.event: trio.Event | None = None

    async def wait(self) -> None:
        """Sleep until `wake` (returns at once if it came already). Cancellable."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.task = _current_task()
        await _wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.task = None  # no longer asleep: `wake` must not reschedule it
        return _ABORTED

    async def waiting(self, deadline: float) -> None:
        """After a cancellation: wait, shielded, until `wake` or `deadline`."""
        if self.done:
            return
        event = self.event = trio.Event()
        with trio.CancelScope(shield=True, deadline=deadline):
            await event.wait()

    def wake(self) -> None:
        """The answer (or error) is in: wake the caller."""
        self.done = True
        task = self.task
        if task is not None:
            self.task = None
            _reschedule(task)
        elif self.event is not None:
            self.event.set()


_new = object.__new__


def _compact_slot(queue: QueueInfo, call: tuple[Any, ...]) -> _Slot:
    """`_Slot(queue, [call], compact=True)` without the class call (which looks `__init__`
    up and calls it from C, dearer than the stores): once per client submit.
    tests/redis/test_batch_slots.py checks both make the same slot."""
    slot: _Slot = _new(_Slot)
    slot.queue = queue
    slot.tasks = [call]
    slot.compact = True
    slot.answers = []
    slot.error = None
    slot.done = False
    slot.task = None
    slot.event = None
    return slot


class Op:
    """One outcome write: a script call, and what to do with its answer.

    With `head` (the keys and arguments common to a queue's calls), it is one task's part
    of a call that takes many (`finish.lua`): the ops of a batch with the same `head` are
    sent as one call, up to `MERGE_CHUNK` tasks, and each gets its own answer.
    """

    __slots__ = ("args", "head", "keys", "script", "then")

    def __init__(
        self,
        script: str,
        keys: list[str],
        args: list[Any],
        then: Callable[[Any], None] | None = None,
        head: tuple[list[str], list[Any]] | None = None,
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.then = then
        self.head = head


class Batch:
    """Outcome writes taken to be sent in one round trip, as script calls."""

    __slots__ = ("calls", "ops")

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        #: (script, keys, args, the ops it answers; for a merged call, a list of answers)
        self.calls: list[tuple[str, list[str], list[Any], list[Op]]] = []
        merged: dict[int, tuple[list[str], list[Any], list[Op]]] = {}
        #: Of each merged call, the replies stream its last task with one passed.
        streams: dict[int, str] = {}
        for op in ops:
            head = op.head
            if head is None:
                self.calls.append((op.script, op.keys, op.args, [op]))
                continue
            call = merged.get(id(head))
            if call is None or len(call[2]) >= MERGE_CHUNK:
                call = merged[id(head)] = ([*head[0]], [*head[1]], [])
                streams.pop(id(head), None)
                self.calls.append((op.script, *call))
            keys = op.keys
            if len(keys) == 2:  # a record and its client's replies stream (`finish.lua`)
                if streams.get(id(head)) == keys[1]:
                    # The same stream as the task before: marked '=', not passed again
                    # (every key passed costs Redis about as much as a command's share).
                    call[0].append(keys[0])
                    args = op.args
                    call[1].extend((args[0], "=" + args[1][1:], *args[2:]))
                    call[2].append(op)
                    continue
                streams[id(head)] = keys[1]
            call[0].extend(keys)
            call[1].extend(op.args)
            call[2].append(op)

    def __len__(self) -> int:
        return len(self.ops)


class _ClaimWaiting:
    """`Batcher.claim_waiting`: counts the claims in a blocking read while in it."""

    __slots__ = ("batcher",)

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher

    def __enter__(self) -> None:
        self.batcher.waiting_claims += 1

    def __exit__(self, *_: object) -> None:
        self.batcher.waiting_claims -= 1


class Batcher:
    """The two queues of writes, and the loops that send them."""

    def __init__(self, calls: Calls, keys: k.Keys, client_id: str) -> None:
        self.calls = calls
        self.keys = keys
        self.client_id = client_id
        self._submits: list[_Slot] = []
        self._submit_lot = trio.lowlevel.ParkingLot()
        self.ops: list[Op] = []
        self._ops_lot = trio.lowlevel.ParkingLot()
        self._flushed = trio.lowlevel.ParkingLot()
        #: Claims waiting in a blocking read (they take no outcome writes along for now).
        self.waiting_claims = 0
        # One context manager for every claim (a class's: a generator's costs more).
        self._claim_waiting = _ClaimWaiting(self)
        #: Queues (and pipelines) this client submitted to: their replies streams are ours.
        self.replied: set[str] = set()
        self.on_replied: Callable[[], None] = lambda: None
        #: Called with the ids Redis accepted from here whose notices come here.
        self.on_accepted: Callable[[list[str]], None] = lambda ids: None
        #: Called with the ops of a merged call answered `_FAIR` (a short `finish.lua`
        #: call on a queue with tenants wrote nothing): they are to be pushed again.
        self.on_fair: Callable[[list[Op]], None] = lambda ops: None
        #: When each replies stream of ours is to be opened again (trio clock), and the
        #: openings under way. A reconnect opens them again (Redis may have lost them).
        self._opened: dict[str, float] = {}
        self._opening: dict[str, trio.Event] = {}
        #: Per queue (shard): `_keys_of_submits`.
        self._submit_keys: dict[str, tuple[list[str], str, int]] = {}
        calls.on_reconnect.append(self.reopen)

    # -- submits ----------------------------------------------------------------------------

    async def submit(self, queue: QueueInfo, tasks: list[tuple[Task, str]]) -> list[Admission]:
        """Store tasks (one `submit.lua` answer each), sharing a round trip with every
        submit queued meanwhile."""
        if not tasks:
            await trio.lowlevel.checkpoint()
            return []
        for task, _ in tasks:
            _check_id(queue, task)
        # Encoded here, so that a payload that is not plain data fails its caller only.
        slot = self._encoded(queue, tasks)
        if slot.compact or not all(_staged(task) for task, _ in tasks):
            self.note_replied(queue.name)
        return await self._answer(slot)

    async def submit_one(self, queue: QueueInfo, task: Task) -> Admission:
        """`submit` of one task, ready now, to a queue of one shard: the client's `submit`
        (one coroutine where `submit` and `_answer` are two, and no list of one task)."""
        _check_id(queue, task)
        plain = encode_plain(task)
        if plain is None:
            slot = self._encoded(queue, [(task, "")])
            if slot.compact or not _staged(task):
                self.note_replied(queue.name)
        else:
            slot = _compact_slot(queue, (task.id, *plain))
            if queue.name not in self.replied:
                self.note_replied(queue.name)
        self._submits.append(slot)
        if self._submit_lot:  # a sender is idle: wake one (else a busy one comes back)
            self._submit_lot.unpark()
        # `slot.wait()` inlined (a coroutine less): the slot cannot be answered yet, since
        # nothing ran since it was queued.
        slot.task = _current_task()
        try:
            await _wait_task_rescheduled(slot._abort)
        except trio.Cancelled:
            if self._withdrawn(slot):
                raise
            await self._answer_after_cancel(slot)
        if slot.error is not None:
            raise slot.error
        return slot.answers[0]

    async def _answer(self, slot: _Slot) -> list[Admission]:
        """Queue `slot` to be sent and wait for its answers."""
        self._submits.append(slot)
        if self._submit_lot:  # a sender is idle: wake one (else a busy one comes back)
            self._submit_lot.unpark()
        try:
            await slot.wait()
        except trio.Cancelled:
            if self._withdrawn(slot):
                raise
            await self._answer_after_cancel(slot)
        if slot.error is not None:
            raise slot.error
        return slot.answers

    def _withdrawn(self, slot: _Slot) -> bool:
        """A submit's caller was cancelled: if its slot was not sent yet, withdraw it
        (nothing was accepted; True)."""
        for index, queued in enumerate(self._submits):
            if queued is slot:
                del self._submits[index]
                return True
        return False

    async def _answer_after_cancel(self, slot: _Slot) -> None:
        """A submit's caller was cancelled once its slot was sent: Redis may be accepting
        it right now. Wait for the answer, so that an accepted task is reported to the
        caller; the caller's cancellation takes effect at its next checkpoint."""
        await slot.waiting(trio.current_time() + self.calls.block + ATTEMPT_GRACE)
        if not slot.done:
            raise BrokerError(
                "Redis did not answer a submit in time (the task may have been accepted)"
            ) from None

    def _encoded(self, queue: QueueInfo, tasks: list[tuple[Task, str]]) -> _Slot:
        """The slot of these tasks: in the compact form when all are plain tasks, ready
        now (the bulk of a `submit_many`), each encoded without building its documents."""
        compact: list[tuple[Any, ...]] = []
        for task, due in tasks:
            plain = None if due else encode_plain(task)
            if plain is None:
                break
            compact.append((task.id, *plain))
        else:
            return _Slot(queue, compact, compact=True)
        encoded: list[tuple[Any, ...]] = [
            (
                task.id,
                encode_envelope(task),
                encode_meta(task),
                due,
                "" if _staged(task) else self.client_id,
                priority_of(task),
                tenant_of(task) or "",
            )
            for task, due in tasks
        ]
        return _Slot(queue, encoded)

    async def open_replies(self, name: str) -> None:
        """Make sure this client's replies stream of `name` exists before it starts a
        pipeline run there (queue submits open theirs in the submit's round trip)."""
        while (opening := self._opening.get(name)) is not None:
            await opening.wait()  # another submit of this client opens it right now
        if not self._stale([name]):
            self.note_replied(name)
            return
        event = self._opening[name] = trio.Event()
        try:

            def fill(pipe: Any) -> list[Any]:
                return self._open(pipe, name)

            await self.calls.pipelined("open a replies stream", fill)
            self._opened[name] = trio.current_time() + REOPEN_EVERY
        finally:
            del self._opening[name]
            event.set()
        self.note_replied(name)

    def reopen(self) -> None:
        """Open our replies streams again at the next submit (Redis may have lost them:
        a reconnect, or a loss of data seen otherwise)."""
        self._opened.clear()

    def _stale(self, names: Iterable[str]) -> list[str]:
        """Of these replies streams of ours, those to open (again) now."""
        now = trio.current_time()
        return [name for name in names if now >= self._opened.get(name, -math.inf)]

    def _open(self, pipe: Any, name: str) -> list[Any]:
        """Queue the commands that make our replies stream of `name` (or keep it): an empty
        notice (no task id: readers skip it), and the stream's TTL."""
        from coredis.tokens import PureToken

        key = self.keys.replies(name, self.client_id)
        return [
            pipe.xadd(
                key,
                {"id": ""},
                trim_strategy=PureToken.MAXLEN,
                threshold=k.REPLIES_MAXLEN,
                trim_operator=PureToken.APPROXIMATELY,
            ),
            pipe.expire(key, k.REPLIES_TTL),
        ]

    async def close_replies(self) -> None:
        """Delete this client's replies streams (it closes: nobody reads them any more).
        One key per call: each lives in its own queue's slot."""
        for name in sorted(self.replied):
            await self.calls.client.delete([self.keys.replies(name, self.client_id)])
        self._opened.clear()

    def note_replied(self, name: str) -> None:
        """This client submits to `name`: its replies stream there is ours to read."""
        if name not in self.replied:
            self.replied.add(name)
            self.on_replied()

    async def submit_loop(self) -> None:
        """Send the submits queued, all those queued meanwhile in one round trip; a second
        round trip may start while one is under way (a submit that comes then does not
        wait for the other's answer). A caller's next submit comes after its answer, so
        each caller's tasks keep their order. `SUBMITS_IN_FLIGHT` senders, each parked
        until a submit comes: a submit wakes one directly (no task started per round trip,
        no scheduler turn for a loop that would start it)."""
        sending: list[list[_Slot]] = []
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(SUBMITS_IN_FLIGHT):
                    nursery.start_soon(self._sender, sending)
        finally:
            # Stopped (the system shuts down): nobody is left to answer these.
            for slot in [*(slot for batch in sending for slot in batch), *self._submits]:
                if not slot.done:
                    slot.error = SystemStopping(
                        "the system shut down before Redis answered this submit "
                        "(the task may have been accepted)"
                    )
                    slot.wake()
            self._submits = []

    async def _sender(self, sending: list[list[_Slot]]) -> None:
        """One of `submit_loop`'s senders: takes what is queued, sends it, and again."""
        while True:
            if not self._submits:
                await self._submit_lot.park()
                continue
            batch = self._submits[:SUBMIT_BATCH]
            del self._submits[:SUBMIT_BATCH]
            sending.append(batch)
            await self._send_submits(batch)
            sending.remove(batch)
            # Not kept while this sender is parked: its slots (and their tasks' encoded
            # arguments) would stay alive until the next batch, long enough for the
            # collector to move them to its oldest generation.
            del batch
            if not self._submits and not sending:
                self._flushed.unpark_all()

    def _calls_of(self, batch: list[_Slot]) -> list[tuple[list[_Slot], list[str], list[Any]]]:
        """One `submit.lua` call per queue, form and chunk: (slots, keys, args). The slots
        of one queue keep their order (a change of form starts a new call)."""
        by_queue: dict[str, list[list[_Slot]]] = {}
        for slot in batch:
            runs = by_queue.setdefault(slot.queue.name, [])
            if runs and runs[-1][0].compact == slot.compact:
                runs[-1].append(slot)
            else:
                runs.append([slot])
        calls = []
        for name, runs in by_queue.items():
            for slots in runs:
                calls += self._calls_of_run(name, slots)
        return calls

    def _calls_of_run(
        self, name: str, slots: list[_Slot]
    ) -> list[tuple[list[_Slot], list[str], list[Any]]]:
        """The calls of one queue's slots of one form (see `_calls_of`)."""
        known = self._submit_keys.get(name)
        if known is None:
            known = self._submit_keys[name] = self._keys_of_submits(name)
        base, start, start_bytes = known
        info = slots[0].queue
        # Compact: the records' keys start alike (the queue's tag), the id after that. A
        # shard's tasks are checked: each id names its own shard.
        compact = slots[0].compact and (
            k.base(name) == name
            or all(self.keys.task(t[0]).startswith(start) for slot in slots for t in slot.tasks)
        )
        head = [
            info.maxsize,
            self.client_id,
            k.ttl(info.result_ttl),
            k.NUDGE_TOKENS,
            info.tenant_maxsize or 0,
            start_bytes if compact else 0,  # bytes, as Lua counts
        ]
        calls = []
        keys, args, members = list(base), list(head), []
        for slot in slots:
            if compact:
                for call in slot.tasks:
                    keys.append(start + call[0])
                    args += call[1:]
            else:
                for call in slot.tasks:
                    keys.append(self.keys.task(call[0]))
                    args += call if len(call) == 7 else (*call, "", self.client_id, 0, "")
            members.append(slot)
            if len(keys) - len(base) >= SUBMIT_CHUNK:
                calls.append((members, keys, args))
                keys, args, members = list(base), list(head), []
        if members:
            calls.append((members, keys, args))
        return calls

    def _keys_of_submits(self, name: str) -> tuple[list[str], str, int]:
        """A queue's keys every `submit.lua` call to it starts with, the prefix of its
        records' keys, and that prefix's length in bytes (as Lua counts): made once per
        queue (they follow from its name), not per round trip."""
        keys = self.keys
        base = [
            keys.outstanding(name),
            keys.ready(name),
            keys.delayed(name),
            keys.envs(name),
            keys.stats(name),
            keys.live(name),
            keys.waiting(name),
            keys.ranked(name),
            keys.nudge(name),
            *keys.fair(name),
        ]
        start = keys.of(name, "task:")
        return base, start, len(start.encode())

    async def _send_submits(self, batch: list[_Slot]) -> None:
        calls = self._calls_of(batch)
        sends = 0
        # The replies streams the outcomes will be noticed in must exist before the tasks
        # are accepted (notices go only into a stream that exists): opened in the same
        # round trip, ahead of the submits, every `REOPEN_EVERY` seconds, and on a resend
        # (the connection broke: Redis may have restarted empty).
        replied = {
            slot.queue.name for slot in batch if slot.compact or any(t[4] for t in slot.tasks)
        }
        opened: list[str] = []

        def fill(pipe: Any) -> list[Any]:
            nonlocal sends, opened
            sends += 1
            opened = sorted(replied) if sends > 1 else self._stale(replied)
            opens = [command for name in opened for command in self._open(pipe, name)]
            scripts = [self.calls.script(pipe, "submit", keys, args) for _, keys, args in calls]
            return [*opens, *scripts]

        try:
            answers = await self.calls.pipelined("submit", fill)
        except Exception as exc:
            for slot in batch:
                slot.error = BrokerError(f"submit failed: {type(exc).__name__}: {exc}")
                slot.wake()
            return
        until = trio.current_time() + REOPEN_EVERY
        self._opened.update(dict.fromkeys(opened, until))
        answers = answers[len(answers) - len(calls) :]
        for (members, _, _), codes in zip(calls, answers, strict=True):
            if isinstance(codes, Exception):
                for slot in members:
                    slot.error = (
                        _maxmemory.refused("submit")  # the script stored nothing (first send)
                        if sends == 1 and _maxmemory.out_of_memory(codes)
                        else BrokerError(f"submit failed: {type(codes).__name__}: {codes}")
                    )
                    slot.wake()
                continue
            ours: list[str] = []
            try:
                # The tasks not accepted, by position in the call: (index, code) pairs.
                refused = {int(codes[j]) - 1: int(codes[j + 1]) for j in range(1, len(codes), 2)}
                if int(codes[0]) != sum(len(slot.tasks) for slot in members):
                    raise ValueError(f"{codes[0]} answers")
            except (TypeError, ValueError, IndexError) as exc:
                for slot in members:
                    slot.error = BrokerError(f"submit failed: unexpected answer ({exc})")
                    slot.wake()
                continue
            position = 0
            for slot in members:
                tasks = slot.tasks
                if not refused:  # the common case: all accepted
                    slot.answers = [Admission.ACCEPTED] * len(tasks)
                    if slot.compact:  # (a loop: no generator per slot, most of one task)
                        for call in tasks:
                            ours.append(call[0])
                    else:
                        for call in tasks:
                            if call[4]:
                                ours.append(call[0])
                    position += len(tasks)
                    slot.wake()
                    continue
                for index, call in enumerate(tasks, position):
                    code = refused.get(index, _ACCEPTED)
                    if code == _ACCEPTED and (slot.compact or call[4]):
                        # Stored now, naming this client: its notice comes here. (One that
                        # existed may have its outcome already: it is read when waited for.)
                        ours.append(call[0])
                    # Sent again after a lost connection: "exists, ours" is our own earlier
                    # send that Redis applied before the connection broke.
                    if code == _EXISTS_OURS and sends > 1:
                        code = _ACCEPTED
                    slot.answers.append(_ANSWERS[code])
                position += len(tasks)
                slot.wake()
            if ours:
                self.on_accepted(ours)

    # -- outcome writes ---------------------------------------------------------------------

    def push(self, op: Op) -> None:
        self.ops.append(op)
        if self._ops_lot:
            self._ops_lot.unpark_all()

    def claim_waiting(self) -> _ClaimWaiting:
        """Around a claim's blocking read: outcome writes go without waiting for it."""
        return self._claim_waiting

    @property
    def congested(self) -> bool:
        return len(self.ops) > OPS_CONGESTED

    async def relieve(self) -> None:
        """Wait while the writes queued are more than Redis keeps up with."""
        while self.congested:
            await self._flushed.park()

    def take(self) -> Batch:
        """Outcome writes for a claim to send along with its read."""
        batch = self.ops[:OPS_BATCH]
        del self.ops[:OPS_BATCH]
        return Batch(batch)

    def fill(self, pipe: Any, batch: Batch) -> list[Any]:
        """Queue a batch's calls on `pipe`: one result each (see `answered`). On the lean
        client's pipeline, a merged call's head (its queue's keys and arguments, the same
        in every call) is encoded once (`Pipe.evalsha`)."""
        script = self.calls.script
        lean = getattr(type(pipe), "LEAN", False)
        filled = []
        for name, keys, args, ops in batch.calls:
            head = ops[0].head
            if lean and head is not None:
                pipe.head_next = (len(head[0]), len(head[1]))
            filled.append(script(pipe, name, keys, args))
        return filled

    def answered(self, batch: Batch, answers: Sequence[Any]) -> None:
        """After a batch was written: hand each answer on, wake whoever waits."""
        for (name, keys, _, ops), answer in zip(batch.calls, answers, strict=True):
            if isinstance(answer, Exception):
                log.error("redis %s (keys %s) failed: %s", name, keys[:2], answer)
                continue
            if ops[0].head is None:
                parts = [answer]
            elif answer == _FAIR:
                self.on_fair(ops)
                continue
            elif isinstance(answer, list | tuple) and len(answer) == len(ops):
                parts = list(answer)
            else:
                log.error("redis %s answered %r for %d tasks", name, answer, len(ops))
                continue
            for op, part in zip(ops, parts, strict=True):
                if op.then is not None:
                    op.then(part)
        if not self.congested:
            self._flushed.unpark_all()

    async def flush(self) -> None:
        """Wait until every submit and outcome write queued so far has been sent."""
        while self.ops or self._submits:
            with trio.move_on_after(self.calls.block):
                await self._flushed.park()
        await trio.lowlevel.checkpoint()

    async def flush_loop(self) -> None:
        while True:
            if not self.ops:
                self._flushed.unpark_all()
                await self._ops_lot.park()
                # A worker that finished is idle: the claim it asks for takes these writes
                # along with its read (one round trip instead of two), within a few of
                # the scheduler's turns. This loop sends what no claim took by then: a
                # claim already in flight took its writes before these came, and one that
                # waits for new entries takes none until one comes; neither is waited for.
                for _ in range(FLUSH_TURNS):
                    await trio.lowlevel.checkpoint()
                    if not self.ops or self.waiting_claims or len(self.ops) >= OPS_BATCH:
                        break
                continue
            batch = self.take()
            calls = [(name, keys, args) for name, keys, args, _ in batch.calls]
            answers = await self.calls.scripts("write outcomes", calls)
            self.answered(batch, answers)

"""Submits: concurrent accepts share one Redis round trip and one RabbitMQ write.

`accept` queues a `Slot` (its tasks, encoded) and waits. The submit loop takes every slot
queued meanwhile, reserves their records in one Redis pipeline (`Store.reserve_batch`,
which also carries the store's queued writes), then publishes the messages of the tasks
reserved in one write to RabbitMQ (`Channel.begin_publish_many`). Each caller is woken
once, when its messages' `Confirmation`s are all settled (RabbitMQ's confirms arrive in
the connection's reader task, which counts them down per slot), with its answers: one
wake-up per submit, not one for the reserve and one per confirm. A message RabbitMQ
refused takes its reservation back (FULL); one the loop could not send (no connection at
the time) or whose fate a lost connection left unknown is published again by the caller,
with retries (`Rabbit.publish`). A slot whose confirms have not all come after
`PUBLISH_GRACE` is woken by the loop's watchdog (its caller then reports it).

A message over RabbitMQ's `max_message_size` makes it close the channel (406): that message
is refused (`MessageTooLarge`), its reservation taken back, and so are those of the tasks
after it in the same call (sent after it on the closed channel, so never routed): the
caller's answers stop before it, as at a full queue, and `accept` raises when it is the
first. The other messages on that channel are published again on a new one. Once RabbitMQ
has told its limit that way, a message over it is refused before anything is reserved.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..._exceptions import BrokerError, SystemStopping
from ..._task import PipelineTask, Task, TaskState, priority_of
from .._contract import Admission, QueueInfo
from ..redis import _keys as k
from ..redis._calls import ATTEMPT_GRACE
from ..redis._wire import encode_envelope
from ._confirms import Confirmation
from ._errors import AMQPError, MessageTooLarge, PublishNacked
from ._message import Properties
from ._rabbit import Rabbit, delay_bucket, task_properties
from ._store import ADMISSIONS, KEPT, TURNED_FAIR, Entry, Store
from ._store_reads import Reads

log = logging.getLogger("queueing.rabbitmq")

#: Slots sent in one round trip.
SUBMIT_BATCH = 500
#: Seconds a publish may take once its task is reserved, even if its caller is cancelled
#: (so the record and the message agree); past it the janitor publishes it.
PUBLISH_GRACE = 30.0


class Slot:
    """Tasks of one `accept` call, and what the submit loop made of them."""

    __slots__ = (
        "answers",
        "confirmations",
        "entries",
        "error",
        "event",
        "kept",
        "overdue",
        "pending",
        "queue",
        "routing",
        "sent_at",
        "turned",
    )

    def __init__(self, queue: QueueInfo, entries: list[Entry], routing: str) -> None:
        self.queue = queue
        self.entries = entries
        self.routing = routing
        self.answers: list[Admission] = []
        #: Per entry: kept waiting in the results store (a fair queue's: not published).
        self.kept: list[bool] = []
        #: Whether one of them turned the queue fair (see `_fair.py`).
        self.turned = False
        #: Per entry: its message's confirmation; None if it was not sent (not reserved,
        #: or the loop could not send it: the caller publishes it).
        self.confirmations: list[Confirmation | None] = []
        self.error: BaseException | None = None
        #: When the loop reserved and sent its tasks (trio's clock); None until then.
        self.sent_at: float | None = None
        #: Confirmations not settled yet; `event` is set when none is left.
        self.pending = 0
        #: Woken by the watchdog, its confirms still pending after `PUBLISH_GRACE`.
        self.overdue = False
        #: Set once the caller can go on: the reserve failed, or its messages are settled.
        self.event = trio.Event()

    def _one_settled(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.event.set()


class Submitter:
    """Accepts: the submit loop and its queue of slots, and each caller's confirms."""

    def __init__(
        self, store: Store, rabbit: Rabbit, reads: Reads, nonce: Callable[[], str]
    ) -> None:
        self.store = store
        self.rabbit = rabbit
        self.reads = reads
        self.nonce = nonce
        self.client_id = store.client_id
        #: When RabbitMQ last refused a submit to each queue (over its x-max-length).
        self.nacked: dict[str, float] = {}
        self._slots: list[Slot] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._sent = trio.lowlevel.ParkingLot()
        #: Slots sent whose confirms were pending then, oldest first (for `_watch`).
        self._inflight: deque[Slot] = deque()
        self._watch_lot = trio.lowlevel.ParkingLot()
        #: Called once per queue and priority level (above 0) this process submits to,
        #: before the first task of it is published (the broker registers the level).
        self.on_level: Callable[[QueueInfo, int], Awaitable[None]] | None = None
        #: Called when a submit of this process turned a queue fair (`_fair.py`).
        self.on_fair: Callable[[QueueInfo], Awaitable[None]] | None = None
        self._levels: set[tuple[str, int]] = set()

    async def accept(
        self, queue: QueueInfo, tasks: Sequence[Task], due: float | None
    ) -> list[Admission]:
        """Reserve the tasks' records, then publish the messages of those reserved; a
        message RabbitMQ refuses takes its reservation back (FULL). `due`: wall clock.

        Answers fewer than `tasks` when one's message is over RabbitMQ's
        `max_message_size`: the answers of those before it (it and those after it were
        not accepted).

        Raises:
            MessageTooLarge: the first task's message is over `max_message_size`.
        """
        if not tasks:
            await trio.lowlevel.checkpoint()
            return []
        priority = priority_of(tasks[0])
        if any(priority_of(task) != priority for task in tasks):
            # One ready queue per priority: tasks of several go one priority at a time.
            answers: list[Admission] = []
            for task in tasks:
                try:
                    answers += await self.accept(queue, [task], due)
                except MessageTooLarge:
                    if not answers:
                        raise
                    break
            return answers
        for task in tasks:
            _check_id(queue, task)
        now = time.time()
        delay_ms = 0.0 if due is None else (due - now) * 1000
        due_ms = str(int(due * 1000)) if due is not None and delay_ms > 0 else ""
        await self.rabbit.declare(queue, priority=priority)
        if priority and (queue.name, priority) not in self._levels:
            if self.on_level is not None:
                await self.on_level(queue, priority)
            self._levels.add((queue.name, priority))
        routing = self.rabbit.main(queue.name, priority)
        if due_ms:
            routing = await self.rabbit.declare_delay(queue.name, delay_bucket(delay_ms), priority)
        entries: list[Entry] = []
        for task in tasks:
            reply = "" if _staged(task) else self.client_id
            if reply:
                self.store.note_replied(queue.name)
            entries.append((task, self.nonce(), encode_envelope(task), due_ms, reply))
        if (limit := self.rabbit.max_message_size) is not None:
            for index, entry in enumerate(entries):
                try:
                    self.rabbit.too_large(queue, _size(entry[2], limit))
                except MessageTooLarge:
                    if not index:
                        raise
                    del entries[index:]  # answered by a call of their own
                    break
        slot = Slot(queue, entries, routing)
        await self.submit(slot)
        answers = slot.answers
        reserved = [
            i
            for i, answer in enumerate(answers)
            if answer is Admission.ACCEPTED and not slot.kept[i]
        ]
        for (task, _, _, _, reply), answer, kept in zip(entries, answers, slot.kept, strict=True):
            if answer is Admission.EXISTS:
                self.reads.expect(task.id, own=False, stored=True)
            elif kept:  # waits in the store (a fair queue's): nothing to publish
                if due_ms:
                    task.state = TaskState.SCHEDULED
                if reply:
                    self.reads.expect(task.id, own=True, stored=True)
        if slot.turned and self.on_fair is not None:
            await self.on_fair(queue)
        if not reserved:
            return answers
        confirmations = slot.confirmations
        if all(
            (c := confirmations[i]) is not None and c.done and c.exception() is None
            for i in reserved
        ):
            # The usual case: every message was confirmed while the caller slept.
            confirmed = []
            for index in reserved:
                task, _, _, _, reply = entries[index]
                confirmed.append(task.id)
                if due_ms:
                    task.state = TaskState.SCHEDULED
                if reply:
                    self.reads.expect(task.id, own=True, stored=True)
            self.store.confirmed(queue.name, confirmed)
            return answers
        # Shielded, so that record and message agree even if the caller is cancelled.
        with trio.CancelScope(shield=True) as scope:
            # A slot the watchdog woke has had its grace already.
            scope.deadline = trio.current_time() + (0.0 if slot.overdue else PUBLISH_GRACE)
            confirmed = []
            refused: MessageTooLarge | None = None
            refused_at = len(entries)
            for index in reserved:
                task, nonce, _, _, _ = entries[index]
                if refused is not None:
                    # Sent after the refused message (on the channel it closed), or not
                    # sent: never routed. Not accepted, as the caller will be told.
                    await self.store.unreserve(task.id, nonce)
                    continue
                try:
                    ok = await self._confirmed(queue, slot, index)
                except MessageTooLarge as exc:
                    refused, refused_at = exc, index
                    await self.store.unreserve(task.id, nonce)
                    continue
                if ok:
                    confirmed.append(task.id)
                    if due_ms:
                        task.state = TaskState.SCHEDULED
                    if entries[index][4]:
                        self.reads.expect(task.id, own=True, stored=True)
                elif await self.store.unreserve(task.id, nonce):
                    answers[index] = Admission.FULL
                    self.nacked[queue.name] = time.time()
            self.store.confirmed(queue.name, confirmed)
        if scope.cancelled_caught:
            raise BrokerError(
                f"RabbitMQ did not confirm a submit to {queue.name!r} within "
                f"{PUBLISH_GRACE:g}s (the task may have been accepted: it then runs)"
            )
        if refused is not None:
            if not refused_at:
                raise refused
            del answers[refused_at:]
        return answers

    async def _confirmed(self, queue: QueueInfo, slot: Slot, index: int) -> bool:
        """Wait for the confirm of a reserved task's message (publishing it again if it was
        not sent, or its fate is unknown); False if RabbitMQ refused it."""
        confirmation = slot.confirmations[index]
        lost: AMQPError | None = None
        if confirmation is not None:
            try:
                await confirmation.wait()
                return True
            except PublishNacked:
                return False
            except AMQPError as exc:
                lost = exc  # with its connection or channel, sent or not
        _, nonce, envelope, _, _ = slot.entries[index]
        body = envelope.encode()
        # Refused if its channel closed over a message this large (this one); else
        # published again.
        self.rabbit.too_large(queue, len(body), lost)
        try:
            await self.rabbit.publish(queue, slot.routing, body, nonce)
        except PublishNacked:
            return False
        return True

    async def flush(self) -> None:
        """Wait until every slot queued so far has been sent."""
        while self._slots:
            await self._sent.park()
        await trio.lowlevel.checkpoint()

    async def submit(self, slot: Slot) -> None:
        """Queue `slot` and wait until the loop reserved (and sent) its tasks."""
        self._slots.append(slot)
        self._lot.unpark()
        try:
            await slot.event.wait()
        except trio.Cancelled:
            if slot in self._slots:  # not sent yet: withdrawn, nothing was reserved
                self._slots.remove(slot)
                raise
            # Sent: the caller must learn whether its tasks were reserved, to publish them
            # (else the janitor does, later); `accept` waits for their confirms.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.store.calls.block + ATTEMPT_GRACE
                await slot.event.wait()
            if not slot.event.is_set() and slot.sent_at is None:
                raise BrokerError(
                    "Redis did not answer a submit in time (the task may have been accepted)"
                ) from None
        if slot.error is not None:
            raise slot.error

    async def loop(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            try:
                await self._loop()
            finally:
                nursery.cancel_scope.cancel()

    async def _loop(self) -> None:
        batch: list[Slot] = []
        try:
            while True:
                if not self._slots:
                    await self._lot.park()
                    continue
                batch = self._slots[:SUBMIT_BATCH]
                del self._slots[:SUBMIT_BATCH]
                await self._send(batch)
                batch = []
                if not self._slots:
                    self._sent.unpark_all()
        finally:
            for slot in [*batch, *self._slots]:
                if not slot.event.is_set():
                    slot.error = SystemStopping(
                        "the system shut down before this submit was answered "
                        "(the task may have been accepted)"
                    )
                    slot.event.set()
            self._slots = []
            self._sent.unpark_all()
            # Sent, waiting for confirms: their callers wait for those themselves.
            for slot in self._inflight:
                slot.event.set()
            self._inflight.clear()

    async def _watch(self) -> None:
        """Wake the caller of a slot sent `PUBLISH_GRACE` ago whose confirms are still
        pending (RabbitMQ neither confirmed nor closed the channel): it reports it. Waits
        on the oldest such slot (confirms come in publish order), so it wakes about once
        per batch of confirms, and no timer runs while nothing waits for one."""
        inflight = self._inflight
        while True:
            while inflight and inflight[0].event.is_set():
                inflight.popleft()
            if not inflight:
                await self._watch_lot.park()
                continue
            await _wait_for(inflight[0])

    async def _send(self, batch: list[Slot]) -> None:
        try:
            answers = await self.store.reserve([(slot.queue, slot.entries) for slot in batch])
        except Exception as exc:
            for slot in batch:
                slot.error = BrokerError(f"submit failed: {type(exc).__name__}: {exc}")
                slot.event.set()
            return
        for slot, codes in zip(batch, answers, strict=True):
            slot.answers = [ADMISSIONS[code] for code in codes]
            slot.kept = [code in (KEPT, TURNED_FAIR) for code in codes]
            slot.turned = TURNED_FAIR in codes
            slot.confirmations = [None] * len(slot.entries)
        try:
            await self._publish(batch)
        except BaseException:
            for slot in batch:
                slot.event.set()
            raise
        now = trio.current_time()
        for slot in batch:
            slot.sent_at = now
            pending = [c for c in slot.confirmations if c is not None and not c.done]
            if not pending:
                slot.event.set()
                continue
            slot.pending = len(pending)
            for confirmation in pending:
                confirmation._on_settle = slot._one_settled
            self._inflight.append(slot)
            self._watch_lot.unpark()

    async def _publish(self, batch: list[Slot]) -> None:
        """Send the messages of the reserved tasks in one write, if a channel is at hand
        now (else their callers publish them, waiting for the connection)."""
        messages: list[tuple[bytes, str, Properties | None]] = []
        places: list[tuple[Slot, int]] = []
        for slot in batch:
            for index, (entry, answer) in enumerate(zip(slot.entries, slot.answers, strict=True)):
                if answer is Admission.ACCEPTED and not slot.kept[index]:
                    _, nonce, envelope, _, _ = entry
                    messages.append((envelope.encode(), slot.routing, task_properties(nonce)))
                    places.append((slot, index))
        if not messages:
            return
        try:
            channel = await self.rabbit.publisher(wait=False)
            if channel is None:
                return
            confirmations = await channel.begin_publish_many(messages, mandatory=True)
        except AMQPError as exc:
            log.debug("submit: publishing failed (%s); the callers publish again", exc)
            return
        for (slot, index), confirmation in zip(places, confirmations, strict=True):
            slot.confirmations[index] = confirmation


async def _wait_for(slot: Slot) -> None:
    """Wait until `slot` is settled, or wake its caller once its grace is over. (A
    function of its own: a slot and its tasks must not stay referenced from the watchdog's
    frame while it sleeps: a task nobody holds is not watched for its outcome.)"""
    assert slot.sent_at is not None
    with trio.move_on_at(slot.sent_at + PUBLISH_GRACE):
        await slot.event.wait()
    if not slot.event.is_set():
        slot.overdue = True
        slot.event.set()


def _size(envelope: str, limit: int) -> int:
    """The bytes of an envelope's message; its length in characters when that shows it
    within `limit` anyway (UTF-8 takes at most 4 bytes a character)."""
    return len(envelope.encode()) if len(envelope) * 4 > limit else len(envelope)


def _staged(task: Task) -> bool:
    """A pipeline's stage task: no one waits for it by itself (its run is waited for)."""
    return isinstance(task, PipelineTask) and task.run is not None


def _check_id(queue: QueueInfo, task: Task) -> None:
    if task.id.partition(":")[0] != queue.name:
        raise BrokerError(
            f"task id {task.id!r} does not name the queue {queue.name!r}: ids are <queue>:<unique>"
        )
    if len(task.id) > k.MAX_ID_LENGTH:
        raise BrokerError(
            f"task id {task.id[: k.MAX_ID_LENGTH // 4]!r}... is {len(task.id)} characters, "
            f"over the limit of {k.MAX_ID_LENGTH}: use a shorter key"
        )

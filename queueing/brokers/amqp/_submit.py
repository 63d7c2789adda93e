"""Submits: concurrent accepts share one Redis round trip and one RabbitMQ write.

`accept` queues a `Slot` (its tasks, encoded) and waits. The submit loop takes every slot
queued meanwhile, reserves their records in one Redis pipeline (`Store.reserve_batch`,
which also carries the store's queued writes), then publishes the messages of the tasks
reserved in one write to RabbitMQ (`Channel.begin_publish_many`) and wakes each caller
with its answers and its messages' `Confirmation`s. Each caller then waits for its own
confirmations: a message RabbitMQ refused takes its reservation back (FULL); one the loop
could not send (no connection at the time) or whose fate a lost connection left unknown
is published again by the caller, with retries (`Rabbit.publish`).
"""

from __future__ import annotations

import logging

import trio

from ..._exceptions import BrokerError, SystemStopping
from .._contract import Admission, QueueInfo
from ..redis._calls import ATTEMPT_GRACE
from ._confirms import Confirmation
from ._errors import AMQPError
from ._message import PERSISTENT, Properties
from ._rabbit import Rabbit
from ._store import Entry, Store

log = logging.getLogger("queueing.rabbitmq")

#: Slots sent in one round trip.
SUBMIT_BATCH = 500


class Slot:
    """Tasks of one `accept` call, and what the submit loop made of them."""

    __slots__ = ("answers", "confirmations", "entries", "error", "event", "queue", "routing")

    def __init__(self, queue: QueueInfo, entries: list[Entry], routing: str) -> None:
        self.queue = queue
        self.entries = entries
        self.routing = routing
        self.answers: list[Admission] = []
        #: Per entry: its message's confirmation; None if it was not sent (not reserved,
        #: or the loop could not send it: the caller publishes it).
        self.confirmations: list[Confirmation | None] = []
        self.error: BaseException | None = None
        self.event = trio.Event()


def properties(nonce: str) -> Properties:
    """The properties of a task's message: persistent, JSON, its nonce as message id."""
    return Properties(delivery_mode=PERSISTENT, message_id=nonce, content_type="application/json")


class Submitter:
    """The submit loop and its queue of slots."""

    def __init__(self, store: Store, rabbit: Rabbit) -> None:
        self.store = store
        self.rabbit = rabbit
        self._slots: list[Slot] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._sent = trio.lowlevel.ParkingLot()

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
            # (else the janitor does, later).
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.store.calls.block + ATTEMPT_GRACE
                await slot.event.wait()
            if not slot.event.is_set():
                raise BrokerError(
                    "Redis did not answer a submit in time (the task may have been accepted)"
                ) from None
        if slot.error is not None:
            raise slot.error

    async def loop(self) -> None:
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

    async def _send(self, batch: list[Slot]) -> None:
        try:
            answers = await self.store.reserve_batch([(slot.queue, slot.entries) for slot in batch])
        except Exception as exc:
            for slot in batch:
                slot.error = BrokerError(f"submit failed: {type(exc).__name__}: {exc}")
                slot.event.set()
            return
        for slot, slot_answers in zip(batch, answers, strict=True):
            slot.answers = slot_answers
            slot.confirmations = [None] * len(slot.entries)
        try:
            await self._publish(batch)
        finally:
            for slot in batch:
                slot.event.set()

    async def _publish(self, batch: list[Slot]) -> None:
        """Send the messages of the reserved tasks in one write, if a channel is at hand
        now (else their callers publish them, waiting for the connection)."""
        messages: list[tuple[bytes, str, Properties | None]] = []
        places: list[tuple[Slot, int]] = []
        for slot in batch:
            for index, (entry, answer) in enumerate(zip(slot.entries, slot.answers, strict=True)):
                if answer is Admission.ACCEPTED:
                    _, nonce, envelope, _, _ = entry
                    messages.append((envelope.encode(), slot.routing, properties(nonce)))
                    places.append((slot, index))
        if not messages:
            return
        channel = await self.rabbit.publisher(wait=False)
        if channel is None:
            return
        try:
            confirmations = await channel.begin_publish_many(messages, mandatory=True)
        except AMQPError as exc:
            log.debug("submit: publishing failed (%s); the callers publish again", exc)
            return
        for (slot, index), confirmation in zip(places, confirmations, strict=True):
            slot.confirmations[index] = confirmation

"""`RabbitMQBroker`: the broker contract over RabbitMQ quorum queues, with a results store.

RabbitMQ holds the tasks (messages in quorum queues: delivered to one consumer at a time,
held until acknowledged, redelivered with a count when their consumer is gone, delayed in
TTL queues, dead-lettered past a delivery limit). Redis holds what RabbitMQ cannot: task
records found by id, outcomes (first one wins), the outstanding count behind `maxsize`,
dead letters, pipeline runs (`_store.py`). A task's path:

1. `accept`: its record is reserved in Redis (atomically with `maxsize`), then its message
   is published with a confirm; a nack (the ready queue over `x-max-length`) takes the
   reservation back (FULL).
2. `claim`: the queue's consumer delivers it (prefetch = what idle workers asked for);
   `check.lua` tells whether it is the message its record names.
3. `settle` / `dead_letter`: the outcome is recorded in Redis, then the message is
   acknowledged; `retry_at`: a new message goes to a delay queue, the record names it,
   the old one is acknowledged.

docs/how-to/rabbitmq.md describes the design, its settings and what it promises.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..._exceptions import BrokerError
from ..._task import DeadLetter, ErrorInfo, PipelineTask, Task, TaskState
from .._contract import Admission, Broker, QueueInfo
from ..redis import _keys as k
from ..redis._wire import (
    BadEntry,
    bad_entry_letter,
    decode_envelope,
    encode_envelope,
    letter_of,
)
from ._broker_url import BrokerURL, parse, safe, seconds
from ._errors import AMQPError, PublishNacked
from ._message import Delivery
from ._rabbit import Rabbit, delay_bucket
from ._rabbit_claims import Acks, Feed
from ._store import Entry, Op, Store, StoreCalls
from ._store_admin import StoreAdmin
from ._store_reads import Reads
from ._store_runs import RabbitMQRuns
from ._submit import Slot, Submitter
from ._upkeep import Upkeep

#: Seconds a publish may take once its task is reserved, even if its caller is cancelled
#: (so the record and the message agree); past it the janitor publishes it.
PUBLISH_GRACE = 30.0


def _staged(task: Task) -> bool:
    """A pipeline's stage task: no one waits for it by itself (its run is waited for)."""
    return isinstance(task, PipelineTask) and task.run is not None


class RabbitMQBroker(Broker):
    """Tasks in RabbitMQ quorum queues; records and outcomes in a Redis results store.

    Args:
        url: `amqp://user:password@host:5672/vhost?results=redis://host:6379/0`
            (`amqps://` for TLS); query options `prefix` and `lease` override the
            arguments of the same name, the AMQP layer's options (`heartbeat`,
            `connection_name`...) are passed on.
        prefix: names RabbitMQ's queues (`prefix:queue`) and Redis keys; one per system.
        lease: seconds between two checks, by a serving process, of the tasks it runs
            (`lease / 3`): a task cancelled elsewhere stops by then.
        block: seconds one blocking Redis read waits before it checks again.
        connect_timeout: seconds to reach Redis and RabbitMQ at start-up before
            `BrokerError`.
        max_dead_letters: dead letters kept per queue (the oldest go first).
        ssl_context: for `amqps://`, the context to verify RabbitMQ with.

    Raises:
        BrokerError: the URL or an option is malformed (the message says which).
    """

    durable = True
    shared = True
    clock = staticmethod(time.time)
    runs: RabbitMQRuns

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "queueing",
        lease: float = 30.0,
        block: float = 2.0,
        connect_timeout: float = 5.0,
        max_dead_letters: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parsed: BrokerURL = parse(url, prefix=prefix, lease=lease)
        if max_dead_letters < 1:
            raise BrokerError(f"max_dead_letters must be >= 1, got {max_dead_letters!r}")
        self.url = url
        self.prefix = parsed.prefix
        self.lease = parsed.lease
        self.connect_timeout = seconds("connect_timeout", connect_timeout)
        #: This process's name: the client its receipts' notices come to.
        self.client_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._nonces = itertools.count(1)
        #: Workers this process runs, for the heartbeat (`queueing status`).
        self.workers = 0
        keys = k.Keys(self.prefix)
        self._calls = StoreCalls(
            parsed.results, connect_timeout=self.connect_timeout, block=seconds("block", block)
        )
        self._store = Store(self._calls, keys, self.client_id)
        self._store.max_dead_letters = max_dead_letters
        self._reads = Reads(self._calls, keys, self._store)
        self._admin = StoreAdmin(self._calls, keys)
        self._rabbit = Rabbit(parsed.amqp, self.prefix, ssl_context=ssl_context)
        self._rabbit.on_declare = self._admin.note_rabbitmq_queues
        self._acks = Acks()
        self._store.after_written = self._acks.send_due
        self._submitter = Submitter(self._store, self._rabbit)
        self._upkeep = Upkeep(self)
        self.runs = RabbitMQRuns(self._calls, keys, self._store, self._reads, self._accept_at)
        self._queues: dict[str, QueueInfo] = {}
        self._serve = False
        self._feeds: dict[str, Feed] = {}
        #: Claimed and not yet settled, retried or handed back, by queue and id.
        self._held: dict[str, dict[str, Task]] = {}
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()

    def __repr__(self) -> str:
        return f"<RabbitMQBroker {safe(self.url)} prefix={self.prefix!r}>"

    def nonce(self) -> str:
        """A new message id, unique across processes."""
        return f"{self.client_id}.{next(self._nonces)}"

    # -- life ------------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, queues: Mapping[str, QueueInfo], *, serve: bool) -> AsyncIterator[None]:
        self._queues = dict(queues)
        self._serve = serve

        async def ready() -> None:
            if serve:
                await self._admin.declare(self._queues)

        async with self._calls.connected(ready), self._rabbit.connected(self.connect_timeout):
            if serve:
                for info in self._queues.values():
                    await self._rabbit.declare(info)
            yield

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._submitter.loop)
            nursery.start_soon(self._store.flush_loop)
            nursery.start_soon(self._reads.reader_loop)
            nursery.start_soon(self._calls.probe)
            nursery.start_soon(self._acks.run)
            for feed in self._feeds.values():
                nursery.start_soon(feed.run, self._rabbit)
            if self._serve:
                for info in self._queues.values():
                    nursery.start_soon(self._upkeep.coroner, info)
                    nursery.start_soon(self._upkeep.janitor, info)
                nursery.start_soon(self._admin.heartbeat_loop, self.client_id, self._heartbeat)
            self._running.set()

    def _heartbeat(self) -> dict[str, Any]:
        held = {name: len(ids) for name, ids in self._held.items() if ids}
        return {
            "queues": sorted(self._queues),
            "workers": self.workers,
            "in_flight": sum(held.values()),
            "held": held,
        }

    async def flush(self) -> None:
        await self._submitter.flush()
        await self._store.flush()
        await self._acks.flush()

    # -- the client side -------------------------------------------------------------------

    async def accept(self, queue: QueueInfo, task: Task, *, due: float | None = None) -> Admission:
        (admission,) = await self._accept(queue, [task], due)
        return admission

    async def _accept_at(self, queue: QueueInfo, task: Task, due: float | None) -> Admission:
        return await self.accept(queue, task, due=due)

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        taken = 0
        for admission in await self._accept(queue, tasks, None):
            if admission is Admission.FULL:
                break
            taken += 1
        return taken

    async def _accept(
        self, queue: QueueInfo, tasks: Sequence[Task], due: float | None
    ) -> list[Admission]:
        """Reserve the tasks' records, then publish the messages of those reserved; a
        message RabbitMQ refuses takes its reservation back (FULL)."""
        if not tasks:
            await trio.lowlevel.checkpoint()
            return []
        for task in tasks:
            _check_id(queue, task)
        now = self.clock()
        delay_ms = 0.0 if due is None else (due - now) * 1000
        due_ms = str(int(due * 1000)) if due is not None and delay_ms > 0 else ""
        await self._rabbit.declare(queue)
        routing = self._rabbit.main(queue.name)
        if due_ms:
            routing = await self._rabbit.declare_delay(queue.name, delay_bucket(delay_ms))
        entries: list[Entry] = []
        for task in tasks:
            reply = "" if _staged(task) else self.client_id
            if reply:
                self._store.note_replied(queue.name)
            entries.append((task, self.nonce(), encode_envelope(task), due_ms, reply))
        slot = Slot(queue, entries, routing)
        await self._submitter.submit(slot)
        answers = slot.answers
        reserved = [i for i, answer in enumerate(answers) if answer is Admission.ACCEPTED]
        for (task, _, _, _, _), answer in zip(entries, answers, strict=True):
            if answer is Admission.EXISTS:
                self._reads.expect(task.id, own=False, stored=True)
        if not reserved:
            return answers
        # Shielded, so that record and message agree even if the caller is cancelled.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + PUBLISH_GRACE
            confirmed = []
            for index in reserved:
                task, nonce, _, _, _ = entries[index]
                if await self._confirmed(queue, slot, index):
                    confirmed.append(task.id)
                    if due_ms:
                        task.state = TaskState.SCHEDULED
                    if entries[index][4]:
                        self._reads.expect(task.id, own=True, stored=True)
                elif await self._store.unreserve(task.id, nonce):
                    answers[index] = Admission.FULL
            self._store.confirmed(queue.name, confirmed)
        if scope.cancelled_caught:
            raise BrokerError(
                f"RabbitMQ did not confirm a submit to {queue.name!r} within "
                f"{PUBLISH_GRACE:g}s (the task may have been accepted: it then runs)"
            )
        return answers

    async def _confirmed(self, queue: QueueInfo, slot: Slot, index: int) -> bool:
        """Wait for the confirm of a reserved task's message (publishing it again if it was
        not sent, or its fate is unknown); False if RabbitMQ refused it."""
        confirmation = slot.confirmations[index]
        if confirmation is not None:
            try:
                await confirmation.wait()
                return True
            except PublishNacked:
                return False
            except AMQPError:
                pass  # lost with its connection, sent or not: publish it again
        _, nonce, envelope, _, _ = slot.entries[index]
        try:
            await self._rabbit.publish(queue, slot.routing, envelope.encode(), nonce)
        except PublishNacked:
            return False
        return True

    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        await self._reads.wait_room(queue, timeout)

    async def lookup(self, task_id: str) -> Task | None:
        return await self._reads.lookup(task_id)

    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        return await self._reads.wait_settled(task_ids, timeout)

    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        record = await self._store.cancel(task_id, error)
        if record is not None and record.is_run and not record.state.final:
            return await self.runs.cancel(task_id, error)
        if record is not None:
            # Claimed here: its worker will not settle it, so its message is done with.
            held = self._held.get(record.queue, {}).get(task_id)
            if held is not None:
                delivery, _, _ = self._release_hold(record.queue, held)
                if delivery is not None:
                    self._acks.ack_soon(delivery)
        return record

    # -- the worker side -------------------------------------------------------------------

    def _feed(self, queue: QueueInfo) -> Feed:
        feed = self._feeds.get(queue.name)
        if feed is None:

            async def redeclare() -> None:
                await self._rabbit.declare(queue, again=True)

            feed = Feed(self._rabbit.main(queue.name), redeclare, self._acks)
            self._feeds[queue.name] = feed
            if self._nursery is not None:
                self._nursery.start_soon(feed.run, self._rabbit)
        return feed

    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        if n <= 0:
            await trio.lowlevel.checkpoint()
            return []
        await self._rabbit.declare(queue)
        feed = self._feed(queue)
        deliveries = await feed.take(n, wait, len(self._held.get(queue.name, ())))
        if not deliveries:
            return []
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            return await self._admit(queue, deliveries)
        except trio.Cancelled:
            feed.give_back(deliveries)  # still ours (unacknowledged): for the next claim
            raise

    async def _admit(self, queue: QueueInfo, deliveries: list[Delivery]) -> list[Task]:
        """Check what was delivered: parse each message, then ask its record whether it is
        the task's message."""
        name = queue.name
        max_bytes = queue.max_payload + k.ENVELOPE_OVERHEAD
        parsed: list[tuple[Delivery, Task, str]] = []
        for delivery in deliveries:
            try:
                text = delivery.body.decode()
                task = decode_envelope({"env": text}, name, max_bytes)
            except (BadEntry, UnicodeDecodeError) as exc:
                self.reject(name, delivery, str(exc))
                continue
            parsed.append((delivery, task, delivery.properties.message_id or ""))
        if not parsed:
            return []
        verdicts = await self._store.check(name, [(t.id, nonce) for _, t, nonce in parsed])
        held = self._held.setdefault(name, {})
        tasks = []
        for (delivery, task, nonce), verdict in zip(parsed, verdicts, strict=True):
            if verdict.startswith("+"):
                task.handle = (delivery, nonce, verdict[1:])
                task.deliveries = _delivery_count(delivery)
                held[task.id] = task
                tasks.append(task)
            elif verdict == "?":
                reason = (
                    f"no task {task.id!r} was submitted (it has no record): not published by "
                    "a queueing client, or its record was lost"
                )
                self.reject(name, delivery, reason)
            else:  # "=": it has an outcome; "!": a stale copy of its message
                self._acks.ack_soon(delivery)
        return tasks

    def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Dead-letter a message that is not a task of ours, then acknowledge it."""
        fields = {
            "message_id": delivery.properties.message_id or "",
            "body": delivery.body.decode(errors="replace"),
        }
        letter = bad_entry_letter(queue, fields, reason, time.time())
        keys = [self._store.keys.dead(queue)]
        args = [letter, self._store.max_dead_letters]
        self._store.push(Op("reject", keys, args, lambda _: self._acks.ack_soon(delivery)))

    def _release_hold(self, queue: str, task: Task) -> tuple[Delivery | None, str, str]:
        self._held.get(queue, {}).pop(task.id, None)
        if task.handle is None:
            return None, "", ""
        delivery, nonce, reply = task.handle
        return delivery, nonce, reply

    def _then_ack(self, delivery: Delivery | None) -> Any:
        if delivery is None:
            return None
        return lambda _: self._acks.ack_soon(delivery)

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        lost: list[Task] = []
        mine: list[tuple[Task, str]] = []
        for task in tasks:
            if task.handle is None or task.state.final:
                continue
            delivery, nonce, _ = task.handle
            if delivery.channel.is_closed:
                lost.append(task)  # back in RabbitMQ: another process may take it
            else:
                mine.append((task, nonce))
        for task in await self._store.renew(queue.name, mine):
            # Settled elsewhere (cancelled), or its record names another message: this
            # one is done with either way.
            delivery, _, _ = self._release_hold(queue.name, task)
            if delivery is not None:
                self._acks.ack_soon(delivery)
            lost.append(task)
        for task in lost:
            self._held.get(queue.name, {}).pop(task.id, None)
        return lost

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:
        # A new message (with a delivery count of 0) rather than a requeue: a hand-back at
        # shutdown is not a delivery that failed.
        for task in tasks:
            delivery, old, _ = self._release_hold(queue.name, task)
            if delivery is None or delivery.channel.is_closed:
                continue
            new = self.nonce()
            try:
                await self._rabbit.publish(
                    queue, self._rabbit.main(queue.name), encode_envelope(task).encode(), new
                )
            except (PublishNacked, BrokerError):
                continue  # closing its channel hands it back anyway
            self._store.move(
                queue.name, task, old, new, due_ms="", counter="", then=self._then_ack(delivery)
            )

    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        return await self._finish(queue, task, state, result, error, dead=False)

    async def dead_letter(
        self, queue: QueueInfo, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        return await self._finish(queue, task, state, None, error, dead=True)

    async def _finish(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any,
        error: ErrorInfo | None,
        *,
        dead: bool,
    ) -> bool:
        if task.state.final:
            return False
        if not state.final:
            raise ValueError(f"an outcome must be a final state, got {state}")
        task.settle(state, result, error, time.time())
        delivery, nonce, reply = self._release_hold(queue.name, task)
        letter = letter_of(task, queue.name) if dead else ""
        self._store.finish(queue, task, nonce, reply, letter, self._then_ack(delivery))
        if self._store.congested:
            await self._store.relieve()
        return True

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        task.state = TaskState.SCHEDULED
        delivery, old, _ = self._release_hold(queue.name, task)
        ms = delay_bucket(max(0.0, due - self.clock()) * 1000)
        routing = await self._rabbit.declare_delay(queue.name, ms)
        new = self.nonce()
        await self._rabbit.publish(queue, routing, encode_envelope(task).encode(), new)
        due_ms = str(int(due * 1000))
        self._store.move(
            queue.name,
            task,
            old,
            new,
            due_ms=due_ms,
            counter="retried",
            then=self._then_ack(delivery),
        )
        if self._store.congested:
            await self._store.relieve()

    # -- dead letters and figures ----------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        return await self._admin.dead_letters(queue, limit)

    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        return await self._admin.take_dead_letters(queue, ids)

    async def outstanding(self, queue: str) -> int:
        return await self._admin.outstanding(queue)

    async def declared(self) -> dict[str, QueueInfo]:
        return await self._admin.declared()

    async def status(self) -> dict[str, Any]:
        """Queue figures and live workers (for `queueing status`)."""
        ready = {name: await self._rabbit.ready_count(name) for name in await self.declared()}
        return await self._admin.figures(ready)


def _delivery_count(delivery: Delivery) -> int:
    """How many times RabbitMQ delivered this message before (quorum queues count)."""
    count = delivery.headers.get("x-delivery-count", 0)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


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

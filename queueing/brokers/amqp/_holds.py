"""The worker side of the RabbitMQ broker: claims, the tasks this process holds, and what
becomes of them (an outcome, a retry, a hand-back), each message acknowledged only once
what replaces it is stored.

- `claim` takes deliveries, highest priority first: with `Basic.Get` from the ready queue
  of each priority level above 0 in use (one quorum queue per level: quorum queues have no
  priorities; the levels are registered in the results store at the first submit of each
  and read again every `LEVELS_REFRESH` seconds), then from the queue's `Feed` (the
  default level's consumer); and checks each against its record
  (`check.lua`): the message its record names runs; a stale copy, or the message of a task
  that has an outcome, is acknowledged and dropped; a message that is not a task is kept
  as a dead letter (with why) and acknowledged.
- `finish` records an outcome (batched), then acknowledges; `retry_at` publishes a new
  message to a delay queue, points the record at it, then acknowledges the old one;
  `release` does the same into the ready queue (a hand-back at shutdown, no delivery
  counted).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import tenacity
import trio

from ..._exceptions import BrokerError
from ..._task import ErrorInfo, Task, TaskState, parse_priority, priority_of, tenant_of
from .._contract import QueueInfo
from ..redis import _keys as k
from ..redis._wire import (
    BadEntry,
    decode_envelope,
    encode_envelope,
    letter_of,
)
from ._channel import Channel
from ._errors import AMQPError, PublishNacked, PublishReturned
from ._fair import Fair, is_wake, reject_message
from ._message import Delivery
from ._rabbit import Rabbit, delay_bucket
from ._rabbit_claims import Acks, Feed
from ._store import Store
from ._store_writes import Ride

log = logging.getLogger("queueing.rabbitmq")
#: Seconds between two reads of a queue's priority levels in use by a claiming process
#: (a level another process starts using is claimed from within this much).
LEVELS_REFRESH = 1.0
#: Publishes of a retry to its delay queue before the refusal stands, and the first pause
#: between two (seconds, doubling up to one).
DELAY_PUBLISH_ATTEMPTS = 5
DELAY_PUBLISH_BACKOFF = 0.05


def delivery_count(delivery: Delivery) -> int:
    """How many times RabbitMQ delivered this message before (quorum queues count)."""
    count = delivery.headers.get("x-delivery-count", 0)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


class Holds:
    """Claims and the tasks this process holds (see the module doc)."""

    def __init__(self, rabbit: Rabbit, store: Store, acks: Acks, nonce: Callable[[], str]):
        self.rabbit = rabbit
        self.store = store
        self.acks = acks
        self.nonce = nonce
        self.feeds: dict[str, Feed] = {}
        #: Claimed and not yet settled, retried or handed back, by queue and id.
        self.held: dict[str, dict[str, Task]] = {}
        self.nursery: trio.Nursery | None = None
        #: Priority levels above 0 known in use, by queue, and when to read them again.
        self.levels: dict[str, set[int]] = {}
        self._levels_due: dict[str, float] = {}
        self._getter: Channel | None = None
        #: Fair share (`_fair.py`): the queues in fair mode, their claims.
        self.fair = Fair(rabbit, store, acks, nonce)
        #: Per fair queue: deliveries taken for a claim that was cancelled (first next
        #: time), and when its other ready queues were last looked at for stragglers.
        self._spare: dict[str, list[Task]] = {}
        self._stragglers_due: dict[str, float] = {}

    def note_level(self, queue: str, priority: int) -> None:
        """Tasks of `priority` (above 0) were submitted to `queue` (by this process)."""
        self.levels.setdefault(queue, set()).add(priority)

    async def _levels_of(self, queue: str) -> list[int]:
        """The priority levels above 0 in use, highest first (read again when due)."""
        now = trio.current_time()
        if now >= self._levels_due.get(queue, -math.inf):
            self._levels_due[queue] = now + LEVELS_REFRESH
            key = self.store.keys.levels(queue)
            found = await self.store.calls.retrying(
                "read the priority levels", lambda: self.store.calls.client.smembers(key)
            )
            known = self.levels.setdefault(queue, set())
            known.update(p for p in map(parse_priority, found) if p)
            await self.fair.read_mode(queue)
        return sorted(self.levels.get(queue, ()), reverse=True)

    async def _get_ranked(self, queue: QueueInfo, levels: list[int], n: int) -> list[Delivery]:
        """Up to `n` messages from the ready queues of `levels`, highest first; with
        `retry_ahead`, each level's due retries first, and those of the default level
        (whose new tasks come from the feed) last."""
        taken: list[Delivery] = []
        try:
            channel = self._getter
            if channel is None or channel.is_closed:
                connection = await self.rabbit.robust.wait_connected()
                channel = self._getter = await connection.open_channel()
            sources = [(priority, False) for priority in levels]
            if queue.retry_ahead:
                sources = [s for p in levels for s in ((p, True), (p, False))]
                sources.append((0, True))
            for priority, retries in sources:
                await self.rabbit.declare(queue, priority=priority, retries=retries)
                if retries:
                    name = self.rabbit.retries(queue.name, priority)
                else:
                    name = self.rabbit.main(queue.name, priority)
                while len(taken) < n:
                    delivery = await channel.get(name)
                    if delivery is None:
                        break
                    self.acks.delivered(delivery)
                    taken.append(delivery)
                if len(taken) >= n:
                    break
        except AMQPError as exc:
            # A closed channel hands its messages back to RabbitMQ: claimed again later.
            log.warning("queue %r: taking tasks by priority failed (%s)", queue.name, exc)
        return [delivery for delivery in taken if not delivery.channel.is_closed]

    def start(self, nursery: trio.Nursery) -> None:
        """Run the feeds (those made so far, and those made later) in `nursery`."""
        self.nursery = nursery
        for feed in self.feeds.values():
            nursery.start_soon(feed.run, self.rabbit)

    def _feed(self, queue: QueueInfo) -> Feed:
        feed = self.feeds.get(queue.name)
        if feed is None:

            async def redeclare() -> None:
                await self.rabbit.declare(queue, again=True)

            feed = Feed(self.rabbit.main(queue.name), redeclare, self.acks)
            self.feeds[queue.name] = feed
            if self.nursery is not None:
                self.nursery.start_soon(feed.run, self.rabbit)
        return feed

    # -- claims -------------------------------------------------------------------------

    async def claim(self, queue: QueueInfo, n: int, wait: float) -> list[Task]:
        if n <= 0:
            await trio.lowlevel.checkpoint()
            return []
        await self.rabbit.declare(queue)
        feed = self._feed(queue)
        levels = await self._levels_of(queue.name)
        if queue.name in self.fair.queues:
            return await self._claim_fair(queue, feed, levels, n, wait)
        ranked = levels or queue.retry_ahead
        deliveries = await self._get_ranked(queue, levels, n) if ranked else []
        # Deliveries in hand (taken below without waiting): the outcomes queued until this
        # claim's check is sent go with it, not in a round trip of their own.
        ride = self.store.ride() if deliveries or feed.buffer else None
        try:
            if len(deliveries) < n:
                held = len(self.held.get(queue.name, ())) + len(deliveries)
                first = 0 if deliveries else wait
                deliveries += await feed.take(n - len(deliveries), first, held)
            if not deliveries:
                return []
            if any(is_wake(delivery) for delivery in deliveries):
                # The queue turned fair (a submit left this): what came with it waits in
                # its flows from now on, ahead of what came after it.
                if ride is not None:
                    ride.off()
                self.fair.queues.add(queue.name)
                await self.fair.adopt(queue, deliveries, front=True)
                return await self._claim_fair(queue, feed, levels, n, wait)
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
                return await self._admit(queue, deliveries, ride)
            except trio.Cancelled:
                feed.give_back(deliveries)  # still ours (unacknowledged): for the next claim
                raise
        finally:
            if ride is not None:
                ride.off()

    async def _claim_fair(
        self, queue: QueueInfo, feed: Feed, levels: list[int], n: int, wait: float
    ) -> list[Task]:
        """`claim` on a queue in fair mode (`_fair.py`)."""
        buffered = feed.take_all()
        if buffered:  # delivered before the switch, or published to it since: older
            await self.fair.adopt(queue, buffered, front=True)
        now = trio.current_time()
        if levels and now >= self._stragglers_due.get(queue.name, -math.inf):
            self._stragglers_due[queue.name] = now + LEVELS_REFRESH
            for priority in levels:
                name = self.rabbit.main(queue.name, priority)
                await self.rabbit.declare(queue, priority=priority)
                await self.fair.adopt(queue, await self.fair._get(name, n), front=False)
        spare = self._spare.pop(queue.name, [])
        tasks, rest = spare[:n], spare[n:]
        if rest:
            self._spare[queue.name] = rest
        if len(tasks) < n:
            tasks += await self.fair.claim(queue, n - len(tasks), 0.0 if tasks else wait)
        if not tasks:
            return []
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            self._spare.setdefault(queue.name, []).extend(tasks)  # still leased to us
            raise
        held = self.held.setdefault(queue.name, {})
        for task in tasks:
            held[task.id] = task
        return tasks

    def _fair_task(self, queue: QueueInfo, task: Task) -> bool:
        """Whether a held task goes back to its flow (a fair queue's) when it leaves."""
        return queue.name in self.fair.queues or tenant_of(task) is not None

    async def _admit(
        self, queue: QueueInfo, deliveries: list[Delivery], ride: Ride | None = None
    ) -> list[Task]:
        """Parse each message, then ask its record whether it is the task's message (the
        check takes the queued writes along: `ride`)."""
        name = queue.name
        max_bytes = queue.max_payload + k.ENVELOPE_OVERHEAD
        parsed: list[tuple[Delivery, Task, str]] = []
        for delivery in deliveries:
            try:
                task = decode_envelope({"env": delivery.body.decode()}, name, max_bytes)
            except (BadEntry, UnicodeDecodeError) as exc:
                self.reject(name, delivery, str(exc))
                continue
            parsed.append((delivery, task, delivery.properties.message_id or ""))
        if not parsed:
            return []
        verdicts = await self.store.check(name, [(t.id, nonce) for _, t, nonce in parsed], ride)
        held = self.held.setdefault(name, {})
        tasks = []
        hops: list[tuple[Delivery, Task, str, int]] = []
        for (delivery, task, nonce), verdict in zip(parsed, verdicts, strict=True):
            if verdict.startswith("+"):
                task.handle = (delivery, nonce, verdict[1:])
                task.deliveries = delivery_count(delivery)
                held[task.id] = task
                tasks.append(task)
            elif verdict.startswith(">"):  # back before its due time: one more hop
                hops.append((delivery, task, nonce, int(verdict[1:])))
            elif verdict == "?":
                reason = (
                    f"no task {task.id!r} was submitted (it has no record): not published by "
                    "a queueing client, or its record was lost"
                )
                self.reject(name, delivery, reason)
            else:  # "=": it has an outcome; "!": a stale copy of its message
                self.acks.ack_soon(delivery)
        if hops:  # (rare: delays past MAX_DELAY_HOP) not left half done by a cancel
            with trio.CancelScope(shield=True):
                for delivery, task, nonce, due_ms in hops:
                    await self._hop(queue, delivery, task, nonce, due_ms)
        return tasks

    def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Keep a dead letter of a message that is not a task of ours, then acknowledge it."""
        reject_message(self.store, self.acks, queue, delivery, reason)

    def let_go(self, queue: str, task: Task) -> tuple[Delivery | None, str, str]:
        """No longer held: its delivery (None if it has none), nonce and client."""
        self.held.get(queue, {}).pop(task.id, None)
        if task.handle is None:
            return None, "", ""
        delivery, nonce, reply = task.handle
        return delivery, nonce, reply

    def done_with(self, queue: str, task_id: str) -> None:
        """A task held here got its outcome elsewhere (a cancel): acknowledge its message."""
        task = self.held.get(queue, {}).get(task_id)
        if task is not None:
            delivery, _, _ = self.let_go(queue, task)
            if delivery is not None:
                self.acks.ack_soon(delivery)

    def _then_ack(self, delivery: Delivery | None) -> Callable[[Any], None] | None:
        if delivery is None:
            return None
        return lambda _: self.acks.ack_soon(delivery)

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        lost: list[Task] = []
        mine: list[tuple[Task, str]] = []
        leased: list[tuple[Task, str]] = []
        for task in tasks:
            if task.handle is None or task.state.final:
                continue
            delivery, nonce, _ = task.handle
            if delivery is None:
                leased.append((task, nonce))  # handed out by a fair queue (`_fair.py`)
            elif delivery.channel.is_closed:
                lost.append(task)  # back in RabbitMQ: another process may take it
            else:
                mine.append((task, nonce))
        gone = await self.store.renew(queue.name, mine) if mine else []
        if leased:
            gone += await self.store.renew(queue.name, leased, lease=self.fair.lease)
        for task in gone:
            # Settled elsewhere (cancelled), or its record names another message: this
            # one is done with either way.
            self.done_with(queue.name, task.id)
            lost.append(task)
        for task in lost:
            self.held.get(queue.name, {}).pop(task.id, None)
        return lost

    # -- what becomes of a held task ----------------------------------------------------

    async def finish(
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
        delivery, nonce, reply = self.let_go(queue.name, task)
        letter = letter_of(task, queue.name) if dead else ""
        self.store.finish(queue, task, nonce, reply, letter, self._then_ack(delivery))
        if self.store.congested:
            await self.store.relieve()
        return True

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        task.state = TaskState.SCHEDULED
        delivery, old, reply = self.let_go(queue.name, task)
        if self._fair_task(queue, task):
            self.fair.back(
                queue,
                task,
                old,
                reply,
                due_ms=str(int(due * 1000)),
                how="B" if queue.retry_ahead else "C",
                counter="retried",
                then=self._then_ack(delivery),
            )
            if self.store.congested:
                await self.store.relieve()
            return
        new = self.nonce()
        body = encode_envelope(task).encode()
        await self._publish_delayed(queue, task, due * 1000, body, new, retries=queue.retry_ahead)
        self.store.move(
            queue.name,
            task,
            old,
            new,
            due_ms=str(int(due * 1000)),
            counter="retried",
            then=self._then_ack(delivery),
        )
        if self.store.congested:
            await self.store.relieve()

    async def _publish_delayed(
        self, queue: QueueInfo, task: Task, due_ms: float, body: bytes, nonce: str, *, retries: bool
    ) -> None:
        """Publish `task`'s message (`body`, under `nonce`) into the delay queue that brings
        it back at `due_ms` (wall clock), or as close as one hop goes (`MAX_DELAY_HOP`);
        with `retries`, into its level's queue of due retries."""
        ms = delay_bucket(max(0.0, due_ms - time.time() * 1000))
        priority = priority_of(task)
        if retries:  # its queue of due retries, before its delay queue dead-letters into it
            await self.rabbit.declare(queue, priority=priority, retries=True)
        # A delay queue declared a moment ago may refuse its first messages (a quorum
        # queue still electing its leader; one that expired unused since it was declared):
        # declared again and published again, a few times, briefly apart.
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((PublishNacked, PublishReturned)),
            stop=tenacity.stop_after_attempt(DELAY_PUBLISH_ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=DELAY_PUBLISH_BACKOFF, max=1.0),
            sleep=trio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                again = attempt.retry_state.attempt_number > 1
                routing = await self.rabbit.declare_delay(
                    queue.name, ms, priority, retries=retries, again=again
                )
                await self.rabbit.publish(queue, routing, body, nonce)

    async def _hop(
        self, queue: QueueInfo, delivery: Delivery, task: Task, old: str, due_ms: int
    ) -> None:
        """A task's message came back from a delay queue before its due time (its delay is
        longer than one delay queue holds): published again, under a new nonce, for the
        rest of its delay; the old message is acknowledged once the record names the new."""
        new = self.nonce()
        retries = queue.retry_ahead and task.attempts > 0
        await self._publish_delayed(queue, task, due_ms, delivery.body, new, retries=retries)
        then = self._then_ack(delivery)
        self.store.move(queue.name, task, old, new, due_ms=str(due_ms), counter="", then=then)

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:
        # A new message (with a delivery count of 0) rather than a requeue: a hand-back at
        # shutdown is not a delivery that failed.
        for task in tasks:
            delivery, old, reply = self.let_go(queue.name, task)
            if self._fair_task(queue, task) and task.handle is not None:
                then = self._then_ack(delivery)
                self.fair.back(queue, task, old, reply, due_ms="", how="A", counter="", then=then)
                continue
            if delivery is None or delivery.channel.is_closed:
                continue
            new = self.nonce()
            body = encode_envelope(task).encode()
            try:
                routing = self.rabbit.main(queue.name, priority_of(task))
                await self.rabbit.publish(queue, routing, body, new)
            except (PublishNacked, BrokerError):
                continue  # closing its channel hands it back anyway
            self.store.move(
                queue.name, task, old, new, due_ms="", counter="", then=self._then_ack(delivery)
            )

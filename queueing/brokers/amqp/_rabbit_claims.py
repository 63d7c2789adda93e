"""Claims on RabbitMQ: one consumer per served queue, prefetch = what idle workers asked.

Each queue this process claims from has a `Feed`: a channel with a consumer on the
queue's ready queue, whose deliveries wait in a local buffer until `claim` takes them.
The consumer's prefetch (Basic.Qos, per consumer, never global) is what this process's
workers take at once: the tasks its busy workers hold plus what its idle workers asked
for (the dispatcher's `claim(n)`), that is its worker count once all were busy, plus the
deliveries whose outcome is being stored (their workers are idle again, but RabbitMQ
counts a message against the prefetch until it is acknowledged, after the outcome's
write), at most as many again: the most seen so far. So a worker whose last task's
outcome is on its way to the store is not left without a next one, and this process never
holds more than its workers can run plus what they just ran. A larger claim adds a
consumer for the difference on the same channel. A delivery is acknowledged
only once its outcome is stored (`Acks.ack_soon`, after the store's write).

A lost channel or connection hands every unacknowledged delivery back to RabbitMQ: the
feed drops what it buffered and starts again on the next connection; the broker's
`renew` reports the claimed tasks whose channel is gone (they may run elsewhere now).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ._channel import Channel
from ._core import ChannelCore
from ._errors import AMQPError, ChannelClosed, ConsumerCancelled
from ._message import Delivery
from ._rabbit import Rabbit

log = logging.getLogger("queueing.rabbitmq")

#: Seconds between attempts to start a feed that failed (its queue is missing, say).
FEED_RETRY = 0.5


class Feed:
    """The deliveries of one queue's consumer(s), waiting to be claimed."""

    def __init__(self, queue: str, redeclare: Callable[[], Awaitable[None]], acks: Acks) -> None:
        self.queue = queue
        self.redeclare = redeclare
        self.acks = acks
        self.buffer: deque[Delivery] = deque()
        self.arrived = trio.lowlevel.ParkingLot()
        #: The prefetch asked for, and what the consumers have; the most tasks the
        #: workers held and asked for at once.
        self.wanted = 0
        self.workers = 0
        self.prefetch = 0
        self.changed = trio.lowlevel.ParkingLot()
        self.channel: Channel | None = None
        self.starts = 0

    def push(self, delivery: Delivery) -> None:
        self.acks.delivered(delivery)
        self.buffer.append(delivery)
        if self.arrived:
            self.arrived.unpark()

    async def take(self, n: int, wait: float, held: int = 0) -> list[Delivery]:
        """Up to `n` deliveries, waiting up to `wait` seconds for the first. `held`: how
        many this process's workers hold now (their messages count against the prefetch
        too): the prefetch grows to `held + n`, what the workers take at once, plus the
        deliveries settling now (outcome stored or being stored, not acknowledged yet),
        at most `held + n` of those."""
        busy = held + n
        if busy > self.workers:
            self.workers = busy
        settling = 0
        if self.channel is not None:
            settling = self.acks.unacknowledged(self.channel) - len(self.buffer) - held
        wanted = busy + min(max(settling, 0), self.workers)
        if wanted > self.wanted:
            self.wanted = wanted
            self.changed.unpark_all()
        buffer = self.buffer
        if not buffer:
            with trio.move_on_after(wait):
                await self.arrived.park()
        else:
            await trio.lowlevel.checkpoint()
        taken: list[Delivery] = []
        while buffer and len(taken) < n:
            delivery = buffer.popleft()
            if not delivery.channel.is_closed:
                taken.append(delivery)
        if buffer and self.arrived:
            self.arrived.unpark()  # more left: the next claimer need not wait
        return taken

    def take_all(self) -> list[Delivery]:
        """Every delivery buffered now (their channel still open), without waiting; the
        consumer stays on (prefetch at least 1), for what still arrives."""
        if self.wanted < 1:
            self.wanted = 1
            self.changed.unpark_all()
        taken = [d for d in self.buffer if not d.channel.is_closed]
        self.buffer.clear()
        return taken

    def give_back(self, deliveries: list[Delivery]) -> None:
        """Deliveries taken for a caller that was cancelled: first in line again."""
        self.buffer.extendleft(reversed(deliveries))
        if self.arrived:
            self.arrived.unpark()

    async def run(self, rabbit: Rabbit) -> None:
        """Keep the consumers up, across reconnects, until cancelled."""
        while True:
            while self.wanted == 0:
                await self.changed.park()
            try:
                await self._serve(rabbit)
            except (ConsumerCancelled, ChannelClosed) as exc:
                # The queue was deleted (or never declared here): declare it again.
                log.warning(
                    "consumer of %r stopped (%s); declaring the queue again", self.queue, exc
                )
                self._drop()
                await trio.sleep(FEED_RETRY)
                await self.redeclare()
                continue
            except AMQPError as exc:
                log.warning("consumer of %r stopped (%s); starting it again", self.queue, exc)
            self._drop()

    def _drop(self) -> None:
        """The channel is gone, and what it delivered is RabbitMQ's again."""
        self.buffer = deque(d for d in self.buffer if not d.channel.is_closed)
        self.prefetch = 0

    async def _serve(self, rabbit: Rabbit) -> None:
        connection = await rabbit.robust.wait_connected()
        channel = await connection.open_channel()
        self.channel = channel
        ended = trio.Event()
        why: list[BaseException | None] = []

        def on_cancel(error: BaseException | None) -> None:
            why.append(error)
            ended.set()
            self.changed.unpark_all()

        try:
            while not ended.is_set():
                more = self.wanted - self.prefetch
                if more > 0:
                    await channel.qos(more)
                    await channel.basic_consume(self.queue, self.push, on_cancel=on_cancel)
                    self.prefetch += more
                    self.starts += 1
                    continue
                await self.changed.park()
        finally:
            if not channel.is_closed:
                with trio.CancelScope(shield=True), trio.move_on_after(FEED_RETRY):
                    await channel.close()  # hands what it held back to the queue
        error = next((e for e in why if e is not None), None)
        if error is not None:
            raise error


class Acks:
    """Acknowledgements, sent by a task of their own, so that a store callback can ask for
    one without waiting. Those of one channel go out in one write, as one Basic.Ack with
    `multiple` for every delivery up to the highest tag whose earlier deliveries are all
    acknowledged, and one each for the rest."""

    def __init__(self) -> None:
        self._due: dict[ChannelCore, list[int]] = {}
        #: Delivery tags sent to this process and not acknowledged yet, by channel.
        self._open: dict[ChannelCore, set[int]] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        self._sending = False
        #: While on, `ack_soon` leaves the ack task asleep: the caller sends them next.
        self._hushed = False

    def delivered(self, delivery: Delivery) -> None:
        """A delivery arrived (so a later `multiple` ack does not cover it by mistake)."""
        tags = self._open.get(delivery.channel)
        if tags is None:
            for channel in [c for c in self._open if c.is_closed]:
                del self._open[channel]
            tags = self._open[delivery.channel] = set()
        tags.add(delivery.delivery_tag)

    def unacknowledged(self, channel: ChannelCore) -> int:
        """Deliveries of `channel` not acknowledged yet (or their ack not sent yet)."""
        return len(self._open.get(channel, ()))

    def ack_soon(self, delivery: Delivery) -> None:
        self._due.setdefault(delivery.channel, []).append(delivery.delivery_tag)
        if self._lot and not self._hushed:
            self._lot.unpark()

    def hush(self, on: bool) -> None:
        """While on, acknowledgements asked for do not wake the ack task: the caller
        sends them itself right after (`send_due`, a store write's `after_written`)."""
        self._hushed = on

    async def run(self) -> None:
        while True:
            if not self._due:
                self._idle.unpark_all()
                await self._lot.park()
                continue
            await self.send_due()

    async def send_due(self) -> None:
        """Send the acknowledgements asked for so far, now, from the caller's task."""
        if not self._due:
            return
        due, self._due = self._due, {}
        self._sending = True
        try:
            for channel, tags in due.items():
                await self._send(channel, tags)
        finally:
            self._sending = False
            if not self._due:
                self._idle.unpark_all()  # a `flush` that saw this send under way

    async def _send(self, channel: ChannelCore, tags: list[int]) -> None:
        open_tags = self._open.get(channel, set())
        if channel.is_closed:
            self._open.pop(channel, None)
            return  # RabbitMQ has them again: delivered again (and dropped)
        wanted = set(tags)
        upto = 0
        for tag in sorted(open_tags):
            if tag not in wanted:
                break
            upto = tag
        singles = sorted(tag for tag in wanted if tag > upto)
        open_tags.difference_update(tag for tag in list(open_tags) if tag <= upto)
        open_tags.difference_update(singles)
        if upto and not singles and upto == min(wanted) and len(wanted) == 1:
            singles, upto = [upto], 0  # one delivery: a plain ack
        with contextlib.suppress(AMQPError):  # closed meanwhile: the same
            await channel.ack_many(singles, upto=upto)

    async def flush(self) -> None:
        """Wait until every acknowledgement asked for so far was sent."""
        while self._due or self._sending:
            await self._idle.park()
        await trio.lowlevel.checkpoint()

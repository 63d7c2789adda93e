"""The RabbitMQ side of the broker: its queues, and publishing to them with confirms.

Per queue `q` of a system with prefix `p` (names use `:`, which queue names never hold):

- `p:q`, a quorum queue of ready tasks: `x-delivery-limit` (the queue's `max_deliveries`),
  `x-max-length` (its `maxsize`) with `x-overflow: reject-publish`, and dead-lettering
  (`x-dead-letter-strategy: at-least-once`) to the exchange `p:dead` with routing key `q`;
- `p:q:dead`, a quorum queue bound to `p:dead` with key `q`: what RabbitMQ dead-lettered
  (a task redelivered past the limit), which a serving process turns into our dead letters
  (`_coroner.py`);
- `p:q:delay:<ms>`, one quorum queue per delay: `x-message-ttl` of that many ms, then
  dead-lettered (at least once) back into `p:q`. Every message of one such queue has the
  same TTL, so they leave in the order they came (RabbitMQ expires messages at the head).
  Delays are rounded up to a grid (`delay_bucket`), so a few queues serve any backoff; an
  unused one deletes itself (`x-expires`) long after its last message left. RabbitMQ takes
  TTLs below 2**32 ms (49.7 days): a longer delay goes in hops of at most `MAX_DELAY_HOP`
  ms, its message published again into a delay queue when it comes back before its due
  time (`_holds.py`: `check.lua` tells it by the record's due time).

Every message is persistent, carries the task's envelope as its body and a nonce as its
`message_id` (the one the task's record names: see `_store.py`), and is published with
publisher confirms and `mandatory` (a queue deleted behind our back is declared again).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import tenacity
import trio

from ..._exceptions import BrokerError
from ..._task import MAX_PRIORITY, MIN_PRIORITY
from .._contract import QueueInfo
from ._channel import Channel
from ._errors import (
    AMQPError,
    ChannelClosed,
    ConnectionClosed,
    MessageTooLarge,
    PreconditionFailed,
    PublishOutcomeUnknown,
    PublishReturned,
    ReconnectFailed,
    max_message_size,
)
from ._message import PERSISTENT, Properties
from ._params import ConnectionParameters
from ._robust import DEFAULT_RECONNECT_WAIT, RobustConnection, connect_robust

log = logging.getLogger("queueing.rabbitmq")

#: Binary digits of precision of a delay: it is rounded up by at most 1/2**DELAY_BITS.
DELAY_BITS = 4
#: Seconds an unused delay queue outlives its TTL before RabbitMQ deletes it (long, so a
#: message held up on its way back, by a full queue, is never deleted with it).
DELAY_QUEUE_KEEP = 3600
#: Seconds after which this process declares a delay queue again before publishing to it
#: (a declare resets its expiry; a publish does not).
DELAY_REDECLARE = 60.0
#: The longest delay one delay queue holds (ms, 24.8 days): RabbitMQ refuses a TTL or an
#: expiry of 2**32 ms or more; a longer delay goes in hops.
MAX_DELAY_HOP = 1 << 31
#: Publishes retried after an unknown outcome (a connection lost before the confirm), and
#: the backoff between them (seconds).
PUBLISH_ATTEMPTS = 20
PUBLISH_BACKOFF = 0.05
PUBLISH_BACKOFF_MAX = 1.0
#: How long one outage may last before the broker gives up (raises `BrokerError`).
RECONNECT_STOP = 60.0


def task_properties(nonce: str) -> Properties:
    """The properties of a task's message: persistent, JSON, its nonce as message id."""
    return Properties(delivery_mode=PERSISTENT, message_id=nonce, content_type="application/json")


class _Stop(tenacity.stop.stop_base):
    """How long to keep trying to connect: `first` seconds before the first connection
    (start-up fails fast), `later` for each outage after it."""

    def __init__(self, first: float, later: float) -> None:
        self.first = first
        self.later = later
        self.connected = False

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        limit = self.later if self.connected else self.first
        return (retry_state.seconds_since_start or 0.0) >= limit


def delay_bucket(ms: float) -> int:
    """A delay in ms rounded up to the grid of delay queues: exact below 32 ms, then
    2**DELAY_BITS steps per doubling (at most 1/16 longer than asked); at most
    `MAX_DELAY_HOP` (a longer delay takes several hops)."""
    whole = max(1, math.ceil(min(ms, MAX_DELAY_HOP)))
    step = 1 << max(0, whole.bit_length() - 1 - DELAY_BITS)
    return min(-(-whole // step) * step, MAX_DELAY_HOP)


class Rabbit:
    """Topology and publishing over one robust connection (see the module doc)."""

    def __init__(
        self,
        params: ConnectionParameters,
        prefix: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reconnect_stop: float = RECONNECT_STOP,
    ) -> None:
        self.params = params
        self.prefix = prefix
        self.ssl_context = ssl_context
        self.reconnect_stop = reconnect_stop
        self._robust: RobustConnection | None = None
        #: Queues declared by this process (main queues by name, delay queues by name with
        #: the time of the declare).
        self._declared: set[str] = set()
        self._delays: dict[str, float] = {}
        self._declaring: dict[str, trio.Lock] = {}
        #: Called with the name of each queue this process declares (the broker records
        #: them in the results store, for tools that delete a system's queues).
        self.on_declare: Callable[[list[str]], Awaitable[None]] | None = None
        self._publisher: Channel | None = None
        self._publisher_lock = trio.Lock()
        #: RabbitMQ's `max_message_size`, once it refused a message over it (AMQP does not
        #: tell it otherwise): a larger message is then refused before it is sent. Known
        #: for the connection it was learned on (a restarted server may have another).
        self.max_message_size: int | None = None
        self._size_learned_on: object = None

    # -- the message-size limit -----------------------------------------------------------

    def too_large(self, queue: QueueInfo, size: int, error: BaseException | None = None) -> None:
        """Raise `MessageTooLarge` if a message of `size` bytes is over RabbitMQ's
        `max_message_size`: the one `error` reports (a publish's channel closed with 406
        "message size ... larger than configured max size ..."), which is remembered, or
        the one learned before."""
        limit = max_message_size(error)
        connection = None if self._robust is None else self._robust.connection
        if limit is not None:
            self.max_message_size, self._size_learned_on = limit, connection
        elif connection is not self._size_learned_on:
            self.max_message_size = None
        limit = self.max_message_size
        if limit is not None and size > limit:
            raise MessageTooLarge(queue.name, size, limit, queue.max_payload)

    # -- names ------------------------------------------------------------------------

    def main(self, queue: str, priority: int = 0) -> str:
        """A queue's ready queue; with a priority above 0, that priority's own (quorum
        queues have no priorities: one ready queue per level in use, claimed highest
        first)."""
        if priority:
            return f"{self.prefix}:{queue}:p{priority}"
        return f"{self.prefix}:{queue}"

    def retries(self, queue: str, priority: int = 0) -> str:
        """The ready queue of due retries of `priority` for a queue with `retry_ahead`:
        claimed after every higher priority and before the new tasks of `priority`."""
        return f"{self.main(queue, priority)}:retry"

    def dead(self, queue: str) -> str:
        return f"{self.prefix}:{queue}:dead"

    def delay(self, queue: str, ms: int, priority: int = 0, *, retries: bool = False) -> str:
        target = self.retries(queue, priority) if retries else self.main(queue, priority)
        return f"{target}:delay:{ms}"

    @property
    def exchange(self) -> str:
        """Where ready queues dead-letter to."""
        return f"{self.prefix}:dead"

    # -- the connection ---------------------------------------------------------------

    @property
    def robust(self) -> RobustConnection:
        if self._robust is None:
            raise BrokerError("the RabbitMQ broker is not connected (use it inside connect())")
        return self._robust

    @asynccontextmanager
    async def connected(self, connect_timeout: float) -> AsyncIterator[RobustConnection]:
        """The robust connection, for the system's life; errors say what to check. The
        first connection gets `connect_timeout` seconds, a later outage `reconnect_stop`."""
        stop = _Stop(connect_timeout, self.reconnect_stop)
        try:
            async with connect_robust(
                self.params,
                ssl_context=self.ssl_context,
                reconnect_wait=DEFAULT_RECONNECT_WAIT,
                reconnect_stop=stop,
            ) as robust:
                stop.connected = True
                self._robust = robust
                try:
                    yield robust
                finally:
                    self._robust = None
        except ReconnectFailed as exc:
            if stop.connected:
                raise
            raise BrokerError(
                f"cannot reach RabbitMQ at {self.params.url} within {connect_timeout:g}s: "
                f"{exc.__cause__ or exc}; check the host, the port, and that it is up"
            ) from exc

    # -- declaring ----------------------------------------------------------------------

    def arguments(self, queue: QueueInfo) -> dict[str, Any]:
        """The arguments of a queue's ready queue."""
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": queue.max_deliveries,
            "x-max-length": queue.maxsize,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": self.exchange,
            "x-dead-letter-routing-key": queue.name,
            "x-dead-letter-strategy": "at-least-once",
        }

    async def _on_channel(self, what: str, step: Any) -> Any:
        """Run `step(channel)` on a channel of its own, across a reconnect."""
        while True:
            connection = await self.robust.wait_connected()
            try:
                async with await connection.open_channel() as channel:
                    return await step(channel)
            except ChannelClosed:
                raise
            except AMQPError:
                if connection.is_closed:
                    continue  # lost meanwhile: again on the next connection
                raise

    async def declare(
        self, queue: QueueInfo, *, again: bool = False, priority: int = 0, retries: bool = False
    ) -> None:
        """Declare a queue's ready queue (that of `priority`; with `retries`, that of its
        due retries) and its dead-letter route (once per process, unless `again`)."""
        name = self.retries(queue.name, priority) if retries else self.main(queue.name, priority)
        if name in self._declared and not again:
            return
        lock = self._declaring.setdefault(name, trio.Lock())
        async with lock:
            if name in self._declared and not again:
                return

            async def route(channel: Channel) -> None:
                await channel.declare_exchange(self.exchange, "direct")
                await channel.declare_queue(
                    self.dead(queue.name), arguments={"x-queue-type": "quorum"}
                )
                await channel.bind_queue(self.dead(queue.name), self.exchange, queue.name)

            async def ready(channel: Channel) -> None:
                await channel.declare_queue(name, arguments=self.arguments(queue))

            async def existing(channel: Channel) -> None:
                await channel.declare_queue(name, passive=True)

            if self.on_declare is not None:
                await self.on_declare([name, self.dead(queue.name)])
            await self._on_channel("declare", route)
            try:
                await self._on_channel("declare", ready)
            except PreconditionFailed as exc:
                # Declared before with other limits (maxsize or max_deliveries changed):
                # use it as it is. The results store still enforces maxsize exactly.
                log.warning(
                    "RabbitMQ queue %r exists with other arguments than %s (%s); using it "
                    "as it is: delete it when it is empty to apply the new ones",
                    name,
                    self.arguments(queue),
                    exc.reply_text,
                )
                await self._on_channel("declare", existing)
            self._declared.add(name)

    async def declare_delay(
        self,
        queue: str,
        ms: int,
        priority: int = 0,
        *,
        retries: bool = False,
        again: bool = False,
    ) -> str:
        """The delay queue of `ms` for `queue` (into the ready queue of `priority`; with
        `retries`, into that of its due retries), declared (again) when due, or now with
        `again`; its name."""
        name = self.delay(queue, ms, priority, retries=retries)
        target = self.retries(queue, priority) if retries else self.main(queue, priority)
        now = trio.current_time()
        if not again and now - self._delays.get(name, -math.inf) < DELAY_REDECLARE:
            return name
        arguments = {
            "x-queue-type": "quorum",
            "x-message-ttl": ms,
            "x-expires": ms + DELAY_QUEUE_KEEP * 1000,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
            "x-dead-letter-strategy": "at-least-once",
        }

        async def step(channel: Channel) -> None:
            await channel.declare_queue(name, arguments=arguments)

        if self.on_declare is not None and name not in self._delays:
            await self.on_declare([name])
        await self._on_channel("declare a delay queue", step)
        self._delays[name] = now
        return name

    async def ready_count(
        self, queue: str, levels: Iterable[int] = (), *, retries: bool = False
    ) -> int:
        """Messages ready in a queue's ready queue, and in those of the priority `levels`
        (0 for one that does not exist); with `retries`, in their queues of due retries
        too (`retry_ahead`)."""
        total = 0
        names = []
        for priority in (0, *levels):
            names.append(self.main(queue, priority))
            if retries:
                names.append(self.retries(queue, priority))
        for name in names:

            async def step(channel: Channel, name: str = name) -> int:
                return (await channel.declare_queue(name, passive=True)).message_count

            try:
                count: int = await self._on_channel("count", step)
            except ChannelClosed:
                count = 0
            total += count
        return total

    async def delete(self, names: list[str]) -> None:
        """Delete queues (tests and tools)."""

        async def step(channel: Channel) -> None:
            for name in names:
                await channel.delete_queue(name)

        await self._on_channel("delete queues", step)

    # -- publishing ---------------------------------------------------------------------

    async def publisher(self, *, wait: bool) -> Channel | None:
        """This process's confirm channel on the current connection, opened as needed;
        None if there is no connection now and not `wait`."""
        while True:
            connection = self.robust.connection
            if connection is None or connection.is_closed:
                if not wait:
                    return None
                connection = await self.robust.wait_connected()
            channel = self._publisher
            if channel is not None and not channel.is_closed and channel.connection is connection:
                return channel
            async with self._publisher_lock:
                channel = self._publisher
                if channel is None or channel.is_closed or channel.connection is not connection:
                    try:
                        channel = await connection.open_channel(publisher_confirms=True)
                    except ConnectionClosed:
                        if connection.is_closed:
                            continue  # lost meanwhile: on the next connection
                        raise
                    self._publisher = channel
                return channel

    async def publish(self, queue: QueueInfo, routing_key: str, body: bytes, nonce: str) -> None:
        """Publish a task's message and return once RabbitMQ confirmed it.

        A message whose fate a lost connection left unknown is published again (the
        same nonce: if both copies arrive, the second finds the task settled, or runs as
        a duplicate while the first still runs). A queue deleted behind our back is
        declared again.

        Raises:
            PublishNacked: the queue is over its `x-max-length` (reject-publish).
            MessageTooLarge: over RabbitMQ's `max_message_size` (refused at once, not
                sent again; if learned before, not sent at all).
            BrokerError: RabbitMQ stayed unreachable (`ReconnectFailed`).
        """
        properties = task_properties(nonce)
        self.too_large(queue, len(body))
        for attempt in range(PUBLISH_ATTEMPTS):
            if attempt:
                await trio.sleep(min(PUBLISH_BACKOFF * attempt, PUBLISH_BACKOFF_MAX))
            channel = await self.publisher(wait=True)
            assert channel is not None
            try:
                await channel.publish(
                    body, routing_key=routing_key, properties=properties, mandatory=True
                )
                return
            except PublishOutcomeUnknown as exc:
                # RabbitMQ closed the channel because of this very message: refused.
                self.too_large(queue, len(body), exc)
                log.warning("publish to %r: outcome unknown (connection lost); again", routing_key)
            except PublishReturned:
                log.warning("queue %r is gone; declaring it again", routing_key)
                await self.redeclare(queue, routing_key)
            except (ConnectionClosed, ChannelClosed) as exc:
                # Never written (the connection or channel closed first): safe to send again.
                log.debug("publish to %r: %s; again", routing_key, exc)
        raise BrokerError(
            f"RabbitMQ did not confirm a message to {routing_key!r} after {PUBLISH_ATTEMPTS} "
            "attempts (connections kept failing before its confirm)"
        )

    async def redeclare(self, queue: QueueInfo, routing_key: str) -> None:
        """Declare again the queue a message to `routing_key` goes to (it was deleted)."""
        for priority in range(MIN_PRIORITY, MAX_PRIORITY + 1):
            if routing_key == self.main(queue.name, priority):
                await self.declare(queue, again=True, priority=priority)
                return
        self._delays.pop(routing_key, None)
        head, _, ms = routing_key.rpartition(":delay:")
        priority = next((p for p in range(MAX_PRIORITY + 1) if head == self.main(queue.name, p)), 0)
        await self.declare_delay(queue.name, int(ms), priority)

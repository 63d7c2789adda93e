"""Background work of a serving process: the coroner and the janitor.

- The coroner consumes what RabbitMQ dead-lettered from a queue (`prefix:queue:dead`,
  fed at least once by the ready queue's dead-letter exchange): a task redelivered past
  `x-delivery-limit` (its processes died before the engine could dead-letter it as
  poison), or a message someone rejected. Each becomes the task's outcome, DEAD_LETTERED,
  and one of our dead letters, in one write; then the message is acknowledged. A stale
  copy, or one whose task has an outcome, is just acknowledged.
- The janitor publishes tasks whose client stopped between reserving them and RabbitMQ
  confirming their message (`adopt.lua`): each gets a new nonce, so that a message the
  client did publish is a stale copy, and the task runs once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from ..._task import ErrorInfo, TaskState, parse_priority
from .._contract import QueueInfo
from ..redis import _keys as k
from ..redis._wire import BadEntry, decode_envelope, letter_of
from ._errors import AMQPError, MessageTooLarge
from ._message import Delivery
from ._rabbit import delay_bucket
from ._rabbit_claims import Feed
from ._store import NO_RECORD

if TYPE_CHECKING:
    from ._broker import RabbitMQBroker

log = logging.getLogger("queueing.rabbitmq")

#: Dead-lettered messages the coroner holds at once.
CORONER_PREFETCH = 16
#: Seconds between two rounds of the janitor.
JANITOR_EVERY = 10.0
#: Seconds after its reservation a task whose message RabbitMQ never confirmed is adopted
#: (longer than a client keeps trying to publish through an outage).
UNCONFIRMED_GRACE = 120.0


def _reason(delivery: Delivery) -> tuple[str, int]:
    """Why RabbitMQ dead-lettered a message, and how many times it delivered it."""
    headers = delivery.headers
    deaths = headers.get("x-death")
    reason = str(headers.get("x-first-death-reason", "") or "")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = str(deaths[0].get("reason", reason))
    count = headers.get("x-delivery-count", 0)
    return reason or "unknown", count if isinstance(count, int) else 0


class Upkeep:
    """The coroner and the janitor of one broker."""

    def __init__(self, broker: RabbitMQBroker) -> None:
        self.broker = broker
        self._adoptions = 0

    # -- the coroner ------------------------------------------------------------------

    async def coroner(self, queue: QueueInfo) -> None:
        broker = self.broker
        rabbit = broker._rabbit

        async def redeclare() -> None:
            await rabbit.declare(queue, again=True)

        feed = Feed(rabbit.dead(queue.name), redeclare, broker._acks)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run, rabbit)
            while True:
                for delivery in await feed.take(CORONER_PREFETCH, float("inf")):
                    await self._bury(queue, delivery)

    async def _bury(self, queue: QueueInfo, delivery: Delivery) -> None:
        broker = self.broker
        store = broker._store
        name = queue.name
        try:
            task = decode_envelope(
                {"env": delivery.body.decode()}, name, queue.max_payload + k.ENVELOPE_OVERHEAD
            )
        except (BadEntry, UnicodeDecodeError) as exc:
            broker._holds.reject(
                name, delivery, f"dead-lettered by RabbitMQ, and not a task: {exc}"
            )
            return
        reason, count = _reason(delivery)
        record = store.keys.task(task.id)
        reply = await store.calls.retrying(
            "read a record", lambda: store.calls.client.hget(record, "r")
        )
        limit = f" (x-delivery-limit={queue.max_deliveries})" if reason == "delivery_limit" else ""
        error = ErrorInfo(
            "Poison",
            f"RabbitMQ dead-lettered it ({reason}{limit}) after {count + 1} deliveries: "
            "the processes that took it stopped before they settled it",
        )
        task.deliveries = count + 1
        task.settle(TaskState.DEAD_LETTERED, None, error, time.time())
        nonce = delivery.properties.message_id or ""

        def then(answer: Any) -> None:
            if answer == NO_RECORD:
                broker._holds.reject(
                    name, delivery, f"dead-lettered by RabbitMQ ({reason}); no record"
                )
            else:
                broker._acks.ack_soon(delivery)
            if answer == 1:
                log.warning("task %s dead-lettered by RabbitMQ (%s)", task.id, reason)

        store.finish(
            queue, task, nonce, str(reply or "")[: k.MAX_CLIENT_LENGTH], letter_of(task, name), then
        )

    # -- the janitor ------------------------------------------------------------------

    async def janitor(self, queue: QueueInfo) -> None:
        while True:
            await trio.sleep(JANITOR_EVERY)
            try:
                await self._adopt(queue)
            except Exception as exc:  # housekeeping: the next round tries again
                log.warning("janitor of %r: %s; trying again later", queue.name, exc)

    async def _adopt(self, queue: QueueInfo) -> None:
        broker = self.broker
        self._adoptions += 1
        prefix = f"{broker.client_id}.j{self._adoptions}."
        adopted = await broker._store.adopt(queue.name, time.time() - UNCONFIRMED_GRACE, prefix)
        for task_id, nonce, envelope, due in adopted:
            delay = int(due) - time.time() * 1000 if due else 0.0
            priority = _priority(envelope)
            routing = broker._rabbit.main(queue.name, priority)
            if delay > 0:
                routing = await broker._rabbit.declare_delay(
                    queue.name, delay_bucket(delay), priority
                )
            log.warning(
                "task %s: its client stopped before RabbitMQ confirmed it; publishing it", task_id
            )
            try:
                await broker._rabbit.publish(queue, routing, envelope.encode(), nonce)
            except MessageTooLarge as exc:
                # RabbitMQ will never take it (its submit never completed): taken back.
                await broker._store.unreserve(task_id, nonce)
                log.error("task %s: dropped, never published: %s", task_id, exc)
                continue
            except AMQPError as exc:
                log.warning("task %s: publish refused (%s); trying again later", task_id, exc)
                continue
            broker._store.confirmed(queue.name, [task_id])


def _priority(envelope: str) -> int:
    """The priority an envelope carries (the default if it names none, or does not parse:
    the worker that takes it dead-letters what does not parse)."""
    try:
        doc = json.loads(envelope)
    except ValueError:
        return 0
    return parse_priority(doc.get("priority")) if isinstance(doc, dict) else 0

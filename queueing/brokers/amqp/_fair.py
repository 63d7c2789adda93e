"""Fair share between tenants on RabbitMQ: the contract's order, kept in the results store.

RabbitMQ has no fair queuing (a quorum queue is one FIFO, taken from its head), so a queue
in fair mode keeps its waiting tasks in Redis (`lua/_fair.lua`: flows and their start tags
as sorted sets, every key in KEYS[]) and hands them out from there, leased:

- A queue turns fair at its first task with a tenant (`reserve.lua` answers `TURNED_FAIR`):
  from then on `reserve.lua` keeps every new task of it in its flow (a delayed one until
  due) instead of having it published. The submitter that turned it moves what waited in
  RabbitMQ's ready queues into the default tenant's flows (`turned`: their tags were set
  first, so they stay first in line) and leaves a wake-up message in the ready queue, so
  that a claiming process waiting on it learns at once (the others within
  `LEVELS_REFRESH`). A queue that never saw a tenant keeps its path: published at submit,
  consumed from its ready queue.
- `claim` on a fair queue is one round trip: `pick.lua` makes due tasks ready, puts the
  tasks of expired leases back at the front of their flows, then takes the next `n` in
  fair order (a tenant at `tenant_concurrency` is set aside), each counted as running for
  its tenant and leased to the claiming process; `hand.lua` points their records at the
  claim with that process's next writes (before any outcome of theirs). Only what idle
  workers asked for is taken, so the order is the contract's exactly, over every process.
- `renew` extends the leases (`lease.lua`); a process that stops leaves its tasks to come
  back once their leases run out, one more delivery counted.
- A retry (`back.lua`) waits in the store until due, then joins its flow (the back, or
  with `retry_ahead` the front behind earlier due retries); a hand-back joins the front.
  Settling (`finish.lua`, cancels too), a retry and a hand-back give back the tenant's
  running slot; a tenant set aside comes back at the next pick once below its cap. A
  cancel takes a waiting task out of its flow.
- Messages that still reach the ready queues (published before the switch: a delay
  queue's, the janitor's) are moved into their flows by whichever claiming process
  receives them (`adopt_fair.lua`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..._task import Task, parse_priority, parse_tenant, priority_of, tenant_of
from .._contract import QueueInfo, TenantFigures
from ..redis import _keys as k
from ..redis._wire import (
    BadEntry,
    bad_entry_letter,
    decode_envelope,
    encode_envelope,
    encode_meta,
)
from ._channel import Channel
from ._errors import AMQPError
from ._message import PERSISTENT, Delivery, Properties
from ._rabbit import Rabbit
from ._rabbit_claims import Acks
from ._store import Store
from ._store_writes import Op

log = logging.getLogger("queueing.rabbitmq")

#: The `type` of the wake-up message left in a queue's ready queue when it turns fair.
WAKE_TYPE = "queueing.fair"
#: Tasks per `adopt_fair.lua` call.
ADOPT_CHUNK = 200
#: Seconds a claim on a fair queue with nothing to take waits before it looks again
#: (doubling from the first up to the last while nothing comes).
POLL_FIRST = 0.01
POLL_MOST = 0.2


def _priority(envelope: str) -> int:
    """The priority an envelope names (the default if none, or it does not parse)."""
    try:
        doc = json.loads(envelope)
    except ValueError:
        return 0
    return parse_priority(doc.get("priority")) if isinstance(doc, dict) else 0


def is_wake(delivery: Delivery) -> bool:
    """The wake-up message of a queue that turned fair (not a task)."""
    return delivery.properties.type == WAKE_TYPE


def reject_message(store: Store, acks: Acks, queue: str, delivery: Delivery, reason: str) -> None:
    """Keep a dead letter of a message that is not a task of ours, then acknowledge it."""
    fields = {
        "message_id": delivery.properties.message_id or "",
        "body": delivery.body.decode(errors="replace"),
    }
    letter = bad_entry_letter(queue, fields, reason, time.time())
    keys = [store.keys.dead(queue)]
    args = [letter, store.max_dead_letters]
    store.push(Op("reject", keys, args, lambda _: acks.ack_soon(delivery)))


class Fair:
    """Fair queues: which queues are, their claims, retries, hand-backs and figures."""

    def __init__(self, rabbit: Rabbit, store: Store, acks: Acks, nonce: Callable[[], str]) -> None:
        self.rabbit = rabbit
        self.store = store
        self.acks = acks
        self.nonce = nonce
        #: Queues known to be in fair mode (it lasts).
        self.queues: set[str] = set()
        self._getter: Channel | None = None
        self._weights_reset: set[str] = set()
        self._poll: dict[str, float] = {}
        #: Seconds a task handed out stays leased without `renew` (the broker's `lease`).
        self.lease = 30.0

    # -- which queues are fair --------------------------------------------------------

    async def read_mode(self, queue: str) -> bool:
        """Whether `queue` is in fair mode (read from the store; remembered once it is)."""
        if queue in self.queues:
            return True
        key = self.store.fair_keys(queue)[0]
        on = await self.store.calls.retrying(
            "read the fair mode", lambda: self.store.calls.client.hget(key, "on")
        )
        if on:
            self.queues.add(queue)
        return bool(on)

    async def turned(self, queue: QueueInfo, levels: Sequence[int]) -> None:
        """This process's submit turned `queue` fair: move what waits in its ready queues
        (of priority 0 and `levels`) into the store, then leave a wake-up message."""
        self.queues.add(queue.name)
        for priority in sorted({0, *levels}, reverse=True):
            name = self.rabbit.main(queue.name, priority)
            while True:
                deliveries = await self._get(name, ADOPT_CHUNK)
                if not deliveries:
                    break
                await self.adopt(queue, deliveries, front=False)
        properties = Properties(delivery_mode=PERSISTENT, type=WAKE_TYPE)
        try:
            channel = await self.rabbit.publisher(wait=True)
            assert channel is not None
            await channel.publish(
                b"", routing_key=self.rabbit.main(queue.name), properties=properties
            )
        except AMQPError as exc:  # only a wake-up: the others look within a second
            log.debug("queue %r: no wake-up sent (%s)", queue.name, exc)

    # -- claims -----------------------------------------------------------------------

    async def _channel(self) -> Channel:
        channel = self._getter
        if channel is None or channel.is_closed:
            connection = await self.rabbit.robust.wait_connected()
            channel = self._getter = await connection.open_channel()
        return channel

    async def _get(self, name: str, n: int) -> list[Delivery]:
        """Up to `n` messages of queue `name` (Basic.Get)."""
        taken: list[Delivery] = []
        try:
            channel = await self._channel()
            while len(taken) < n:
                delivery = await channel.get(name)
                if delivery is None:
                    break
                self.acks.delivered(delivery)
                taken.append(delivery)
        except AMQPError as exc:
            # A closed channel hands its messages back to RabbitMQ: taken again later.
            log.warning("taking tasks from %r failed (%s)", name, exc)
        return [delivery for delivery in taken if not delivery.channel.is_closed]

    async def claim(self, queue: QueueInfo, n: int, wait: float) -> list[Task]:
        """Up to `n` tasks handed out in fair order, leased to this process (see the
        module doc); waits a little (up to `wait`) when there is none."""
        if queue.weight_of is not None and queue.name not in self._weights_reset:
            # Weights are the claiming processes' (a client may not know them): those of
            # an earlier run are asked again.
            self._weights_reset.add(queue.name)
            key = self.store.fair_key(queue.name, "weight")
            await self.store.calls.retrying(
                "reset tenant weights", lambda: self.store.calls.client.delete([key])
            )
        tasks = self._hand_out(queue, await self._pick(queue, n))
        if tasks:
            self._poll.pop(queue.name, None)
            return tasks
        pause = self._poll.get(queue.name, POLL_FIRST)
        self._poll[queue.name] = min(pause * 2, POLL_MOST)
        await trio.sleep(min(pause, max(wait, 0.0)))
        return []

    async def _pick(self, queue: QueueInfo, n: int) -> list[list[str]]:
        """`pick.lua`: up to `n` tasks `[id, tenant, priority, client \\n envelope,
        deliveries]` in fair order (asking the queue's weight function for tenants the
        store has no weight of yet)."""
        keys = self.store.fair_keys(queue.name)
        weighs = queue.weight_of
        taken: list[list[str]] = []
        while len(taken) < n:
            args = [
                n - len(taken),
                int(time.time() * 1000),
                queue.tenant_concurrency or 0,
                "1" if weighs is not None else "0",
                int((time.time() + self.lease) * 1000),
            ]
            answer = [
                str(v) for v in await self.store.script_with_writes("pick", "pick", keys, args)
            ]
            wanted = None
            if len(answer) % 5 == 2 and answer[-2] == "?":
                wanted = answer[-1]
                answer = answer[:-2]
            taken += [answer[i : i + 5] for i in range(0, len(answer), 5)]
            if wanted is None or weighs is None:
                break
            weight = float(weighs(wanted))
            if not (weight > 0 and math.isfinite(weight)):
                log.warning("tenant %r of %r: weight %r is not > 0; using 1", wanted, queue, weight)
                weight = 1.0
            await self.store.calls.retrying(
                "store a tenant weight",
                functools.partial(
                    self.store.calls.client.hset,
                    self.store.fair_key(queue.name, "weight"),
                    {wanted: repr(1.0 / weight)},
                ),
            )
        return taken

    def _hand_out(self, queue: QueueInfo, picked: list[list[str]]) -> list[Task]:
        """The picked tasks, leased to this process (`task.handle` is (None, its claim's
        nonce, its submitting client)); their records are pointed at the claim by
        `hand.lua`, sent with this process's next writes (before its outcomes)."""
        if not picked:
            return []
        keys = list(self.store.fair_keys(queue.name))
        args: list[Any] = []
        max_bytes = queue.max_payload + k.ENVELOPE_OVERHEAD
        tasks = []
        for task_id, tenant, priority, stored, deliveries in picked:
            nonce = self.nonce()
            keys.append(self.store.keys.record(queue.name, task_id))
            args += (task_id, nonce, tenant, priority)
            reply, _, envelope = stored.partition("\n")
            try:
                task = decode_envelope({"env": envelope}, queue.name, max_bytes)
            except BadEntry as exc:  # written by a submit of ours: not expected
                log.error("task %s: unreadable envelope in the store (%s)", task_id, exc)
                continue
            task.handle = (None, nonce, reply)
            task.deliveries = int(deliveries)
            tasks.append(task)
        self.store.push(Op("hand", keys, args))
        return tasks

    async def adopt(self, queue: QueueInfo, deliveries: Sequence[Delivery], *, front: bool) -> None:
        """Move tasks delivered from a ready queue into their flows (`front`: at the front,
        in the order given), then acknowledge their messages; a message that is not a
        task is kept as a dead letter."""
        parsed: list[tuple[Delivery, Task, str]] = []
        max_bytes = queue.max_payload + k.ENVELOPE_OVERHEAD
        for delivery in deliveries:
            if is_wake(delivery):
                self.acks.ack_soon(delivery)
                continue
            try:
                body = delivery.body.decode()
                task = decode_envelope({"env": body}, queue.name, max_bytes)
            except (BadEntry, UnicodeDecodeError) as exc:
                reject_message(self.store, self.acks, queue.name, delivery, str(exc))
                continue
            parsed.append((delivery, task, body))
        if front:
            parsed.reverse()  # each goes in front of those before it
        for start in range(0, len(parsed), ADOPT_CHUNK):
            chunk = parsed[start : start + ADOPT_CHUNK]
            keys = [
                *self.store.fair_keys(queue.name),
                self.store.keys.of(queue.name, "unconfirmed"),
                self.store.keys.envs(queue.name),
            ]
            args: list[Any] = ["A" if front else "C"]
            for delivery, task, body in chunk:
                keys.append(self.store.keys.record(queue.name, task.id))
                nonce = delivery.properties.message_id or ""
                args += (task.id, nonce, tenant_of(task) or "", priority_of(task), body)
            answers = await self.store.script_with_writes("adopt tasks", "adopt_fair", keys, args)
            for (delivery, task, _), answer in zip(chunk, answers, strict=True):
                if int(answer) == -1:
                    reason = f"no task {task.id!r} was submitted (it has no record)"
                    reject_message(self.store, self.acks, queue.name, delivery, reason)
                else:
                    self.acks.ack_soon(delivery)

    # -- what becomes of a held task ----------------------------------------------------

    def back(
        self,
        queue: QueueInfo,
        task: Task,
        old: str,
        reply: str,
        *,
        due_ms: str,
        how: str,
        counter: str,
        then: Callable[[Any], None] | None,
    ) -> None:
        """A held task of a fair queue waits in the store again (batched, `back.lua`): a
        retry until `due_ms`, a hand-back (`how` "A") at once."""
        keys = [self.store.keys.task(task.id), self.store.keys.stats(queue.name)]
        keys += self.store.fair_keys(queue.name)
        args = [
            old,
            "scheduled" if due_ms else "pending",
            encode_meta(task) if counter else "",
            due_ms,
            counter,
            task.id,
            tenant_of(task) or "",
            priority_of(task),
            how,
            f"{reply}\n{encode_envelope(task)}",
        ]
        self.store.push(Op("back", keys, args, then))

    # -- figures ------------------------------------------------------------------------

    async def waiting(self, queue: str) -> int:
        """Tasks waiting in the store, ready (in their flows), of a fair queue (0 for
        another)."""
        key = self.store.fair_key(queue, "wait")
        counts = await self.store.calls.retrying(
            "count waiting tasks", lambda: self.store.calls.client.hvals(key)
        )
        return sum(max(0, int(count)) for count in counts)

    async def figures(self, queue: str, limit: int) -> list[TenantFigures]:
        """The tenants with the most tasks waiting (then running), at most `limit` (""
        for the default tenant)."""
        run_key = self.store.fair_key(queue, "run")
        wait_key = self.store.fair_key(queue, "wait")
        client = self.store.calls.client

        async def read() -> tuple[dict[Any, Any], dict[Any, Any]]:
            return await client.hgetall(wait_key), await client.hgetall(run_key)

        waiting, running = await self.store.calls.retrying("tenant figures", read)
        counts: dict[str, list[int]] = {}
        for which, found in enumerate((waiting, running)):
            for raw, value in found.items():
                tenant = "" if raw in ("", b"") else parse_tenant(raw)
                if tenant is None:
                    continue  # not ours
                counts.setdefault(tenant, [0, 0])[which] = max(0, int(value))
        ranked = sorted(counts.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
        return [TenantFigures(t, w, r) for t, (w, r) in ranked[:limit] if w or r]

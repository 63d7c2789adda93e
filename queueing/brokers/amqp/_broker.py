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
import math
import os
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..._exceptions import BrokerError
from ..._task import DeadLetter, ErrorInfo, Progress, Task, TaskState, parse_priority
from .._contract import Admission, Broker, QueueInfo, TenantFigures
from ..redis import _keys as k
from ..redis._progress import ProgressStore
from ..redis._rates import take_start
from ._broker_url import BrokerURL, parse, safe, seconds
from ._holds import Holds
from ._rabbit import Rabbit
from ._rabbit_claims import Acks
from ._store import Store, StoreCalls
from ._store_admin import StoreAdmin
from ._store_reads import Reads
from ._store_runs import RabbitMQRuns
from ._submit import Submitter
from ._upkeep import Upkeep

#: For this many seconds after RabbitMQ refused a submit to a queue, a submit waiting for
#: room there tries again every NACKED_RETRY seconds.
NACKED_RECENTLY = 10.0
NACKED_RETRY = 0.5


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
        #: More for the heartbeat: what this process serves, per queue, for the dashboards
        #: (`queueing top`); the system sets it, the broker does not know.
        self.report: Callable[[], dict[str, Any]] | None = None
        keys = k.Keys(self.prefix)
        self._keys = keys
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
        self._store.hush = self._acks.hush
        self._submitter = Submitter(self._store, self._rabbit, self._reads, self.nonce)
        self._upkeep = Upkeep(self)
        self.runs = RabbitMQRuns(self._calls, keys, self._store, self._reads, self._accept_at)
        self._holds = Holds(self._rabbit, self._store, self._acks, self.nonce)
        self._holds.fair.lease = self.lease
        self._submitter.on_level = self._register_level
        self._submitter.on_fair = self._turned_fair
        self._progress = ProgressStore(self._calls, keys)  # in the results store
        self._queues: dict[str, QueueInfo] = {}
        self._serve = False

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
            nursery.start_soon(self._submitter.loop)
            nursery.start_soon(self._store.flush_loop)
            nursery.start_soon(self._reads.reader_loop)
            nursery.start_soon(self._calls.probe)
            nursery.start_soon(self._acks.run)
            self._holds.start(nursery)
            if self._serve:
                for info in self._queues.values():
                    nursery.start_soon(self._upkeep.coroner, info)
                    nursery.start_soon(self._upkeep.janitor, info)
                nursery.start_soon(self._admin.heartbeat_loop, self.client_id, self._heartbeat)

    def _heartbeat(self) -> dict[str, Any]:
        held = {name: len(ids) for name, ids in self._holds.held.items() if ids}
        info: dict[str, Any] = {
            "queues": sorted(self._queues),
            "workers": self.workers,
            "in_flight": sum(held.values()),
            "held": held,
        }
        if self.report is not None:
            info["report"] = self.report()
        return info

    async def flush(self) -> None:
        await self._submitter.flush()
        await self._store.flush()
        await self._acks.flush()

    # -- the client side -------------------------------------------------------------------

    async def accept(self, queue: QueueInfo, task: Task, *, due: float | None = None) -> Admission:
        (admission,) = await self._submitter.accept(queue, [task], due)
        return admission

    async def _accept_at(self, queue: QueueInfo, task: Task, due: float | None) -> Admission:
        return await self.accept(queue, task, due=due)

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        taken = 0
        for admission in await self._submitter.accept(queue, tasks, None):
            if admission is Admission.FULL or admission is Admission.TENANT_FULL:
                break
            taken += 1
        return taken

    async def _register_level(self, queue: QueueInfo, priority: int) -> None:
        """A priority level above 0 is used: registered, for every claiming process."""
        key = self._store.keys.levels(queue.name)
        await self._calls.retrying(
            "register a priority level", lambda: self._calls.client.sadd(key, [str(priority)])
        )
        self._holds.note_level(queue.name, priority)

    async def _turned_fair(self, queue: QueueInfo) -> None:
        """A submit of this process turned `queue` fair: what waits in RabbitMQ moves to
        the results store (`_fair.py`)."""
        levels = await self._holds._levels_of(queue.name)
        await self._holds.fair.turned(queue, levels)

    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        if self.clock() - self._submitter.nacked.get(queue.name, -math.inf) < NACKED_RECENTLY:
            # Full by RabbitMQ's count, not the store's: no outcome may come to say there
            # is room (workers dropping stale messages record none), so look again soon.
            timeout = min(timeout, NACKED_RETRY)
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
            self._holds.done_with(record.queue, task_id)
        return record

    # -- the worker side -------------------------------------------------------------------

    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        return await self._holds.claim(queue, n, wait)

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        return await self._holds.renew(queue, tasks)

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:
        await self._holds.release(queue, tasks)

    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        return await self._holds.finish(queue, task, state, result, error, dead=False)

    async def dead_letter(
        self, queue: QueueInfo, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        return await self._holds.finish(queue, task, state, None, error, dead=True)

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        await self._holds.retry_at(queue, task, due)

    # -- dead letters and figures ----------------------------------------------------------

    async def take_start(
        self, queue: QueueInfo, key: str, within: float, task_id: str | None = None
    ) -> float:
        # In the results store, as the Redis broker does (redis/_rates.py).
        return await take_start(self._calls, self._keys, queue, key, within, task_id)

    async def tenant_figures(self, queue: str, limit: int) -> list[TenantFigures] | None:
        return await self._holds.fair.figures(queue, limit)

    async def rate_figures(self) -> dict[str, dict[str, Any]]:
        return await self._calls.retrying("rate figures", self._admin.rates)

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        return await self._admin.dead_letters(queue, limit)

    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        return await self._admin.take_dead_letters(queue, ids)

    async def outstanding(self, queue: str) -> int:
        return await self._admin.outstanding(queue)

    async def declared(self) -> dict[str, QueueInfo]:
        return await self._admin.declared()

    async def declare_pipelines(self, pipelines: Mapping[str, Sequence[str]]) -> None:
        """Publish the pipelines (in the results store, as the Redis broker does)."""
        await self._admin.declare_pipelines(pipelines)

    async def declared_pipelines(self) -> dict[str, tuple[str, ...]]:
        return await self._admin.declared_pipelines()

    async def declare_payload_types(self, types: Mapping[str, str]) -> None:
        """Publish the payload types (in the results store, as the Redis broker does)."""
        await self._admin.declare_payload_types(types)

    async def declared_payload_types(self) -> dict[str, str]:
        return await self._admin.declared_payload_types()

    async def status(self) -> dict[str, Any]:
        """Queue figures and live workers (for `queueing status`)."""
        ready = {name: await self._ready(name) for name in await self.declared()}
        return await self._admin.status_with(ready)

    async def _ready(self, queue: str) -> int:
        """Tasks ready for `queue`: messages in RabbitMQ over every priority level in use,
        and those waiting in the results store (a fair queue's)."""
        levels = await self._calls.retrying(
            "read the priority levels",
            lambda: self._calls.client.smembers(self._store.keys.levels(queue)),
        )
        info = self._queues.get(queue)
        ready = await self._rabbit.ready_count(
            queue,
            sorted(parse_priority(p) for p in levels),
            retries=info is not None and info.retry_ahead,
        )
        # A fair queue's waiting tasks are in the results store (`_fair.py`).
        return ready + await self._holds.fair.waiting(queue)

    async def figures(self, queue: str) -> dict[str, int] | None:
        ready = {queue: await self._ready(queue)}
        found: dict[str, int] | None = (await self._admin.status_with(ready))["queues"].get(queue)
        return found

    # -- progress (in the results store, as the Redis broker keeps it) ----------------------

    async def store_progress(
        self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]
    ) -> None:
        await self._progress.store(queue, updates)

    async def read_progress(self, task_ids: Collection[str]) -> dict[str, Progress]:
        return await self._progress.read(task_ids)

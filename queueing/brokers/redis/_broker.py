"""`RedisBroker`: the broker contract over Redis Streams, composed of the parts beside it.

Layout, flows and guarantees: docs/concepts/delivery-guarantees.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..._exceptions import BrokerError
from ..._task import DeadLetter, ErrorInfo, Progress, Task, TaskState
from .._contract import Admission, Broker, QueueInfo, TenantFigures, check_lease
from . import _keys as k
from ._admin import Admin
from ._batch import Batcher
from ._calls import Calls, NoAnswer
from ._consumer import Consumer
from ._leases import Leases
from ._losses import Losses
from ._maxmemory import check_eviction
from ._outcomes import Outcomes
from ._progress import ProgressStore
from ._rates import take_start
from ._receipts import Receipts
from ._room import Room
from ._runs import RedisRuns
from ._shards import SHARD_BLOCK, Shards
from ._url import finite_positive, parse_url, safe_url

log = logging.getLogger("queueing.redis")

#: Seconds a background loop waits before it starts again after a call Redis did not
#: answer within its limit.
STALL_PAUSE = 0.1
#: A claim whose answer took this much of a lease or more renews its tasks before handing
#: them out (`RedisBroker._still_ours`).
LATE_CLAIM = 0.5
#: What stops a submit of many at the task it answers (the caller waits for room).
_NO_ROOM = (Admission.FULL, Admission.TENANT_FULL)
#: Seconds a closing client tries to delete its replies streams (Redis may be gone).
REPLIES_GOODBYE = 1.0


class RedisBroker(Broker):
    """Tasks in Redis Streams: consumer groups, leases, reclaim, delayed retries, results.

    Args:
        url: `redis://[user:password@]host:port/db`, `rediss://…` for TLS,
            `unix:///path/to/socket`, `redis+cluster://host:port,host:port` (a Redis
            Cluster: seed nodes), or `redis+sentinel://host:26379,host:port/service` (the
            master Sentinel names; `rediss+…` for TLS); query options `prefix` and `lease`
            override the arguments of the same name.
        prefix: every key starts with `{prefix:…}`; one prefix per system.
        lease: seconds a claimed task stays ours without `renew`; a stopped process's
            tasks are claimed by others after this long.
        block: seconds one blocking read waits before it checks again.
        connect_timeout: seconds to reach Redis at start-up before `BrokerError`.
        max_dead_letters: dead letters kept per queue (the oldest go first).

    Raises:
        BrokerError: the URL or an option is malformed (the message says which).
    """

    durable = True
    shared = True
    clock = staticmethod(time.time)

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "queueing",
        lease: float = 30.0,
        block: float = 2.0,
        connect_timeout: float = 5.0,
        max_dead_letters: int = 10_000,
    ) -> None:
        url, options = parse_url(url)
        prefix = options.get("prefix", prefix)
        if not prefix or any(c in prefix for c in "{}: "):
            raise BrokerError(
                f"prefix must be non-empty without '{{', '}}', ':' or spaces: {prefix!r}"
            )
        self.url = url
        self.prefix = prefix
        self.lease = check_lease(finite_positive("lease", options.get("lease", lease)))
        self.block = finite_positive("block", block)
        self.connect_timeout = finite_positive("connect_timeout", connect_timeout)
        if max_dead_letters < 1:
            raise BrokerError(f"max_dead_letters must be >= 1, got {max_dead_letters!r}")
        self.max_dead_letters = max_dead_letters
        #: This process's name: its consumer in the groups, and its client id for replies.
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        #: Workers this process runs, for the heartbeat (`queueing status`); the engine
        #: may set it, the broker does not know.
        self.workers = 0
        #: More for the heartbeat: what this process serves, per queue, for the dashboards
        #: (`queueing top`); the system sets it, the broker does not know.
        self.report: Callable[[], dict[str, Any]] | None = None
        self._queues: dict[str, QueueInfo] = {}
        #: The queues whose consumer groups this process made (and makes again if Redis
        #: lost them): all of them in a serving process, and any it claims from.
        self._declared: dict[str, QueueInfo] = {}
        self._serve = False
        keys = k.Keys(prefix)
        self._keys = keys
        self._shards = Shards(keys)
        self._calls = Calls(url, connect_timeout=self.connect_timeout, block=self.block)
        self._batch = Batcher(self._calls, keys, self.consumer)
        self._losses = Losses(self._calls, keys)
        self._losses.on_loss.append(self._batch.reopen)
        self._consumer = Consumer(
            self._calls,
            keys,
            self._batch,
            consumer=self.consumer,
            lease=self.lease,
            max_dead_letters=max_dead_letters,
            clock=self.clock,
        )
        self._leases = Leases(
            self._calls,
            keys,
            consumer=self.consumer,
            lease=self.lease,
            held=self._consumer.held,
            losses=self._losses,
        )
        self._outcomes = Outcomes(
            self._calls,
            keys,
            self._batch,
            self._consumer,
            self._losses,
            max_dead_letters=max_dead_letters,
        )
        self._receipts = Receipts(self._calls, keys, self._batch, self.consumer, self._losses)
        if self._calls.cluster:  # each queue's node is watched for lost data (`_losses`)
            self._losses.names = self._watched
            replied = self._batch.on_replied

            def on_replied() -> None:  # a queue to watch: its epoch is read now
                replied()
                self._losses.probe_now()

            self._batch.on_replied = on_replied
        self._room = Room(self._calls, keys)
        self._admin = Admin(self._calls, keys)
        self.runs = RedisRuns(
            self._calls, keys, self._batch, self._accept_at, self._receipts.starting
        )
        self._outcomes.runs = self.runs
        self._progress = ProgressStore(self._calls, keys)

    def __repr__(self) -> str:
        return f"<RedisBroker {safe_url(self.url)} prefix={self.prefix!r}>"

    # -- life ------------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, queues: Mapping[str, QueueInfo], *, serve: bool) -> AsyncIterator[None]:
        self._queues = dict(queues)
        self._serve = serve
        self._declared = dict(queues) if serve else {}

        async def redeclare() -> None:
            await self._admin.declare(self._declared)

        async def ready() -> None:
            await check_eviction(self._calls.client)
            await redeclare()
            # Sharded queues others declared: their ids' keys depend on it (lookups).
            for info in (await self._admin.declared()).values():
                if info.name not in self._queues:
                    self._shards.learn(info)
            for info in self._queues.values():
                self._shards.learn(info)
            await self._losses.start()

        self._calls.redeclare = redeclare
        async with self._calls.connected(ready):
            try:
                yield
            finally:
                # A client's replies streams die with it (each CLI call is a client).
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(REPLIES_GOODBYE),
                    contextlib.suppress(Exception),
                ):
                    await self._batch.close_replies()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._batch.submit_loop)  # its callers get its errors
            loops: list[tuple[str, Callable[[], Any]]] = [
                ("writing outcomes", self._batch.flush_loop),
                ("reading notices", self._receipts.reader_loop),
                ("the connection probe", self._calls.probe),
                ("the epoch probe", self._losses.probe_loop),
            ]
            if self._serve:
                for name, info in self._queues.items():
                    for part in k.shard_names(name, info.shards):
                        promote = functools.partial(self._consumer.promote_loop, part)
                        loops.append((f"promoting due tasks of {part!r}", promote))
                loops.append(("renewing leases", self._leases.renew_loop))
                beat = functools.partial(self._admin.heartbeat_loop, self.consumer, self._heartbeat)
                loops.append(("the heartbeat", beat))
            for what, loop in loops:
                nursery.start_soon(_riding_out_stalls, what, loop)

    def _watched(self) -> set[str]:
        """The queues (shards) whose nodes' losses this process watches on a cluster: those
        it serves and those it waits on."""
        names = set(self._batch.replied)
        for name, info in self._queues.items():
            names.update(k.shard_names(name, info.shards))
        return names

    def _heartbeat(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "queues": sorted(self._queues),
            "workers": self.workers,
            "in_flight": sum(len(held) for held in self._consumer.held.values()),
        }
        if self.report is not None:
            info["report"] = self.report()
        return info

    async def flush(self) -> None:
        await self._batch.flush()

    # -- the client side -------------------------------------------------------------------

    def accept(
        self, queue: QueueInfo, task: Task, *, due: float | None = None
    ) -> Coroutine[Any, Any, Admission]:
        # Not a coroutine itself: the common case (ready now, one shard, nothing to do with
        # the answer) is the batcher's coroutine alone, one layer less under each submit.
        if due is None and queue.shards < 2:
            return self._batch.submit_one(queue, task)
        return self._accept(queue, task, due)

    async def _accept(self, queue: QueueInfo, task: Task, due: float | None) -> Admission:
        when = ""
        if due is not None and due > self.clock():
            when = str(int(due * 1000))
        if queue.shards > 1:
            queue = self._shards.of(queue, task.id)
        (answer,) = await self._batch.submit(queue, [(task, when)])
        if answer in _NO_ROOM and queue.name != k.base(queue.name):
            self._shards.full[k.base(queue.name)] = queue
        if when and answer is Admission.ACCEPTED:
            task.state = TaskState.SCHEDULED
            self._consumer.wake_promoter(queue.name)
        return answer

    async def _accept_at(self, queue: QueueInfo, task: Task, due: float | None) -> Admission:
        return await self.accept(queue, task, due=due)

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        if queue.shards > 1:
            return await self._accept_sharded(queue, tasks)
        answers = await self._batch.submit(queue, [(task, "") for task in tasks])
        taken = 0
        for answer in answers:
            if answer in _NO_ROOM:
                break
            taken += 1
        return taken

    async def _accept_sharded(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        """Each shard's tasks in one submit, all at once (they share round trips)."""
        answers: dict[str, tuple[Admission, QueueInfo]] = {}

        async def submit(part: QueueInfo, group: list[Task]) -> None:
            got = await self._batch.submit(part, [(task, "") for task in group])
            for task, answer in zip(group, got, strict=True):
                answers[task.id] = (answer, part)

        async with trio.open_nursery() as nursery:
            for part, group in self._shards.group(queue, tasks):
                nursery.start_soon(submit, part, group)
        taken = 0
        for task in tasks:
            answer, part = answers[task.id]
            if answer in _NO_ROOM:
                self._shards.full[queue.name] = part
                break
            taken += 1
        return taken

    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        if queue.shards > 1:
            queue = self._shards.full.get(queue.name) or self._shards.parts(queue)[0]
        await self._room.wait(queue, timeout)

    async def lookup(self, task_id: str) -> Task | None:
        return await self._receipts.lookup(task_id)

    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        return await self._receipts.wait_settled(task_ids, timeout)

    def on_outcome(self, deliver: Callable[[Task], bool]) -> None:
        self._receipts.deliver = deliver

    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        return await self._outcomes.cancel(task_id, error)

    # -- the worker side -------------------------------------------------------------------

    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        if n <= 0:
            await trio.lowlevel.checkpoint()
            return []
        if queue.name not in self._declared:  # not served from connect: declare it now
            self._declared[queue.name] = queue
            await self._calls.retrying(
                "declare a queue", functools.partial(self._admin.declare, {queue.name: queue})
            )
        started = trio.current_time()
        if queue.shards > 1:
            tasks = await self._claim_sharded(queue, n, wait)
        else:
            tasks = await self._consumer.claim(queue, n, wait)
        if tasks and trio.current_time() - started >= self.lease * LATE_CLAIM:
            tasks = await self._still_ours(queue, tasks)
        return tasks

    async def _still_ours(self, queue: QueueInfo, tasks: list[Task]) -> list[Task]:
        """A claim answered late (its answer held up by a network cut or a stall): Redis
        may have handed the tasks to another process meanwhile, which then ran them. Their
        leases renewed at once (one round trip); only those still ours are handed out."""
        try:
            gone: set[int] = set()
            for part, group in self._shards.group(queue, tasks):
                gone.update(map(id, await self._leases.renew_now(part.name, group)))
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self.release(queue, tasks)
            raise
        return [task for task in tasks if id(task) not in gone]

    async def _claim_sharded(self, queue: QueueInfo, n: int, wait: float) -> list[Task]:
        """From the shard whose turn it is (one further each time: fair); if it has none,
        every other shard is asked at once, in one round trip, whether it has tasks, and
        the first that has is claimed from; all empty: a short blocking read on the first
        (a read blocks on one slot only). A few round trips, however many shards."""
        parts = self._shards.rotation(queue)
        tasks = await self._consumer.claim(parts[0], n, 0)
        if tasks:
            return tasks
        for part in await self._consumer.probe(parts[1:]):
            tasks = await self._consumer.claim(part, n, 0)
            if tasks:
                return tasks
        if wait <= 0:
            return []
        return await self._consumer.claim(parts[0], n, min(wait, SHARD_BLOCK))

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        if queue.shards > 1:
            lost: list[Task] = []
            for part, group in self._shards.group(queue, tasks):
                lost += await self._leases.renew(part, group)
            return lost
        return await self._leases.renew(queue, tasks)

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:
        if queue.shards > 1:
            for part, group in self._shards.group(queue, tasks):
                await self._leases.release(part, group)
            return
        await self._leases.release(queue, tasks)

    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        if queue.shards > 1:
            queue = self._shards.of(queue, task.id)
        return await self._outcomes.settle(queue, task, state, result, error)

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        if queue.shards > 1:
            queue = self._shards.of(queue, task.id)
        await self._outcomes.retry_at(queue, task, due)

    async def dead_letter(
        self, queue: QueueInfo, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        if queue.shards > 1:
            queue = self._shards.of(queue, task.id)
        return await self._outcomes.settle(queue, task, state, None, error, dead=True)

    async def take_start(
        self, queue: QueueInfo, key: str, within: float, task_id: str | None = None
    ) -> float:
        return await take_start(self._calls, self._keys, queue, key, within, task_id)

    async def tenant_figures(self, queue: str, limit: int) -> list[TenantFigures] | None:
        return await self._calls.retrying(
            "tenant figures", lambda: self._admin.tenant_figures(queue, limit)
        )

    async def rate_figures(self) -> dict[str, dict[str, Any]]:
        return await self._calls.retrying("rate figures", self._admin.rates)

    # -- dead letters and figures ----------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        return await self._admin.dead_letters(queue, limit)

    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        return await self._admin.take_dead_letters(queue, ids)

    async def outstanding(self, queue: str) -> int:
        return await self._admin.outstanding(queue)

    async def declared(self) -> dict[str, QueueInfo]:
        return await self._admin.declared()

    async def figures(self, queue: str) -> dict[str, int] | None:
        return await self._calls.retrying("figures", lambda: self._admin.figures(queue))

    # -- progress (_progress.py) -------------------------------------------------------------

    async def store_progress(
        self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]
    ) -> None:
        await self._progress.store(queue, updates)

    async def read_progress(self, task_ids: Collection[str]) -> dict[str, Progress]:
        return await self._progress.read(task_ids)

    async def declare_pipelines(self, pipelines: Mapping[str, Sequence[str]]) -> None:
        await self._admin.declare_pipelines(pipelines)

    async def declared_pipelines(self) -> dict[str, tuple[str, ...]]:
        return await self._admin.declared_pipelines()

    async def declare_payload_types(self, types: Mapping[str, str]) -> None:
        await self._admin.declare_payload_types(types)

    async def declared_payload_types(self) -> dict[str, str]:
        return await self._admin.declared_payload_types()

    async def status(self) -> dict[str, Any]:
        """Queue figures and live workers, read from Redis (for `queueing status`)."""
        return await self._admin.status()


async def _riding_out_stalls(what: str, loop: Callable[[], Any]) -> None:
    """Run a background loop; when Redis does not answer one of its calls within the
    call's limit (a stall: `redis-server` stopped, or busy for longer), start the loop
    again, instead of stopping every other loop of the process with it (the submits
    waiting for Redis among them, which then failed as if the system had stopped)."""
    while True:
        try:
            await loop()
            return
        except* NoAnswer as group:
            log.warning("redis %s: %s; starting it again", what, group.exceptions[0])
        await trio.sleep(STALL_PAUSE)

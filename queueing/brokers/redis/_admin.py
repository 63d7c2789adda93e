"""Admin: declared queues, dead letters, figures, and heartbeats of serving processes."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import suppress
from typing import Any

import trio

from ..._task import DeadLetter
from .._contract import QueueInfo, TenantFigures
from . import _keys as k
from ._calls import Calls
from ._maxmemory import out_of_memory, refused
from ._rates import rate_figures
from ._wire import decode_dead_letter, dumps

log = logging.getLogger("queueing.redis")

#: Seconds between two heartbeats of a serving process.
HEARTBEAT_EVERY = 2.0
#: A process whose last heartbeat is older than this is not listed as live.
HEARTBEAT_LIVE = 10.0
#: How long a stopping process tries to remove its heartbeat.
HEARTBEAT_GOODBYE = 1.0


def _limit(value: Any) -> int | None:
    """A declared tenant limit: an int >= 1, else None (anyone could have written there)."""
    if type(value) is int and value >= 1:
        return value
    return None


class Admin:
    """Reads and housekeeping that no task's life depends on."""

    def __init__(self, calls: Calls, keys: k.Keys) -> None:
        self.calls = calls
        self.keys = keys

    async def declare(self, queues: Mapping[str, QueueInfo]) -> None:
        """Make each queue's consumer group (and stream), and publish its limits."""
        import coredis.exceptions as ce

        client = self.calls.client
        for name, info in queues.items():
            for part in k.shard_names(name, info.shards):
                try:
                    await client.xgroup_create(self.keys.ready(part), k.GROUP, "0", mkstream=True)
                except ce.StreamDuplicateConsumerGroupError:
                    pass  # declared already (another process, or an earlier run)
                except ce.ResponseError as exc:
                    if out_of_memory(exc):
                        # Past maxmemory: a group made before still serves (a worker that
                        # starts then is what frees memory).
                        if not await self._has_group(part):
                            raise refused(f"declaring queue {part!r}") from exc
                    elif "BUSYGROUP" not in str(exc):
                        raise
            config: dict[str, Any] = {
                "maxsize": info.maxsize,
                "max_payload": info.max_payload,
                "result_ttl": min(info.result_ttl, k.MAX_TTL / 1000),  # JSON holds no inf
            }
            if info.shards > 1:
                config["shards"] = info.shards
            # Clients that know no Queue object hold tenant_maxsize too (submit.lua).
            if info.tenant_concurrency is not None:
                config["tenant_concurrency"] = info.tenant_concurrency
            if info.tenant_maxsize is not None:
                config["tenant_maxsize"] = info.tenant_maxsize
            try:
                await client.hset(self.keys.queues(), {name: dumps(config)})
            except ce.ResponseError as exc:
                if not out_of_memory(exc):
                    raise
                # Past maxmemory: clients read the limits declared before (if any).
                log.warning("queue %r: its limits not published: %s", name, refused("it"))

    async def _has_group(self, part: str) -> bool:
        """Whether the queue (shard) `part` has its consumer group."""
        try:
            groups = await self.calls.client.xinfo_groups(self.keys.ready(part))
        except Exception:  # no such stream
            return False
        return any(str(group.get("name")) == k.GROUP for group in groups)

    async def declared(self) -> dict[str, QueueInfo]:
        raw = await self.calls.retrying(
            "declared queues", lambda: self.calls.client.hgetall(self.keys.queues())
        )
        queues = {}
        for name, value in raw.items():
            try:
                doc = json.loads(value)
                queues[str(name)] = QueueInfo(
                    str(name),
                    int(doc["maxsize"]),
                    int(doc["max_payload"]),
                    float(doc["result_ttl"]),
                    shards=int(doc.get("shards", 1)),
                    tenant_concurrency=_limit(doc.get("tenant_concurrency")),
                    tenant_maxsize=_limit(doc.get("tenant_maxsize")),
                )
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("queue %r: unreadable declaration %r (%s)", name, value, exc)
        return queues

    async def declare_pipelines(self, pipelines: Mapping[str, Sequence[str]]) -> None:
        """Publish pipelines (name: stage queues) for clients that know none."""
        docs = {name: dumps(list(stages)) for name, stages in pipelines.items()}
        if docs:
            key = self.keys.pipelines()
            await self.calls.retrying(
                "declare pipelines", lambda: self.calls.client.hset(key, docs)
            )

    async def declare_payload_types(self, types: Mapping[str, str]) -> None:
        """Publish the queues' payload types (name: description) for clients that know none."""
        docs = dict(types)
        if docs:
            key = self.keys.payload_types()
            await self.calls.retrying(
                "declare payload types", lambda: self.calls.client.hset(key, docs)
            )

    async def declared_payload_types(self) -> dict[str, str]:
        raw = await self.calls.retrying(
            "declared payload types",
            lambda: self.calls.client.hgetall(self.keys.payload_types()),
        )
        return {str(name): str(value) for name, value in raw.items()}

    async def declared_pipelines(self) -> dict[str, tuple[str, ...]]:
        raw = await self.calls.retrying(
            "declared pipelines", lambda: self.calls.client.hgetall(self.keys.pipelines())
        )
        pipelines = {}
        for name, value in raw.items():
            try:
                stages = json.loads(value)
                if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
                    raise ValueError("not a list of queue names")
                pipelines[str(name)] = tuple(stages)
            except ValueError as exc:
                log.warning("pipeline %r: unreadable declaration %r (%s)", name, value, exc)
        return pipelines

    async def outstanding(self, queue: str) -> int:
        total = 0
        for part in self.keys.names(queue):
            get = functools.partial(self.calls.client.get, self.keys.outstanding(part))
            value = await self.calls.retrying("outstanding", get)
            total += max(0, int(value or 0))
        return total

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        if limit <= 0:
            return []
        letters: list[DeadLetter] = []
        for part in self.keys.names(queue):
            read = functools.partial(self.calls.client.xrevrange, self.keys.dead(part), count=limit)
            entries = await self.calls.retrying("dead letters", read)
            letters += [
                decode_dead_letter(str(entry.field_values.get("d", "")))
                for entry in reversed(entries)
            ]
        if len(self.keys.names(queue)) > 1:  # the newest `limit` of all shards, oldest first
            letters.sort(key=lambda letter: letter.failed_at)
        return letters[-limit:]

    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        wanted = [] if ids is None else list(ids)
        if ids is not None and not wanted:
            return []
        letters: list[DeadLetter] = []
        for part in self.keys.names(queue):
            taken = await self.calls.eval(
                "take dead letters", "take_dead", [self.keys.dead(part)], wanted
            )
            letters += [decode_dead_letter(str(raw)) for raw in taken]
        return letters

    async def figures(self, queue: str) -> dict[str, int]:
        """One queue's figures, read from Redis (all processes), summed over its shards."""
        total: dict[str, int] = {}
        for part in self.keys.names(queue):
            for key, value in (await self._figures(part)).items():
                total[key] = total.get(key, 0) + value
        return total

    async def _figures(self, name: str) -> dict[str, int]:
        client = self.calls.client
        ready = self.keys.ready(name)
        try:
            summary = await client.xpending(ready, k.GROUP)
            in_flight = int(getattr(summary, "pending", 0) or 0)
        except Exception:  # no group (yet): nothing in flight
            in_flight = 0
        # Entries not read yet: the group's lag (Redis 7); without it, the stream's length
        # less those in flight, which counts too the finished entries not trimmed yet
        # (finish.lua: behind a running one, or in the stream node the last trim ended in).
        unread = None
        try:
            for group in await client.xinfo_groups(ready):
                if str(group.get("name")) == k.GROUP and group.get("lag") is not None:
                    unread = int(group["lag"] or 0)
        except Exception:  # no stream (yet)
            unread = 0
        if unread is None:
            unread = max(0, await client.xlen(ready) - in_flight)
        stats = await client.hgetall(self.keys.stats(name))
        return {
            "outstanding": max(0, int(await client.get(self.keys.outstanding(name)) or 0)),
            "in_flight": in_flight,
            "ready": unread
            + await client.zcard(self.keys.waiting(name))
            + await client.zcard(self.keys.fair(name)[1]),
            "scheduled": await client.zcard(self.keys.delayed(name)),
            "dead_letters": await client.xlen(self.keys.dead(name)),
            **{str(key): int(value) for key, value in stats.items()},
        }

    async def tenant_figures(self, queue: str, limit: int) -> list[TenantFigures]:
        """The tenants of a queue (summed over its shards) with the most tasks waiting,
        then running (lua/_fair.lua's `backlog` and `tenants`); [] for a queue that never
        had a task with a tenant. The tasks without a tenant are not listed."""
        if limit <= 0:
            return []
        waiting: dict[str, int] = {}
        running: dict[str, int] = {}
        client = self.calls.client
        for part in self.keys.names(queue):
            _, _, tenants, backlog, *_ = self.keys.fair(part)
            busiest = await client.zrange(backlog, 0, limit, rev=True, withscores=True)
            for item in busiest:
                name, score = str(item[0]), int(float(item[1]))
                if name:
                    waiting[name] = waiting.get(name, 0) + score
            for field, value in (await client.hgetall(tenants)).items():
                if str(field).startswith("r:"):
                    name = str(field)[2:]
                    running[name] = running.get(name, 0) + max(0, int(value))
        figures = [
            TenantFigures(name, waiting.get(name, 0), running.get(name, 0))
            for name in {*waiting, *running}
        ]
        figures.sort(key=lambda f: (-f.waiting, -f.running, f.tenant))
        return figures[:limit]

    async def status(self) -> dict[str, Any]:
        """Queue figures and live workers, read from Redis (for `queueing status`)."""
        client = self.calls.client
        queues = await client.hgetall(self.keys.queues())
        result: dict[str, Any] = {"queues": {}, "workers": {}}
        for name in sorted(queues):
            result["queues"][name] = await self.figures(name)
        result["rates"] = await self.rates(sorted(queues))
        now = time.time()
        for worker, raw in (await client.hgetall(self.keys.workers())).items():
            with suppress(ValueError, TypeError, AttributeError):
                info = json.loads(raw)
                if now - float(info.get("ts", 0)) < HEARTBEAT_LIVE:
                    result["workers"][worker] = info
        return result

    async def rates(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """`Broker.rate_figures` of the queues `names` (default: every declared one)."""
        if names is None:
            names = sorted(await self.calls.client.hkeys(self.keys.queues()))
        return await rate_figures(self.calls, self.keys, names)

    async def heartbeat_loop(self, consumer: str, info: Callable[[], dict[str, Any]]) -> None:
        """Background, in a serving process: publish `info()` every `HEARTBEAT_EVERY`."""
        key = self.keys.workers()
        try:
            while True:
                beat = dumps({"ts": time.time(), **info()})
                write = functools.partial(self.calls.client.hset, key, {consumer: beat})
                try:
                    await self.calls.retrying("heartbeat", write)
                except Exception as exc:
                    if not out_of_memory(exc):
                        raise
                    # Past maxmemory: the process serves on (its tasks free memory).
                    log.warning("redis heartbeat: %s", refused("the heartbeat"))
                await trio.sleep(HEARTBEAT_EVERY)
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(HEARTBEAT_GOODBYE),
                suppress(Exception),
            ):
                await self.calls.client.hdel(key, [consumer])

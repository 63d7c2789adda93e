"""Admin in the results store: declared queues, dead letters, figures, heartbeats.

Dead letters are kept in Redis, in the Redis broker's layout (a capped stream per queue),
so they can be listed, taken by id and purged: a RabbitMQ queue can only be read from its
head. What RabbitMQ itself dead-letters reaches them through `_coroner.py`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from .._contract import QueueInfo
from ..redis import _keys as k
from ..redis._admin import HEARTBEAT_LIVE, Admin, _limit
from ..redis._wire import dumps

log = logging.getLogger("queueing.rabbitmq")


def _declaration(info: QueueInfo) -> dict[str, Any]:
    """What `declare` publishes of a queue; clients that know no Queue object hold its
    tenant limits too (`tenant_maxsize` is checked at submit, `reserve.lua`)."""
    doc: dict[str, Any] = {
        "maxsize": info.maxsize,
        "max_payload": info.max_payload,
        "result_ttl": min(info.result_ttl, k.MAX_TTL / 1000),  # JSON holds no inf
        "max_deliveries": info.max_deliveries,
    }
    if info.tenant_concurrency is not None:
        doc["tenant_concurrency"] = info.tenant_concurrency
    if info.tenant_maxsize is not None:
        doc["tenant_maxsize"] = info.tenant_maxsize
    return doc


class StoreAdmin(Admin):
    """The Redis broker's admin reads (dead letters, outstanding counts, heartbeats), with
    this broker's declarations and figures."""

    async def declare(self, queues: Mapping[str, QueueInfo]) -> None:
        """Publish the queues' limits (for clients that know none: `declared`)."""
        if not queues:
            return
        config = {name: dumps(_declaration(info)) for name, info in queues.items()}
        await self.calls.retrying(
            "declare queues", lambda: self.calls.client.hset(self.keys.queues(), config)
        )

    def rabbitmq_queues(self) -> str:
        """The key of the set of RabbitMQ queues declared under this prefix."""
        return f"{{{self.keys.prefix}}}:rabbitmq"

    async def note_rabbitmq_queues(self, names: list[str]) -> None:
        key = self.rabbitmq_queues()
        await self.calls.retrying(
            "note RabbitMQ queues", lambda: self.calls.client.sadd(key, names)
        )

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
                    int(doc.get("max_deliveries", 3)),
                    tenant_concurrency=_limit(doc.get("tenant_concurrency")),
                    tenant_maxsize=_limit(doc.get("tenant_maxsize")),
                )
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("queue %r: unreadable declaration %r (%s)", name, value, exc)
        return queues

    async def status_with(self, ready: Mapping[str, int]) -> dict[str, Any]:
        """Queue figures and live workers (for `queueing status`); `ready` are the ready
        messages RabbitMQ counts, by queue."""
        client = self.calls.client
        queues = await client.hgetall(self.keys.queues())
        result: dict[str, Any] = {"queues": {}, "workers": {}}
        for name in sorted(queues):
            stats = await client.hgetall(self.keys.stats(name))
            outstanding = int(await client.get(self.keys.outstanding(name)) or 0)
            result["queues"][name] = {
                "outstanding": outstanding,
                "ready": ready.get(name, 0),
                "dead_letters": await client.xlen(self.keys.dead(name)),
                **{key: int(value) for key, value in stats.items()},
            }
        result["rates"] = await self.rates(sorted(queues))
        now = time.time()
        for worker, raw in (await client.hgetall(self.keys.workers())).items():
            with suppress(ValueError, TypeError, AttributeError):
                info = json.loads(raw)
                if now - float(info.get("ts", 0)) < HEARTBEAT_LIVE:
                    result["workers"][worker] = info
        in_flight: dict[str, int] = {}
        for info in result["workers"].values():
            for name, count in (info.get("held") or {}).items():
                in_flight[name] = in_flight.get(name, 0) + int(count)
        for name, figures in result["queues"].items():
            figures["in_flight"] = in_flight.get(name, 0)
        return result

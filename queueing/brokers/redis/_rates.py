"""Rate limits in Redis: `Broker.take_start` as one script call (`rate.lua`), and the
figures `queueing status` shows. The RabbitMQ broker keeps its records in Redis and uses
this module, with the same script, keys and figures.

Keys, under the queue's hash tag: `{P:Q}:rate:<key>` (a hash: the key's next free booking,
or start without bookings, and its next free start by the starts made; microseconds of
Redis's clock; expiring once they are past), `{P:Q}:booked:<task id>` (the start booked for
a deferred task, kept an hour past it) and `{P:Q}:rates` (a hash: the limit, starts in the
current and the previous period, all starts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from ..._ratelimit import BOOKING_KEEP
from .._contract import QueueInfo
from . import _keys as k
from ._calls import Calls

_US = 1_000_000


def times_key(keys: k.Keys, queue: str, key: str) -> str:
    return keys.of(queue, f"rate:{key}")


def rates_key(keys: k.Keys, queue: str) -> str:
    return keys.of(queue, "rates")


def booked_key(keys: k.Keys, queue: str, task_id: str) -> str:
    return keys.of(queue, f"booked:{task_id}")


async def take_start(
    calls: Calls, keys: k.Keys, queue: QueueInfo, key: str, within: float, task_id: str | None
) -> float:
    """`Broker.take_start` (see the contract): one atomic script call."""
    limit = queue.rate_limit
    assert limit is not None
    args = [
        max(1, round(limit.interval * _US)),
        max(0, round(within * _US)) if math.isfinite(within) else 2**52,
        max(1, round(limit.per * _US)),
        str(limit),
        "0" if task_id is None else "1",
        round(limit.slack * _US),
        round(BOOKING_KEEP * 1000),
    ]
    script_keys = [
        times_key(keys, queue.name, key),
        rates_key(keys, queue.name),
        booked_key(keys, queue.name, task_id or ""),
    ]
    wait = await calls.eval("take a start", "rate", script_keys, args)
    return int(wait) / _US


def last_period(doc: dict[str, Any], now: float) -> int:
    """Starts in the last complete period, from a rates hash (or a row of the same fields)
    read at `now` (seconds)."""
    try:
        per = int(doc["per"]) / _US
        window = int(doc["w"])
    except (KeyError, TypeError, ValueError):
        return 0
    current = math.floor(now / per)
    if window == current:
        return int(doc.get("prev") or 0)
    if window == current - 1:
        return int(doc.get("cur") or 0)
    return 0


async def rate_figures(calls: Calls, keys: k.Keys, queues: Iterable[str]) -> dict[str, Any]:
    """For `queueing status`: each rate-limited queue's limit, its starts in the last
    complete period (over every process) and all its starts."""
    found: dict[str, Any] = {}
    for name in queues:
        doc = await calls.client.hgetall(rates_key(keys, name))
        if doc:
            doc = {str(a): str(b) for a, b in doc.items()}
            found[name] = {
                "limit": doc.get("limit", "?"),
                "last_period": last_period(doc, time.time()),
                "started": int(doc.get("started") or 0),
            }
    return found

"""Redis's memory limit: what its OOM answers mean, and a check of its eviction policy.

A Redis past `maxmemory` under `maxmemory-policy noeviction` refuses the commands that may
grow memory (XADD, HSET, SET, ...) with an error that starts with `OOM`, and still runs
the rest: reads, acknowledgements (XACK), deletes. A script is refused at its first such
command only when it has written nothing before it (Redis keeps a script atomic): an OOM
answer to a script means that the script stored nothing.

Under any other policy Redis makes room by deleting keys (`allkeys-*`: any key; `volatile-*`:
keys with a TTL, which records and results have): tasks, records and outcomes vanish
unnoticed until a receipt finds its record gone (`TaskLost`). A queue needs `noeviction`
(as Redis's own docs, BullMQ and Sidekiq say): every process checks at connect and warns.
"""

from __future__ import annotations

import logging
from typing import Any

from ..._exceptions import BrokerOutOfMemory

log = logging.getLogger("queueing.redis")

#: The one policy under which Redis deletes nothing to make room.
NOEVICTION = "noeviction"

#: What to do about a Redis out of memory.
OOM_FIX = (
    "raise maxmemory (CONFIG SET maxmemory <bytes>, or maxmemory in redis.conf; 0: no "
    "limit), or make room: let workers drain the queues (finishing frees memory), keep "
    "results for less time (Queue(result_ttl=...)), keep fewer dead letters "
    "(max_dead_letters=...)"
)


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is Redis's answer to a write past `maxmemory` (noeviction)."""
    import coredis.exceptions as ce

    return isinstance(exc, ce.ResponseError) and str(exc).startswith("OOM ")


def refused(what: str) -> BrokerOutOfMemory:
    """The error of a write Redis refused for memory: names the limit and the fix."""
    return BrokerOutOfMemory(
        f"{what} refused: Redis is out of memory (used memory > maxmemory, "
        f"maxmemory-policy {NOEVICTION}), nothing of it was stored; {OOM_FIX}"
    )


def eviction_warning(policy: str) -> str | None:
    """The warning for a Redis whose `maxmemory-policy` is `policy` (None: noeviction)."""
    if policy in ("", NOEVICTION):
        return None
    return (
        f"Redis's maxmemory-policy is {policy!r}: when it reaches maxmemory it deletes keys "
        f"to make room, and a task, its record or its outcome may vanish (its receipt then "
        f"ends in TaskLost). A queue needs maxmemory-policy {NOEVICTION}: CONFIG SET "
        f"maxmemory-policy {NOEVICTION} (or in redis.conf), and a maxmemory with room for "
        "the queues and the results kept"
    )


async def check_eviction(client: Any) -> str:
    """Warn (log) if Redis may evict keys; its policy ("" if Redis would not say: a managed
    Redis may refuse INFO)."""
    try:
        info = await client.info("memory")
    except Exception:  # the check is advice: a Redis that hides it still serves
        return ""
    policy = str(info.get("maxmemory_policy", ""))
    warning = eviction_warning(policy)
    if warning is not None:
        log.warning("%s", warning)
    return policy

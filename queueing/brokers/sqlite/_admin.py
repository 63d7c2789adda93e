"""The requests of the admin side (dead letters, declared queues, processes, cleanup,
`status`), run by the writer thread inside a transaction (see `_ops.py`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._contract import QueueInfo
from ._records import loads
from ._tx import Tx

#: Seconds a process's heartbeat may be missed before `status` and cleanup forget it.
PROCESS_STALE = 60.0


def dead_letters(tx: Tx, queue: str, limit: int) -> list[str]:
    rows = tx.execute(
        "SELECT letter FROM dead_letters WHERE queue = ? ORDER BY seq DESC LIMIT ?",
        (queue, limit),
    ).fetchall()
    return [row[0] for row in reversed(rows)]


def take_dead_letters(tx: Tx, queue: str, ids: Sequence[str] | None) -> list[str]:
    if ids is None:
        rows = tx.execute(
            "DELETE FROM dead_letters WHERE queue = ? RETURNING seq, letter", (queue,)
        ).fetchall()
    else:
        rows = []
        for task_id in ids:
            rows += tx.execute(
                "DELETE FROM dead_letters WHERE queue = ? AND id = ? RETURNING seq, letter",
                (queue, task_id),
            ).fetchall()
    return [letter for _, letter in sorted(rows)]


def declare(tx: Tx, infos: Sequence[QueueInfo], process: tuple[Any, ...] | None) -> None:
    """Make the queues' rows; a serving process (`process` is its row) updates their
    limits, marks them served and says it is alive."""
    for info in infos:
        q = tx.queue(info.name, info)
        if process is not None and q is not None:
            tx.execute(
                "UPDATE queues SET maxsize = ?, max_payload = ?, result_ttl = ?, "
                "served_at = ? WHERE name = ?",
                (info.maxsize, info.max_payload, min(info.result_ttl, 1e18), tx.now, info.name),
            )
            limits = {
                "tenant_concurrency": info.tenant_concurrency,
                "tenant_maxsize": info.tenant_maxsize,
            }
            if any(limit is not None for limit in limits.values()):
                _publish(tx, TENANTS_KEY, [(info.name, json.dumps(limits))])
            else:
                tx.execute("DELETE FROM meta WHERE key = ?", (TENANTS_KEY + info.name,))
    if process is not None:
        tx.execute(
            "INSERT OR REPLACE INTO processes (owner, pid, host, queues, workers, "
            "started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tx.owner, *process, tx.now, tx.now),
        )


#: The `meta` rows of a served queue's tenant limits: `tenants:NAME`, a JSON object of
#: `tenant_concurrency` and `tenant_maxsize` (no schema version needed for them), so that a
#: client that knows the queue only by name holds its submits to `tenant_maxsize`.
TENANTS_KEY = "tenants:"


def declared(tx: Tx) -> list[tuple[str, int, int, float, Any]]:
    return tx.execute(
        "SELECT name, maxsize, max_payload, result_ttl, meta.value FROM queues "
        "LEFT JOIN meta ON meta.key = ? || name WHERE served_at IS NOT NULL",
        (TENANTS_KEY,),
    ).fetchall()


#: The `meta` rows of declared pipelines: `pipeline:NAME`, its stages as JSON text (SQLite
#: keeps text as text in an INTEGER column), so that no schema version is needed for them.
PIPELINE_KEY = "pipeline:"


def _publish(tx: Tx, prefix: str, items: Sequence[tuple[str, str]]) -> None:
    """Keep a `meta` row `prefix + name` of each (name, text), replacing the one before."""
    for name, text in items:
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (prefix + name, text))


def _published(tx: Tx, prefix: str) -> list[tuple[str, Any]]:
    """The (name, text) of every `meta` row `prefix + name`."""
    size = len(prefix)
    rows = tx.execute(
        "SELECT substr(key, ?), value FROM meta WHERE substr(key, 1, ?) = ?",
        (size + 1, size, prefix),
    ).fetchall()
    return [(str(name), value) for name, value in rows]


def declare_pipelines(tx: Tx, pipelines: Sequence[tuple[str, str]]) -> None:
    """Publish pipelines (name, its stage queues as a JSON list) for clients that know none."""
    _publish(tx, PIPELINE_KEY, pipelines)


def declared_pipelines(tx: Tx) -> list[tuple[str, Any]]:
    return _published(tx, PIPELINE_KEY)


#: The `meta` rows of published payload types: `payload:NAME`, a description as JSON text.
PAYLOAD_KEY = "payload:"


def declare_payload_types(tx: Tx, types: Sequence[tuple[str, str]]) -> None:
    """Publish the queues' payload types (name, description) for clients that know none."""
    _publish(tx, PAYLOAD_KEY, types)


def declared_payload_types(tx: Tx) -> list[tuple[str, Any]]:
    return _published(tx, PAYLOAD_KEY)


def heartbeat(tx: Tx) -> None:
    tx.execute("UPDATE processes SET seen_at = ? WHERE owner = ?", (tx.now, tx.owner))


def leave(tx: Tx) -> None:
    tx.execute("DELETE FROM processes WHERE owner = ?", (tx.owner,))


def cleanup(tx: Tx, rows: int) -> int:
    """Forget outcomes whose TTL ran out, and processes long gone; returns how many
    outcomes were deleted."""
    deleted = tx.execute(
        "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE keep_until <= ? LIMIT ?)",
        (tx.now, rows),
    ).rowcount
    tx.execute("DELETE FROM processes WHERE seen_at < ?", (tx.now - PROCESS_STALE,))
    return int(deleted)


#: The outcome counters a queue's row keeps (`figures`, `status`).
COUNTERS = ("submitted", "succeeded", "failed", "retried", "dead_lettered", "cancelled", "expired")


def figures(tx: Tx, name: str) -> dict[str, int] | None:
    """One queue's figures over every process (see `Broker.figures`); None: not declared."""
    row = tx.execute(
        f"SELECT outstanding, {', '.join(COUNTERS)} FROM queues WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        return None
    found = dict(zip(("outstanding", *COUNTERS), row, strict=True))
    (found["scheduled"],) = tx.execute(
        "SELECT count(*) FROM tasks WHERE queue = ? AND avail_at IS NOT NULL "
        "AND state = 'scheduled'",
        (name,),
    ).fetchone()
    (found["in_flight"],) = tx.execute(
        "SELECT count(*) FROM tasks WHERE queue = ? AND lease_until IS NOT NULL", (name,)
    ).fetchone()
    (found["dead_letters"],) = tx.execute(
        "SELECT count(*) FROM dead_letters WHERE queue = ?", (name,)
    ).fetchone()
    return found


def status(tx: Tx) -> dict[str, Any]:
    """Queues (counts by state, outcome counters) and the live processes, for `status`."""
    queues: dict[str, dict[str, Any]] = {}
    for row in tx.execute(
        "SELECT name, maxsize, outstanding, submitted, succeeded, failed, retried, "
        "dead_lettered, cancelled, expired FROM queues ORDER BY name"
    ):
        name, *counts = row
        queues[name] = dict(
            zip(
                (
                    "maxsize",
                    "outstanding",
                    "submitted",
                    "succeeded",
                    "failed",
                    "retried",
                    "dead_lettered",
                    "cancelled",
                    "expired",
                ),
                counts,
                strict=True,
            )
        )
        queues[name].update(ready=0, scheduled=0, in_flight=0, dead_letters=0)
    names = {"pending": "ready", "scheduled": "scheduled", "running": "in_flight"}
    for queue, state, count in tx.execute(
        "SELECT queue, state, count(*) FROM tasks "
        "WHERE avail_at IS NOT NULL OR lease_until IS NOT NULL OR fseq IS NOT NULL "
        "GROUP BY queue, state"
    ):
        if queue in queues and state in names:
            queues[queue][names[state]] = count
    for queue, count in tx.execute("SELECT queue, count(*) FROM dead_letters GROUP BY queue"):
        if queue in queues:
            queues[queue]["dead_letters"] = count
    running = dict(
        tx.execute(
            "SELECT owner, count(*) FROM tasks WHERE lease_until IS NOT NULL GROUP BY owner"
        ).fetchall()
    )
    workers = {}
    for owner, pid, host, served, serving, seen_at in tx.execute(
        "SELECT owner, pid, host, queues, workers, seen_at FROM processes WHERE seen_at >= ?",
        (tx.now - PROCESS_STALE,),
    ):
        workers[owner] = {
            "pid": pid,
            "host": host,
            "queues": loads(served),
            "workers": serving,
            "in_flight": running.get(owner, 0),
            "seen_at": seen_at,
        }
    return {"queues": queues, "workers": workers}

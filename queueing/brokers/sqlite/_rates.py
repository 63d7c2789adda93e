"""Rate limits in the database file: `Broker.take_start` as one request of the writer
thread (so one write transaction: atomic across the processes sharing the file), and the
figures `queueing status` shows.

Two tables, made at their first use with `CREATE TABLE IF NOT EXISTS` rather than by a
migration of the versioned schema (`_schema.py`): a file without them is read the same by
every version, and a version that does not know them ignores them.

- `rate_starts`: per queue and key, the next free booking (or start, without bookings)
  and the next free start by the starts made (`time.time()` seconds);
- `rate_bookings`: per queue and task id, the start booked for a deferred task;
- `rate_figures`: per queue, the limit, starts in the current and the previous period (the
  window `w` is the period's number since the epoch), and all starts.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from ..._ratelimit import BOOKING_KEEP, take_for_task
from .._contract import QueueInfo
from ._tx import Tx

_TABLES = (
    "CREATE TABLE IF NOT EXISTS rate_starts (queue TEXT NOT NULL, key TEXT NOT NULL, "
    "next_start REAL NOT NULL, started_at REAL, PRIMARY KEY (queue, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rate_bookings (queue TEXT NOT NULL, task_id TEXT NOT NULL, "
    "start REAL NOT NULL, PRIMARY KEY (queue, task_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rate_figures (queue TEXT PRIMARY KEY, rate_limit TEXT NOT NULL, "
    "per REAL NOT NULL, w INTEGER NOT NULL, cur INTEGER NOT NULL, prev INTEGER NOT NULL, "
    "started INTEGER NOT NULL)",
)
#: Stale `rate_starts` rows (their start long past) are dropped once a queue's figures pass
#: a multiple of this many starts.
SWEEP_EVERY = 1000


def _missing(exc: sqlite3.OperationalError) -> bool:
    return "no such table" in str(exc)


def take_start(tx: Tx, queue: QueueInfo, key: str, within: float, task_id: str | None) -> float:
    """`Broker.take_start` (see the contract), in the writer thread's transaction."""
    try:
        return _take(tx, queue, key, within, task_id)
    except sqlite3.OperationalError as exc:
        if not _missing(exc):
            raise
        for statement in _TABLES:
            tx.execute(statement)
        return _take(tx, queue, key, within, task_id)


def _take(tx: Tx, queue: QueueInfo, key: str, within: float, task_id: str | None) -> float:
    limit = queue.rate_limit
    assert limit is not None
    now = tx.now
    name = queue.name
    row = tx.execute(
        "SELECT next_start, started_at FROM rate_starts WHERE queue = ? AND key = ?", (name, key)
    ).fetchone()
    next_start, started_at = (None, None) if row is None else row
    if task_id is None:
        start = now if next_start is None else max(float(next_start), now)
        wait = start - now
        if wait <= within:
            _store(tx, name, key, start + limit.interval, None)
            _count(tx, queue, now)
        return wait
    found = tx.execute(
        "SELECT start FROM rate_bookings WHERE queue = ? AND task_id = ?", (name, task_id)
    ).fetchone()
    wait, booked, next_start, started_at = take_for_task(
        None if found is None else float(found[0]), next_start, started_at, now, limit, within
    )
    assert next_start is not None
    _store(tx, name, key, next_start, started_at)
    if booked is None:
        tx.execute("DELETE FROM rate_bookings WHERE queue = ? AND task_id = ?", (name, task_id))
        _count(tx, queue, now)
    else:
        tx.execute(
            "INSERT INTO rate_bookings (queue, task_id, start) VALUES (?, ?, ?) "
            "ON CONFLICT (queue, task_id) DO UPDATE SET start = excluded.start",
            (name, task_id, booked),
        )
    return wait


def _store(tx: Tx, queue: str, key: str, next_start: float, started_at: float | None) -> None:
    tx.execute(
        "INSERT INTO rate_starts (queue, key, next_start, started_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (queue, key) DO UPDATE SET next_start = excluded.next_start, "
        "started_at = excluded.started_at",
        (queue, key, next_start, started_at),
    )


def _count(tx: Tx, queue: QueueInfo, now: float) -> None:
    """One start more in the queue's figures (and, now and then, a sweep of stale rows)."""
    limit = queue.rate_limit
    assert limit is not None
    window = math.floor(now / limit.per)
    found = tx.execute(
        "SELECT w, cur, started FROM rate_figures WHERE queue = ?", (queue.name,)
    ).fetchone()
    w, cur, started = found if found is not None else (-1, 0, 0)
    if w == window:
        w, cur, prev = window, cur + 1, None
    else:
        w, cur, prev = window, 1, (cur if w == window - 1 else 0)
    tx.execute(
        "INSERT INTO rate_figures (queue, rate_limit, per, w, cur, prev, started) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (queue) DO UPDATE SET "
        "rate_limit = excluded.rate_limit, per = excluded.per, w = excluded.w, "
        "cur = excluded.cur, prev = coalesce(?, prev), started = excluded.started",
        (queue.name, str(limit), limit.per, w, cur, prev or 0, started + 1, prev),
    )
    if (started + 1) % SWEEP_EVERY == 0:
        tx.execute(
            "DELETE FROM rate_starts WHERE queue = ? AND next_start < ? "
            "AND coalesce(started_at, 0) < ?",
            (queue.name, now, now),
        )
        tx.execute(
            "DELETE FROM rate_bookings WHERE queue = ? AND start < ?",
            (queue.name, now - BOOKING_KEEP),
        )


def rate_figures(tx: Tx) -> dict[str, Any]:
    """For `queueing status`: each rate-limited queue's limit, its starts in the last
    complete period (over every process) and all its starts."""
    try:
        rows = tx.execute(
            "SELECT queue, rate_limit, per, w, cur, prev, started FROM rate_figures"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if not _missing(exc):
            raise
        return {}
    found = {}
    for queue, limit, per, w, cur, prev, started in rows:
        current = math.floor(tx.now / per)
        last = prev if w == current else cur if w == current - 1 else 0
        found[queue] = {"limit": limit, "last_period": last, "started": started}
    return found

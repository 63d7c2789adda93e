"""One write (or read) transaction of the writer thread, as the requests of a batch see it.

A request is a function `op(tx, *args)` run in the writer thread inside a transaction
that other requests of the same batch share. `Tx` gives them the connection, one clock
reading, and per-queue counters kept in memory until the transaction ends (many accepts
to one queue update its row once). Requests must not change objects the event loop
holds: a transaction that hits a lock is rolled back and run again.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..._task import TaskState

#: The counter of `queues` that each outcome adds to.
COUNTERS = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.DEAD_LETTERED: "dead_lettered",
    TaskState.CANCELLED: "cancelled",
    TaskState.EXPIRED: "expired",
}


class QueueRow:
    """A queue's row as this transaction changes it."""

    __slots__ = ("changes", "fair", "maxsize", "outstanding", "result_ttl", "seq")

    def __init__(
        self, maxsize: int, result_ttl: float, outstanding: int, fair: bool, seq: int
    ) -> None:
        self.maxsize = maxsize
        self.result_ttl = result_ttl
        self.outstanding = outstanding
        #: Whether the queue is in fair mode (it had a task with a tenant: `_fair.py`).
        self.fair = fair
        #: The last number handed out in the queue's fair-mode order (`next_seq`).
        self.seq = seq
        self.changes: dict[str, int] = {}

    def add(self, column: str, amount: int = 1) -> None:
        self.changes[column] = self.changes.get(column, 0) + amount
        if column == "outstanding":
            self.outstanding += amount

    def next_seq(self) -> int:
        """A number above every one the queue's `seq` handed out before."""
        self.add("seq")
        self.seq += 1
        return self.seq


class Tx:
    """The shared state of one transaction."""

    def __init__(self, conn: sqlite3.Connection, now: float, owner: str) -> None:
        self.conn = conn
        self.execute = conn.execute
        self.now = now
        #: The process this broker is (the owner of the leases it takes).
        self.owner = owner
        #: Wake-ups to give in this process once the transaction is committed.
        self.effects: set[str] = set()
        self._queues: dict[str, QueueRow | None] = {}
        self._seq: int | None = None

    def queue(self, name: str, info: Any = None) -> QueueRow | None:
        """The queue's row (made from `info`, a `QueueInfo`, if it has none yet)."""
        row = self._queues.get(name)
        if row is None:
            found = self.execute(
                "SELECT maxsize, result_ttl, outstanding, fair, seq FROM queues WHERE name = ?",
                (name,),
            ).fetchone()
            if found is None and info is not None:
                self.execute(
                    "INSERT INTO queues (name, maxsize, max_payload, result_ttl) "
                    "VALUES (?, ?, ?, ?)",
                    (name, info.maxsize, info.max_payload, _ttl(info.result_ttl)),
                )
                found = (info.maxsize, info.result_ttl, 0, 0, 0)
            if found is None:
                return None
            maxsize, ttl, outstanding, fair, seq = found
            row = self._queues[name] = QueueRow(maxsize, _ttl_of(ttl), outstanding, bool(fair), seq)
        return row

    def settle_seq(self) -> int:
        """The number that orders the outcomes recorded in this transaction after every
        outcome recorded before (`wait_settled` reads outcomes by it)."""
        if self._seq is None:
            self._seq = self.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'settled' RETURNING value"
            ).fetchone()[0]
        return self._seq

    def cursor(self) -> int:
        """The number of the last outcome recorded so far; outcomes recorded later in this
        transaction get a higher one."""
        self._seq = None
        return int(self.execute("SELECT value FROM meta WHERE key = 'settled'").fetchone()[0])

    def finish(self) -> None:
        """Write the queues' counters back (before the commit)."""
        for name, row in self._queues.items():
            if row is not None and row.changes:
                columns = ", ".join(f"{c} = {c} + ?" for c in row.changes)
                self.execute(
                    f"UPDATE queues SET {columns} WHERE name = ?", (*row.changes.values(), name)
                )


def _ttl(seconds: float) -> float:
    # SQLite stores an infinite float, but JSON reports of it would not: keep a big number.
    return min(seconds, 1e18)


def _ttl_of(stored: float) -> float:
    return float("inf") if stored >= 1e18 else float(stored)


__all__ = ["COUNTERS", "QueueRow", "Tx"]

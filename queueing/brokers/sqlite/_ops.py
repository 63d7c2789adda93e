"""The requests of the task side, run by the writer thread inside a transaction.

Each is `op(tx, *args)`; it reads and writes through `tx` and returns plain values or new
records (never touching the event loop's objects). `tx.effects` names the wake-ups this
process gives its own waiters once the transaction is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..._task import Task, TaskState
from .._contract import Admission, QueueInfo
from . import _fair
from ._records import (
    COLUMNS,
    INSERT_FAIR,
    INSERT_TASK,
    OPEN_STATES,
    TENANT_INDEX,
    record,
    ttl_end,
)
from ._tx import COUNTERS, Tx

_OPEN = "state IN ('pending', 'scheduled', 'running')"
_KEPT = "(keep_until IS NULL OR keep_until > ?)"
#: Ids per `IN (...)` list (SQLite allows many; short lists keep statements cached).
IN_CHUNK = 500


def accept(
    tx: Tx, info: QueueInfo, row: tuple[Any, ...], task_id: str, due: float | None
) -> Admission:
    """Store one new task atomically with the queue's maxsize (and its tenant's
    `tenant_maxsize`); the first task with a tenant switches the queue to fair mode."""
    q = tx.queue(info.name, info)
    assert q is not None
    if q.outstanding >= info.maxsize:
        found = tx.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return Admission.EXISTS if found else Admission.FULL
    tenant = row[TENANT_INDEX]
    if q.fair:
        _fair.promote(tx, q, info.name)  # what became due meanwhile joins its flow first
    elif tenant:
        _fair.switch(tx, q, info.name)
    if not _fair.admit(tx, info, tenant):
        found = tx.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return Admission.EXISTS if found else Admission.TENANT_FULL
    if due is not None:
        cursor = tx.execute(INSERT_TASK, (task_id, info.name, "scheduled", due, *row))
    elif q.fair:  # into its flow (`_fair.py`)
        cursor = tx.execute(INSERT_FAIR, (task_id, info.name, *row, q.seq + 1))
        if cursor.rowcount:
            q.next_seq()
            _fair.join(tx, q, info.name, tenant, row[TENANT_INDEX - 1])
    else:
        cursor = tx.execute(INSERT_TASK, (task_id, info.name, "pending", tx.now, *row))
    if cursor.rowcount == 0:
        return Admission.EXISTS
    if info.tenant_maxsize is not None:
        assert cursor.lastrowid is not None
        _fair.accepted(tx, info.name, tenant, cursor.lastrowid)
    q.add("outstanding")
    q.add("submitted")
    tx.effects.add(f"ready:{info.name}")
    return Admission.ACCEPTED


def accept_many(tx: Tx, info: QueueInfo, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> int:
    """Store new ready tasks in order, as many as fit; returns how many of the first were
    accepted (or existed)."""
    taken = 0
    for task_id, row in rows:
        if accept(tx, info, row, task_id, None) in (Admission.FULL, Admission.TENANT_FULL):
            break
        taken += 1
    return taken


def claim(tx: Tx, info: QueueInfo, n: int, lease: float) -> tuple[list[Task], float | None]:
    """Lease up to `n` tasks: first those whose lease ran out (a dead process's, delivered
    again ahead of the queue), then the available ones (ready, or due) by priority, the
    oldest first within one (in fair mode, fair share within one: `_fair.claim`). With
    none, also says when one may be (None: nothing waits)."""
    now = tx.now
    queue = info.name
    rows = tx.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE queue = ? AND lease_until <= ? "
        "ORDER BY lease_until LIMIT ?",
        (queue, now, n),
    ).fetchall()
    q = tx.queue(queue)
    fair = q is not None and q.fair
    if fair and len(rows) < n:
        assert q is not None
        rows += _fair.claim(tx, info, q, n - len(rows))
    elif len(rows) < n:
        # Tasks of a priority above the default first (the partial index `tasks_ranked`,
        # empty for a queue that uses none), then the default's, oldest first.
        rows += tx.execute(
            f"SELECT {COLUMNS} FROM tasks WHERE queue = ? AND priority > 0 AND avail_at <= ? "
            "ORDER BY priority DESC, avail_at, rowid LIMIT ?",
            (queue, now, n - len(rows)),
        ).fetchall()
        if len(rows) < n:
            rows += tx.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE queue = ? AND avail_at <= ? AND priority = 0 "
                "ORDER BY avail_at, rowid LIMIT ?",
                (queue, now, n - len(rows)),
            ).fetchall()
    if not rows:
        # In fair mode, tasks handed back (`avail_at` 0) of a tenant at its limit wait for
        # a slot (a wake-up), not for a time.
        times = [
            row[0]
            for row in (
                tx.execute(
                    f"SELECT {column} FROM tasks WHERE queue = ? AND {condition} "
                    f"ORDER BY {column} LIMIT 1",
                    (queue,),
                ).fetchone()
                for column, condition in (
                    ("avail_at", "avail_at > 0" if fair else "avail_at IS NOT NULL"),
                    ("lease_until", "lease_until IS NOT NULL"),
                )
            )
            if row is not None
        ]
        return [], min(times) if times else None
    tx.conn.executemany(
        "UPDATE tasks SET state = 'running', owner = ?, avail_at = NULL, lease_until = ?, "
        "attempts = attempts + 1, deliveries = deliveries + 1, "
        "first_started = coalesce(first_started, ?) WHERE id = ?",
        [(tx.owner, now + lease, now, row[0]) for row in rows],
    )
    tasks = []
    for row in rows:
        task = record(row)
        # As it was before this delivery: the worker counts the delivery and the attempt
        # (the row already has them, for a lookup while it runs, and for the next claim if
        # this process dies).
        task.state = TaskState.PENDING
        tasks.append(task)
    return tasks, None


def renew(
    tx: Tx, task_ids: Sequence[str], lease: float
) -> list[tuple[str, str | None, str | None, str | None, float | None]]:
    """Extend the leases this process holds; returns (id, state, result, error,
    finished_at) of those it no longer holds (state None: the row is gone)."""
    lost = []
    until = tx.now + lease
    for task_id in task_ids:
        cursor = tx.execute(
            "UPDATE tasks SET lease_until = ? WHERE id = ? AND owner = ? AND state = 'running'",
            (until, task_id, tx.owner),
        )
        if cursor.rowcount == 0:
            lost.append(task_id)
    answers = []
    for task_id in lost:
        row = tx.execute(
            "SELECT state, result, error, finished_at FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        answers.append((task_id, *(row or (None, None, None, None))))
    return answers


def release(tx: Tx, queue: str, items: Sequence[tuple[str, int, int, float | None]]) -> None:
    """Hand back claimed tasks never started: first in line again within their priority,
    as before the claim (in fair mode too, ahead of the flows of their priority; the slot
    each held for its tenant is freed)."""
    q = None
    for task_id, attempts, deliveries, first_started in items:
        found = tx.execute(
            "UPDATE tasks SET state = 'pending', owner = NULL, avail_at = 0, lease_until = NULL, "
            "attempts = ?, deliveries = ?, first_started = ? "
            "WHERE id = ? AND owner = ? AND state = 'running' RETURNING tenant, counted",
            (attempts, deliveries, first_started, task_id, tx.owner),
        ).fetchone()
        if found is not None and found[1] & _fair.RUNNING:
            q = q or tx.queue(queue)
            if q is not None:
                _fair.freed(tx, q, queue, found[0], running=1, outstanding=0)
    tx.effects.add(f"ready:{queue}")


def settle(
    tx: Tx,
    info: QueueInfo,
    task_id: str,
    state: TaskState,
    result: str | None,
    error: str | None,
    counts: tuple[int, int, float | None],
    finished_at: float,
) -> bool:
    """Record an outcome unless the task has one (first outcome wins). In fair mode, the
    task leaves its flow (if it waited in one); what it counted in for its tenant (its
    running slot, its place under `tenant_maxsize`) is freed."""
    attempts, deliveries, first_started = counts
    q = tx.queue(info.name, info)
    assert q is not None
    before = None
    if q.fair:
        before = tx.execute("SELECT state, fseq FROM tasks WHERE id = ?", (task_id,)).fetchone()
    found = tx.execute(
        "UPDATE tasks SET state = ?, avail_at = NULL, lease_until = NULL, owner = NULL, "
        + ("fseq = NULL, " if q.fair else "")
        + "result = ?, error = ?, "
        "finished_at = ?, attempts = ?, deliveries = ?, first_started = ?, keep_until = ?, "
        f"settled = ? WHERE id = ? AND {_OPEN} RETURNING tenant, priority, counted",
        (
            state.value,
            result,
            error,
            finished_at,
            attempts,
            deliveries,
            first_started,
            ttl_end(tx.now, info.result_ttl),
            tx.settle_seq(),
            task_id,
        ),
    ).fetchone()
    if found is None:
        return False
    tenant, level, counted = found
    running = 0
    if before is not None:
        state_before, place = before
        if place is not None:
            _fair.leave(tx, info.name, tenant, int(level))
        # A slot is held while running (the bit stays set through a retry or a release).
        running = int(state_before == "running" and counted & _fair.RUNNING != 0)
    outstanding = counted & _fair.OUTSTANDING
    if running or outstanding:
        _fair.freed(tx, q, info.name, tenant, running=running, outstanding=outstanding)
    q.add("outstanding", -1)
    q.add(COUNTERS[state])
    tx.effects.update(("settled", f"room:{info.name}"))
    return True


def retry_at(
    tx: Tx,
    queue: str,
    task_id: str,
    due: float,
    error: str | None,
    counts: tuple[int, int, float | None],
    ahead: bool = False,
) -> None:
    """Make a task this process holds ready again at `due`, with its record as it stands.
    `ahead` (`retry_ahead`): it waits half a priority level above its own (the record
    reads its priority back as the level below), so that once due a claim takes it after
    higher priorities and ahead of the new tasks of its own, retries by due time (in
    fair mode, once due it joins the front of its flow instead: `_fair.promote`)."""
    attempts, deliveries, first_started = counts
    found = tx.execute(
        "UPDATE tasks SET state = 'scheduled', avail_at = ?, lease_until = NULL, owner = NULL, "
        "error = ?, "
        "attempts = ?, deliveries = ?, first_started = ? "
        + (", priority = CAST(priority AS INTEGER) + 0.5 " if ahead else "")
        + "WHERE id = ? AND owner = ? AND state = 'running' RETURNING tenant, counted",
        (due, error, attempts, deliveries, first_started, task_id, tx.owner),
    ).fetchone()
    if found is not None:
        q = tx.queue(queue)
        if q is not None:
            q.add("retried")
            if found[1] & _fair.RUNNING:  # its tenant's running slot is free while it waits
                _fair.freed(tx, q, queue, found[0], running=1, outstanding=0)
        tx.effects.add(f"ready:{queue}")


def dead_letter(
    tx: Tx,
    info: QueueInfo,
    task_id: str,
    state: TaskState,
    error: str | None,
    counts: tuple[int, int, float | None],
    finished_at: float,
    letter: str,
    keep: int,
) -> bool:
    """`settle`, and keep the task among the queue's newest `keep` dead letters."""
    if not settle(tx, info, task_id, state, None, error, counts, finished_at):
        return False
    tx.execute(
        "INSERT INTO dead_letters (queue, id, letter) VALUES (?, ?, ?)",
        (info.name, task_id, letter),
    )
    tx.execute(
        "DELETE FROM dead_letters WHERE queue = ? AND seq <= (SELECT seq FROM dead_letters "
        "WHERE queue = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        (info.name, info.name, keep),
    )
    return True


def lookup(tx: Tx, task_id: str) -> Task | None:
    row = tx.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE id = ? AND {_KEPT}", (task_id, tx.now)
    ).fetchone()
    return None if row is None else record(row)


def cancel_task(tx: Tx, task_id: str, error: str, finished_at: float) -> Task | None:
    """Settle a task of a queue CANCELLED unless it has an outcome; its record if so."""
    row = tx.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE id = ? AND {_KEPT}", (task_id, tx.now)
    ).fetchone()
    if row is None or row[2] not in OPEN_STATES:
        return None
    task = record(row)
    q = tx.queue(task.queue)
    if q is None:
        return None
    info = QueueInfo(task.queue, q.maxsize, 0, q.result_ttl)
    counts = (task.attempts, task.deliveries, task.first_started)
    if not settle(tx, info, task_id, TaskState.CANCELLED, None, error, counts, finished_at):
        return None
    return record(tx.execute(f"SELECT {COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone())


def _existing(tx: Tx, columns: str, ids: Sequence[str]) -> list[Any]:
    rows = []
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows += tx.execute(f"SELECT {columns} FROM tasks WHERE id IN ({marks})", chunk).fetchall()
    return rows


def settled(
    tx: Tx,
    fresh: Sequence[str],
    wanted: frozenset[str],
    since: int | None,
    sweep: Sequence[str],
) -> tuple[list[Task], int, set[str], set[str]]:
    """The outcomes of `wanted` tasks: those of `fresh` ids (never asked about), and those
    recorded after outcome number `since` (the others were open then). Returns them, the
    number to ask from next time, which of the fresh ids have a record, and which of the
    `sweep` ids have none (any more)."""
    cursor = tx.cursor()
    columns = COLUMNS.replace("payload", "NULL")
    rows = _existing(tx, f"{columns}, settled", fresh)
    seen = {row[0] for row in rows}
    found = [row[:-1] for row in rows if row[-1] is not None]
    if since is not None and since < cursor:
        for row in tx.execute(f"SELECT {columns} FROM tasks WHERE settled > ?", (since,)):
            if row[0] in wanted:
                found.append(row)
    gone = set(sweep).difference(row[0] for row in _existing(tx, "id", sweep))
    unique = {row[0]: row for row in found}
    return [record(row, payload=False) for row in unique.values()], cursor, seen, gone


def outstanding(tx: Tx, queue: str) -> int:
    row = tx.execute("SELECT outstanding FROM queues WHERE name = ?", (queue,)).fetchone()
    return 0 if row is None else int(row[0])

"""Fair share between tenants in the SQLite file: the contract's order (start-time fair
queuing over flows, `queueing/brokers/_contract.py`'s "Fair share"), for queues in fair
mode, run by the writer thread inside the requests' transactions (see `_ops.py`).

A queue switches to fair mode at its first task with a tenant (`switch`); until then its
tasks are claimed by `_ops.claim`'s plain queries, at their old cost. In fair mode:

- a ready task waits in its flow, the tasks of one tenant at one priority: `state`
  'pending', `avail_at` NULL, `fseq` its place (a number of the queue's `seq`, so FIFO;
  a due retry of a `retry_ahead` queue gets one `AHEAD` lower: the front of its flow,
  behind the earlier due retries). `avail_at` is left to scheduled tasks (their due time)
  and to tasks handed back (0), so the index `tasks_available` holds no backlog;
- a flow with ready tasks has a row of `flows` (its start tag `s`, the `seq` at which it
  was set, its number of ready tasks); `levels` holds the virtual time `v` of each
  priority. The next task is the head (`tasks_flow`, by `fseq`) of the first flow of
  `flows_next` (priority DESC, s, seq): two index probes, whatever the number of tenants;
- due tasks join their flows (`promote`) at the start of each claim and accept, in the
  order they became due (a scheduled task's `avail_at`), before anything is taken;
- `tenants` keeps, per tenant, its outstanding tasks (with `tenant_maxsize`, checked at
  accept; in any mode) and its running ones (in fair mode): one more at a claim (not for
  an expired lease claimed again: its task held the slot already), one less at an
  outcome, a retry or a release. A task's `counted` says which it counts in (`OUTSTANDING`,
  `RUNNING`), so that only what was counted is taken back (a task accepted without
  `tenant_maxsize`, or claimed before its queue's switch, counts in neither). A claim that
  meets a flow whose tenant is at `tenant_concurrency` sets that tenant's flows aside (out
  of `flows_next`, so they cost nothing to the next claims); the first slot it frees
  brings them back with `s = max(s, v)`.

The default tenant (tasks without one, `tenant` '') is one more flow, with the same
limits as any other, as in process.
"""

from __future__ import annotations

import logging
from typing import Any

from .._contract import QueueInfo, TenantFigures
from ._records import COLUMNS, DEFAULT_TENANT
from ._tx import QueueRow, Tx

log = logging.getLogger("queueing")

#: Taken off the `fseq` of a due retry of a `retry_ahead` queue: ahead of the tasks of
#: its flow that were never tried, in the order the retries became due.
AHEAD = 1 << 62
#: The bits of a task's `counted`: it counts among its tenant's outstanding tasks, and
#: among its running ones.
OUTSTANDING = 1
RUNNING = 2
#: Where `priority` and `tenant` are among `COLUMNS` (the last two).
PRIORITY_COLUMN = -2
TENANT_COLUMN = -1


def switch(tx: Tx, q: QueueRow, queue: str) -> None:
    """Put the queue in fair mode for good: its ready (and due) tasks join their flows,
    in the order a plain claim would have taken them within a priority."""
    tx.execute("UPDATE queues SET fair = 1 WHERE name = ?", (queue,))
    q.fair = True
    promote(tx, q, queue)


def promote(tx: Tx, q: QueueRow, queue: str) -> None:
    """Due tasks (and, at the switch, ready ones) join the back of their flows (a due
    retry of a `retry_ahead` queue, the front), in the order they became due."""
    rows = tx.execute(
        "SELECT rowid, tenant, priority FROM tasks WHERE queue = ? AND avail_at > 0 "
        "AND avail_at <= ? ORDER BY avail_at, rowid",
        (queue, tx.now),
    ).fetchall()
    for rowid, tenant, priority in rows:
        level = int(priority)
        place = q.next_seq() - (AHEAD if priority != level else 0)
        tx.execute(
            "UPDATE tasks SET state = 'pending', avail_at = NULL, fseq = ?, priority = ? "
            "WHERE rowid = ?",
            (place, level, rowid),
        )
        join(tx, q, queue, tenant, level)


def join(tx: Tx, q: QueueRow, queue: str, tenant: str, level: int) -> None:
    """A flow has one more ready task; one that had none starts at `s = v` (set aside at
    once if its tenant's flows are)."""
    cursor = tx.execute(
        "UPDATE flows SET ready = ready + 1 WHERE queue = ? AND tenant = ? AND priority = ?",
        (queue, tenant, level),
    )
    if cursor.rowcount:
        return
    found = tx.execute(
        "SELECT aside FROM tenants WHERE queue = ? AND tenant = ?", (queue, tenant)
    ).fetchone()
    aside = found[0] if found else 0
    tx.execute(
        "INSERT INTO flows (queue, tenant, priority, s, seq, ready, aside) "
        "VALUES (?, ?, ?, ?, ?, 1, ?)",
        (queue, tenant, level, virtual_time(tx, queue, level), q.next_seq(), aside),
    )


def leave(tx: Tx, queue: str, tenant: str, level: int) -> None:
    """A flow's ready task is gone without being taken (cancelled): one fewer."""
    found = tx.execute(
        "UPDATE flows SET ready = ready - 1 WHERE queue = ? AND tenant = ? AND priority = ? "
        "RETURNING ready",
        (queue, tenant, level),
    ).fetchone()
    if found is not None and found[0] <= 0:
        tx.execute(
            "DELETE FROM flows WHERE queue = ? AND tenant = ? AND priority = ?",
            (queue, tenant, level),
        )


def virtual_time(tx: Tx, queue: str, level: int) -> float:
    found = tx.execute(
        "SELECT v FROM levels WHERE queue = ? AND priority = ?", (queue, level)
    ).fetchone()
    return 0.0 if found is None else float(found[0])


def admit(tx: Tx, info: QueueInfo, tenant: str) -> bool:
    """Whether a new task of `tenant` fits in `tenant_maxsize`."""
    limit = info.tenant_maxsize
    if limit is None:
        return True
    found = tx.execute(
        "SELECT outstanding FROM tenants WHERE queue = ? AND tenant = ?", (info.name, tenant)
    ).fetchone()
    return found is None or found[0] < limit


def accepted(tx: Tx, queue: str, tenant: str, rowid: int) -> None:
    """A task was stored with `tenant_maxsize`: one more outstanding for its tenant."""
    tx.execute(
        "INSERT INTO tenants (queue, tenant, outstanding) VALUES (?, ?, 1) "
        "ON CONFLICT DO UPDATE SET outstanding = outstanding + 1",
        (queue, tenant),
    )
    tx.execute("UPDATE tasks SET counted = ? WHERE rowid = ?", (OUTSTANDING, rowid))


def freed(tx: Tx, q: QueueRow, queue: str, tenant: str, running: int, outstanding: int) -> None:
    """A tenant's task stopped running (`running` 1: an outcome, a retry, a release)
    and/or stopped being outstanding (`outstanding` 1: an outcome), as far as it counted
    (`counted`). A tenant whose flows were set aside gets them back at its first freed
    slot, with `s = max(s, v)`."""
    found = tx.execute(
        "UPDATE tenants SET running = max(running - ?, 0), "
        "outstanding = max(outstanding - ?, 0) WHERE queue = ? AND tenant = ? "
        "RETURNING running, outstanding, aside",
        (running, outstanding, queue, tenant),
    ).fetchone()
    if found is None:
        return
    now_running, now_outstanding, aside = found
    if aside and running:
        tx.execute("UPDATE tenants SET aside = 0 WHERE queue = ? AND tenant = ?", (queue, tenant))
        tx.execute(
            "UPDATE flows SET aside = 0, seq = ?, s = max(s, coalesce((SELECT v FROM levels "
            "WHERE levels.queue = flows.queue AND levels.priority = flows.priority), 0)) "
            "WHERE queue = ? AND tenant = ?",
            (q.next_seq(), queue, tenant),
        )
        tx.effects.add(f"ready:{queue}")
    elif now_running <= 0 and now_outstanding <= 0:
        tx.execute("DELETE FROM tenants WHERE queue = ? AND tenant = ?", (queue, tenant))


def claim(tx: Tx, info: QueueInfo, q: QueueRow, n: int) -> list[Any]:
    """The rows of up to `n` tasks to lease, in the contract's order (after the expired
    leases, which the caller took): the heads of the flows, a task handed back first
    within its priority. Counts them as running for their tenants (the caller leases
    them); a tenant at `tenant_concurrency` is skipped, its flows set aside."""
    queue = info.name
    promote(tx, q, queue)
    cap = info.tenant_concurrency
    running: dict[str, int] = {}

    def at_cap(tenant: str) -> bool:
        if cap is None:
            return False
        count = running.get(tenant)
        if count is None:
            found = tx.execute(
                "SELECT running FROM tenants WHERE queue = ? AND tenant = ?", (queue, tenant)
            ).fetchone()
            count = running[tenant] = 0 if found is None else found[0]
        return count >= cap

    def count(row: Any) -> None:
        """The task of `row` is taken: out of its flow, in its tenant's running count."""
        tenant = row[TENANT_COLUMN]
        tx.execute(
            "UPDATE tasks SET fseq = NULL, counted = counted | ? WHERE id = ?", (RUNNING, row[0])
        )
        tx.execute(
            "INSERT INTO tenants (queue, tenant, running) VALUES (?, ?, 1) "
            "ON CONFLICT DO UPDATE SET running = running + 1",
            (queue, tenant),
        )
        if tenant in running:
            running[tenant] += 1

    rows: list[Any] = []
    # Tasks handed back go first within their priority (as in a plain queue).
    handed = tx.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE queue = ? AND avail_at = 0 ORDER BY rowid", (queue,)
    ).fetchall()
    handed.reverse()  # taken from the end: the highest priority, then the oldest
    handed.sort(key=lambda row: int(row[PRIORITY_COLUMN]))
    while len(rows) < n:
        while handed and at_cap(handed[-1][TENANT_COLUMN]):
            handed.pop()  # its tenant is at its limit: it stays, first in line
        flow = tx.execute(
            "SELECT tenant, priority, s, ready FROM flows WHERE queue = ? AND aside = 0 "
            "ORDER BY priority DESC, s, seq LIMIT 1",
            (queue,),
        ).fetchone()
        if handed and (flow is None or int(handed[-1][PRIORITY_COLUMN]) >= flow[1]):
            row = handed.pop()
            rows.append(row)
            count(row)
            continue
        if flow is None:
            break
        tenant, level, start, ready = flow
        key = (queue, tenant, level)
        if at_cap(tenant):
            tx.execute("UPDATE tenants SET aside = 1 WHERE queue = ? AND tenant = ?", key[:2])
            tx.execute("UPDATE flows SET aside = 1 WHERE queue = ? AND tenant = ?", key[:2])
            continue
        head = tx.execute(
            f"SELECT {COLUMNS} FROM tasks WHERE queue = ? AND tenant = ? AND priority = ? "
            "AND fseq IS NOT NULL ORDER BY fseq LIMIT 1",
            key,
        ).fetchone()
        if head is None or ready <= 1:
            tx.execute("DELETE FROM flows WHERE queue = ? AND tenant = ? AND priority = ?", key)
        else:
            tx.execute(
                "UPDATE flows SET s = ?, seq = ?, ready = ready - 1 "
                "WHERE queue = ? AND tenant = ? AND priority = ?",
                (start + 1.0 / weight(info, tenant), q.next_seq(), *key),
            )
        if head is None:  # its count was out of step with its tasks: the flow is gone
            continue
        tx.execute(
            "INSERT INTO levels (queue, priority, v) VALUES (?, ?, ?) "
            "ON CONFLICT DO UPDATE SET v = excluded.v",
            (queue, level, start),
        )
        rows.append(head)
        count(head)
    return rows


def weight(info: QueueInfo, tenant: str) -> float:
    """The tenant's weight, as the claiming process knows it (1 for the default tenant;
    a weight function that fails is logged, and counts 1)."""
    weight_of = info.weight_of
    if weight_of is None or tenant == DEFAULT_TENANT:
        return 1.0
    try:
        return float(weight_of(tenant))
    except Exception as exc:
        log.error("queue %r: the weight of tenant %r: %s (counted as 1)", info.name, tenant, exc)
        return 1.0


def figures(tx: Tx, queue: str, limit: int) -> list[TenantFigures]:
    """The tenants of `queue` with the most tasks waiting, then running ("" names the
    default tenant); [] for a queue that never had a task with a tenant. Reads the flows
    (not their tasks), and the tasks handed back, due or running."""
    q = tx.queue(queue)
    if q is None or not q.fair:
        return []
    waiting: dict[str, int] = {}
    for tenant, count in tx.execute(
        "SELECT tenant, sum(ready) FROM flows WHERE queue = ? GROUP BY tenant", (queue,)
    ):
        waiting[tenant] = int(count)
    # Tasks handed back, and due ones that no claim has put in their flows yet.
    for tenant, count in tx.execute(
        "SELECT tenant, count(*) FROM tasks WHERE queue = ? AND avail_at <= ? GROUP BY tenant",
        (queue, tx.now),
    ):
        waiting[tenant] = waiting.get(tenant, 0) + int(count)
    running: dict[str, int] = dict(
        tx.execute(
            "SELECT tenant, count(*) FROM tasks WHERE queue = ? AND lease_until IS NOT NULL "
            "GROUP BY tenant",
            (queue,),
        ).fetchall()
    )
    found = [
        TenantFigures(tenant, waiting.get(tenant, 0), running.get(tenant, 0))
        for tenant in waiting.keys() | running.keys()
    ]
    found.sort(key=lambda f: (-f.waiting, -f.running, f.tenant))
    return found[:limit]

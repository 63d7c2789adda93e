"""Fair share on `sqlite://` beyond the contract: how tenants are stored (a file from
before tenants opens and keeps working), a queue without tenants left on its plain path,
the claim's index-only reads, tenant counts across systems on one file (an expired lease
claimed again keeps its slot), `tenant_maxsize` at accept, `tenant_figures`. Real time:
waits are short, and outcomes are asserted, never durations."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlite_helpers import downgrade_to_v3, query

from queueing import ErrorInfo, Queue, TaskState, Worker, connect, open_system
from queueing.brokers import Admission, QueueInfo, SqliteBroker, Task, TenantFigures
from queueing.brokers.sqlite import SCHEMA_VERSION, _fair, _records, _schema

WAIT = 10.0
LEASE = 0.3


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


echo = Queue("echo", Echo)


def info(**options: Any) -> QueueInfo:
    return QueueInfo("fair", 1000, 1 << 20, 60.0, **options)


def task(name: str, tenant: str | None = None, priority: int = 0) -> Task:
    made = Task(f"fair:{name}", "fair", name, 0.0)
    if tenant is not None:
        made.tenant = tenant
    if priority:
        made.priority = priority
    return made


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "fair.db"


async def test_a_version_3_file_is_migrated_and_its_tasks_still_run(path: Path) -> None:
    url = f"sqlite:///{path}"
    async with connect(url, echo) as client:
        waiting = [(await client.submit("echo", n)).id for n in (1, 2)]
    with sqlite3.connect(path) as conn:
        downgrade_to_v3(conn)
    conn.close()
    assert query(path, "PRAGMA user_version") == [(3,)]
    async with open_system(echo, broker=url) as system:
        assert [await system.receipt(i).result(timeout=WAIT) for i in waiting] == [1, 2]
        tenanted = await system.submit("echo", 3, tenant="acme")
        assert await tenanted.result(timeout=WAIT) == 3
        assert (await tenanted.status()).tenant == "acme"
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(4,)]
    tables = {name for (name,) in query(path, "SELECT name FROM sqlite_master")}
    assert {"flows", "levels", "tenants", "tasks_flow", "flows_next"} <= tables


async def test_the_tenant_is_stored_with_the_task_and_read_back_elsewhere(path: Path) -> None:
    url = f"sqlite:///{path}"
    async with connect(url, echo) as client:
        named = await client.submit("echo", "x", tenant="customer-42")
        plain = await client.submit("echo", "y")
    assert query(path, "SELECT tenant FROM tasks ORDER BY rowid") == [("customer-42",), ("",)]
    other = SqliteBroker(url)  # another process: a lookup of the stored row
    async with other.connect({}, serve=False):
        found = await other.lookup(named.id)
        assert found is not None
        assert getattr(found, "tenant", None) == "customer-42"
        found = await other.lookup(plain.id)
        assert found is not None
        assert getattr(found, "tenant", None) is None


async def test_a_malformed_tenant_in_the_file_reads_as_none(path: Path) -> None:
    url = f"sqlite:///{path}"
    async with connect(url, echo) as client:
        receipt = await client.submit("echo", "x", tenant="fine")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tasks SET tenant = ?", ("bad\nname",))
    conn.close()
    other = SqliteBroker(url)
    async with other.connect({}, serve=False):
        found = await other.lookup(receipt.id)
        assert found is not None
        assert getattr(found, "tenant", None) is None


async def test_a_queue_without_tenants_stays_on_its_plain_rows(path: Path) -> None:
    url = f"sqlite:///{path}"
    broker = SqliteBroker(url)
    plain = info()
    async with broker.connect({"fair": plain}, serve=True):
        for name in ("a", "b"):
            assert await broker.accept(plain, task(name)) is Admission.ACCEPTED
        assert query(path, "SELECT fair FROM queues WHERE name = 'fair'") == [(0,)]
        assert query(path, "SELECT count(*) FROM tasks WHERE fseq IS NOT NULL") == [(0,)]
        assert query(path, "SELECT count(*) FROM flows") == [(0,)]
        [first] = await broker.claim(plain, 1, wait=0)
        assert first.id == "fair:a"
        # The first task with a tenant switches the queue: the waiting one joins the
        # default tenant's flow, ahead of the new tenant's.
        assert await broker.accept(plain, task("t1", "T")) is Admission.ACCEPTED
        assert query(path, "SELECT fair FROM queues WHERE name = 'fair'") == [(1,)]
        assert query(path, "SELECT tenant, ready FROM flows ORDER BY seq") == [("", 1), ("T", 1)]
        rest = await broker.claim(plain, 5, wait=0)
    assert [t.id for t in rest] == ["fair:b", "fair:t1"]
    assert [getattr(t, "tenant", None) for t in rest] == [None, "T"]


def test_taking_a_task_reads_indexes_only(tmp_path: Path) -> None:
    # The reads of a fair claim are index searches: none scans the flows of other tenants
    # or the backlog of a flow, whatever their number.
    path = tmp_path / "plan.db"
    conn = sqlite3.connect(path)
    for step in _schema.MIGRATIONS:
        step(conn)
    statements = [
        "SELECT tenant, priority, s, ready FROM flows WHERE queue = ? AND aside = 0 "
        "ORDER BY priority DESC, s, seq LIMIT 1",
        f"SELECT {_records.COLUMNS} FROM tasks WHERE queue = ? AND tenant = ? AND priority = ? "
        "AND fseq IS NOT NULL ORDER BY fseq LIMIT 1",
        "SELECT running FROM tenants WHERE queue = ? AND tenant = ?",
        "SELECT rowid, tenant, priority FROM tasks WHERE queue = ? AND avail_at > 0 "
        "AND avail_at <= ? ORDER BY avail_at, rowid",
        f"SELECT {_records.COLUMNS} FROM tasks WHERE queue = ? AND avail_at = 0 ORDER BY rowid",
    ]
    for sql in statements:
        args = (None,) * sql.count("?")
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert "SCAN" not in plan, (sql, plan)
        assert "TEMP B-TREE" not in plan, (sql, plan)
        assert "SEARCH" in plan, (sql, plan)
    conn.close()
    assert _fair.AHEAD > 1 << 60  # far below any place a flow hands out


async def test_an_expired_lease_claimed_again_keeps_its_tenants_slot(path: Path) -> None:
    url = f"sqlite:///{path}?lease={LEASE}"
    capped = info(tenant_concurrency=1)
    first, second = SqliteBroker(url), SqliteBroker(url)
    async with (
        first.connect({"fair": capped}, serve=True),
        second.connect({"fair": capped}, serve=True),
    ):
        for name in ("a1", "a2"):
            await first.accept(capped, task(name, "A"))
        await first.accept(capped, task("b1", "B"))
        held = await first.claim(capped, 5, wait=0)
        assert [t.id for t in held] == ["fair:a1", "fair:b1"]  # a2: A is at its limit
        assert await second.claim(capped, 5, wait=0) == []
        # `first` never renews: its leases run out, and `second` claims both again, A's
        # slot with its task (a2 still waits).
        with trio.fail_after(WAIT):
            again = await second.claim(capped, 5, wait=WAIT)
            while len(again) < 2:
                again += await second.claim(capped, 5, wait=WAIT)
        assert sorted(t.id for t in again) == ["fair:a1", "fair:b1"]
        assert await second.claim(capped, 5, wait=0) == []
        assert query(path, "SELECT tenant, running FROM tenants ORDER BY tenant") == [
            ("A", 1),
            ("B", 1),
        ]
        a1 = next(t for t in again if t.id == "fair:a1")
        assert await second.settle(capped, a1, TaskState.SUCCEEDED, "a1")
        await second.flush()
        [a2] = await second.claim(capped, 5, wait=0)  # A's slot is free again
        assert a2.id == "fair:a2"


async def test_every_way_out_frees_the_tenants_slot(path: Path) -> None:
    url = f"sqlite:///{path}"
    capped = info(tenant_concurrency=1)
    broker = SqliteBroker(url)

    async def take(expected: str) -> Task:
        [taken] = await broker.claim(capped, 5, wait=0)
        assert taken.id == expected
        assert await broker.claim(capped, 5, wait=0) == []  # A is at its limit
        return taken

    async with broker.connect({"fair": capped}, serve=True):
        for name in ("a1", "a2", "a3", "a4", "a5", "a6"):
            await broker.accept(capped, task(name, "A"))
        a1 = await take("fair:a1")
        await broker.retry_at(capped, a1, broker.clock() + 3600)  # a retry much later
        a2 = await take("fair:a2")
        assert await broker.dead_letter(capped, a2, TaskState.DEAD_LETTERED, None)
        a3 = await take("fair:a3")
        assert await broker.cancel(a3.id, ErrorInfo("Cancelled", "by a test")) is not None
        a4 = await take("fair:a4")
        await broker.release(capped, [a4])
        a4 = await take("fair:a4")  # handed back: first again
        assert await broker.settle(capped, a4, TaskState.FAILED, None, ErrorInfo("E", "e"))
        await broker.flush()
        await take("fair:a5")
    # Outstanding tasks are counted per tenant only with tenant_maxsize.
    assert query(path, "SELECT outstanding, running FROM tenants WHERE tenant = 'A'") == [(0, 1)]


async def test_a_cancelled_waiting_task_leaves_its_flow(path: Path) -> None:
    url = f"sqlite:///{path}"
    queue = info()
    broker = SqliteBroker(url)
    async with broker.connect({"fair": queue}, serve=True):
        await broker.accept(queue, task("a1", "A"))
        await broker.accept(queue, task("b1", "B"))
        await broker.cancel("fair:a1", ErrorInfo("Cancelled", "by a test"))
        assert query(path, "SELECT tenant, ready FROM flows") == [("B", 1)]
        await broker.accept(queue, task("a2", "A"))  # A starts again at S = V
        taken = await broker.claim(queue, 5, wait=0)
    assert [t.id for t in taken] == ["fair:b1", "fair:a2"]
    assert query(path, "SELECT count(*) FROM flows") == [(0,)]


async def test_tenant_maxsize_is_checked_at_accept_per_tenant(path: Path) -> None:
    url = f"sqlite:///{path}"
    limited = info(tenant_maxsize=2)
    broker = SqliteBroker(url)
    async with broker.connect({"fair": limited}, serve=True):
        assert await broker.accept(limited, task("a1", "A")) is Admission.ACCEPTED
        assert await broker.accept(limited, task("a2", "A")) is Admission.ACCEPTED
        assert await broker.accept(limited, task("a3", "A")) is Admission.TENANT_FULL
        assert await broker.accept(limited, task("a2", "A")) is Admission.EXISTS
        assert await broker.accept(limited, task("b1", "B")) is Admission.ACCEPTED
        for name in ("n1", "n2"):  # the default tenant has the same limit
            assert await broker.accept(limited, task(name)) is Admission.ACCEPTED
        assert await broker.accept(limited, task("n3")) is Admission.TENANT_FULL
        assert await broker.accept_many(limited, [task("b2", "B"), task("b3", "B")]) == 1
        [a1, *_] = await broker.claim(limited, 1, wait=0)
        assert a1.id == "fair:a1"
        assert await broker.settle(limited, a1, TaskState.SUCCEEDED, None)
        await broker.flush()
        assert await broker.accept(limited, task("a3", "A")) is Admission.ACCEPTED
        assert await broker.outstanding("fair") == 6


async def test_tenant_figures_name_the_busiest_tenants(path: Path) -> None:
    url = f"sqlite:///{path}"
    queue = info(weight_of=lambda tenant: 2.0 if tenant == "big" else 1.0)
    broker = SqliteBroker(url)
    async with broker.connect({"fair": queue}, serve=True):
        assert await broker.tenant_figures("fair", 10) == []  # no tenant yet
        for i in range(5):
            await broker.accept(queue, task(f"big{i}", "big"))
        for i in range(2):
            await broker.accept(queue, task(f"small{i}", "small"))
        await broker.accept(queue, task("plain"))
        await broker.accept(queue, task("late", "later"), due=broker.clock() + 3600)
        taken = await broker.claim(queue, 4, wait=0)
        # big (weight 2) twice for small's once; the default tenant in its turn.
        assert [t.id for t in taken] == ["fair:big0", "fair:small0", "fair:plain", "fair:big1"]
        figures = await broker.tenant_figures("fair", 10)
        assert figures == [
            TenantFigures("big", 3, 2),
            TenantFigures("small", 1, 1),
            TenantFigures("", 0, 1),  # the default tenant
        ]
        assert await broker.tenant_figures("fair", 1) == [TenantFigures("big", 3, 2)]


async def test_a_task_handed_back_goes_first_within_its_priority(path: Path) -> None:
    url = f"sqlite:///{path}"
    queue = info()
    broker = SqliteBroker(url)
    async with broker.connect({"fair": queue}, serve=True):
        for name, tenant in (("a1", "A"), ("a2", "A"), ("b1", "B")):
            await broker.accept(queue, task(name, tenant))
        held = await broker.claim(queue, 2, wait=0)
        assert [t.id for t in held] == ["fair:a1", "fair:b1"]
        await broker.accept(queue, task("urgent", "C", priority=5))
        await broker.release(queue, held)
        taken = await broker.claim(queue, 5, wait=0)
    assert [t.id for t in taken] == ["fair:urgent", "fair:a1", "fair:b1", "fair:a2"]


async def test_the_default_tenant_has_the_limits_too(path: Path) -> None:
    url = f"sqlite:///{path}"
    capped = info(tenant_concurrency=1)
    broker = SqliteBroker(url)
    async with broker.connect({"fair": capped}, serve=True):
        # Claimed before the queue's switch: it holds no slot of the default tenant.
        await broker.accept(capped, task("early"))
        [early] = await broker.claim(capped, 1, wait=0)
        for name, tenant in (("n1", None), ("n2", None), ("a1", "A")):
            await broker.accept(capped, task(name, tenant))
        taken = await broker.claim(capped, 5, wait=0)
        assert [t.id for t in taken] == ["fair:n1", "fair:a1"]  # n2: the default is at 1
        assert await broker.settle(capped, early, TaskState.SUCCEEDED, None)
        await broker.flush()
        assert await broker.claim(capped, 5, wait=0) == []  # `early` freed no slot
        assert await broker.settle(capped, taken[0], TaskState.SUCCEEDED, None)
        await broker.flush()
        [n2] = await broker.claim(capped, 5, wait=0)
    assert n2.id == "fair:n2"

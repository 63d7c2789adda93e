"""Fair share over Redis, below the contract: the switch to fair mode and what it keeps,
the tenant in records and dead letters, cancels of waiting tasks, the per-tenant counts
(`tenant_concurrency`, `tenant_maxsize`, `tenant_figures`) shared by every process."""

from __future__ import annotations

import attrs
import pytest
from broker_helpers import JOBS, claim_until, new_task, opened
from redis_helpers import key, raw_client

from queueing._task import ErrorInfo, Task, TaskState, tenant_of
from queueing.brokers import Admission, TenantFigures
from queueing.brokers.redis import RedisBroker

pytestmark = pytest.mark.redis

ERROR = ErrorInfo("Boom", "boom")


def task(payload: str, tenant: str | None = None, priority: int = 0) -> Task:
    made = new_task(payload=payload)
    if tenant is not None:
        made.tenant = tenant
    if priority:
        made.priority = priority
    return made


async def claim_all(broker: RedisBroker, count: int, queue: object = JOBS) -> list[Task]:
    """Claim one at a time (as one idle worker does) until `count` came."""
    claimed: list[Task] = []
    while len(claimed) < count:
        claimed += await claim_until(broker, queue, n=1)  # type: ignore[arg-type]
    return claimed


async def test_a_queue_turns_fair_at_its_first_tenant_and_keeps_what_waited(
    redis_url: str,
) -> None:
    async with opened(redis_url, JOBS) as broker, raw_client(redis_url) as raw:
        for made in (task("old-1"), task("old-2"), task("p5", priority=5)):
            await broker.accept(JOBS, made)
        assert not await raw.exists([key(redis_url, "jobs", "fair")])  # no tenant yet
        for made in (task("a1", "A"), task("a2", "A")):
            await broker.accept(JOBS, made)
        assert await raw.exists([key(redis_url, "jobs", "fair")]) == 1
        assert await raw.zcard(key(redis_url, "jobs", "waiting")) == 0  # all in flows
        assert (await broker.figures("jobs"))["ready"] == 5
        claimed = await claim_all(broker, 5)
    # Priority first; then the default tenant's flow (tagged at the switch) and A's share.
    assert [t.payload for t in claimed] == ["p5", "old-1", "a1", "old-2", "a2"]
    assert [tenant_of(t) for t in claimed] == [None, None, "A", None, "A"]


async def test_a_queue_without_tenants_never_turns_fair(redis_url: str) -> None:
    async with opened(redis_url, JOBS) as broker, raw_client(redis_url) as raw:
        await broker.accept(JOBS, task("plain"))
        await broker.accept(JOBS, task("urgent", priority=3))
        assert [t.payload for t in await claim_all(broker, 2)] == ["urgent", "plain"]
        fair = await raw.keys(key(redis_url, "jobs", "*"))
        assert not [k for k in fair if any(w in k for w in ("fair", "fifo", "heads", "tenants"))]


async def test_the_tenant_is_kept_in_the_record_and_the_dead_letter(redis_url: str) -> None:
    async with opened(redis_url, JOBS) as broker:
        doomed = task("doomed", "acme")
        await broker.accept(JOBS, doomed)
        found = await broker.lookup(doomed.id)
        assert found is not None
        assert tenant_of(found) == "acme"
        (claimed,) = await claim_until(broker)
        assert tenant_of(claimed) == "acme"
        await broker.dead_letter(JOBS, claimed, TaskState.FAILED, ERROR)
        await broker.flush()
        (letter,) = await broker.dead_letters("jobs", 10)
        assert letter.tenant == "acme"
        found = await broker.lookup(doomed.id)
        assert found is not None
        assert (found.state, tenant_of(found)) == (TaskState.FAILED, "acme")


async def test_a_cancelled_waiting_task_leaves_its_flow(redis_url: str) -> None:
    async with opened(redis_url, JOBS) as broker:
        a1, a2, a3, b1 = task("a1", "A"), task("a2", "A"), task("a3", "A"), task("b1", "B")
        for made in (a1, a2, a3, b1):
            await broker.accept(JOBS, made)
        assert await broker.cancel(a1.id, ERROR) is not None
        assert await broker.cancel(a3.id, ERROR) is not None
        assert await broker.tenant_figures("jobs", 10) == [
            TenantFigures("A", 1, 0),
            TenantFigures("B", 1, 0),
        ]
        claimed = await claim_all(broker, 2)
        assert [t.payload for t in claimed] == ["a2", "b1"]
        assert await broker.claim(JOBS, 10, wait=0) == []
        assert (await broker.figures("jobs"))["ready"] == 0


async def test_tenant_figures_count_waiting_and_running_tasks(redis_url: str) -> None:
    async with opened(redis_url, JOBS) as broker:
        for made in (task("a1", "A"), task("a2", "A"), task("a3", "A"), task("b1", "B")):
            await broker.accept(JOBS, made)
        await broker.accept(JOBS, task("n1"))  # the default tenant is not listed
        (first,) = await claim_until(broker, n=1)
        assert first.payload == "a1"
        assert await broker.tenant_figures("jobs", 10) == [
            TenantFigures("A", 2, 1),
            TenantFigures("B", 1, 0),
        ]
        assert await broker.tenant_figures("jobs", 1) == [TenantFigures("A", 2, 1)]
        await broker.settle(JOBS, first, TaskState.SUCCEEDED, None)
        await broker.flush()
        assert (await broker.tenant_figures("jobs", 10))[0] == TenantFigures("A", 2, 0)


async def test_tenant_concurrency_sets_a_tenant_aside_until_it_settles(redis_url: str) -> None:
    capped = attrs.evolve(JOBS, tenant_concurrency=1)
    async with opened(redis_url, capped) as broker:
        for made in (task("a1", "A"), task("a2", "A"), task("b1", "B"), task("b2", "B")):
            await broker.accept(capped, made)
        first = await broker.claim(capped, 10, wait=0)
        assert sorted(t.payload for t in first) == ["a1", "b1"]  # one of each, no more
        assert await broker.claim(capped, 10, wait=0) == []
        a1 = next(t for t in first if t.payload == "a1")
        await broker.settle(capped, a1, TaskState.SUCCEEDED, None)
        await broker.flush()
        (again,) = await claim_until(broker, capped)
        assert again.payload == "a2"
        b1 = next(t for t in first if t.payload == "b1")
        await broker.retry_at(capped, b1, broker.clock() + 60)  # a retry frees the slot too
        await broker.flush()
        (then,) = await claim_until(broker, capped)
        assert then.payload == "b2"


async def test_a_reclaimed_task_keeps_its_tenants_running_slot(redis_url: str) -> None:
    capped = attrs.evolve(JOBS, tenant_concurrency=1)
    async with (
        opened(redis_url, capped, lease=0.5) as stopped,
        opened(redis_url, capped, lease=0.5) as rescuer,
    ):
        for made in (task("a1", "A"), task("a2", "A")):
            await stopped.accept(capped, made)
        (held,) = await stopped.claim(capped, 1, wait=0)  # never renewed: its lease runs out
        (taken,) = await claim_until(rescuer, capped)
        assert taken.payload == "a1"  # the same task, still A's one running task
        assert await rescuer.claim(capped, 10, wait=0.2) == []
        await rescuer.settle(capped, taken, TaskState.SUCCEEDED, None)
        await rescuer.flush()
        (then,) = await claim_until(rescuer, capped)
        assert then.payload == "a2"
        assert held.id == taken.id


async def test_tenant_maxsize_refuses_a_full_tenant_only(redis_url: str) -> None:
    limited = attrs.evolve(JOBS, tenant_maxsize=1)
    async with opened(redis_url, limited) as broker:
        a1 = task("a1", "A")
        assert await broker.accept(limited, a1) is Admission.ACCEPTED
        assert await broker.accept(limited, task("a2", "A")) is Admission.TENANT_FULL
        assert await broker.accept_many(limited, [task("b1", "B"), task("a3", "A")]) == 1
        assert await broker.accept(limited, task("n1")) is Admission.ACCEPTED  # no tenant
        assert await broker.cancel(a1.id, ERROR) is not None  # an outcome: room again
        assert await broker.accept(limited, task("a4", "A")) is Admission.ACCEPTED


async def test_declared_queues_carry_the_tenant_limits(redis_url: str) -> None:
    limited = attrs.evolve(JOBS, tenant_concurrency=3, tenant_maxsize=50)
    async with opened(redis_url, limited), opened(redis_url, serve=False) as client:
        info = (await client.declared())["jobs"]
        assert (info.tenant_concurrency, info.tenant_maxsize) == (3, 50)


async def test_tenant_concurrency_lets_a_tenant_run_up_to_its_cap(redis_url: str) -> None:
    capped = attrs.evolve(JOBS, tenant_concurrency=2)
    async with opened(redis_url, capped) as broker:
        for i in range(4):
            await broker.accept(capped, task(f"a{i}", "A"))
        first = await broker.claim(capped, 10, wait=0)
        assert [t.payload for t in first] == ["a0", "a1"]
        assert await broker.claim(capped, 10, wait=0) == []
        await broker.settle(capped, first[0], TaskState.SUCCEEDED, None)
        await broker.flush()
        assert [t.payload for t in await claim_until(broker, capped)] == ["a2"]

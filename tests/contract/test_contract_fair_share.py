"""`submit(..., tenant=)`: waiting tasks are shared out fairly between tenants (start-time
fair queuing over flows, `queueing/brokers/_contract.py`'s "Fair share"), on every broker
alike; priorities first; `tenant_weights`, `tenant_concurrency`, `tenant_maxsize`."""

from __future__ import annotations

from typing import Any

import pytest
import tenacity
import trio
from contract_workers import SETTLE, Probe, outcome_of, pipeline, serve
from test_contract_priority import Ordered, names, one_worker

import queueing
from queueing import InvalidQueue, Overflow, Queue, QueueFull, RetryPolicy, TaskState

#: How long a test waits for a whole run of queued tasks to start or finish, one worker
#: at a time. Generous on purpose (a loaded machine runs 300 tasks of SQLite or Redis in
#: more than contract_workers.WAIT): reaching it is a failure, never a slow pass. These
#: tests assert the order the tasks started in, never how long they took; under the
#: memory broker's MockClock this costs no real time.
PATIENT = 60.0


async def test_tenants_take_turns_in_the_order_they_arrived(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")  # the one worker is busy with this
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", ["a1", "a2", "a3", "a4", "a5"], tenant="A")
        for name in ["b1", "b2", "b3"]:
            await system.submit("ranked", name, tenant="B")
        await system.submit("ranked", "c1", tenant="C")
        probe.gate.set()
        await probe.wait_for(probe.finished, 10, timeout=PATIENT)
    assert names(probe) == ["hold", "a1", "b1", "c1", "a2", "b2", "a3", "b3", "a4", "a5"]


async def test_without_tenants_a_queue_stays_fifo(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", [f"t{i}" for i in range(8)])
        probe.gate.set()
        await probe.wait_for(probe.finished, 9, timeout=PATIENT)
    assert names(probe) == ["hold", *[f"t{i}" for i in range(8)]]


async def test_tasks_without_a_tenant_share_with_the_tenants(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # The tasks without a tenant are one more tenant: the queue's default one.
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", ["n1", "n2", "n3"])
        await system.submit_many("ranked", ["a1", "a2"], tenant="A")
        probe.gate.set()
        await probe.wait_for(probe.finished, 6, timeout=PATIENT)
    assert names(probe) == ["hold", "n1", "a1", "n2", "a2", "n3"]


async def test_a_heavy_tenant_first_delays_light_ones_by_one_task_a_turn(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    heavy, lights, each = 300, 5, 3
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", [f"h{i}" for i in range(heavy)], tenant="heavy")
        for light in range(lights):
            names_ = [f"l{light}-{i}" for i in range(each)]
            await system.submit_many("ranked", names_, tenant=f"light-{light}")
        probe.gate.set()
        await probe.wait_for(probe.finished, 1 + heavy + lights * each, timeout=PATIENT)
    started = names(probe)[1:]
    last_light = max(i for i, name in enumerate(started) if name.startswith("l"))
    assert last_light < each * (lights + 1)  # every light task within 3 turns of 6
    assert [n for n in started if n.startswith("h")] == [f"h{i}" for i in range(heavy)]


async def test_weights_give_tenants_their_shares(broker: str, clock: trio.abc.Clock | None) -> None:
    probe = Probe()
    spec = one_worker(probe, tenant_weights={"big": 2})
    async with serve(broker, spec) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", [f"b{i}" for i in range(1, 7)], tenant="big")
        await system.submit_many("ranked", ["s1", "s2", "s3"], tenant="small")
        probe.gate.set()
        await probe.wait_for(probe.finished, 10, timeout=PATIENT)
    assert names(probe) == ["hold", "b1", "s1", "b2", "s2", "b3", "b4", "s3", "b5", "b6"]


async def test_a_weight_function_is_asked_per_tenant(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    spec = one_worker(probe, tenant_weights=lambda tenant: 4 if tenant == "gold" else 1)
    async with serve(broker, spec) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", [f"g{i}" for i in range(1, 7)], tenant="gold")
        await system.submit_many("ranked", ["s1", "s2"], tenant="silver")
        probe.gate.set()
        await probe.wait_for(probe.finished, 9, timeout=PATIENT)
    # gold: S = 0, 1/4, 1/2, 3/4, 1, ...; silver: S = 0, 1: a tie goes to the tag set first.
    assert names(probe) == ["hold", "g1", "s1", "g2", "g3", "g4", "s2", "g5", "g6"]


async def test_priority_comes_first_then_fair_share(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", ["a1", "a2", "a3"], tenant="A")
        await system.submit("ranked", "b1", tenant="B")
        await system.submit_many("ranked", ["A9-1", "A9-2"], tenant="A", priority=9)
        await system.submit("ranked", "B9-1", tenant="B", priority=9)
        probe.gate.set()
        await probe.wait_for(probe.finished, 8, timeout=PATIENT)
    assert names(probe) == ["hold", "A9-1", "B9-1", "A9-2", "a1", "b1", "a2", "a3"]


async def test_a_queue_tenant_function_names_the_tenant(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    spec = one_worker(probe, tenant=lambda name: name[0] if isinstance(name, str) else None)
    async with serve(broker, spec) as system:
        await system.submit("ranked", "hold")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit_many("ranked", ["x1", "x2", "x3", "y1"])
        explicit = await system.submit("ranked", "x4", tenant="y")  # submit's tenant wins
        probe.gate.set()
        await probe.wait_for(probe.finished, 6, timeout=PATIENT)
        assert (await explicit.status()).tenant == "y"
    assert names(probe) == ["hold", "x1", "y1", "x2", "x4", "x3"]


async def test_tenant_concurrency_caps_one_tenants_running_tasks(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    spec = Queue("capped", Ordered, worker_kwargs={"probe": probe}, workers=3, tenant_concurrency=1)
    async with serve(broker, spec) as system:
        await system.submit_many("capped", ["hold-a1", "a2", "a3"], tenant="A")
        await system.submit_many("capped", ["b1", "b2"], tenant="B")
        await probe.wait_for(probe.finished, 2, timeout=PATIENT)  # B's two ran beside A's first
        await trio.sleep(SETTLE)
        assert sorted(names(probe)) == ["b1", "b2", "hold-a1"]  # a2 waits for a turn of A
        probe.gate.set()
        await system.drain(timeout=PATIENT)
    assert names(probe)[-2:] == ["a2", "a3"]


async def test_tenant_concurrency_is_freed_by_a_retry(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # A task that failed an attempt holds no running slot while it waits for its retry:
    # its backoff is far longer than the test waits, so the next task of its tenant
    # finishes only if the slot was freed (no race with the retry becoming due).
    probe = Probe()
    retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(10_000))
    spec = Queue(
        "capped",
        Ordered,
        worker_kwargs={"probe": probe},
        workers=2,
        retry=retry,
        tenant_concurrency=1,
    )
    probe.gate.set()
    async with serve(broker, spec) as system:
        flaky = await system.submit("capped", {"name": "flaky", "fail": 1}, tenant="A")
        await probe.wait_for(probe.started, timeout=PATIENT)
        steady = await system.submit("capped", "steady", tenant="A")
        assert await outcome_of(steady, timeout=PATIENT) == "steady"
        status = await flaky.status()
        assert (status.state, status.attempts) == (TaskState.SCHEDULED, 1)  # its backoff
    assert probe.started == [("flaky", 1), ("steady", 1)]


async def test_tenant_maxsize_refuses_one_tenant_not_the_others(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    spec = one_worker(probe, tenant_maxsize=2, when_full=Overflow.REJECT)
    async with serve(broker, spec) as system:
        await system.submit("ranked", "hold", tenant="A")
        await probe.wait_for(probe.started, timeout=PATIENT)
        await system.submit("ranked", "a2", tenant="A")
        with pytest.raises(QueueFull, match="tenant 'A'") as caught:
            await system.submit("ranked", "a3", tenant="A")
        assert "tenant_maxsize" in str(caught.value)
        b1 = await system.submit("ranked", "b1", tenant="B")  # another tenant has room
        await system.submit("ranked", "n1")  # and so has the default one
        probe.gate.set()
        assert await outcome_of(b1, timeout=PATIENT) == "b1"
        await system.drain(timeout=PATIENT)
        again = await system.submit("ranked", "a3", tenant="A")  # room again
        assert await outcome_of(again, timeout=PATIENT) == "a3"
    assert "a3" in names(probe)


async def test_tenant_maxsize_waits_for_room_of_its_tenant(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    spec = one_worker(probe, tenant_maxsize=1, full_timeout=30)
    async with serve(broker, spec) as system:
        await system.submit("ranked", "hold", tenant="A")
        await probe.wait_for(probe.started, timeout=PATIENT)
        async with trio.open_nursery() as nursery:

            async def submit_second() -> None:
                receipt = await system.submit("ranked", "a2", tenant="A")  # waits for room
                assert await outcome_of(receipt, timeout=PATIENT) == "a2"

            nursery.start_soon(submit_second)
            await trio.sleep(SETTLE)
            assert names(probe) == ["hold"]
            probe.gate.set()
    assert names(probe) == ["hold", "a2"]


async def test_the_status_and_dead_letters_keep_the_tenant(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    async with serve(broker, one_worker(probe)) as system:
        doomed = await system.submit("ranked", {"name": "doomed", "fail": 3}, tenant="acme")
        assert (await doomed.status()).tenant == "acme"
        assert isinstance(await outcome_of(doomed, timeout=PATIENT), queueing.TaskFailed)
        assert (await system.receipt(doomed.id).status()).tenant == "acme"
        (letter,) = await system.dead_letters("ranked")
        assert letter.tenant == "acme"
        (again,) = await system.requeue("ranked")
        assert (await again.status()).tenant == "acme"
        plain = await system.submit("ranked", "plain")
        assert (await plain.status()).tenant is None


async def test_a_pipeline_runs_every_stage_for_its_tenant(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    probe = Probe()
    probe.gate.set()
    first = one_worker(probe, name="first")
    second = one_worker(probe, name="second")
    async with serve(broker, first, second, pipeline("flow", first, second)) as system:
        run = await system.submit("flow", "job", tenant="acme")
        assert await outcome_of(run, timeout=PATIENT) == "job"
        assert (await run.status()).tenant == "acme"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"tenant_concurrency": 0}, "tenant_concurrency"),
        ({"tenant_maxsize": True}, "tenant_maxsize"),
        ({"tenant_weights": {"a": 0}}, "tenant_weights"),
        ({"tenant_weights": ["a"]}, "tenant_weights"),
        ({"tenant": "customer"}, "tenant"),
        ({"maxsize": 5, "tenant_maxsize": 6}, "tenant_maxsize"),
    ],
    ids=["concurrency-0", "maxsize-bool", "weight-0", "weights-list", "tenant-str", "over"],
)
def test_bad_tenant_options_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidQueue, match=field):
        Queue("q", Ordered, **options)


@pytest.mark.parametrize(
    "tenant", [5, "", "x" * 129, "a\nb"], ids=["int", "empty", "long", "control"]
)
async def test_a_bad_tenant_is_refused_and_nothing_is_accepted(
    broker: str, clock: trio.abc.Clock | None, tenant: Any
) -> None:
    probe = Probe()
    async with serve(broker, one_worker(probe)) as system:
        with pytest.raises(InvalidQueue, match="tenant"):
            await system.submit("ranked", "x", tenant=tenant)
        with pytest.raises(InvalidQueue, match="tenant"):
            await system.submit_many("ranked", ["x"], tenant=tenant)
        assert system.stats()["ranked"].submitted == 0
    assert probe.started == []

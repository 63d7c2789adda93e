"""Redis Cluster (`redis+cluster://`): the URL, and a queue that goes on through a slot
migration and a master failover mid-run (no task lost, duplicates only of tasks in flight).

The broker contract runs on the cluster too (tests/contract, id `cluster`)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import pytest
import trio
from redis_topologies import cli, slot_of
from redis_topologies import wait_until as _wait_until

from queueing import BrokerError, Queue, Receipt, TaskFailed, Worker, connect, open_system

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

TASKS = 600
WORKERS = 4
RUNS: collections.Counter[int] = collections.Counter()
#: Set once a third of the tasks ran (the moment to disturb the cluster).
THIRD: list[trio.Event] = []


class Record(Worker):
    async def handle(self, number: int) -> int:
        RUNS[number] += 1
        if THIRD and len(RUNS) >= TASKS // 3:
            THIRD[-1].set()
        await trio.sleep(0.002)
        return 2 * number


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://127.0.0.1:notaport", "not a number"),
        ("redis+cluster://127.0.0.1:70000", "out of range"),
        ("redis+cluster://:7000", "no host"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+sentinel://127.0.0.1:26379", "names the service"),
        ("redis+sentinel://127.0.0.1:26379/", "names the service"),
    ],
)
async def test_a_malformed_cluster_or_sentinel_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BrokerError, match=says):
        async with open_system(Queue("q", Record), broker=url):
            pass


def test_a_cluster_or_sentinel_password_is_never_shown() -> None:
    from queueing.brokers.redis import RedisBroker

    for url in (
        "redis+cluster://user:s3cret@10.0.0.1:6379,10.0.0.2:6379?prefix=app",
        "rediss+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/queues",
    ):
        broker = RedisBroker(url)
        assert "s3cret" not in repr(broker)
        assert broker.prefix == ("app" if "prefix" in url else "queueing")


async def test_an_unreachable_cluster_is_a_clear_broker_error() -> None:
    from redis_topologies import _free_port

    from queueing.brokers.redis import RedisBroker

    broker = RedisBroker(f"redis+cluster://127.0.0.1:{_free_port()}", connect_timeout=1)
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1"):
        async with open_system(Queue("q", Record), broker=broker):
            pass


async def test_queues_on_every_master_share_one_client(redis_cluster: Any) -> None:
    """Queues whose slots live on different masters: one client submits to all of them and
    waits for all their receipts (one notice reader per queue)."""
    prefix = "spread"
    names: dict[int, str] = {}
    masters = {port for _, port, _ in redis_cluster.masters()}
    for n in range(1000):  # a queue name on each master
        name = f"q{n}"
        _, port = redis_cluster.owner(slot_of(f"{{{prefix}:{name}}}"))
        names.setdefault(port, name)
        if set(names) == masters:
            break
    assert set(names) == masters
    queues = [Queue(name, Record, workers=2) for name in names.values()]
    async with open_system(*queues, broker=redis_cluster.url(prefix=prefix)) as system:
        receipts = [await system.submit(q.name, n) for q in queues for n in range(20)]
        results = [await receipt.result(timeout=20) for receipt in receipts]
    assert sorted(results) == sorted(2 * n for _ in queues for n in range(20))


async def wait_for(check: Callable[[], bool], what: str) -> None:
    """`check()` (a blocking call) until it is true, in a thread."""
    await trio.to_thread.run_sync(_wait_until, check, what, 10.0)


def queue_near_slot_start(prefix: str, cluster: Any) -> tuple[str, int]:
    """A queue name whose slot is among the first few of its master's range (so that a
    `--cluster reshard` of a few slots moves it), and how many slots to move."""
    starts = {}
    for line in cli(cluster.live().port, "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "master" in fields[2] and len(fields) > 8:
            starts[fields[0]] = int(fields[8].partition("-")[0])
    for n in range(100_000):
        name = f"work{n}"
        slot = slot_of(f"{{{prefix}:{name}}}")
        owner, _ = cluster.owner(slot)
        if 0 <= slot - starts[owner] < 20:
            return name, slot - starts[owner] + 1
    raise AssertionError("no queue name found")


async def run_through(
    url: str, queue: str, disturb: Callable[[], None], *, lossy: bool = False
) -> None:
    """TASKS tasks on `queue`; `disturb()` (in a thread) once a third of them ran. Every
    receipt resolves with its result; `lossy`: or with TaskLost (a crash may lose the
    writes its replica had not received yet)."""
    RUNS.clear()
    THIRD.append(trio.Event())
    async with open_system(Queue(queue, Record, workers=WORKERS), broker=url) as system:
        receipts: list[Receipt] = []

        async def submit(numbers: range) -> None:
            for number in numbers:
                receipts.append(await system.submit(queue, number))

        async def midway() -> None:
            with trio.fail_after(60):
                await THIRD[-1].wait()
            assert len(RUNS) < TASKS  # mid-run
            await trio.to_thread.run_sync(disturb)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(midway)
            for start in range(0, TASKS, 100):
                nursery.start_soon(submit, range(start, start + 100))
        results, lost = [], []
        for receipt in receipts:
            try:
                results.append(await receipt.result(timeout=60))
            except TaskFailed as exc:
                lost.append(exc.error_type)
        if lossy:
            assert set(lost) <= {"TaskLost"}
            print(f"\n{len(lost)} of {TASKS} tasks lost in the crash")
            return
        await system.drain(timeout=30)  # `outstanding` is back to 0
        figures = system.stats()[queue]
    assert lost == []
    assert sorted(results) == [2 * n for n in range(TASKS)]
    assert set(RUNS) == set(range(TASKS))  # none lost
    duplicates = sum(RUNS.values()) - TASKS
    assert duplicates <= WORKERS, f"{duplicates} tasks ran twice; only those in flight may"
    assert figures.succeeded == TASKS
    print(f"\n{TASKS} tasks, {duplicates} ran twice, p99 {figures.p99:.2f}s")


async def test_a_slot_migration_mid_run_loses_no_task(
    make_redis_cluster: Callable[[], Any],
) -> None:
    cluster = make_redis_cluster()
    prefix = "moving"
    queue, count = queue_near_slot_start(prefix, cluster)
    source, _ = cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))
    target = next(node for node, _, _ in cluster.masters() if node != source)

    def reshard() -> None:
        cli(
            cluster.live().port,
            "--cluster",
            "reshard",
            f"127.0.0.1:{cluster.live().port}",
            "--cluster-from",
            source,
            "--cluster-to",
            target,
            "--cluster-slots",
            str(count),
            "--cluster-pipeline",
            "5",
            "--cluster-yes",
        )

    await run_through(cluster.url(prefix=prefix, lease=2), queue, reshard)
    assert cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))[0] == target  # it did move


async def test_a_master_failover_mid_run_loses_no_task(
    make_redis_cluster: Callable[[], Any],
) -> None:
    cluster = make_redis_cluster()
    prefix, queue = "failing", "work"
    master, _ = cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))
    replica = cluster.replica_of(master)

    def failover() -> None:
        cli(replica, "CLUSTER", "FAILOVER")  # a coordinated failover: nothing acknowledged is lost

    await run_through(cluster.url(prefix=prefix, lease=2), queue, failover)
    assert cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))[1] == replica  # it did fail over


async def test_a_sharded_queue_spreads_over_slots_and_sums_its_figures(
    redis_cluster: Any,
) -> None:
    import coredis
    from coredis.connection import TCPLocation

    from queueing.brokers.redis import RedisBroker

    shards, tasks = 4, 200
    url = redis_cluster.url(prefix="sharded")
    async with (
        open_system(Queue("hot", Record, workers=4, shards=shards), broker=url) as system,
        connect(url) as client,  # knows the queue's shards from what the workers declared
    ):
        receipts = await client.submit_many("hot", list(range(tasks // 2)))
        receipts += [await client.submit("hot", n) for n in range(tasks // 2, tasks)]
        assert [await r.result(timeout=20) for r in receipts] == [2 * n for n in range(tasks)]
        await system.drain(timeout=20)
    tags = [f"{{sharded:hot:{i}}}" for i in range(shards)]
    assert len({slot_of(tag) for tag in tags}) == shards  # each shard in a slot of its own
    raw: Any = coredis.RedisCluster(
        startup_nodes=[TCPLocation("127.0.0.1", redis_cluster.nodes[0].port)],
        decode_responses=True,
    )
    async with raw:
        done = [int(await raw.hget(f"{tag}:stats", "succeeded") or 0) for tag in tags]
    assert sum(done) == tasks
    assert all(count > 0 for count in done)  # submits spread over every shard
    broker = RedisBroker(url)
    async with broker.connect({}, serve=False):
        figures = await broker.figures("hot")
    assert figures is not None
    assert (figures["succeeded"], figures["outstanding"]) == (tasks, 0)


def test_the_how_to_snippet_runs_on_a_cluster(redis_cluster: Any) -> None:
    """The Redis Cluster snippet of docs/how-to/redis-cluster-sentinel.md, its URL pointed
    at the test's cluster."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "how-to" / "redis-cluster-sentinel.md").read_text()
    section = page.split("## Redis Cluster", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    code = snippet.group(1)
    url = redis_cluster.url(prefix="howto")
    code, count = re.subn(r'URL = "redis\+cluster://[^"]*"', f'URL = "{url}"', code)
    assert count == 1
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["thumbs/cat.png", "100"]


async def test_a_node_that_loses_its_data_ends_the_receipts_it_held_with_task_lost(
    redis_cluster: Any,
) -> None:
    """A master flushed alone (the system-wide keys live on another one): the queue's own
    epoch key tells, and the receipts of its tasks end with TaskLost at once (not at the
    next sweep, 15 s later)."""
    prefix = "amnesia"
    global_master = redis_cluster.owner(slot_of(f"{{{prefix}}}"))[1]
    queue = next(
        f"q{n}"
        for n in range(1000)
        if redis_cluster.owner(slot_of(f"{{{prefix}:q{n}}}"))[1] != global_master
    )
    port = redis_cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))[1]
    url = redis_cluster.url(prefix=prefix)
    async with connect(url, Queue(queue, Record)) as client:  # nothing serves it: tasks wait
        receipts = await client.submit_many(queue, [1, 2, 3])
        # The client watches the queue's node from its first submit (its epoch key).
        await wait_for(
            lambda: cli(port, "EXISTS", f"{{{prefix}:{queue}}}:epoch").strip() == "1",
            "the queue's epoch key",
        )
        await trio.to_thread.run_sync(cli, port, "FLUSHALL")
        errors = []
        with trio.fail_after(10):
            for receipt in receipts:
                with pytest.raises(TaskFailed) as info:
                    await receipt.result(timeout=10)
                errors.append(info.value.error_type)
    assert errors == ["TaskLost"] * 3


async def test_a_killed_master_mid_run_resolves_every_receipt(
    make_redis_cluster: Callable[[], Any],
) -> None:
    cluster = make_redis_cluster()
    prefix, queue = "crashing", "work"
    master, port = cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))
    replica = cluster.replica_of(master)

    def crash() -> None:
        cluster.node(port).kill()  # its replica takes over after cluster-node-timeout

    await run_through(cluster.url(prefix=prefix, lease=2), queue, crash, lossy=True)
    assert cluster.owner(slot_of(f"{{{prefix}:{queue}}}"))[1] == replica

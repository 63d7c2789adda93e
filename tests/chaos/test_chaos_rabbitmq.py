"""Chaos on RabbitMQ without touching the machine's RabbitMQ: a worker process SIGKILLed
mid-run; and every connection of the workers and the client through a loopback TCP proxy
of the test's own, which cuts them all mid-run and refuses new ones for a few seconds (an
outage, as the processes see it). The results store is a private redis-server."""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from chaos_helpers import (
    Memory,
    Outcomes,
    Proxy,
    duplicated,
    first_started,
    ran,
    second_runs,
    start_worker,
    stop,
    submit_numbers,
    wait_for,
)
from chaos_tasks import queue

from queueing import connect
from queueing.brokers import amqp

pytestmark = [pytest.mark.chaos, pytest.mark.amqp, pytest.mark.timeout(300)]

TASKS = 2000
OUTAGE = 3.0


async def delete_queues(amqp_url: str, results: str, prefix: str) -> None:
    """The queues the broker declared under `prefix` (it lists them in its results store)."""
    import coredis

    client: coredis.Redis[str] = coredis.Redis.from_url(results, decode_responses=True)
    async with client:
        key = f"{{{prefix}}}:rabbitmq"
        names = sorted(await client.smembers(key))
        await client.delete([key])
    if names:
        async with (
            amqp.connect(amqp_url) as connection,
            await connection.open_channel() as channel,
        ):
            for name in names:
                await channel.delete_queue(name)


async def test_every_rabbitmq_connection_cut_mid_run(
    rabbitmq_server: str, make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = f"every RabbitMQ connection cut, {OUTAGE:g} s outage (TCP proxy)"
    scenario.broker = "amqp"
    scenario.promise = (
        "0 lost; duplicates only among tasks started before the cut; recovery: outage end "
        "to the next task run"
    )
    results = make_redis_server()
    prefix = f"chaos{secrets.token_hex(3)}"
    proxy = Proxy(5672)
    runs = tmp_path / "runs"
    runs.mkdir()
    workers: list[Any] = []
    memory = Memory()
    memory.watch("redis", results.process.pid)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            nursery.start_soon(memory.sample_loop)
            url = (
                f"amqp://guest:guest@127.0.0.1:{proxy.port}/?results={results.url}&prefix={prefix}"
            )
            workers = [start_worker(url, tmp_path, runs, seconds=0.01) for _ in range(2)]
            memory.watch("worker", workers[0].pid)
            async with connect(url, queue) as system:
                pairs = await submit_numbers(system, TASKS)

                async def a_third() -> bool:
                    assert all(w.poll() is None for w in workers), "a worker died"
                    return ran(runs) >= TASKS // 3

                await wait_for(a_third, 120)
                cut_at = time.time()
                proxy.refusing = True
                proxy.cut()
                await trio.sleep(OUTAGE)
                proxy.refusing = False
                back_at = time.time()
                before = ran(runs)

                async def running_again() -> bool:
                    return ran(runs) > before

                await wait_for(running_again, 120)
                scenario.recovery = time.time() - back_at
                outcomes = await Outcomes().gather(pairs, timeout=180)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
        await delete_queues(rabbitmq_server, results.url, prefix)
    twice, _ = duplicated(runs)
    first = first_started(runs)
    scenario.tasks = TASKS
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (TASKS, 0, 0), outcomes.failed
    assert all(first[task_id] <= cut_at for task_id in twice)
    assert [w.returncode for w in workers] == [0, 0]


async def test_sigkill_of_a_worker_mid_run(
    rabbitmq_server: str, make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = "SIGKILL a worker mid-run"
    scenario.broker = "amqp"
    scenario.promise = (
        "0 lost; duplicates only among the killed worker's tasks (RabbitMQ hands them back "
        "when its connection closes: no lease); recovery: kill to the first of its tasks "
        "running again ('-': it held none)"
    )
    results = make_redis_server()
    prefix = f"chaos{secrets.token_hex(3)}"
    url = f"{rabbitmq_server}?results={results.url}&prefix={prefix}"
    runs = tmp_path / "runs"
    runs.mkdir()
    # Tasks of 50 ms: the victim is all but sure to be running some when it is killed.
    workers = [start_worker(url, tmp_path, runs, seconds=0.05) for _ in range(2)]
    victim = workers[0]
    memory = Memory()
    memory.watch("worker", workers[1].pid)
    memory.watch("redis", results.process.pid)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)
            async with connect(url, queue) as system:
                pairs = await submit_numbers(system, TASKS)

                async def a_third() -> bool:
                    assert all(w.poll() is None for w in workers), "a worker died"
                    return ran(runs) >= TASKS // 3

                await wait_for(a_third, 120)
                victim.send_signal(signal.SIGKILL)
                killed_at = time.time()
                victim.wait()
                outcomes = await Outcomes().gather(pairs, timeout=180)
            nursery.cancel_scope.cancel()
    finally:
        stop(workers)
        await delete_queues(rabbitmq_server, results.url, prefix)
    twice, by_process = duplicated(runs)
    again = second_runs(runs)
    scenario.tasks = TASKS
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.recovery = min(again.values()) - killed_at if again else None
    scenario.memory = memory.peaks()
    assert (outcomes.ok, outcomes.lost, outcomes.unresolved) == (TASKS, 0, 0), outcomes.failed
    assert twice <= by_process.get(victim.pid, set())
    assert workers[1].returncode == 0

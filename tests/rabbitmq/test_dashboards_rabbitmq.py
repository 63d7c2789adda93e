"""The dashboards' sampler over the RabbitMQ broker: a worker process publishes its slots
and latencies with its heartbeat, a client in another process reads them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from rabbit_helpers import start_worker, stop_workers

import queueing
from queueing.dashboard import Sampler, Snapshot

pytestmark = pytest.mark.amqp

#: Seconds for the worker process to start and publish a heartbeat with its report.
START = 30.0


async def sample_until(sampler: Sampler, check: Callable[[Snapshot], bool]) -> Snapshot:
    with trio.fail_after(START):
        while True:
            snapshot = await sampler.sample()
            if check(snapshot):
                return snapshot
            await trio.sleep(0.5)


async def test_the_sampler_reads_a_worker_process_over_rabbitmq(
    make_amqp_url: Callable[[], str], tmp_path: Path
) -> None:
    url = make_amqp_url()
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = start_worker(url, "rabbit_tasks", tmp_path, env={"QUEUEING_TEST_RUNS": str(runs)})
    try:
        async with queueing.connect(url) as probe:
            await sample_until(Sampler(probe), lambda s: len(s.processes) == 1)
        async with queueing.connect(url) as client:
            sampler = Sampler(client, window=60)
            await sampler.sample()
            for receipt in [await client.submit("mp", n) for n in range(10)]:
                await receipt.result(timeout=30)
            with pytest.raises(queueing.TaskFailed):
                await (await client.submit("picky", "no")).result(timeout=30)
            snapshot = await sample_until(sampler, lambda s: s.queue("mp").p50 is not None)
    finally:
        stop_workers([worker])
    mp = snapshot.queue("mp")
    assert (mp.submitted, mp.succeeded, mp.workers) == (10, 10, 8)
    assert mp.rate_out is not None
    assert mp.rate_out > 0
    assert snapshot.queue("picky").dead_letters == 1
    assert [f.message for f in snapshot.failures] == ["not ok: 'no'"]
    (process,) = snapshot.processes
    assert process.slots["mp"][0] == 8
    assert snapshot.source.startswith("amqp://")

"""A rate limit holds across three `queueing worker` processes sharing one broker (Redis;
also a SQLite file, and RabbitMQ with its results in Redis): over the steady part of the
run the queue starts tasks at its limit within 5 %, and no one-second window holds more
than the limit allows (plus 5 % for clocks and scheduling)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from rate_tasks import Stamp
from redis_helpers import start_worker, stop_workers, wait_for

from queueing import Queue, connect

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

RATE = int(os.environ.get("QUEUEING_TEST_RATE_PER_S", "200"))
SECONDS = float(os.environ.get("QUEUEING_TEST_RATE_SECONDS", "6"))
#: The start of the run not measured (three processes starting up, claiming).
WARM_UP = 1.0
TOLERANCE = 0.05


def starts(directory: Path) -> list[float]:
    return sorted(
        float(line) for path in directory.glob("*.log") for line in path.read_text().split() if line
    )


@pytest.fixture(params=["redis", "sqlite", pytest.param("amqp", marks=pytest.mark.amqp)])
def url(request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(redis_server.url_with(prefix=f"rate{os.getpid()}{time.monotonic_ns()}"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/rates.db"
    return str(request.getfixturevalue("amqp_url"))


async def test_three_processes_hold_the_limit(url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"QUEUEING_TEST_RUNS": str(runs), "QUEUEING_TEST_RATE": f"{RATE}/s"}
    rated = Queue("rated", Stamp, maxsize=100_000, rate_limit=f"{RATE}/s")
    async with connect(url, rated) as client:
        # More than the run can start: the workers never run out.
        await client.submit_many("rated", list(range(int(RATE * (SECONDS + 5)))))
    workers = [start_worker(url, "rate_tasks:rated", tmp_path, env=env) for _ in range(3)]
    try:

        async def started() -> bool:
            return bool(starts(runs))

        await wait_for(started, timeout=60, every=0.1)
        await trio.sleep(SECONDS)
    finally:
        stop_workers(workers)
    times = starts(runs)
    assert len(list(runs.glob("*.log"))) == 3, "every process started tasks"
    begin = times[0] + WARM_UP
    end = times[-1]
    steady = [t for t in times if begin <= t <= end]
    achieved = (len(steady) - 1) / (steady[-1] - steady[0])
    windows = [
        sum(1 for t in steady if start <= t < start + 1.0)
        for start in (begin + i * 0.25 for i in range(int((end - begin - 1.0) / 0.25) + 1))
    ]
    print(
        f"\n{url.partition(':')[0]}: rate limit {RATE}/s, 3 processes, "
        f"{end - times[0]:.1f} s: {len(times)} starts, "
        f"{achieved:.1f}/s over the steady {steady[-1] - steady[0]:.1f} s "
        f"({achieved / RATE - 1:+.2%}); busiest 1 s window {max(windows)}, "
        f"quietest {min(windows)}"
    )
    assert math.isclose(achieved, RATE, rel_tol=TOLERANCE)
    assert max(windows) <= RATE * (1 + TOLERANCE)

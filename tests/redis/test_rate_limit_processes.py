"""A rate limit holds across three `queueing worker` processes sharing one broker (Redis;
also a SQLite file, and RabbitMQ with its results in Redis): no one-second window holds
more than the limit allows (plus 5 % for clocks and scheduling), the rate over the steady
part of the run is not above the limit, and the queue makes progress in every process.
Per key too, with tasks submitted all along (or all at once first:
`QUEUEING_TEST_RATE_FLOOD=1`).

What the feature promises is the ceiling: how close to the limit the processes get is
their speed, which a loaded machine lowers (so no lower bound on the rate here; the
printed figures, `pytest -s`, say how close they came)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from rate_tasks import Stamp, rate_key
from redis_helpers import start_worker, stop_workers, wait_for

from queueing import Queue, connect

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

RATE = int(os.environ.get("QUEUEING_TEST_RATE_PER_S", "200"))
SECONDS = float(os.environ.get("QUEUEING_TEST_RATE_SECONDS", "6"))
#: The start of the run not measured (three processes starting up, claiming).
WARM_UP = 1.0
TOLERANCE = 0.05


def runs_in(logs: Path) -> list[tuple[float, int]]:
    """(start time, payload) of every start, by time."""
    found = []
    for path in logs.glob("*.log"):
        for line in path.read_text().splitlines():
            at, number = line.split()
            found.append((float(at), int(number)))
    return sorted(found)


def processes_in(logs: Path) -> int:
    return len(list(logs.glob("*.log")))


def measure(
    times: list[float], rate: float, what: str, warm_up: float = WARM_UP
) -> tuple[float, list[int]]:
    """The rate over the steady part of `times` (after `warm_up`), and the starts in each
    1 s window of it (one every 0.25 s); printed (`pytest -s` shows them)."""
    begin, end = times[0] + warm_up, times[-1]
    steady = [t for t in times if begin <= t <= end]
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    achieved = (len(steady) - 1) / span if span else 0.0
    windows = [
        sum(1 for t in steady if start <= t < start + 1.0)
        for start in (begin + i * 0.25 for i in range(int((end - begin - 1.0) / 0.25) + 1))
    ]
    print(
        f"\n{what}: limit {rate:g}/s, {end - times[0]:.1f} s: {len(times)} starts, "
        f"{achieved:.1f}/s over the steady {span:.1f} s "
        f"({achieved / rate - 1:+.2%}); 1 s windows {min(windows)} to {max(windows)}"
    )
    return achieved, windows


async def run_workers(
    url: str, queue: Queue, logs: Path, env: dict[str, str], *, steady: bool = False
) -> None:
    """Run three worker processes for `SECONDS` from their first start, with more tasks
    than they can start: all submitted first, or (`steady`) once the workers run, a little
    faster than the limit all along (a backlog, but never a flood of tasks to book)."""
    total = int(RATE * (SECONDS + 5))
    async with connect(url, queue) as client:
        await client.submit_many(queue.name, list(range(1 if steady else total)))
        workers = [start_worker(url, "rate_tasks:rated", logs.parent, env=env) for _ in range(3)]
        try:

            async def started() -> bool:
                return bool(runs_in(logs))

            await wait_for(started, timeout=60, every=0.1)
            async with trio.open_nursery() as nursery:
                if steady:
                    nursery.start_soon(feed, client, queue.name, total)
                await trio.sleep(SECONDS)
                nursery.cancel_scope.cancel()
        finally:
            stop_workers(workers)
    assert processes_in(logs) == 3, "every process started tasks"


async def feed(client: Any, queue: str, total: int) -> None:
    """Submit `total` tasks at 1.5 times the limit, in batches every 0.1 s."""
    batch = max(1, int(RATE * 1.5 / 10))
    for first in range(1, total, batch):
        await client.submit_many(queue, list(range(first, min(total, first + batch))))
        await trio.sleep(0.1)


@pytest.fixture(params=["redis", "sqlite", pytest.param("amqp", marks=pytest.mark.amqp)])
def url(request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(redis_server.url_with(prefix=f"rate{os.getpid()}{time.monotonic_ns()}"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/rates.db"
    return str(request.getfixturevalue("amqp_url"))


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


async def test_three_processes_hold_the_limit(url: str, logs: Path) -> None:
    env = {"QUEUEING_TEST_RUNS": str(logs), "QUEUEING_TEST_RATE": f"{RATE}/s"}
    queue = Queue("rated", Stamp, maxsize=100_000, rate_limit=f"{RATE}/s")
    await run_workers(url, queue, logs, env)
    times = [at for at, _ in runs_in(logs)]
    achieved, windows = measure(times, RATE, f"{url.partition(':')[0]}, 3 processes")
    # Before: `achieved` within 5 % of the limit, which a loaded machine fell short of.
    assert 0 < achieved <= RATE * (1 + TOLERANCE)
    assert max(windows) <= RATE * (1 + TOLERANCE)


async def test_three_processes_hold_a_limit_per_key(url: str, logs: Path) -> None:
    keys, per_key = 4, RATE // 4
    env = {
        "QUEUEING_TEST_RUNS": str(logs),
        "QUEUEING_TEST_RATE": f"{per_key}/s",
        "QUEUEING_TEST_RATE_KEYS": str(keys),
    }
    queue = Queue("rated", Stamp, maxsize=100_000, rate_limit=f"{per_key}/s", rate_key=rate_key)
    # QUEUEING_TEST_RATE_FLOOD=1: every task submitted before the workers start instead.
    steady = os.environ.get("QUEUEING_TEST_RATE_FLOOD") != "1"
    await run_workers(url, queue, logs, env, steady=steady)
    found = runs_in(logs)
    for key in range(keys):
        mine = [at for at, number in found if number % keys == key]
        # The first tasks of each key are booked and handed back while the processes
        # still warm up (connections, scripts): measured from 2 s on.
        what = f"{url.partition(':')[0]}, 3 processes, key {key}"
        achieved, windows = measure(mine, per_key, what, warm_up=2 * WARM_UP)
        assert 0 < achieved <= per_key * (1 + TOLERANCE)
        # A key's starts may come 5 % of a period early after late ones (its slack), plus
        # one at a window's edge.
        assert max(windows) <= per_key * (1 + TOLERANCE) + 1

"""The broker contract: every test in tests/contract runs once per broker, and every broker
must give the same outcome for the same scenario.

A test asks for two fixtures:

- `broker`: the URL of a fresh, empty system for this test (pass it to `serve()` from
  `contract_workers`, or to `open_system(broker=...)`);
- `clock`: the clock pytest-trio runs the test under. pytest-trio only hands a `Clock`
  to `trio.run` when the test itself requests the fixture, so every test lists `clock`
  even when its body never reads it. Brokers that keep time with trio's clock alone
  (memory) run under `MockClock(autojump_threshold=0)`, so their sleeps, backoffs and
  timeouts cost no real time; brokers with a server (Redis) run in real time, which is why
  the suite's delays and timeouts are fractions of a second.

Both come from one parameter, `broker_case`, whose values are the entries of `BROKERS`
(test ids `memory`, `sqlite`, `redis`, `amqp`); a new broker joins the contract by adding
one entry. Keep `mock_clock=False` if the broker stores due times and deadlines as
wall-clock times (and so does its polling); True only if every wait it makes is on trio's
clock.

The SQLite entry (`sqlite:///file.db`, no server, stdlib) uses a file of the test's own
(`tmp_path`), so tests share nothing, in real time (it keeps due times, deadlines and
leases on the wall clock, which all processes share).
The Redis entry is marked `redis` like tests/redis, and uses `redis_url` from
tests/conftest.py: a private `redis-server` per session, a key prefix per test, skipped
without the binary unless `QUEUEING_REQUIRE_REDIS=1` (CI), which makes that a failure.

The cluster entry (`redis+cluster://`) is marked `redis` too and uses `redis_cluster_url`:
a private Redis Cluster per session (3 masters, 3 replicas), a key prefix per test. In the
default run only the files in `CLUSTER_CORE` run on it; all of them under `slow`.

The AMQP entry (`amqp://`, RabbitMQ quorum queues with a Redis results store) is marked
`amqp` and uses `amqp_url` from tests/conftest.py: the machine's RabbitMQ with a queue
prefix per test (its queues deleted afterwards) and the session's private Redis; skipped
without a RabbitMQ answering at 127.0.0.1:5672 unless `QUEUEING_REQUIRE_AMQP=1` (CI).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
from trio.testing import MockClock


@attrs.frozen
class BrokerCase:
    """One broker the contract runs on."""

    #: The test id.
    name: str
    #: The URL of a fresh, empty system for one test (may request fixtures).
    url: Callable[[pytest.FixtureRequest], str]
    #: Whether tests run under `MockClock(autojump_threshold=0)`; False: real time.
    mock_clock: bool
    marks: tuple[pytest.MarkDecorator, ...] = ()


BROKERS = (
    BrokerCase("memory", lambda request: "memory://", mock_clock=True),
    BrokerCase(
        "sqlite",
        lambda request: f"sqlite:///{request.getfixturevalue('tmp_path')}/queueing.db",
        mock_clock=False,
    ),
    BrokerCase(
        "redis",
        lambda request: str(request.getfixturevalue("redis_url")),
        mock_clock=False,
        marks=(pytest.mark.redis,),
    ),
    BrokerCase(
        "cluster",
        lambda request: str(request.getfixturevalue("redis_cluster_url")),
        mock_clock=False,
        marks=(pytest.mark.redis,),
    ),
    BrokerCase(
        "amqp",
        lambda request: str(request.getfixturevalue("amqp_url")),
        mock_clock=False,
        marks=(pytest.mark.amqp,),
    ),
)


#: The contract files that run on the Redis Cluster in the default run: what crosses
#: slots (replies and done streams of several queues, pipelines over queues, lookups by id,
#: unique keys); the whole suite runs on the cluster under `slow` (it costs as much again
#: as on one Redis).
CLUSTER_CORE = (
    "test_contract_submit",
    "test_contract_pipelines",
    "test_contract_lookups",
    "test_contract_shards",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "contract/" not in item.nodeid or "[cluster" not in item.nodeid:
            continue
        if not any(name in item.nodeid for name in CLUSTER_CORE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=[pytest.param(case, id=case.name, marks=case.marks) for case in BROKERS])
def broker_case(request: pytest.FixtureRequest) -> BrokerCase:
    case: BrokerCase = request.param
    return case


@pytest.fixture
def broker(broker_case: BrokerCase, request: pytest.FixtureRequest) -> str:
    """The URL of this test's broker: a fresh, empty system."""
    return broker_case.url(request)


@pytest.fixture
def clock(broker_case: BrokerCase) -> trio.abc.Clock | None:
    """The clock of this test's broker; None: trio's real clock."""
    return MockClock(autojump_threshold=0) if broker_case.mock_clock else None

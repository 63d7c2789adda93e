"""The synchronous and asyncio clients on every shared broker (SQLite, Redis, RabbitMQ):
the other client tests go deep over Redis; these check that the same calls work on the
others, with payloads checked in the client and pipelines found by name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from client_helpers import SERVED, SPECS, Double, Resize, Sleep, double, serving

from queueing import (
    PayloadError,
    Pipeline,
    Queue,
    QueueFull,
    UnknownTask,
    connect,
    connect_sync,
)

twice = Queue("twice", Double)
#: Served with the client tests' queues; a client that passes no specs finds it by name.
quadruple = Pipeline("quadruple", [double, twice])


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'clients.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


def served(url: str) -> Any:
    return serving(url, *SERVED, quadruple)  # type: ignore[arg-type]


def test_the_sync_client(shared_url: str) -> None:
    with served(shared_url):
        with connect_sync(shared_url, *SPECS) as client:
            receipt = client.submit("area", Resize(6, 7))
            assert receipt.result(timeout=20) == 42
            assert client.receipt(receipt.id).result(timeout=5) == 42
            with pytest.raises(PayloadError, match="expected int"):
                client.submit("double", "21")
            with pytest.raises(UnknownTask):
                client.receipt("double:nothing-1").result(timeout=5)
        with connect_sync(shared_url) as client:  # no specs: what the workers declared
            assert client.submit("quadruple", 5).result(timeout=20) == 20
            # ...with the payload types the workers published.
            with pytest.raises(PayloadError, match=r"expected int, got '21' \(str\)"):
                client.submit("double", "21")
            with pytest.raises(PayloadError, match=r"expected int, got '5' \(str\)"):
                client.submit("quadruple", "5")


def test_the_asyncio_client(shared_url: str) -> None:
    async def main() -> list[Any]:
        async with connect(shared_url, *SPECS) as client:
            first = await (await client.submit("double", 21)).result(timeout=20)
            with pytest.raises(PayloadError, match="expected int"):
                await client.submit("double", "21")
        async with connect(shared_url) as client:  # no specs: what the workers declared
            second = await (await client.submit("quadruple", 5)).result(timeout=20)
            with pytest.raises(PayloadError, match=r"expected int, got '21' \(str\)"):
                await client.submit("double", "21")
        return [first, second]

    with served(shared_url):
        assert asyncio.run(main()) == [42, 20]


#: Served with tenant limits; a client that knows it only by name is held to them.
naps = Queue("naps", Sleep, workers=1, tenant_maxsize=1, tenant_concurrency=1)


def test_a_client_that_knows_a_queue_by_name_keeps_its_tenant_limits(shared_url: str) -> None:
    with serving(shared_url, naps), connect_sync(shared_url) as client:  # no specs
        first = client.submit("naps", 2.0, tenant="acme")
        # The queue waits for room (its default): a client's own timeout ends the wait.
        with pytest.raises(QueueFull, match="tenant 'acme'"):
            client.submit("naps", 0.01, tenant="acme", timeout=0.2)
        other = client.submit("naps", 0.01, tenant="globex")  # another tenant has room
        first.result(timeout=20)
        other.result(timeout=20)
        client.submit("naps", 0.01, tenant="acme").result(timeout=20)  # room again

"""The trio-only entry points refuse other event loops at once, naming the client to use;
a client's submit is bounded in time when the broker stalls (`broker_timeout`)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from client_helpers import SPECS, double

import queueing
from queueing import BrokerError, QueueingError, connect, connect_sync, open_system, run_system


async def _no_main(system: Any) -> None:
    raise AssertionError("main must not run")


def test_open_system_under_asyncio_fails_at_once_naming_connect() -> None:
    async def main() -> None:
        async with open_system(double):
            raise AssertionError("must not start")

    with pytest.raises(QueueingError, match=r"runs on trio.*under asyncio") as caught:
        asyncio.run(main())
    assert "queueing.connect(url)" in str(caught.value)
    assert "queueing.connect_sync(url)" in str(caught.value)


def test_run_system_inside_an_asyncio_loop_fails_at_once() -> None:
    async def main() -> None:
        run_system(double, main=_no_main)

    with pytest.raises(QueueingError, match="asyncio event loop") as caught:
        asyncio.run(main())
    assert "queueing.connect(url)" in str(caught.value)


def test_connect_sync_inside_an_event_loop_fails_naming_connect() -> None:
    async def main() -> None:
        connect_sync("redis://127.0.0.1:1/0")

    with pytest.raises(QueueingError, match=r"asyncio task: use `async with queueing.connect"):
        asyncio.run(main())
    with pytest.raises(QueueingError, match=r"trio task: use `async with queueing.connect"):
        trio.run(main)


def test_connect_sync_to_an_unreachable_broker_raises_broker_error() -> None:
    with pytest.raises(BrokerError):
        connect_sync("redis://127.0.0.1:1/0", connect_timeout=0.5)


@pytest.fixture
def stallable(make_redis_server: Callable[..., Any]) -> Iterator[Any]:
    """A private Redis the test may stall (SIGSTOP) and resume (SIGCONT)."""
    server = make_redis_server()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)


def stall(server: Any) -> None:
    os.kill(server.process.pid, signal.SIGSTOP)


@pytest.mark.redis
def test_a_sync_submit_to_a_stalled_broker_raises_broker_error_after_broker_timeout(
    stallable: Any,
) -> None:
    url = stallable.url_with(prefix="stall")
    with connect_sync(url, *SPECS, broker_timeout=0.5) as client:
        client.submit("held", 1)  # the broker answers
        stall(stallable)
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"did not answer within 0.5s.*same key="):
            client.submit("held", 2, key="order-2")
        assert time.monotonic() - started >= 0.5
        os.kill(stallable.process.pid, signal.SIGCONT)


@pytest.mark.redis
def test_an_asyncio_submit_to_a_stalled_broker_raises_broker_error(stallable: Any) -> None:
    url = stallable.url_with(prefix="stall")

    async def main() -> None:
        async with connect(url, *SPECS, broker_timeout=0.5) as client:
            await client.submit("held", 1)
            stall(stallable)
            with pytest.raises(BrokerError, match=r"did not answer within 0\.5s"):
                await client.submit("held", 2)
            os.kill(stallable.process.pid, signal.SIGCONT)

    asyncio.run(main())


@pytest.mark.redis
async def test_a_trio_submit_to_a_stalled_broker_raises_broker_error(stallable: Any) -> None:
    url = stallable.url_with(prefix="stall")
    async with connect(url, *SPECS, broker_timeout=0.5) as client:
        await client.submit("held", 1)
        stall(stallable)
        with pytest.raises(BrokerError, match=r"did not answer within 0\.5s"):
            await client.submit("held", 2)
        os.kill(stallable.process.pid, signal.SIGCONT)


def test_broker_timeout_is_checked() -> None:
    with pytest.raises(queueing.InvalidQueue, match="broker_timeout must be"):
        connect_sync("redis://127.0.0.1:1/0", broker_timeout=-1)


@pytest.mark.redis
async def test_an_error_in_a_trio_clients_block_comes_out_as_it_is(redis_url: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with connect(redis_url):
            raise KeyError("mine")


async def test_a_clients_submit_to_no_queue_name_says_what_it_takes(tmp_path: Any) -> None:
    async with connect(f"sqlite:///{tmp_path / 'q.db'}", double) as client:
        for wrong in (None, 1, b"double"):
            with pytest.raises(queueing.InvalidQueue, match=r"a queue's or pipeline's name"):
                await client.submit(wrong, 1)  # type: ignore[arg-type]

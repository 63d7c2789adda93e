"""`RedisBroker` under attack and under failure, driven directly: entries that are not
tasks are dead-lettered and never run, leases are renewed as soon as a lost Redis is back,
a stall past the per-call limit stops no background work, a cancelled claim gives back
what it took."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import coredis
import pytest
import trio
from broker_helpers import JOBS, new_task, opened, running
from redis_helpers import key, raw_client
from test_untrusted import BAD_ENTRIES

from queueing import BrokerError
from queueing._task import DeadLetter, Task
from queueing.brokers._contract import Admission, QueueInfo
from queueing.brokers.redis import _calls

if TYPE_CHECKING:
    from conftest import RedisServer

pytestmark = pytest.mark.redis


@asynccontextmanager
async def raw_client_bytes(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    parts = urlsplit(url)
    client: coredis.Redis[bytes] = coredis.Redis(parts.hostname, parts.port)
    async with client:
        yield client


async def test_entries_that_are_not_tasks_are_dead_lettered_with_the_reason(
    redis_url: str,
) -> None:
    orders = QueueInfo("orders", maxsize=100, max_payload=1024, result_ttl=60.0)
    cases = list(BAD_ENTRIES.values())
    async with opened(redis_url, orders) as broker, raw_client(redis_url) as client:
        ready = key(redis_url, "orders", "ready")
        for fields, _ in cases:
            await client.xadd(ready, fields)
        async with raw_client_bytes(redis_url) as binary:
            await binary.xadd(ready.encode(), {b"env": b"\xff\xfe{\x80"})
        await client.hset(key(redis_url, "orders", "envs"), {"d1": "not an envelope"})
        await client.zadd(key(redis_url, "orders", "delayed"), {"d1": 0})
        good = new_task("orders", {"item": "tea", "quantity": 2})
        await broker.accept(orders, good)
        claimed: list[Task] = []
        letters: list[DeadLetter] = []
        with trio.fail_after(10):
            while len(letters) < len(cases) + 2:
                claimed += await broker.claim(orders, 100, wait=0.2)
                await broker.flush()
                letters = await broker.dead_letters("orders", 100)
        assert [t.id for t in claimed] == [good.id]  # never the bad ones
        messages = [letter.error.message for letter in letters if letter.error]
        assert all(letter.error and letter.error.type == "BadEntry" for letter in letters)
        for (_, reason), message in zip(cases, messages, strict=False):
            assert reason in message
        assert any("not valid JSON" in message for message in messages[len(cases) :])
        assert await client.xlen(ready) == 1  # the good task's entry only
        assert (await client.xpending(ready, "workers")).pending == 1
        assert await broker.outstanding("orders") == 1


# -- a lost connection -----------------------------------------------------------------------


async def test_leases_are_renewed_as_soon_as_redis_is_back(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    server = make_redis_server("--appendonly", "yes", "--appendfsync", "always")
    url = server.url_with(prefix="reconnect")
    async with opened(url, lease=30.0) as broker, raw_client(url) as client:
        await broker.accept(JOBS, new_task())
        (held,) = await broker.claim(JOBS, 1, wait=0)
        claimed_at = trio.current_time()
        ready = key(url, "jobs", "ready")
        server.stop()
        await trio.sleep(1.0)  # the background loops notice: the connection is lost
        server.start()

        async def idle_ms() -> int:
            (entry,) = await client.xpending(ready, "workers", start="-", end="+", count=1)
            return int(entry.idle)

        # Nobody called renew: the broker renewed the lease itself once Redis was back.
        with trio.fail_after(10):
            while await idle_ms() > (trio.current_time() - claimed_at - 0.8) * 1000:  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert await broker.renew(JOBS, [held]) == []


async def test_a_stall_past_the_per_call_limit_stops_no_background_work(
    make_redis_server: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A per-call limit of 0.4 s (a blocking read's 0.2 s, and 0.2 s of grace), so that a
    # stall of a second is past it. Before, the first background call Redis did not answer
    # in time (the epoch probe's, every second) ended `run()`, and with it every loop of
    # the process: the submits waiting for Redis failed as if the system had stopped.
    monkeypatch.setattr(_calls, "ATTEMPT_GRACE", 0.2)
    server = make_redis_server()
    url = server.url_with(prefix="stall")
    async with running(url, block=0.2) as handle:  # serving: every background loop runs
        broker = handle.broker
        assert await broker.accept(JOBS, new_task()) is Admission.ACCEPTED
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BrokerError, match="no answer within"):
                await broker.accept(JOBS, new_task())
            # Every loop's calls give up meanwhile and the loops start again. Stay stopped
            # until one has said so (a loaded machine may take longer than a second).
            with trio.fail_after(30):
                while not any(  # noqa: ASYNC110
                    "starting it again" in record.getMessage() for record in caplog.records
                ):
                    await trio.sleep(0.1)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await broker.accept(JOBS, new_task()) is Admission.ACCEPTED
        (task, *_) = await broker.claim(JOBS, 10, wait=1.0)  # the background work goes on
        assert task.id


async def test_a_claim_cancelled_while_it_reads_hands_its_tasks_back(redis_url: str) -> None:
    async with opened(redis_url) as a, opened(redis_url) as b:  # a lease of 30 s
        task = new_task()

        async def accept_later() -> None:
            await trio.sleep(0.3)
            await b.accept(JOBS, task)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_later)
            with trio.move_on_after(0.1) as scope:
                await a.claim(JOBS, 1, wait=1.0)  # the read in flight finishes first
            assert scope.cancelled_caught
        (taken,) = await b.claim(JOBS, 1, wait=1.0)  # not after a lease: at once
        assert (taken.id, taken.deliveries) == (task.id, 0)

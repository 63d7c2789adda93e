"""Workers whose handlers use asyncio libraries (`asyncio = True`): asyncpg against the
machine's PostgreSQL, redis.asyncio against a private redis-server, asyncio.sleep."""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

import pytest
import trio

from queueing import InvalidQueue, Queue, TaskFailed, Worker, open_system

POSTGRES = os.environ.get("QUEUEING_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


class Sleepy(Worker):
    asyncio = True

    async def handle(self, seconds: float) -> str:
        await asyncio.sleep(seconds)  # asyncio's own sleep: it needs an asyncio loop
        return f"slept {seconds}"


async def test_an_asyncio_handler_runs_on_trio() -> None:
    async with open_system(Queue("sleepy", Sleepy, workers=2)) as system:
        receipts = [await system.submit("sleepy", 0.01 * n) for n in range(4)]
        assert [await r for r in receipts] == [f"slept {0.01 * n}" for n in range(4)]


class Forgetful(Worker):
    """Uses an asyncio library without saying so."""

    async def handle(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "never"


async def test_asyncio_without_the_flag_fails_with_a_message_that_names_the_fix() -> None:
    async with open_system(Queue("forgetful", Forgetful)) as system:
        with pytest.raises(TaskFailed) as info:
            await (await system.submit("forgetful", 0.01))
    assert "asyncio = True" in info.value.error


async def test_an_asyncio_handler_is_cancelled_through_its_receipt() -> None:
    async with open_system(Queue("sleepy", Sleepy)) as system:
        long = await system.submit("sleepy", 60.0)
        await trio.sleep(0.1)
        assert await long.cancel() is True
        assert await (await system.submit("sleepy", 0.0)) == "slept 0.0"


async def test_an_asyncio_handler_times_out() -> None:
    from queueing import RetryPolicy

    queue = Queue("sleepy", Sleepy, timeout=0.1, retry=RetryPolicy.never())
    async with open_system(queue) as system:
        with pytest.raises(TaskFailed) as info:
            await (await system.submit("sleepy", 60.0))
    assert info.value.error_type == "queueing.TaskTimeout"


def test_a_sync_handler_cannot_be_asyncio() -> None:
    with pytest.raises(InvalidQueue, match="must be an `async def`"):

        class Blocking(Worker):
            asyncio = True

            def handle(self, n: int) -> int:  # type: ignore[override]
                return n


class Rows(Worker):
    """asyncpg: a pool opened in on_start, queries in handle, closed in on_stop."""

    asyncio = True
    pool: Any = None

    async def on_start(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(POSTGRES, min_size=1, max_size=2)

    async def handle(self, n: int) -> int:
        async with self.pool.acquire() as connection:
            value: int = await connection.fetchval("SELECT $1::int * 2", n)
            return value

    async def on_stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()


async def _postgres_is_up() -> bool:
    try:
        with trio.move_on_after(2):
            stream = await trio.open_tcp_stream("127.0.0.1", 5432)
            await stream.aclose()
            return True
    except OSError:
        pass
    return False


async def test_asyncpg_against_postgresql() -> None:
    if not await _postgres_is_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    async with open_system(Queue("rows", Rows, workers=2)) as system:
        receipts = [await system.submit("rows", n) for n in range(10)]
        assert [await r for r in receipts] == [2 * n for n in range(10)]


class Counter(Worker):
    """redis.asyncio (redis-py's asyncio client)."""

    asyncio = True
    client: Any = None

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    async def on_start(self) -> None:
        import redis.asyncio

        self.client = redis.asyncio.from_url(self.url)

    async def handle(self, n: int) -> int:
        value: int = await self.client.incrby(self.key, n)
        return value

    async def on_stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()


@pytest.mark.redis
async def test_redis_asyncio_against_redis(redis_server: Any) -> None:
    key = f"asyncio-{secrets.token_hex(4)}"
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    queue = Queue("count", Counter, worker_kwargs={"url": url, "key": key})
    async with open_system(queue) as system:
        receipts = [await system.submit("count", 1) for _ in range(5)]
        assert sorted([await r for r in receipts]) == [1, 2, 3, 4, 5]

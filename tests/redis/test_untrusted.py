"""Entries written into a queue's stream by anyone (another program, an old version, by
hand) are untrusted: whatever does not parse is dead-lettered with the reason, and the
workers go on with the next task."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import attrs
import coredis
import pytest
from redis_helpers import (
    REMOVE,
    envelope,
    global_key,
    inject_task,
    key,
    outcome_of,
    outstanding,
    raw_client,
    wait_for,
)

from queueing import DeadLetter, Queue, TaskFailed, TaskState, Worker, connect, open_system

pytestmark = pytest.mark.redis


@attrs.frozen
class Order:
    item: str
    quantity: int


class Orders(Worker):
    async def handle(self, order: Order) -> str:
        return f"{order.quantity} x {order.item}"


def orders(**options: Any) -> Queue:
    return Queue("orders", Orders, workers=2, max_payload=1024, **options)


GOOD = {"item": "tea", "quantity": 2}

# (fields of the stream entry, words the dead letter's reason must contain)
BAD_ENTRIES: dict[str, tuple[dict[str, str], str]] = {
    "missing env": ({"id": "t1"}, "missing field 'env'"),
    "env not json": ({"id": "t1", "env": "{not json"}, "not valid JSON"),
    "env a list": ({"env": "[1, 2]"}, "must be a JSON object"),
    "env a string": ({"env": '"hello"'}, "must be a JSON object"),
    "wrong version": ({"env": envelope("orders", "t1", GOOD, v=2)}, "version 2"),
    "no version": ({"env": envelope("orders", "t1", GOOD, v=REMOVE)}, "version None"),
    "id a number": ({"env": envelope("orders", 123, GOOD)}, "field 'id'"),
    "id empty": ({"env": envelope("orders", "", GOOD)}, "field 'id'"),
    "id too long": ({"env": envelope("orders", "x" * 500, GOOD)}, "field 'id'"),
    "wrong queue": ({"env": envelope("other", "t1", GOOD)}, "field 'queue' is 'other'"),
    "no payload": (
        {"env": envelope("orders", "t1", REMOVE)},
        "missing field 'payload'",
    ),
    "attempts negative": ({"env": envelope("orders", "t1", GOOD, attempts=-1)}, "'attempts'"),
    "attempts a string": ({"env": envelope("orders", "t1", GOOD, attempts="1")}, "'attempts'"),
    "attempts a bool": ({"env": envelope("orders", "t1", GOOD, attempts=True)}, "'attempts'"),
    "submitted_at text": (
        {"env": envelope("orders", "t1", GOOD, submitted_at="now")},
        "'submitted_at'",
    ),
    "expires_at a bool": (
        {"env": envelope("orders", "t1", GOOD, expires_at=True)},
        "'expires_at'",
    ),
    "reply_to a number": ({"env": envelope("orders", "t1", GOOD, reply_to=5)}, "'reply_to'"),
    "oversized": ({"env": envelope("orders", "t1", {"item": "x" * 10_000})}, "over the limit"),
}


async def dead_letter_of(system: Any, queue: str = "orders") -> DeadLetter:
    async def arrived() -> bool:
        return bool(await system.dead_letters(queue))

    await wait_for(arrived, timeout=5)
    (letter,) = await system.dead_letters(queue)
    return letter


async def assert_still_working(system: Any, client: coredis.Redis[str], url: str) -> None:
    receipt = await system.submit("orders", Order("coffee", 3))
    assert await receipt.result(timeout=5) == "3 x coffee"
    await system.drain(timeout=5)
    ready = key(url, "orders", "ready")
    assert await client.xlen(ready) == 0  # the bad entry was removed, not left to rot
    assert (await client.xpending(ready, "workers")).pending == 0
    assert await outstanding(client, url, "orders") == 0


@pytest.mark.parametrize(("fields", "reason"), BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
async def test_bad_entry_is_dead_lettered_with_the_reason(
    redis_url: str, fields: dict[str, str], reason: str
) -> None:
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        await client.xadd(key(redis_url, "orders", "ready"), fields)
        letter = await dead_letter_of(system)
        assert letter.state is TaskState.DEAD_LETTERED
        assert letter.error is not None
        assert letter.error.type == "BadEntry"
        assert reason in letter.error.message
        assert letter.queue == "orders"
        await assert_still_working(system, client, redis_url)


async def test_a_huge_task_id_is_cut_short_in_the_dead_letter_and_the_log(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "orders:" + "x" * 4000  # within the envelope size limit: the id is what is wrong
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        entry = {"env": envelope("orders", huge, GOOD)}
        await client.xadd(key(redis_url, "orders", "ready"), entry)
        letter = await dead_letter_of(system)
        assert letter.error is not None
        assert "field 'id'" in letter.error.message
        assert len(letter.error.message) < 500, letter.error.message
        assert len(json.dumps(letter.payload)) < 5000  # the entry's fields, capped
        logged = [r.getMessage() for r in caplog.records if "not a task" in r.getMessage()]
        assert logged
        assert all(len(line) < 1000 for line in logged)
        await assert_still_working(system, client, redis_url)


async def test_non_utf8_entry_is_dead_lettered(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    binary: coredis.Redis[bytes] = coredis.Redis(parts.hostname, parts.port)
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        async with binary:
            await binary.xadd(key(redis_url, "orders", "ready"), {b"env": b"\xff\xfe{\x80"})
        letter = await dead_letter_of(system)
        assert letter.error is not None
        assert letter.error.type == "BadEntry"
        await assert_still_working(system, client, redis_url)


async def test_payload_of_the_wrong_type_is_dead_lettered(redis_url: str) -> None:
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        task_id = await inject_task(client, redis_url, "orders", "a string, not an order")
        letter = await dead_letter_of(system)
        assert letter.id == task_id
        assert letter.payload == "a string, not an order"
        assert letter.state is TaskState.DEAD_LETTERED
        assert letter.error is not None
        assert letter.error.type == "queueing.PayloadError"
        assert "Order" in letter.error.message
        await assert_still_working(system, client, redis_url)


async def test_payload_from_an_unvalidating_client_is_dead_lettered(redis_url: str) -> None:
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        # A client that does not check payloads (an older one: the payload types the
        # workers published are gone): the worker does.
        await client.delete([global_key(redis_url, "payload-types")])
        async with connect(redis_url) as remote:
            receipt = await remote.submit("orders", {"item": "tea", "quantity": "many"})
            failure = await outcome_of(receipt)
            assert isinstance(failure, TaskFailed)
            assert failure.outcome is TaskState.DEAD_LETTERED
            assert failure.error_type == "queueing.PayloadError"
            good = await remote.submit("orders", GOOD)
            assert await good.result(timeout=5) == "2 x tea"
        letter = await dead_letter_of(system)
        assert letter.id == receipt.id
        await assert_still_working(system, client, redis_url)


async def test_many_bad_entries_among_good_tasks(redis_url: str) -> None:
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        ready = key(redis_url, "orders", "ready")
        receipts = []
        for n, (fields, _) in enumerate(BAD_ENTRIES.values()):
            await client.xadd(ready, fields)
            receipts.append(await system.submit("orders", Order("tea", n)))
        assert [await r.result(timeout=5) for r in receipts] == [
            f"{n} x tea" for n in range(len(BAD_ENTRIES))
        ]

        async def all_dead() -> bool:
            return len(await system.dead_letters("orders")) == len(BAD_ENTRIES)

        await wait_for(all_dead, timeout=5)
        await assert_still_working(system, client, redis_url)


async def test_garbage_in_the_dead_letter_stream_does_not_break_listing(redis_url: str) -> None:
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        dead = key(redis_url, "orders", "dead")
        await client.xadd(dead, {"d": "{not json"})
        await client.xadd(dead, {"d": json.dumps([1, 2])})
        await client.xadd(dead, {"x": "no d field"})
        await client.xadd(key(redis_url, "orders", "ready"), {"env": "junk"})

        async def four() -> bool:
            return len(await system.dead_letters("orders")) == 4

        await wait_for(four, timeout=5)
        letters = await system.dead_letters("orders")
        assert letters[-1].error is not None
        assert letters[-1].error.type == "BadEntry"
        assert await system.purge_dead_letters("orders") == 4
        await assert_still_working(system, client, redis_url)


async def test_entry_promoted_from_the_delayed_set_is_validated(redis_url: str) -> None:
    async with open_system(orders(), broker=redis_url) as system, raw_client(redis_url) as client:
        await client.hset(key(redis_url, "orders", "envs"), {"d1": "not an envelope"})
        await client.zadd(key(redis_url, "orders", "delayed"), {"d1": 0})
        letter = await dead_letter_of(system)
        assert letter.error is not None
        assert "not valid JSON" in letter.error.message
        await assert_still_working(system, client, redis_url)

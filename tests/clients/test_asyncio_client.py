"""`connect()` under asyncio: the same methods, semantics and errors as under trio, over a
real Redis with workers running elsewhere (a trio run on another thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from client_helpers import SPECS, Resize, serving

import queueing
from queueing import (
    AsyncioClient,
    PayloadError,
    PayloadTooLarge,
    QueueFull,
    Receipt,
    ResultTimeout,
    SystemStopping,
    TaskCancelled,
    TaskFailed,
    TaskState,
    UnknownQueue,
    UnknownTask,
    connect,
)

pytestmark = pytest.mark.redis
T = TypeVar("T")


def run(main: Callable[[Any], Awaitable[T]], url: str) -> T:
    """`main(client)` under asyncio.run, with a connect() client of every test queue."""

    async def go() -> T:
        async with connect(url, *SPECS) as client:
            assert isinstance(client, AsyncioClient)
            return await main(client)

    return asyncio.run(go())


def test_submit_and_await_the_result(redis_url: str) -> None:
    async def main(client: Any) -> None:
        receipt = await client.submit("double", 21)
        assert isinstance(receipt, Receipt)
        assert receipt.queue == "double"
        assert await receipt == 42
        assert receipt.done()
        assert await receipt.result(timeout=5) == 42  # again, at once
        status = await receipt.status()
        assert status.state is TaskState.SUCCEEDED
        assert status.attempts == 1
        first = await client.submit("area", Resize(3, 4), key="order-1")
        assert await client.submit("area", Resize(3, 4), key="order-1") == first  # key=
        assert await first == 12

    with serving(redis_url):
        run(main, redis_url)


def test_many_concurrent_submits_from_asyncio_tasks(redis_url: str) -> None:
    async def main(client: Any) -> list[int]:
        receipts = await asyncio.gather(*(client.submit("double", n) for n in range(300)))
        assert len({r.id for r in receipts}) == 300
        return list(await asyncio.gather(*(r.result(timeout=30) for r in receipts)))

    with serving(redis_url):
        assert run(main, redis_url) == [2 * n for n in range(300)]


def test_submit_many_gives_asyncio_receipts_in_order(redis_url: str) -> None:
    async def main(client: Any) -> list[int]:
        receipts = await client.submit_many("double", range(50))
        return [await r for r in receipts]

    with serving(redis_url):
        assert run(main, redis_url) == [2 * n for n in range(50)]


def test_submit_and_submit_many_take_a_priority(redis_url: str) -> None:
    async def main(client: Any) -> list[int]:
        one = await client.submit("double", 1, priority=9)
        many = await client.submit_many("double", [2, 3], priority=4)
        assert [(await r.status()).priority for r in (one, *many)] == [9, 4, 4]
        with pytest.raises(queueing.InvalidQueue, match="priority must be"):
            await client.submit("double", 4, priority=10)
        return [await r for r in (one, *many)]

    with serving(redis_url):
        assert run(main, redis_url) == [2, 4, 6]


def test_submit_and_submit_many_take_a_tenant(redis_url: str) -> None:
    async def main(client: Any) -> list[int]:
        one = await client.submit("double", 1, tenant="acme")
        many = await client.submit_many("double", [2, 3], tenant="globex")
        assert [(await r.status()).tenant for r in (one, *many)] == ["acme", "globex", "globex"]
        with pytest.raises(queueing.InvalidQueue, match="tenant must be"):
            await client.submit("double", 4, tenant="")
        results = [await r for r in (one, *many)]
        assert await client.tenants("double") == []  # every task of theirs is done
        return results

    with serving(redis_url):
        assert run(main, redis_url) == [2, 4, 6]


def test_refusals_are_the_trio_clients_errors(redis_url: str) -> None:
    async def main(client: Any) -> None:
        with pytest.raises(UnknownQueue, match="no queue or pipeline named 'nope'"):
            await client.submit("nope", 1)
        with pytest.raises(PayloadError, match="expected int"):
            await client.submit("double", "three")
        with pytest.raises(PayloadTooLarge, match="max_payload of 64 bytes"):
            await client.submit("area", Resize(10**40, 10**40))
        await client.submit("held", 1)
        await client.submit("held", 2)
        with pytest.raises(QueueFull, match="'held' is full"):
            await client.submit("held", 3)

    run(main, redis_url)  # refused at the caller: no worker needed


def test_a_failed_task_raises_task_failed_with_its_cause(redis_url: str) -> None:
    async def main(client: Any) -> None:
        receipt = await client.submit("fail", "this")
        with pytest.raises(TaskFailed, match="ValueError: cannot handle 'this'") as caught:
            await receipt
        assert caught.value.outcome is TaskState.FAILED
        assert caught.value.attempts == 1

    with serving(redis_url):
        run(main, redis_url)


def test_result_timeout_leaves_the_task_going(redis_url: str) -> None:
    async def main(client: Any) -> float:
        receipt = await client.submit("sleep", 0.5)
        with pytest.raises(ResultTimeout):
            await receipt.result(timeout=0.01)
        return float(await receipt.result(timeout=30))

    with serving(redis_url):
        assert run(main, redis_url) == 0.5


def test_a_cancelled_asyncio_wait_cancels_only_the_wait(redis_url: str) -> None:
    async def main(client: Any) -> float:
        receipt = await client.submit("sleep", 0.3)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(receipt.result(), 0.01)
        return float(await receipt)  # the task went on; waiting again works

    with serving(redis_url):
        assert run(main, redis_url) == 0.3


def test_cancel_through_the_receipt(redis_url: str) -> None:
    async def main(client: Any) -> None:
        receipt = await client.submit("held", 5)
        assert await receipt.cancel() is True
        assert await receipt.cancel() is False
        with pytest.raises(TaskCancelled):
            await receipt
        assert (await receipt.status()).state is TaskState.CANCELLED

    run(main, redis_url)


def test_a_receipt_found_by_id_from_another_client(redis_url: str) -> None:
    async def submit(client: Any) -> str:
        return str((await client.submit("double", 8)).id)

    async def find(task_id: str) -> int:
        async with connect(redis_url) as client:  # knows the queues only from the workers
            receipt = client.receipt(task_id)
            assert receipt.id == task_id
            return int(await receipt.result(timeout=10))

    with serving(redis_url):
        task_id = run(submit, redis_url)
        assert asyncio.run(find(task_id)) == 16


def test_an_unknown_id_raises_unknown_task_at_the_first_await(redis_url: str) -> None:
    async def main(client: Any) -> None:
        receipt = client.receipt("double:no-such-task")
        with pytest.raises(UnknownTask):
            await receipt.status()

    run(main, redis_url)


def test_calls_after_close_raise_system_stopping(redis_url: str) -> None:
    async def main() -> None:
        async with connect(redis_url, *SPECS) as client:
            receipt = await client.submit("held", 1)
        with pytest.raises(SystemStopping, match="closed"):
            await client.submit("held", 2)
        with pytest.raises(SystemStopping, match="closed"):
            await receipt.status()
        # Before: stats() and receipt() read the closed client's counters unsaid.
        with pytest.raises(SystemStopping, match="closed"):
            client.stats()
        with pytest.raises(SystemStopping, match="closed"):
            client.receipt(receipt.id)

    asyncio.run(main())


def test_a_wait_in_progress_ends_with_system_stopping_at_close(redis_url: str) -> None:
    async def main() -> None:
        async with connect(redis_url, *SPECS) as client:
            receipt = await client.submit("held", 1)  # nobody serves it: never finishes
            waiting = asyncio.ensure_future(receipt.result())
            await asyncio.sleep(0.05)
            assert not waiting.done()
        with pytest.raises(SystemStopping):
            await waiting

    asyncio.run(main())


def test_memory_url_is_refused_as_under_trio() -> None:
    async def main() -> None:
        async with connect("memory://"):
            pass

    with pytest.raises(queueing.InvalidQueue, match="needs a shared broker"):
        asyncio.run(main())

"""Callers cancelled in the middle of a Redis call: nothing hangs later.

coredis gives up a slot of its connection pool for good when a command is cancelled
midway; the broker shields its calls so that many cancelled callers (a `move_on_after`
around a `submit` that waits for room, a `drain(timeout=...)`) cannot use the pool up.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import trio

from queueing import Full, Queue, QueueingError, Worker, open_system

pytestmark = pytest.mark.redis


class Held(Worker):
    """Holds its task until the gate opens: the queue stays full."""

    gate: trio.Event | None = None

    async def handle(self, x: int) -> int:
        assert Held.gate is not None
        await Held.gate.wait()
        return x


async def test_many_cancelled_waits_for_room_leave_the_client_working(redis_url: str) -> None:
    Held.gate = trio.Event()
    queue = Queue("held", Held, workers=1, maxsize=1, when_full=Full.WAIT)
    async with open_system(queue, broker=redis_url) as system:
        first = await system.submit("held", 0)  # the queue is full from now on
        for i in range(70):  # more than the 64 connections of the client's pool
            with trio.move_on_after(0.01) as scope:
                await system.submit("held", i + 1)
            assert scope.cancelled_caught
        for _ in range(5):
            with trio.move_on_after(0.01) as scope:
                await system.drain()
            assert scope.cancelled_caught
        Held.gate.set()
        with trio.fail_after(10):
            assert await first.result(timeout=10) == 0
            second = await system.submit("held", 7)
            assert await second.result(timeout=10) == 7
            await system.drain()


class Quick(Worker):
    async def handle(self, x: int) -> int:
        return x


async def test_submitters_still_running_when_the_system_stops_end_with_an_error(
    redis_url: str,
) -> None:
    errors: list[BaseException] = []
    quick = Queue("quick", Quick, workers=4)
    with trio.fail_after(20):  # a submit left waiting for an answer would hang here
        async with trio.open_nursery() as nursery, open_system(quick, broker=redis_url) as system:

            async def submitter() -> None:
                try:
                    while True:
                        await system.submit("quick", 1)
                except QueueingError as exc:  # SystemStopping, or BrokerError
                    errors.append(exc)

            for _ in range(8):
                nursery.start_soon(submitter)
            await trio.sleep(0.3)
    assert len(errors) == 8


class Recorded(Worker):
    """Notes each payload it runs."""

    ran: ClassVar[list[int]] = []

    async def handle(self, x: int) -> int:
        Recorded.ran.append(x)
        return x


async def test_a_submit_cancelled_midway_runs_its_task_only_if_it_returned_a_receipt(
    redis_url: str,
) -> None:
    # Cancelled at various points (before its batch is sent: withdrawn; once it is sent:
    # it waits for Redis's answer and hands the receipt over): what ran is exactly what
    # was handed a receipt, each once.
    Recorded.ran = []
    queue = Queue("recorded", Recorded, workers=4)
    got: list[int] = []
    async with open_system(queue, broker=redis_url) as system:

        async def submitter(first: int) -> None:
            for i in range(first, 400, 40):
                with trio.move_on_after((i % 7) * 0.0005):
                    receipt = await system.submit("recorded", i)
                    got.append(i)
                    await receipt

        async with trio.open_nursery() as nursery:
            for first in range(40):
                nursery.start_soon(submitter, first)
        with trio.fail_after(20):
            await system.drain()
    assert sorted(Recorded.ran) == sorted(got)

"""What a client over Redis keeps alive for each task while its caller waits.

The garbage collector walks every object it tracks at each collection of its generation,
and moves those still alive to an older one: the more objects each task in flight holds,
the more reach the oldest generation, and the sooner a full collection walks the whole
process (docs/how-to/latency.md). These count them (`gc.get_objects`, after a collection),
with no worker running, so that every task waits.
"""

from __future__ import annotations

import gc

import pytest
import trio

from queueing import Queue, Worker, connect
from queueing.brokers.redis._batch import _Slot

pytestmark = pytest.mark.redis

#: Callers waiting at once in the count.
CALLERS = 200
#: Tracked objects one waiting caller of `await receipt` may hold, its own trio task,
#: coroutine and context included (four of them): 17 with trio 0.27, 25 before the
#: receipt's waiter and the submit's slot were made lighter.
HELD_MOST = 19
#: The same with `await receipt.result(timeout=300)`: its deadline is one entry in the
#: run's timer of receipts: 16 (21 when each wait opened a cancel scope with a deadline).
HELD_MOST_TIMED = 17


class Echo(Worker):
    async def handle(self, payload: int) -> int:
        return payload


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


@pytest.mark.parametrize("timed", [False, True], ids=["await receipt", "result(timeout=300)"])
async def test_a_waiting_receipt_holds_few_objects_for_the_collector(
    redis_url: str, timed: bool
) -> None:
    async with connect(redis_url, Queue("echo", Echo)) as client:
        submitted = 0
        reached = {1: trio.Event(), CALLERS + 1: trio.Event()}

        async def caller(i: int) -> None:
            nonlocal submitted
            receipt = await client.submit("echo", i)
            submitted += 1
            if submitted in reached:
                reached[submitted].set()
            if timed:
                await receipt.result(timeout=300)
            else:
                await receipt

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, -1)  # the first submit opens what later ones reuse
            await reached[1].wait()
            await trio.sleep(0.1)
            before = _tracked()
            for i in range(CALLERS):
                nursery.start_soon(caller, i)
            await reached[CALLERS + 1].wait()
            await trio.sleep(0.1)
            held = (_tracked() - before) / CALLERS
            nursery.cancel_scope.cancel()
    assert held <= (HELD_MOST_TIMED if timed else HELD_MOST)


async def test_an_answered_submits_slot_is_not_kept(redis_url: str) -> None:
    """The sender that sent a batch of submits keeps none of it while it waits for the
    next: its slots would live on until then, and age into the collector's oldest
    generation."""
    async with connect(redis_url, Queue("echo", Echo)) as client:
        receipts = [await client.submit("echo", i) for i in range(5)]
        assert len(receipts) == 5
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o) is _Slot]

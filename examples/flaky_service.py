"""A flaky downstream service: retries, dead letters, and re-queueing after the fix.

    python examples/flaky_service.py

A `charges` queue sends each order to a payment gateway we simulate here. The gateway
misbehaves in three ways, and each one ends differently:

- now and then a call times out (`TimeoutError`): the queue's `RetryPolicy` tries again
  after a jittered exponential backoff, and the order succeeds;
- its eu-west region is down (`ConnectionError` on every call): the retries run out and the
  task is DEAD_LETTERED, with its cause kept next to its payload;
- an order with a non-positive amount is refused (`ValueError`): not worth retrying, so the
  task FAILED after one attempt (and is kept as a dead letter too).

Then we "fix" the region, re-queue the dead-lettered orders (they succeed), and purge the
one left, which no retry can fix. Docs: docs/concepts/retries.md.
"""

import random
import sys

import attrs
import trio
from tenacity import stop_after_attempt, wait_exponential, wait_random

from queueing import (
    Queue,
    QueueSystem,
    Receipt,
    RetryPolicy,
    TaskFailed,
    TaskState,
    Worker,
    run_system,
)

TIMEOUT_RATE = 0.3  # the share of gateway calls that time out (seeded: runs repeat)


@attrs.frozen
class Charge:
    order: int
    region: str
    cents: int


class Gateway:
    """The downstream service, shared by every worker (and kept across their restarts)."""

    def __init__(self) -> None:
        self.down = {"eu-west"}
        self.calls: dict[int, list[tuple[float, str]]] = {}  # order -> (time, outcome)
        self.start = 0.0

    async def charge(self, charge: Charge) -> str:
        log = self.calls.setdefault(charge.order, [])
        try:
            await trio.sleep(0.005)  # the network round trip
            if charge.cents <= 0:
                raise ValueError(f"amount must be positive, got {charge.cents} cents")
            if charge.region in self.down:
                raise ConnectionError(f"{charge.region}: connection refused")
            if random.Random(f"{charge.order}/{len(log)}").random() < TIMEOUT_RATE:
                raise TimeoutError("gateway timed out after 5 ms")
        except Exception as exc:
            log.append((trio.current_time() - self.start, type(exc).__name__))
            raise
        log.append((trio.current_time() - self.start, "ok"))
        return f"ch_{charge.order:04d}"


class ChargeWorker(Worker):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, charge: Charge) -> str:
        return await self.gateway.charge(charge)


gateway = Gateway()
charges = Queue(
    "charges",
    ChargeWorker,
    workers=3,
    # Four attempts in all, about 0.05 s, 0.1 s, 0.2 s apart, each plus up to 0.05 s of jitter
    # (so many clients that failed together do not retry together). The default `retry`
    # predicate retries Transient, TimeoutError and ConnectionError; anything else fails.
    retry=RetryPolicy(
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
    ),
    worker_kwargs={"gateway": gateway},
)


def orders() -> list[Charge]:
    regions = ["us-east"] * 5 + ["eu-west"]
    result = [Charge(n, regions[n % len(regions)], 100 * n) for n in range(1, 19)]
    result.append(Charge(19, "us-east", 0))  # a bad order: no retry can fix it
    return result


async def outcome(receipt: Receipt) -> TaskState:
    try:
        await receipt.result(timeout=30)
    except TaskFailed as exc:
        return exc.outcome  # type: ignore[no-any-return]
    return TaskState.SUCCEEDED


async def run_all(receipts: list[Receipt]) -> dict[str, TaskState]:
    outcomes: dict[str, TaskState] = {}

    async def one(receipt: Receipt) -> None:
        outcomes[receipt.id] = await outcome(receipt)

    async with trio.open_nursery() as nursery:
        for receipt in receipts:
            nursery.start_soon(one, receipt)
    return outcomes


def timeline(order: int) -> str:
    return ", ".join(f"{at:.2f}s {what}" for at, what in gateway.calls[order])


def count(outcomes: dict[str, TaskState], state: TaskState) -> int:
    return sum(1 for s in outcomes.values() if s is state)


async def main(system: QueueSystem) -> bool:
    gateway.start = trio.current_time()
    batch = orders()
    print(f"1. Submitting {len(batch)} charges to a gateway that times out on ~30% of calls")
    print("   and whose eu-west region is down.")
    receipts = [await system.submit("charges", charge) for charge in batch]
    order_of = {r.id: c.order for r, c in zip(receipts, batch, strict=True)}

    await trio.sleep(0.03)
    s = system.stats()["charges"]
    print(
        f"   30 ms later: {s.in_flight} running, {s.scheduled} waiting out a backoff "
        f"(holding no worker), {s.depth - s.scheduled} waiting for a worker"
    )

    outcomes = await run_all(receipts)
    s = system.stats()["charges"]
    print(
        f"   succeeded: {count(outcomes, TaskState.SUCCEEDED)}, "
        f"dead-lettered: {count(outcomes, TaskState.DEAD_LETTERED)}, "
        f"failed: {count(outcomes, TaskState.FAILED)} "
        f"(retries: {s.retried})"
    )
    retried_ok = next(
        order_of[i]
        for i, state in outcomes.items()
        if state is TaskState.SUCCEEDED and len(gateway.calls[order_of[i]]) > 1
    )
    calls = [what for log in gateway.calls.values() for _, what in log]
    print(
        f"   gateway calls: {len(calls)}, timed out: {calls.count('TimeoutError')}, "
        f"refused: {calls.count('ConnectionError')}, rejected: {calls.count('ValueError')}"
    )
    print(f"   order {retried_ok:>2} (timed out, retried): {timeline(retried_ok)}")
    dead = next(order_of[i] for i, st in outcomes.items() if st is TaskState.DEAD_LETTERED)
    print(f"   order {dead:>2} (retries ran out):     {timeline(dead)}")

    print("2. The dead letters (system.dead_letters('charges')):")
    letters = await system.dead_letters("charges")
    for letter in letters:
        error = f"{letter.error.type}: {letter.error.message}" if letter.error else "?"
        print(
            f"   {letter.id:<14} order {letter.payload['order']:>2}  {letter.state.value:<13} "
            f"after {letter.attempts} attempt(s)  {error}"
        )

    print("3. The eu-west region is back up; re-queueing the dead-lettered charges.")
    gateway.down.clear()
    retryable = [d.id for d in letters if d.state is TaskState.DEAD_LETTERED]
    again = await system.requeue("charges", retryable)
    requeued = await run_all(again)
    print(
        f"   requeued: {len(again)}, succeeded: {count(requeued, TaskState.SUCCEEDED)} "
        f"(new task ids: {', '.join(r.id for r in again)})"
    )

    purged = await system.purge_dead_letters("charges")
    print(f"4. Purged {purged} dead letter that no retry can fix (the bad amount).")
    s = system.stats()["charges"]
    print(
        f"   totals: submitted {s.submitted}, succeeded {s.succeeded}, failed {s.failed}, "
        f"dead-lettered {s.dead_lettered}, retries {s.retried}; "
        f"{len(await system.dead_letters('charges'))} dead letters left"
    )
    return count(requeued, TaskState.SUCCEEDED) == len(again) == len(retryable) > 0


if __name__ == "__main__":
    sys.exit(0 if run_system(charges, main=main) else 1)

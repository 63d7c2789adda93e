"""Retries ahead of new work: `Queue(retry_ahead=True)` keeps a retried task's wait short.

Two report queues, alike but for `retry_ahead`, each get a backlog of 100 reports; the
first report's first attempt fails (a busy backend) and is retried after a 20 ms backoff.
On the default queue the retry joins the back of the backlog and waits for all of it; on
the other it starts as soon as its backoff is over, ahead of the reports still waiting.

    python examples/retry_ahead.py                      # in process (memory://)
    python examples/retry_ahead.py sqlite:///reports.db # or any broker URL
"""

from __future__ import annotations

import sys

import tenacity
import trio

from queueing import Queue, QueueSystem, RetryPolicy, Transient, Worker, run_system

#: The reports each queue started, in order, and when the first one's result came.
started: dict[str, list[int]] = {"behind": [], "ahead": []}


class Render(Worker):
    def __init__(self, log: list[int]) -> None:
        self.log = log

    async def handle(self, number: int) -> str:
        self.log.append(number)
        await trio.sleep(0.005)  # the work
        if number == 0 and self.attempt == 1:
            raise Transient("the backend is busy, try again shortly")
        return f"report #{number}"


retry = RetryPolicy(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.02))
behind = Queue("behind", Render, workers=2, retry=retry, worker_args=(started["behind"],))
ahead = Queue(
    "ahead", Render, workers=2, retry=retry, worker_args=(started["ahead"],), retry_ahead=True
)


async def main(system: QueueSystem) -> None:
    for name in ("behind", "ahead"):
        begin = trio.current_time()
        receipts = await system.submit_many(name, list(range(100)))
        await receipts[0]
        took = trio.current_time() - begin
        for receipt in receipts:
            await receipt
        order = started[name]
        again = len(order) - order[::-1].index(0)  # the retry's start number
        print(
            f"{name:>6} (retry_ahead={name == 'ahead'}): report #0 failed once, its retry "
            f"was start #{again} of {len(order)}; its result after {took * 1000:.0f} ms"
        )


if __name__ == "__main__":
    run_system(behind, ahead, main=main, broker=sys.argv[1] if len(sys.argv) > 1 else "memory://")

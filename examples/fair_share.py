"""Fair share between tenants: one big customer's burst does not starve the small ones.

A thumbnail service serves many customers from one queue with four workers. A big
customer, megacorp, uploads 2,000 images at once; right after, five small shops upload
10 each. With `Queue(tenant=...)` naming each job's customer, waiting jobs are taken in
turns across customers (FIFO within one): every shop's 10 thumbnails are done within the
first hundred or so, while megacorp's backlog keeps the workers busy. The same burst on a
queue without tenants is one FIFO: the shops wait behind all 2,000.

`tenant_maxsize` also bounds one customer's backlog: megacorp's 2,001st upload is refused
with a message naming it, while the shops still get in.

    python examples/fair_share.py                       # in process (memory://)
    python examples/fair_share.py sqlite:///thumbs.db   # or any broker URL
"""

from __future__ import annotations

import sys

import attrs
import trio

from queueing import Overflow, Queue, QueueFull, QueueSystem, Worker, run_system

BIG = 2_000
SHOPS = [f"shop-{n}" for n in range(1, 6)]
EACH = 10


@attrs.frozen
class Upload:
    customer: str
    image: int


#: The customers of the jobs each queue finished, in order.
finished: dict[str, list[str]] = {"thumbs": [], "thumbs_fifo": []}
#: The workers wait for this to start their first jobs (the burst is all submitted first).
opened = trio.Event()


class Thumbnail(Worker):
    def __init__(self, done: list[str]) -> None:
        self.done = done

    async def handle(self, upload: Upload) -> None:
        await opened.wait()
        await trio.sleep(0.001)  # the work
        self.done.append(upload.customer)


thumbs = Queue(
    "thumbs",
    Thumbnail,
    worker_kwargs={"done": finished["thumbs"]},
    workers=4,
    tenant=lambda upload: upload.customer,  # each job's tenant: its customer
    tenant_maxsize=BIG,  # one customer's outstanding jobs, at most
    when_full=Overflow.REJECT,
)
# The same queue without tenants.
thumbs_fifo = Queue(
    "thumbs_fifo", Thumbnail, worker_kwargs={"done": finished["thumbs_fifo"]}, workers=4
)


def last_shop_job(order: list[str]) -> int:
    """The completion number (1-based) of the last shop job."""
    return max(i + 1 for i, customer in enumerate(order) if customer != "megacorp")


async def main(system: QueueSystem) -> None:
    for queue in ("thumbs", "thumbs_fifo"):
        await system.submit_many(queue, [Upload("megacorp", n) for n in range(BIG)])
        if queue == "thumbs":
            try:
                await system.submit(queue, Upload("megacorp", BIG))
            except QueueFull as exc:
                print(f"megacorp's upload #{BIG + 1}: refused: {exc}")
        for shop in SHOPS:
            await system.submit_many(queue, [Upload(shop, n) for n in range(EACH)])
    print(f"Burst: megacorp uploaded {BIG} images, then {len(SHOPS)} shops {EACH} each")
    await trio.sleep(0.2)  # the workers have taken their first jobs (waiting to start)
    (busiest,) = await system.tenants("thumbs", limit=1)
    print(f"Busiest tenant of 'thumbs': {busiest.tenant}, {busiest.waiting + busiest.running} jobs")
    opened.set()
    await system.drain()
    total = BIG + len(SHOPS) * EACH
    fair, fifo = last_shop_job(finished["thumbs"]), last_shop_job(finished["thumbs_fifo"])
    print(f"With tenants:    every shop's thumbnails done by job #{fair} of {total}")
    print(f"Without tenants: every shop's thumbnails done by job #{fifo} of {total}")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    run_system(thumbs, thumbs_fifo, main=main, broker=url)

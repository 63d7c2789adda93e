"""Submitting by name: a client that imports none of the worker's code still gets its
payloads checked against the worker's types.

An order desk serves the queue `orders`, whose handler takes an `Order` (an attrs class).
A client in another part of the system knows only the broker's URL and the queue's name:
`connect(url)` learns the queue, and the payload type its handler takes, from what the
worker published on the broker when it started. A wrong payload is refused at once with
a `PayloadError` naming the field, instead of being accepted and dead-lettered later; the
command line (`queueing submit`) does the same check.

    python examples/submit_by_name.py                        # a SQLite file of its own
    python examples/submit_by_name.py redis://localhost:6379/0
"""

from __future__ import annotations

import os
import sys
import tempfile

import attrs
import trio

from queueing import PayloadError, Queue, Worker, connect, open_system


@attrs.frozen
class Line:
    sku: str
    qty: int


@attrs.frozen
class Order:
    customer: str
    lines: list[Line]
    note: str | None = None


class Place(Worker):
    async def handle(self, order: Order) -> int:
        return sum(line.qty for line in order.lines)


orders = Queue("orders", Place)


async def client(url: str) -> None:
    """What another process does: no import of `Order`, `Place` or `orders`."""
    async with connect(url) as desk:
        good = {"customer": "ada", "lines": [{"sku": "a1", "qty": 2}, {"sku": "b2", "qty": 3}]}
        print("items ordered:", await (await desk.submit("orders", good)))
        bad = {"customer": "bob", "lines": [{"sku": "c3", "qty": "4"}], "coupon": "X"}
        try:
            await desk.submit("orders", bad)
        except PayloadError as exc:
            print("refused:", exc)


async def command_line(url: str) -> None:
    """`queueing submit` with a payload of the wrong type: exit status 2, the reason."""
    done = await trio.run_process(
        [sys.executable, "-m", "queueing", "submit", "orders", '{"customer": 7, "lines": []}'],
        env={**os.environ, "QUEUEING_BROKER": url},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    reason = done.stderr.decode().strip().splitlines()[-1]
    print(f"queueing submit exited {done.returncode}: {reason}")


async def main(url: str) -> None:
    async with open_system(orders, broker=url):  # the worker side (any process)
        await client(url)
        await command_line(url)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as folder:
            trio.run(main, f"sqlite:///{folder}/orders.db")

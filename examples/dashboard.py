"""A worker with its web dashboard on loopback, and traffic to watch.

    python examples/dashboard.py                  # open the link it prints; Ctrl-C stops it
    queueing top --url http://127.0.0.1:8000      # the same figures, in a terminal

Two queues run in this process (`memory://`): `thumbnails`, busy and healthy, and
`payments`, whose gateway turns down the first try of every seventh order (an error not
worth retrying: the task fails at once and is kept as a dead letter). Open the dashboard,
pick `payments` under "Dead letters" and requeue them: the second try goes through.

The dashboard's actions (requeue, purge) need its token: the printed link carries it
(`#token=...`, which the browser never sends to a server). In a terminal it serves until
Ctrl-C; otherwise (tests, CI) for `--seconds` (default 5). Docs: docs/how-to/dashboards.md.
"""

import argparse
import random
import sys
from functools import partial

import trio

from queueing import Queue, QueueSystem, Worker, run_system
from queueing.dashboard import serve_dashboard

#: Tasks submitted per second, to each queue.
THUMBNAILS_PER_SECOND = 20
PAYMENTS_PER_SECOND = 4
#: Seconds the program runs when its output is not a terminal and --seconds is not given.
UNATTENDED_SECONDS = 5.0


class PaymentDeclined(Exception):
    """The gateway turned the order down (not retried: the task fails at once)."""


class Thumbnail(Worker):
    async def handle(self, size: int) -> str:
        await trio.sleep(random.uniform(0.01, 0.15))  # the image library at work
        return f"{size}x{size}.png"


#: Orders the gateway has seen once already (its memory, shared by the workers).
TRIED: set[int] = set()


class Charge(Worker):
    async def handle(self, order: int) -> str:
        await trio.sleep(0.05)  # the gateway's round trip
        if order % 7 == 0 and order not in TRIED:
            TRIED.add(order)
            raise PaymentDeclined(f"order {order}: the card check failed, try again later")
        return f"order {order} charged"


thumbnails = Queue("thumbnails", Thumbnail, workers=4)
payments = Queue("payments", Charge, workers=2)


async def traffic(system: QueueSystem) -> None:
    """Submit to both queues at a steady pace, forever."""
    order = 0
    size = 0
    while True:
        for _ in range(THUMBNAILS_PER_SECOND // PAYMENTS_PER_SECOND):
            size += 1
            await system.submit("thumbnails", 64 + size % 512)
        order += 1
        await system.submit("payments", order)
        await trio.sleep(1 / PAYMENTS_PER_SECOND)


async def main(system: QueueSystem, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        dashboard = await nursery.start(
            partial(serve_dashboard, system, host="127.0.0.1", port=args.port, token=args.token)
        )
        print(f"Dashboard: {dashboard.link}", flush=True)
        print(f"In a terminal: queueing top --url {dashboard.url}", flush=True)
        nursery.start_soon(traffic, system)
        if args.seconds is not None:
            await trio.sleep(args.seconds)
            nursery.cancel_scope.cancel()
    stats = system.stats()
    print(f"Thumbnails made: {stats['thumbnails'].succeeded}")
    print(f"Payments charged: {stats['payments'].succeeded}")
    print(f"Payments declined (dead letters): {stats['payments'].failed}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--token", default=None, help="default: a random one, in the link")
    parser.add_argument("--seconds", type=float, default=None, help="default: until Ctrl-C")
    args = parser.parse_args(argv)
    if args.seconds is None and not sys.stdout.isatty():
        args.seconds = UNATTENDED_SECONDS
    return args


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    run_system(thumbnails, payments, main=lambda system: main(system, args))

"""Delays on the RabbitMQ broker: how late a delayed task starts, and what a delay queue
costs, measured on the machine's RabbitMQ (the figures behind docs/how-to/rabbitmq.md).

1. End to end through the broker: tasks submitted with `delay=` (three delays, tasks
   spread over a second), each handler noting when it started; lateness = start - (submit
   + delay), and the delay queue's rounding (`delay_bucket`) separately.
2. The mechanism alone: messages published to a TTL queue that dead-letters into a ready
   queue, a quorum one (what the broker uses: at-least-once dead-lettering) against a
   classic one (at-most-once); lateness = arrival - (publish + TTL), and the time to
   declare a delay queue the first time and again.

Needs RabbitMQ at --amqp and a redis-server (started here on a free port).

    python bench/amqp_delay_bench.py            # 200 tasks per delay
    python bench/amqp_delay_bench.py --quick    # 50
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from amqp_bench import private_redis
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queueing import Queue, Worker, open_system
from queueing.brokers import amqp
from queueing.brokers.amqp._rabbit import delay_bucket

console = Console(width=110)
DELAYS = (0.05, 0.3, 1.0)


def figures(late: list[float]) -> list[str]:
    ordered = sorted(late)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return [f"{x * 1000:.1f}" for x in (ordered[0], statistics.median(ordered), p99)]


async def through_broker(url: str, n: int) -> Table:
    started: dict[int, float] = {}

    class Note(Worker):
        async def handle(self, number: int) -> int:
            started[number] = time.time()
            return number

    table = Table(title=f"delayed tasks through the broker ({n} per delay)")
    for column in ("delay", "queue TTL (ms)", "late min", "median", "p99 (ms)"):
        table.add_column(column, justify="right")
    async with open_system(Queue("delayed", Note, workers=8), broker=url) as system:
        for delay in DELAYS:
            started.clear()
            due: dict[int, float] = {}
            receipts = []
            for number in range(n):
                due[number] = time.time() + delay
                receipts.append(await system.submit("delayed", number, delay=delay))
                await trio.sleep(1.0 / n)
            for receipt in receipts:
                await receipt
            late = [started[k] - due[k] for k in due]
            table.add_row(f"{delay:g} s", str(delay_bucket(delay * 1000)), *figures(late))
    return table


async def mechanism(url: str, n: int) -> Table:
    table = Table(title=f"TTL queue dead-lettering into a ready queue ({n} messages, 300 ms)")
    for column in ("delay queue", "declare (ms)", "again (ms)", "late min", "median", "p99 (ms)"):
        table.add_column(column, justify="right")
    prefix = f"delaybench-{secrets.token_hex(3)}"
    async with amqp.connect(url) as connection:
        channel = await connection.open_channel(publisher_confirms=True)
        ready = f"{prefix}:ready"
        await channel.declare_queue(ready, arguments={"x-queue-type": "quorum"})
        for kind in ("quorum", "classic"):
            name = f"{prefix}:delay-{kind}"
            arguments = {
                "x-message-ttl": 300,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": ready,
            }
            if kind == "quorum":
                arguments.update(
                    {
                        "x-queue-type": "quorum",
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                )
            t0 = time.perf_counter()
            await channel.declare_queue(name, arguments=arguments)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            await channel.declare_queue(name, arguments=arguments)
            again = time.perf_counter() - t0
            sent: dict[int, float] = {}
            late: list[float] = []
            consumer = await connection.open_channel()
            async with consumer.consume(ready) as deliveries, trio.open_nursery() as nursery:

                async def send(name: str = name, sent: dict[int, float] = sent) -> None:
                    for i in range(n):
                        sent[i] = time.time()
                        await channel.publish(str(i).encode(), routing_key=name)
                        await trio.sleep(1.0 / n)

                nursery.start_soon(send)
                async for delivery in deliveries:
                    late.append(time.time() - sent[int(delivery.body)] - 0.3)
                    await delivery.ack()
                    if len(late) == n:
                        break
            await consumer.close()
            await channel.delete_queue(name)
            table.add_row(kind, f"{first * 1000:.1f}", f"{again * 1000:.1f}", *figures(late))
        await channel.delete_queue(ready)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    n = 50 if args.quick else args.n
    with tempfile.TemporaryDirectory() as tmp, private_redis(Path(tmp)) as port:
        prefix = f"delaybench{secrets.token_hex(3)}"
        url = f"{args.amqp}?results=redis://127.0.0.1:{port}/0&prefix={prefix}"
        console.print(trio.run(through_broker, url, n))
        console.print(trio.run(mechanism, args.amqp, n))

        async def cleanup() -> None:
            async with amqp.connect(args.amqp) as connection:
                channel = await connection.open_channel()
                for name in ("delayed", "delayed:dead"):
                    await channel.delete_queue(f"{prefix}:{name}")
                for delay in DELAYS:
                    bucket = delay_bucket(delay * 1000)
                    await channel.delete_queue(f"{prefix}:delayed:delay:{bucket}")

        trio.run(cleanup)


if __name__ == "__main__":
    main()

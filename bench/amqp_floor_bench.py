"""RabbitMQ's own cost per message, without any task framework: N messages published and
consumed through our protocol layer (`queueing.brokers.amqp`), on a quorum queue (what
the `amqp://` broker uses) and on a classic one (what dramatiq and Celery use).

Each variant publishes N persistent messages of ~200 bytes (a task's envelope) from one
channel, in batches of `--window` in flight, while a consumer on a second connection
acknowledges them (`--ack-every` deliveries per Basic.Ack with `multiple`, or one each).
Figures per message: the CPU RabbitMQ's beam process used (utime + stime of
`/proc/<pid>/stat`, summed over all its threads: RabbitMQ's whole cost, whatever core it
ran on), less its idle rate (sampled for 2 s before each run: others using the server,
its own timers) times the run's duration; this process's CPU; and the wall time. On a
shared machine, run it a few times and take the lowest.

    python bench/amqp_floor_bench.py                    # N=20000, every variant
    python bench/amqp_floor_bench.py --n 5000 --repeat 3

Needs read access to the beam process's /proc entry (the same machine as RabbitMQ).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import attrs
import trio

from queueing.brokers import amqp

TICK = os.sysconf("SC_CLK_TCK")
#: Seconds RabbitMQ's CPU is sampled before each run, to take its idle rate off.
IDLE_SAMPLE = 2.0
BODY = b'{"id":"job:' + b"x" * 180 + b'"}'


@dataclass(frozen=True)
class Variant:
    label: str
    quorum: bool
    confirms: bool
    ours: bool  # our ready queue's arguments, `mandatory` and a message id
    ack_every: int  # 1: one Basic.Ack per delivery; more: `multiple` per that many
    prefetch: int


def variants(args: argparse.Namespace) -> list[Variant]:
    every = args.ack_every
    return [
        Variant("classic, no confirms, ack each (dramatiq's way)", False, False, False, 1, 16),
        Variant("classic, confirms, ack each", False, True, False, 1, 16),
        Variant("quorum, confirms, ack each", True, True, False, 1, 16),
        Variant(f"classic, confirms, ack {every} at once", False, True, False, every, 64),
        Variant(f"quorum, confirms, ack {every} at once", True, True, False, every, 64),
        Variant(f"quorum as ours, confirms, ack {every} at once", True, True, True, every, 64),
    ]


def beam_pid() -> int:
    out = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True).stdout
    if not out.strip():
        raise SystemExit("no beam.smp process (RabbitMQ) found on this machine")
    return int(out.split()[0])


def cpu_of(pid: int) -> float:
    """Seconds of CPU (user + system) used by `pid` so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def one(url: str, v: Variant, n: int, window: int) -> tuple[float, float, float]:
    """(beam CPU s, own CPU s, wall s) for `n` messages through `v`."""
    name = f"floor-{secrets.token_hex(4)}"
    args: dict[str, Any] = {"x-queue-type": "quorum" if v.quorum else "classic"}
    props = amqp.Properties(delivery_mode=amqp.PERSISTENT, content_type="application/json")
    if v.ours:  # as `Rabbit.arguments` and `task_properties`
        args |= {
            "x-delivery-limit": 20,
            "x-max-length": 1_000_000,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{name}.dead",
            "x-dead-letter-strategy": "at-least-once",
        }
    async with amqp.connect(url) as pub_conn, amqp.connect(url) as sub_conn:
        setup = await pub_conn.open_channel()
        await setup.declare_queue(name, arguments=args)
        publisher = await pub_conn.open_channel(publisher_confirms=v.confirms)
        consumer = await sub_conn.open_channel()
        await consumer.qos(v.prefetch)
        done = trio.Event()
        seen = 0
        pending: list[int] = []
        send, receive = trio.open_memory_channel[int](1_000_000)

        def on_delivery(d: amqp.Delivery) -> None:
            send.send_nowait(d.delivery_tag)

        async def acker() -> None:
            nonlocal seen
            async for tag in receive:
                seen += 1
                pending.append(tag)
                if v.ack_every == 1:
                    await consumer.ack(tag)
                    pending.clear()
                elif (
                    len(pending) >= v.ack_every
                    or seen == n
                    or receive.statistics().current_buffer_used == 0
                ):
                    await consumer.ack(pending[-1], multiple=True)
                    pending.clear()
                if seen == n:
                    done.set()
                    return

        pid = beam_pid()
        await trio.sleep(0.5)  # let the declare settle (a quorum queue elects its leader)
        # RabbitMQ's CPU while this bench does nothing: others' use of it, its own timers.
        idle0 = cpu_of(pid)
        await trio.sleep(IDLE_SAMPLE)
        idle_rate = (cpu_of(pid) - idle0) / IDLE_SAMPLE
        beam0, own0, wall0 = cpu_of(pid), time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(acker)
            await consumer.basic_consume(name, on_delivery)
            sent = 0
            while sent < n:
                batch = min(window, n - sent)
                if v.ours:
                    msgs = [
                        (BODY, name, attrs.evolve(props, message_id=secrets.token_hex(8)))
                        for _ in range(batch)
                    ]
                else:
                    msgs = [(BODY, name, props)] * batch
                confirmations = await publisher.begin_publish_many(msgs, mandatory=v.ours)
                if v.confirms:
                    for c in confirmations:
                        await c.wait()
                sent += batch
            await done.wait()
        beam1, own1, wall1 = cpu_of(pid), time.process_time(), time.perf_counter()
        with suppress(amqp.AMQPError):
            await setup.delete_queue(name)
    wall = wall1 - wall0
    return beam1 - beam0 - idle_rate * wall, own1 - own0, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=200, help="publishes in flight")
    parser.add_argument("--ack-every", type=int, default=32)
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(args.repeat):
        for v in variants(args):
            results.setdefault(v.label, []).append(trio.run(one, args.amqp, v, args.n, args.window))
    print(f"N={args.n}, window {args.window}, {args.repeat} runs; per message, lowest (median)")
    print(f"{'variant':52} {'RabbitMQ CPU':>18} {'client CPU':>16} {'wall':>16} {'msgs/s':>8}")
    for label, runs in results.items():
        beam = [r[0] / args.n * 1e6 for r in runs]
        own = [r[1] / args.n * 1e6 for r in runs]
        wall = [r[2] / args.n * 1e6 for r in runs]
        print(
            f"{label:52} {min(beam):7.0f} us ({statistics.median(beam):4.0f}) "
            f"{min(own):6.0f} us ({statistics.median(own):4.0f}) "
            f"{min(wall):6.0f} us ({statistics.median(wall):4.0f}) {1e6 / min(wall):8,.0f}"
        )


if __name__ == "__main__":
    main()

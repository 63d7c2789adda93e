"""Periodic tasks: a `Schedule` submits a task on a cron expression or every so many
seconds, in every process that serves the queues, each tick once; a `key=` makes any
submit unique.

A small office sends a "pulse" report every half second (to see it tick in a short run)
and a nightly report at 03:00, Berlin time (shown with its next run). Submitting an
invoice twice with one key returns the first receipt: the invoice is sent once.

    python examples/schedules.py                         # in process (memory://)
    python examples/schedules.py sqlite:///office.db     # or any broker URL
    python examples/schedules.py redis://localhost:6379/0
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import trio

from queueing import Queue, QueueSystem, Schedule, Worker, run_system

#: The reports sent, in order.
sent: list[str] = []


class Send(Worker):
    async def handle(self, what: str) -> str:
        sent.append(what)
        return f"{what} sent"


reports = Queue("reports", Send)
pulse = Schedule("pulse", queue="reports", every=0.5, payload="pulse")
nightly = Schedule(
    "nightly", queue="reports", cron="0 3 * * *", payload="nightly", timezone="Europe/Berlin"
)


async def main(system: QueueSystem) -> None:
    next_night = datetime.fromtimestamp(nightly.next_tick(time.time()), ZoneInfo("Europe/Berlin"))
    print(f"nightly: next run {next_night:%Y-%m-%d %H:%M %Z}")
    await trio.sleep(2.2)  # four pulse ticks, or five, whatever the phase
    print(f"pulse ticks run in 2.2 s: {sent.count('pulse')}")

    first = await system.submit("reports", "invoice-42", key="invoice-42")
    again = await system.submit("reports", "invoice-42", key="invoice-42")
    print(f"invoice-42 submitted twice: receipts {first.id} and {again.id}")
    print(f"invoice-42: {await again}, {sent.count('invoice-42')} time(s) in this run")


if __name__ == "__main__":
    broker = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    run_system(reports, pulse, nightly, main=main, broker=broker)

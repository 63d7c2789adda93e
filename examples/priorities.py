"""Task priorities: urgent work overtakes a backlog, without a queue of its own.

A support desk answers tickets with two workers. A batch of 200 routine tickets arrives
first; then 20 urgent ones (priority 9) and 20 from paying customers (priority 5). While
tickets wait, the higher priority starts first, and tickets of one priority start in the
order they came. Nothing is interrupted: a worker busy with a routine ticket finishes it.

    python examples/priorities.py                         # in process (memory://)
    python examples/priorities.py sqlite:///desk.db       # or any broker URL
    python examples/priorities.py redis://localhost:6379/0
"""

from __future__ import annotations

import sys

import attrs
import trio

from queueing import Queue, QueueSystem, Worker, run_system

#: The order tickets started in, across both workers.
started: list[str] = []


@attrs.frozen
class Ticket:
    kind: str
    number: int


class Answer(Worker):
    async def handle(self, ticket: Ticket) -> str:
        started.append(ticket.kind)
        await trio.sleep(0.001)  # the work
        return f"{ticket.kind} #{ticket.number} answered"


desk = Queue("desk", Answer, workers=2)


async def main(system: QueueSystem) -> None:
    routine = await system.submit_many("desk", [Ticket("routine", n) for n in range(200)])
    urgent = await system.submit_many("desk", [Ticket("urgent", n) for n in range(20)], priority=9)
    paying = [await system.submit("desk", Ticket("paying", n), priority=5) for n in range(20)]
    print("Submitted 200 routine tickets, then 20 urgent (priority 9), 20 paying (priority 5)")
    print(f"An urgent ticket's status: priority {(await urgent[0].status()).priority}")
    for receipt in [*routine, *urgent, *paying]:
        await receipt
    for kind in ("urgent", "paying"):
        positions = [i + 1 for i, k in enumerate(started) if k == kind]
        print(f"{kind}: {len(positions)} started, from start #{positions[0]} to #{positions[-1]}")
    early = started.index("urgent")  # those the workers had taken before urgent ones came
    rest = [i + 1 for i, k in enumerate(started) if k == "routine"][early:]
    print(f"routine: {early} started before the urgent ones came", end="; ")
    print(f"the other {len(rest)} from start #{rest[0]} to #{rest[-1]}")


if __name__ == "__main__":
    run_system(desk, main=main, broker=sys.argv[1] if len(sys.argv) > 1 else "memory://")

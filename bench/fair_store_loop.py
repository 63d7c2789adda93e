"""The in-process fair store alone (`queueing._ranked.Fair`), in a steady loop: take the
next task, settle the one taken 8 takes before (its outcome) and submit it again (its
tenant's next task), with `backlog` tasks queued over `tenants` tenants, no engine.

    python bench/fair_store_loop.py TENANTS BACKLOG CYCLES   # CPU µs per cycle

For instructions and cache misses per cycle, run it under callgrind twice, with 10,000
and 30,000 cycles, and take the difference of the totals over 20,000 (the docs' figures:
`PYTHONHASHSEED=0 valgrind --tool=callgrind --cache-sim=yes python
bench/fair_store_loop.py 10000 20000 10000`, then 30000).
"""

from __future__ import annotations

import sys
import time

from queueing._ranked import Fair
from queueing._task import Task
from queueing.brokers._contract import QueueInfo

RUNNING = 8


def run(tenants: int, backlog: int, cycles: int) -> float:
    """CPU seconds per cycle."""
    store = Fair(QueueInfo("q", 10**9, 1 << 20, 60.0))
    names = [f"tenant-{i}" for i in range(tenants)]
    for i in range(backlog):
        task = Task(f"q:{i}", "q", i, 0.0)
        task.tenant = names[i % tenants]
        store.push(task)
    running: list[Task] = []
    cpu = time.process_time()
    for _ in range(cycles):
        running.append(store.pop())
        if len(running) > RUNNING:
            task = running.pop(0)
            store.done(task)
            store.push(task)
    return (time.process_time() - cpu) / cycles


def main() -> None:
    tenants, backlog, cycles = (int(arg) for arg in sys.argv[1:4])
    print(f"{tenants} tenants, {backlog} tasks: {run(tenants, backlog, cycles) * 1e6:.3f} µs/cycle")


if __name__ == "__main__":
    main()

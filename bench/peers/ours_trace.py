"""Per-stage timestamps of ours's tasks, for bench/latency_trace.py (bench only).

Installed by `ours_tasks` when `BENCH_TRACE` names a file (nothing is patched otherwise:
no cost when off). It wraps a few methods of the Redis broker's client and worker sides
and records, per task id, when each stage happened (`time.perf_counter()`: CLOCK_MONOTONIC
on Linux, the same clock in every process), plus the process's GC pauses, its trio
scheduler batches (task steps between two waits for I/O) and its claims. `dump()` writes
it all as JSON to `BENCH_TRACE`.

Stages (see bench/latency_trace.py for the table):

- client: `due` (the schedule's send time), `call` (the caller starts its submit), `sent`
  (its slot goes out in a submit round trip), `accepted` (that round trip's answer is in),
  `submitted` (the caller has its receipt), `notice` (the reader read its notice),
  `delivered` (its receipt has the outcome), `resolved` (the caller has its result);
- worker: `claimed` (a claim's answer had it), `started` / `ended` (the handler),
  `queued` (its outcome write was queued), `taken` (a claim or the flush loop took that
  write; `via` says which), `written` (Redis answered that write).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

import trio

PATH = os.environ.get("BENCH_TRACE", "")
now = time.perf_counter

#: (task id, stage, time): tuples of atoms, which the GC stops tracking (a dict per task
#: would add to every collection's work)
marks: list[tuple[str, str, float]] = []
#: task id -> how its outcome write went ("claim", "flush")
via: dict[str, str] = {}
#: (start, duration, generation) of each collection
gcs: list[tuple[float, float, int]] = []
#: (start, duration, task steps) of each scheduler batch (between two waits for I/O)
batches: list[tuple[float, float, int]] = []
#: (start, duration, asked, got, outcomes sent along) of each claim
claims: list[tuple[float, float, int, int, int]] = []
#: (time, entries, notices) of each read of notices
reads: list[tuple[float, int, int]] = []
#: (time, tasks, slots) of each submit round trip
sends: list[tuple[float, int, int]] = []
#: outcomes handed to receipts, by who did it (the notices' reader: `deliver_watched`;
#: the receipts' loop: `run`)
delivered_by: dict[str, int] = {}
#: (time, outcome writes) of each flush-loop write
flushes: list[tuple[float, int]] = []
#: task steps (scheduler turns) by where the task was waiting, from `instrument()` on
steps: dict[str, int] = defaultdict(int)


def mark(task_id: str, stage: str, at: float | None = None) -> None:
    marks.append((task_id, stage, now() if at is None else at))


_gc_start = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_start
    if phase == "start":
        _gc_start = now()
    else:
        gcs.append((_gc_start, now() - _gc_start, int(info["generation"])))


class SchedulerBatches(trio.abc.Instrument):
    """Task steps between two waits for I/O, and how long they took."""

    def __init__(self) -> None:
        self.start = now()
        self.steps = 0

    def after_io_wait(self, timeout: float) -> None:
        self.start = now()
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        steps[_waits_in(task)] += 1

    def before_io_wait(self, timeout: float) -> None:
        if self.steps:
            batches.append((self.start, now() - self.start, self.steps))
        if timeout > 0:  # nothing to run: the process sleeps until I/O (or a deadline)
            steps["(waits for I/O with nothing to run)"] += 1
        else:
            steps["(polls for I/O between two batches)"] += 1


_TRIO = os.path.dirname(trio.__file__)


def _waits_in(task: trio.lowlevel.Task) -> str:
    """Where a task is about to be resumed: the innermost two of its coroutines outside
    trio (the wait it was woken from, and what waited there)."""
    names: list[str] = []
    coro: Any = task.coro
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None and _TRIO not in code.co_filename:
            names.append(code.co_qualname)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " < ".join(reversed(names[-2:]))


_instrumented = False


def instrument() -> None:
    """Inside a trio run: count its scheduler batches (once per process)."""
    global _instrumented
    if not _instrumented:
        _instrumented = True
        trio.lowlevel.add_instrument(SchedulerBatches())


def install() -> None:
    """Wrap the broker's methods (both sides: a process uses what it uses)."""
    from queueing import _results
    from queueing.brokers.redis import _batch, _consumer, _receipts

    gc.callbacks.append(_on_gc)
    batcher = _batch.Batcher

    send_submits = batcher._send_submits

    async def _send_submits(self: Any, batch: list[Any]) -> None:
        t = now()
        ids = [call[0] for slot in batch for call in slot.tasks]
        sends.append((t, len(ids), len(batch)))
        for task_id in ids:
            mark(task_id, "sent", t)
        await send_submits(self, batch)
        t = now()
        for task_id in ids:
            mark(task_id, "accepted", t)

    batcher._send_submits = _send_submits  # type: ignore[method-assign]

    push = batcher.push
    op_ids: dict[int, str] = {}

    def _push_keyed(self: Any, op: Any) -> None:
        then = op.then
        task = getattr(then, "args", (None,))[0] if then is not None else None
        if task is not None:
            op_ids[id(op)] = task.id
            mark(task.id, "queued")
        push(self, op)

    batcher.push = _push_keyed  # type: ignore[method-assign]

    take = batcher.take

    def _take(self: Any) -> Any:
        batch = take(self)
        caller = sys._getframe(1).f_code.co_name
        how = "flush" if caller == "flush_loop" else "claim"
        t = now()
        if how == "flush" and len(batch):
            flushes.append((t, len(batch)))
        for op in batch.ops:
            task_id = op_ids.get(id(op))
            if task_id is not None:
                mark(task_id, "taken", t)
                via[task_id] = how
        return batch

    batcher.take = _take  # type: ignore[method-assign]

    answered = batcher.answered

    def _answered(self: Any, batch: Any, answers: Any) -> None:
        t = now()
        for op in batch.ops:
            task_id = op_ids.pop(id(op), None)
            if task_id is not None:
                mark(task_id, "written", t)
        answered(self, batch, answers)

    batcher.answered = _answered  # type: ignore[method-assign]

    consumer = _consumer.Consumer
    claim = consumer.claim

    async def _claim(self: Any, queue: Any, n: int, wait: float) -> list[Any]:
        t0 = now()
        along = len(self.batcher.ops)
        tasks = await claim(self, queue, n, wait)
        t1 = now()
        claims.append((t0, t1 - t0, n, len(tasks), along))
        for task in tasks:
            mark(task.id, "claimed", t1)
        return tasks

    consumer.claim = _claim  # type: ignore[method-assign]

    receipts = _receipts.Receipts
    notices = receipts._notices

    def _notices(self: Any, entries: Any) -> None:
        t = now()
        count = 0
        for entry in entries:
            for task_id, _ in _receipts._notes(entry.field_values):
                mark(task_id, "notice", t)
                count += 1
        reads.append((t, len(entries), count))
        notices(self, entries)

    receipts._notices = _notices  # type: ignore[method-assign]

    results = _results.Results
    deliver = results.deliver

    def _deliver(self: Any, record: Any) -> None:
        mark(record.id, "delivered")
        # by the notices' reader (deliver_watched) or by the receipts' loop (run)
        how = sys._getframe(1).f_code.co_name
        delivered_by[how] = delivered_by.get(how, 0) + 1
        deliver(self, record)

    results.deliver = _deliver  # type: ignore[method-assign]


_dumped = False


def dump() -> None:
    """Write everything recorded so far to `PATH`, once (each of a worker process's
    workers calls it as it stops; the first one's is the whole run's: a dump takes a
    good part of a second, which showed as long scheduler batches at shutdown)."""
    global _dumped
    if _dumped:
        return
    _dumped = True
    stages: dict[str, dict[str, float]] = defaultdict(dict)
    for task_id, stage, at in marks:
        stages[task_id].setdefault(stage, at)  # the first time: a redelivery keeps it
    data = {
        "pid": os.getpid(),
        "stages": stages,
        "via": via,
        "gcs": gcs,
        "batches": batches,
        "claims": claims,
        "reads": reads,
        "sends": sends,
        "flushes": flushes,
        "steps": steps,
        "delivered_by": delivered_by,
    }
    tmp = f"{PATH}.tmp"
    with open(tmp, "w") as out:
        json.dump(data, out)
    os.replace(tmp, PATH)

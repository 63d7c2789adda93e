"""Where ours' tasks wait: round trips, claims and scheduler turns per task, counted in the
bench's worker and client processes (`python bench/amqp_bench.py --only ours` with
`BENCH_AMQP_TRACE=DIR` set: each process writes `DIR/<role>-<pid>.json` as it exits).

Load-independent figures (counts) next to times that are not (a crowded machine stretches
every wait): Redis round trips by what they were for, script calls sent alone, claims and
the tasks they took, the feed's waits, Basic.Ack writes, and trio's task steps and I/O
waits. Wraps the broker's methods in place: for measuring only.

    BENCH_AMQP_TRACE=/tmp/trace python bench/amqp_bench.py --n 10000 --repeat 1 --only ours
    python bench/amqp_peers/trace_stages.py /tmp/trace
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

COUNTS: collections.Counter[str] = collections.Counter()
TIMES: collections.Counter[str] = collections.Counter()


def _timed(owner: Any, name: str, key: str | None = None, *, size: bool = False) -> None:
    """Count and time `owner.name` (async) under `key`; `size`: count its result's length."""
    original = getattr(owner, name)
    label = key or name

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = await original(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
            COUNTS[label] += 1
        if size:
            COUNTS[f"{label}.items"] += len(result)
        return result

    setattr(owner, name, wrapper)


def install(folder: str) -> None:
    import trio

    from queueing.brokers.amqp import _core, _holds, _store
    from queueing.brokers.redis import _calls

    class Turns(trio.abc.Instrument):
        def before_task_step(self, task: Any) -> None:
            COUNTS["trio steps"] += 1

        def before_io_wait(self, timeout: float) -> None:
            COUNTS["trio io waits"] += 1
            self.since = time.perf_counter()

        def after_io_wait(self, timeout: float) -> None:
            TIMES["trio io waits"] += time.perf_counter() - self.since

    run = trio.run

    def traced_run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), Turns()]
        return run(*args, **kwargs)

    trio.run = traced_run  # type: ignore[assignment]

    pipelined = _calls.Calls.pipelined

    async def traced_pipelined(self: Any, what: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await pipelined(self, what, *args, **kwargs)
        finally:
            TIMES[f"redis: {what}"] += time.perf_counter() - start
            COUNTS[f"redis: {what}"] += 1

    _calls.Calls.pipelined = traced_pipelined  # type: ignore[method-assign]
    evaluate = _calls.Calls.eval

    async def traced_eval(self: Any, what: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await evaluate(self, what, *args, **kwargs)
        finally:
            TIMES[f"redis: {what}"] += time.perf_counter() - start
            COUNTS[f"redis: {what}"] += 1

    _calls.Calls.eval = traced_eval  # type: ignore[method-assign]
    _timed(_holds.Holds, "claim", size=True)
    _timed(_holds.Holds, "finish", "settle")
    _timed(_store.Store, "check", "check (its round trip included)")
    _timed(_core.ChannelCore, "ack_many", "Basic.Ack writes")
    role = "worker" if "worker" in sys.argv else "client"
    path = Path(folder) / f"{role}-{os.getpid()}.json"

    def dump() -> None:
        figures = {"role": role, "cpu": time.process_time(), "counts": COUNTS, "times": TIMES}
        path.write_text(json.dumps(figures, indent=1, sort_keys=True))

    atexit.register(dump)
    exit_now = os._exit

    def dump_and_exit(code: int) -> None:  # the bench's client leaves with os._exit
        dump()
        exit_now(code)

    os._exit = dump_and_exit  # type: ignore[assignment]


def summary(folder: str) -> None:
    """Per process: each count per task (tasks: the worker's settles; the client's submitted,
    the `--n` plus warm-up, from the worker's) and the mean time per call."""
    files = sorted(Path(folder).glob("*.json"))
    docs = [json.loads(f.read_text()) for f in files]
    tasks = max((d["counts"].get("settle", 0) for d in docs), default=0) or 1
    for f, doc in zip(files, docs, strict=True):
        counts, times = doc["counts"], doc["times"]
        if counts.get("trio steps", 0) < tasks / 2:
            continue  # a short-lived helper process (the readiness probe)
        print(f"== {f.name}: {tasks} tasks, cpu {1e6 * doc['cpu'] / tasks:.0f} us a task")
        for key in sorted(counts):
            mean = f"{1e3 * times[key] / counts[key]:8.2f} ms a call" if key in times else ""
            print(f"  {key:40} {counts[key] / tasks:8.3f} a task  {mean}")


if __name__ == "__main__":
    summary(sys.argv[1])

"""Processing-queue benchmark: end-to-end tasks/s and latency, side by side with peers.

Every contender runs the same job in the same process and run: submit N no-op tasks to a
pool of 8 workers, then wait for every task's result. Read the ratios, not the absolute
figures (they depend on the machine):

- ours: `queueing` with the memory broker (`run_system(Queue(..., workers=8), main=...)`),
  `await system.submit(...)` for every task, then `await receipt` for every receipt; a
  pipelined variant where a collector task awaits receipts while the submitter goes on; and
  `await system.submit_many(...)` (the batch API: one call for every task), then
  `await receipt` for every receipt.
- Pykka: 8 `ThreadingActor`s, round-robin `ref.ask(i, block=False)`, then `.get()` all.
- `concurrent.futures.ThreadPoolExecutor(8)`: `submit` a no-op, then `.result()` all.
- asyncio: an `asyncio.Queue` served by 8 worker tasks that resolve a future per task.
- raw trio: a memory channel served by 8 worker tasks, two ways: naive (`await send` /
  `await receive`, a `trio.Event` per task) and fast path (`send_nowait` /
  `receive_nowait`, one checkpoint per batch, an event only if the caller must wait);
  "raw trio" is the better of the two.

Then latency: ours at half of its measured best rate, paced with `trio.sleep`, the time
from calling `submit` to the moment a watcher task's `await receipt` returns.

    python bench/queue_bench.py                 # N=100k, best of 3 (~40 s on 2 cores)
    python bench/queue_bench.py --quick         # N=10k, a few seconds
    python bench/queue_bench.py --profile       # also: cProfile of one run of ours
    nox -s bench                                # every bench/*_bench.py

Throughput figures are the best of `--repeat` runs (default 3; the median is shown too),
run in rounds (every contender once per round) after an untimed warm-up. Targets (from the
benchmark issue): ours >= 4x Pykka, >= 4x ThreadPoolExecutor, >= 30% of raw trio; each is
reported as PASS/MISS for `submit()` each and for `submit_many()`, and a miss never fails
the run (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.metadata
import io
import math
import pstats
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import _common
import pykka
import trio
import trio.testing
from _common import Timing, fmt_ms, fmt_rate, verdict
from rich.console import Console
from rich.table import Table

from queueing import Queue, QueueSystem, Receipt, Worker, run_system

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
WORKERS = 8
BATCH = 64  # tasks per checkpoint on the fast paths

# Targets from the benchmark issue: ours vs each peer.
TARGETS = {"Pykka": 4.0, "ThreadPoolExecutor": 4.0, "raw trio": 0.30}

console = Console(width=120)


def expect(total: int, n: int) -> None:
    """Every contender returns its payloads; their sum proves every task ran once."""
    if total != n * (n - 1) // 2:
        raise AssertionError(f"wrong results: sum {total} for {n} tasks")


# -- ours ----------------------------------------------------------------------------------


class Noop(Worker):
    """Returns its payload."""

    async def handle(self, payload: int) -> int:
        return payload


def our_queue(n: int) -> Queue:
    # maxsize >= n: like the peers' unbounded queues, submit never waits for room.
    return Queue("bench", Noop, workers=WORKERS, maxsize=max(n, 10_000))


def run_ours(n: int, main: Callable[[QueueSystem], Any]) -> Any:
    # The default max_results (100k finished outcomes kept for lookup by id).
    return run_system(our_queue(n), main=main)


async def _next(receive: trio.MemoryReceiveChannel[T]) -> T | None:
    """The next item, or None at the end. `async for` would cost the bench's own collector
    a scheduler round trip per item (as much as a task costs); this takes what is there
    and only waits when there is nothing (`await receipt` checkpoints meanwhile)."""
    try:
        return receive.receive_nowait()
    except trio.WouldBlock:
        try:
            return await receive.receive()
        except trio.EndOfChannel:
            return None
    except trio.EndOfChannel:
        return None


async def _settle() -> None:
    """Let the workers start and park before the clock starts."""
    await trio.testing.wait_all_tasks_blocked()


def ours_batch(n: int, profile: cProfile.Profile | None = None) -> Timing:
    """Submit every task, then await every receipt."""

    async def main(system: QueueSystem) -> Timing:
        await _settle()
        submit = system.submit
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        receipts = [await submit("bench", i) for i in range(n)]
        total = 0
        for receipt in receipts:
            total += await receipt
        elapsed = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        expect(total, n)
        return n, elapsed

    return run_ours(n, main)


def ours_many(n: int) -> Timing:
    """One `submit_many` for every task (accepted in chunks), then await every receipt."""

    async def main(system: QueueSystem) -> Timing:
        await _settle()
        start = time.perf_counter()
        receipts = await system.submit_many("bench", range(n))
        total = 0
        for receipt in receipts:
            total += await receipt
        elapsed = time.perf_counter() - start
        expect(total, n)
        return n, elapsed

    return run_ours(n, main)


def ours_pipelined(n: int) -> Timing:
    """A submitter hands receipts to a collector task that awaits them meanwhile."""

    async def main(system: QueueSystem) -> Timing:
        await _settle()
        submit = system.submit
        send, receive = trio.open_memory_channel[Receipt](math.inf)
        total = 0

        async def collector() -> None:
            nonlocal total
            async with receive:
                while (receipt := await _next(receive)) is not None:
                    total += await receipt

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector)
            async with send:
                for i in range(n):
                    send.send_nowait(await submit("bench", i))
        elapsed = time.perf_counter() - start
        expect(total, n)
        return n, elapsed

    return run_ours(n, main)


# -- Pykka ---------------------------------------------------------------------------------


class PykkaNoop(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def pykka_pool(n: int) -> Timing:
    refs = [PykkaNoop.start() for _ in range(WORKERS)]
    try:
        for ref in refs:
            ref.ask(0)  # started and answering
        start = time.perf_counter()
        futures = [refs[i % WORKERS].ask(i, block=False) for i in range(n)]
        total = sum(future.get() for future in futures)
        elapsed = time.perf_counter() - start
    finally:
        for ref in refs:
            ref.stop()
    expect(total, n)
    return n, elapsed


# -- ThreadPoolExecutor ---------------------------------------------------------------------


def _noop(x: int) -> int:
    return x


def thread_pool(n: int) -> Timing:
    with ThreadPoolExecutor(WORKERS) as executor:
        list(executor.map(_noop, range(WORKERS * 4)))  # threads started
        start = time.perf_counter()
        futures = [executor.submit(_noop, i) for i in range(n)]
        total = sum(future.result() for future in futures)
        elapsed = time.perf_counter() - start
    expect(total, n)
    return n, elapsed


# -- asyncio ---------------------------------------------------------------------------------


async def _anoop(x: int) -> int:
    return x


def asyncio_pool(n: int) -> Timing:
    async def main() -> Timing:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

        async def worker() -> None:
            while True:
                arg, future = await queue.get()
                future.set_result(await _anoop(arg))

        workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        futures = []
        for i in range(n):
            future = loop.create_future()
            await queue.put((i, future))
            futures.append(future)
        total = 0
        for future in futures:
            total += await future
        elapsed = time.perf_counter() - start
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        expect(total, n)
        return n, elapsed

    return asyncio.run(main())


# -- raw trio --------------------------------------------------------------------------------


class _Job:
    __slots__ = ("arg", "done", "event", "result")

    def __init__(self, arg: int, event: trio.Event | None) -> None:
        self.arg = arg
        self.result = 0
        self.done = False
        self.event = event


def trio_naive(n: int) -> Timing:
    """`await send` / `await receive`, a trio.Event per task: a round trip per step."""

    async def main() -> Timing:
        send, receive = trio.open_memory_channel[_Job](math.inf)

        async def worker() -> None:
            async for job in receive:
                job.result = await _anoop(job.arg)
                assert job.event is not None
                job.event.set()

        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(worker)
            await _settle()
            start = time.perf_counter()
            jobs = []
            for i in range(n):
                job = _Job(i, trio.Event())
                await send.send(job)
                jobs.append(job)
            total = 0
            for job in jobs:
                assert job.event is not None
                await job.event.wait()
                total += job.result
            elapsed = time.perf_counter() - start
            await send.aclose()
        expect(total, n)
        return n, elapsed

    return trio.run(main)


def trio_fast(n: int) -> Timing:
    """`send_nowait` / `receive_nowait`, one checkpoint per batch; an event only for a
    caller that finds its task unfinished."""

    async def main() -> Timing:
        send, receive = trio.open_memory_channel[_Job](math.inf)
        checkpoint = trio.lowlevel.checkpoint

        async def worker() -> None:
            since = 0
            while True:
                try:
                    job = receive.receive_nowait()
                except trio.WouldBlock:
                    try:
                        job = await receive.receive()
                    except trio.EndOfChannel:
                        return
                    since = 0
                except trio.EndOfChannel:
                    return
                job.result = await _anoop(job.arg)
                job.done = True
                if job.event is not None:
                    job.event.set()
                since += 1
                if since >= BATCH:
                    since = 0
                    await checkpoint()

        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(worker)
            await _settle()
            start = time.perf_counter()
            jobs = []
            for first in range(0, n, BATCH):
                for i in range(first, min(first + BATCH, n)):
                    job = _Job(i, None)
                    send.send_nowait(job)
                    jobs.append(job)
                await checkpoint()
            total = 0
            since = 0
            for job in jobs:
                if not job.done:
                    job.event = trio.Event()
                    await job.event.wait()
                    since = 0
                total += job.result
                since += 1
                if since >= BATCH:
                    since = 0
                    await checkpoint()
            elapsed = time.perf_counter() - start
            await send.aclose()
        expect(total, n)
        return n, elapsed

    return trio.run(main)


# -- latency ---------------------------------------------------------------------------------


class LatencyRun:
    """What a paced run measured; latencies in seconds, sorted."""

    def __init__(self, rate: float, achieved: float, observed: list[float], inside: list[float]):
        self.rate = rate
        self.achieved = achieved
        self.observed = observed
        self.inside = inside


def ours_latency(rate: float, seconds: float) -> LatencyRun:
    """Submit at `rate` tasks/s for `seconds`, a watcher task awaiting each receipt.

    `observed`: from calling `submit` to the watcher's `await receipt` returning (what a
    caller sees). `inside`: from `status().submitted_at` to `status().finished_at` (the
    system's own wall-clock stamps: accepted to outcome recorded), for every 8th task (the
    bench keeps those receipts; the system itself keeps the default 100k outcomes).
    """
    count = max(1, int(rate * seconds))

    async def main(system: QueueSystem) -> LatencyRun:
        await _settle()
        submit = system.submit
        clock = time.perf_counter
        send, receive = trio.open_memory_channel[tuple[float, Receipt]](math.inf)
        observed: list[float] = []
        receipts: list[Receipt] = []

        async def watcher() -> None:
            async with receive:
                while (item := await _next(receive)) is not None:
                    submitted, receipt = item
                    await receipt
                    observed.append(clock() - submitted)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            async with send:
                start = clock()
                i = 0
                while i < count:
                    # Submit what is due by now, then sleep: bursts of about rate/2000.
                    due = min(count, int((clock() - start) * rate) + 1)
                    while i < due:
                        t0 = clock()
                        receipt = await submit("bench", i)
                        send.send_nowait((t0, receipt))
                        if not i % 8:
                            receipts.append(receipt)
                        i += 1
                    await trio.sleep(0.0005)
                achieved = count / (clock() - start)
        inside = []
        for receipt in receipts:
            status = await receipt.status()
            assert status.finished_at is not None
            inside.append(status.finished_at - status.submitted_at)
        return LatencyRun(rate, achieved, sorted(observed), sorted(inside))

    return run_ours(count, main)


# -- profile ---------------------------------------------------------------------------------


def _where(file: str, line: int, name: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/"):
        file = file.split(marker)[-1]
    return f"{name} ({file}:{line})" if line else name


def gc_share(n: int) -> tuple[float, float, list[int]]:
    """An unprofiled run of ours: (seconds, seconds in the garbage collector, collections
    per generation)."""
    spent = [0.0, 0.0]
    collections = [0, 0, 0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            spent[1] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - spent[1]
            collections[info["generation"]] += 1

    gc.collect()
    gc.callbacks.append(watch)
    try:
        _, seconds = ours_batch(n)
    finally:
        gc.callbacks.remove(watch)
    return seconds, spent[0], collections


def profile_ours(n: int, top: int) -> None:
    """cProfile one run of ours (the timed part only): top functions by own time, the
    share of each phase (cumulative), and the garbage collector's share unprofiled."""
    profile = cProfile.Profile()
    ours_batch(n, profile)
    stats = pstats.Stats(profile, stream=io.StringIO())
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    table = Table(title=f"cProfile of ours (submit all, await all), {n:,} tasks: top by tottime")
    for col in ("function", "calls", "tottime", "share", "per task"):
        table.add_column(col, justify="left" if col == "function" else "right")
    for (file, line, name), (_, calls, tt, _, _) in rows:
        table.add_row(
            _where(file, line, name),
            f"{calls:,}",
            f"{tt:.3f}s",
            f"{tt / total:.1%}",
            f"{tt / n * 1e6:.2f} µs",
        )
    console.print(table)

    phases = {
        "submit: QueueSystem.submit": ("queueing/_system.py", "submit"),
        "run: Engine._batch (the worker loop)": ("queueing/_engine.py", "_batch"),
        "await: Receipt.__await__": ("queueing/_receipt.py", "__await__"),
        "trio's scheduler: unrolled_run (own time)": ("trio/_core/_run.py", "unrolled_run"),
    }
    table = Table(title="Where the time goes, by phase (cumulative, under the profiler)")
    for col in ("phase", "time", "share", "per task"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for label, (suffix, func) in phases.items():
        seconds = sum(
            (tt if func == "unrolled_run" else ct)
            for (file, _, name), (_, _, tt, ct, _) in entries.items()
            if name == func and file.endswith(suffix)
        )
        table.add_row(
            label, f"{seconds:.3f}s", f"{seconds / total:.1%}", f"{seconds / n * 1e6:.2f} µs"
        )
    console.print(table)
    console.print(
        f"total under the profiler: {total:.3f}s ({total / n * 1e6:.2f} µs/task; the profiler "
        "inflates short calls, read shares, not absolute times)"
    )
    seconds, in_gc, collections = gc_share(n)
    console.print(
        f"unprofiled run: {n / seconds:,.0f} tasks/s, {seconds:.3f}s, of which {in_gc:.3f}s "
        f"({in_gc / seconds:.1%}) in the garbage collector (collections per generation: "
        f"{collections})"
    )


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=None, help="tasks per run (100k)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (3)")
    parser.add_argument(
        "--latency-seconds", type=float, default=None, help="paced latency run length (5 s)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile one run of ours")
    # `nox -s bench -- ARGS` hands the same ARGS to every bench: ignore the others' options.
    args, ignored = parser.parse_known_args()
    n = args.tasks or (10_000 if args.quick else 100_000)
    reps = args.repeat or 3
    lat_seconds = args.latency_seconds or (1.0 if args.quick else 5.0)

    console.print(
        f"{_common.machine()}; pykka {importlib.metadata.version('pykka')}; "
        f"{n:,} tasks, {WORKERS} workers; best of {reps} runs"
    )
    if ignored:
        console.print(f"(ignoring options for other benches: {' '.join(ignored)})")
    started = time.perf_counter()

    contenders: list[tuple[str, str, Callable[[int], Timing]]] = [
        ("ours", "await submit() each, then await each receipt", ours_batch),
        ("ours (pipelined)", "a collector task awaits receipts meanwhile", ours_pipelined),
        ("ours (submit_many)", "one submit_many(), then await each receipt", ours_many),
        ("Pykka", "8 ThreadingActors, ask(block=False), .get()", pykka_pool),
        ("ThreadPoolExecutor", "submit(no-op), then .result() each", thread_pool),
        ("asyncio", "asyncio.Queue, 8 tasks resolve futures", asyncio_pool),
        ("raw trio (naive)", "await send/receive, a trio.Event each", trio_naive),
        ("raw trio (fast path)", "*_nowait, a checkpoint per 64 tasks", trio_fast),
    ]
    # Rounds: every contender once per round, so a busy spell of the machine hits them all.
    runs: dict[str, list[Timing]] = {name: [] for name, _, _ in contenders}
    with console.status("") as status:
        status.update("warming up")
        for _, _, fn in contenders:
            fn(max(1, n // 20))  # imports, first-call caches, thread start-up: not timed
        for round_ in range(reps):
            for name, _, fn in contenders:
                status.update(f"round {round_ + 1}/{reps}: {name}")
                gc.collect()
                runs[name].append(fn(n))
    rates = {name: _common.best(timings) for name, timings in runs.items()}
    medians = {name: _common.median(timings) for name, timings in runs.items()}
    rates["raw trio"] = max(rates["raw trio (naive)"], rates["raw trio (fast path)"])
    ours = rates["ours"]

    table = Table(title=f"End-to-end throughput: {n:,} no-op tasks, {WORKERS} workers")
    for col in ("contender", "how", "best tasks/s", "µs/task", "median tasks/s", "ours / it"):
        table.add_column(col, justify="left" if col in ("contender", "how") else "right")
    for name, how, _ in contenders:
        table.add_row(
            name,
            how,
            fmt_rate(rates[name]),
            f"{1e6 / rates[name]:.2f}",
            fmt_rate(medians[name]),
            f"{ours / rates[name]:.2f}",
        )
    console.print(table)

    table = Table(title="Targets (best runs)")
    for col in ("target", "ours: submit() each", "ours: submit_many()"):
        table.add_column(col, justify="left" if col == "target" else "right")
    many = rates["ours (submit_many)"]
    for peer, target in TARGETS.items():
        table.add_row(
            f"ours >= {target:g}x {peer}",
            *(
                f"{rate / rates[peer]:.2f} {verdict(rate / rates[peer] >= target)}"
                for rate in (ours, many)
            ),
        )
    console.print(table)
    console.print(
        f"ours (pipelined) / raw trio: {rates['ours (pipelined)'] / rates['raw trio']:.2f}"
    )

    with console.status(f"latency at half of {fmt_rate(ours)} for {lat_seconds:g}s"):
        gc.collect()
        lat = ours_latency(ours / 2, lat_seconds)
    table = Table(
        title=f"Latency of ours at half the best rate: {fmt_rate(lat.rate)} asked, "
        f"{fmt_rate(lat.achieved)} achieved, {len(lat.observed):,} tasks over {lat_seconds:g}s"
    )
    for col in ("measured", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col == "measured" else "right")
    for what, values in (
        ("caller: submit() called -> `await receipt` returns", lat.observed),
        ("inside: status().submitted_at -> finished_at", lat.inside),
    ):
        table.add_row(
            what,
            *(fmt_ms(_common.percentile(values, p)) for p in (50, 90, 99)),
            fmt_ms(values[-1]),
        )
    console.print(table)

    if args.profile:
        with console.status("profiling ours"):
            profile_ours(n, 15)
    console.print(f"total {time.perf_counter() - started:.1f}s")
    return 0  # a missed target is reported, never an error


if __name__ == "__main__":
    sys.exit(main())

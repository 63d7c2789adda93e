"""Actor runtime benchmark: tell, ask, spawn and memory, side by side with raw trio.

Every figure is measured in the same process and run as its raw-trio reference, and the
ratio between the two is what to read: absolute numbers depend on the machine.

    python bench/actors_bench.py            # full sizes (< 60 s on 2 cores)
    python bench/actors_bench.py --quick    # small sizes (a few seconds), for smoke runs
    nox -s bench                            # every bench/*_bench.py, full sizes

Each throughput figure is the best of `--repeat` runs (default 3): the best run is the one
least disturbed by the rest of the machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from rich.console import Console
from rich.table import Table

import actors
from actors import Actor, ActorSystem, open_system

BATCH = 64  # messages per checkpoint on the fast paths
CAPACITY = 1000  # mailbox / channel buffer: the same bound for actors and raw channels

# Targets from the benchmark issue.
TELL_TARGET = 0.50  # of the raw channel's best fast-path throughput
ASK_TARGET = 0.80  # of the raw request/response pair
MEMORY_TARGET = 3 * 1024  # bytes per idle actor
SPAWN_TARGET = 50_000  # actors/s

console = Console(width=110)


def best_rate(runs: list[tuple[int, float]]) -> float:
    """Operations per second of the fastest run."""
    return max(count / seconds for count, seconds in runs)


Measure = Callable[[], Awaitable[tuple[int, float]]]


async def interleaved(times: int, *fns: Measure) -> list[float]:
    """Best rate of each measurement over `times` rounds, running them in turn each round,
    so a slow spell of the machine hits every variant rather than one."""
    runs: list[list[tuple[int, float]]] = [[] for _ in fns]
    for _ in range(times):
        for fn, results in zip(fns, runs, strict=True):
            gc.collect()
            results.append(await fn())
    return [best_rate(results) for results in runs]


# -- (a) tell throughput ---------------------------------------------------------------------


class Sink(Actor):
    """Counts messages; sets `done` at the n-th."""

    def __init__(self, n: int, done: trio.Event) -> None:
        self.n = n
        self.count = 0
        self.done = done

    async def receive(self, message: Any) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set()


async def actor_tell(system: ActorSystem, n: int) -> tuple[int, float]:
    done = trio.Event()
    ref = await system.spawn(Sink, n, done, mailbox_size=CAPACITY)
    await trio.testing.wait_all_tasks_blocked()
    tell = ref.tell
    start = time.perf_counter()
    for i in range(n):
        await tell(i)
    await done.wait()
    elapsed = time.perf_counter() - start
    await ref.stop()
    return n, elapsed


async def actor_tell_nowait(system: ActorSystem, n: int) -> tuple[int, float]:
    done = trio.Event()
    ref = await system.spawn(Sink, n, done, mailbox_size=CAPACITY)
    await trio.testing.wait_all_tasks_blocked()
    tell, tell_nowait = ref.tell, ref.tell_nowait
    checkpoint = trio.lowlevel.checkpoint
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        for i in range(first, min(first + BATCH, n)):
            try:
                tell_nowait(i)
            except trio.WouldBlock:
                await tell(i)  # full: wait for room (backpressure)
        await checkpoint()
    await done.wait()
    elapsed = time.perf_counter() - start
    await ref.stop()
    return n, elapsed


async def raw_channel_fast(n: int) -> tuple[int, float]:
    """send_nowait/receive_nowait, one checkpoint per batch on each side."""
    send, receive = trio.open_memory_channel[int](CAPACITY)
    checkpoint = trio.lowlevel.checkpoint

    async def consumer() -> None:
        count = 0
        since = 0
        while count < n:
            try:
                receive.receive_nowait()
            except trio.WouldBlock:
                await receive.receive()
                since = 0
            count += 1
            since += 1
            if since >= BATCH:
                since = 0
                await checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for first in range(0, n, BATCH):
            for i in range(first, min(first + BATCH, n)):
                try:
                    send.send_nowait(i)
                except trio.WouldBlock:
                    await send.send(i)
            await checkpoint()
    return n, time.perf_counter() - start


async def raw_channel_plain(n: int) -> tuple[int, float]:
    """`await send()` / `await receive()`: a scheduler round trip per message."""
    send, receive = trio.open_memory_channel[int](CAPACITY)

    async def consumer() -> None:
        for _ in range(n):
            await receive.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            await send.send(i)
    return n, time.perf_counter() - start


# -- (b) ask round trips -----------------------------------------------------------------------


class Echo(Actor):
    """Answers every message with itself."""

    async def receive(self, message: Any) -> Any:
        return message


async def actor_ask(system: ActorSystem, n: int, ask_timeout: float | None) -> tuple[int, float]:
    ref = await system.spawn(Echo, mailbox_size=CAPACITY)
    await trio.testing.wait_all_tasks_blocked()
    ask = ref.ask
    start = time.perf_counter()
    for i in range(n):
        await ask(i, timeout=ask_timeout)
    elapsed = time.perf_counter() - start
    await ref.stop()
    return n, elapsed


class _Request:
    __slots__ = ("done", "message", "reply")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.reply: Any = None
        self.done = trio.Event()


async def raw_request_event(n: int) -> tuple[int, float]:
    """A request channel whose requests carry a trio.Event reply slot."""
    send, receive = trio.open_memory_channel[_Request](CAPACITY)

    async def server() -> None:
        async for request in receive:
            request.reply = request.message
            request.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            request = _Request(i)
            await send.send(request)
            await request.done.wait()
        elapsed = time.perf_counter() - start
        await send.aclose()
    return n, elapsed


async def raw_request_event_deadline(n: int) -> tuple[int, float]:
    """As `raw_request_event`, each round trip under `trio.move_on_after(5)` like an ask."""
    send, receive = trio.open_memory_channel[_Request](CAPACITY)

    async def server() -> None:
        async for request in receive:
            request.reply = request.message
            request.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            with trio.move_on_after(5.0):
                request = _Request(i)
                await send.send(request)
                await request.done.wait()
        elapsed = time.perf_counter() - start
        await send.aclose()
    return n, elapsed


async def raw_request_channel(n: int) -> tuple[int, float]:
    """A request channel whose requests carry a one-shot reply channel."""
    send, receive = trio.open_memory_channel[tuple[int, trio.MemorySendChannel[int]]](CAPACITY)

    async def server() -> None:
        async for message, reply in receive:
            reply.send_nowait(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            reply_send, reply_receive = trio.open_memory_channel[int](1)
            await send.send((i, reply_send))
            await reply_receive.receive()
        elapsed = time.perf_counter() - start
        await send.aclose()
    return n, elapsed


# -- (c) spawn rate and memory ---------------------------------------------------------------


class Idle(Actor):
    """Does nothing: waits on its empty mailbox."""

    async def receive(self, message: Any) -> None:
        pass


async def actor_spawn(system: ActorSystem, n: int) -> tuple[int, float]:
    """Spawn n actors and wait until every one has started and is waiting for mail."""
    supervisor = await system.spawn(actors.Supervisor, shutdown=60.0)
    await trio.testing.wait_all_tasks_blocked()
    spawn = system.spawn
    start = time.perf_counter()
    for _ in range(n):
        await spawn(Idle, supervisor=supervisor)
    await trio.testing.wait_all_tasks_blocked()
    elapsed = time.perf_counter() - start
    await supervisor.stop()
    return n, elapsed


async def _raw_actor_like(receive: trio.MemoryReceiveChannel[Any]) -> None:
    async for _ in receive:
        pass


async def raw_spawn(n: int, with_channel: bool) -> tuple[int, float]:
    """Raw trio tasks (optionally each with its own bounded channel, like a mailbox)."""
    keep: list[Any] = []
    async with trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for _ in range(n):
            if with_channel:
                send, receive = trio.open_memory_channel[Any](CAPACITY)
                keep.append(send)
                nursery.start_soon(_raw_actor_like, receive)
            else:
                nursery.start_soon(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return n, elapsed


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memory_per(
    n: int, spawn_n: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]]
) -> tuple[float, float]:
    """Bytes per idle unit: (tracemalloc, RSS delta); `spawn_n` returns a cleanup."""
    gc.collect()
    rss_before = _rss()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    cleanup = await spawn_n(n)
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    rss = _rss() - rss_before
    await cleanup()
    return traced / n, rss / n


# -- (d) a peer: pykka (thread-based actors) -------------------------------------------------


def pykka_rates(n_tell: int, n_ask: int, reps: int) -> tuple[float, float] | None:
    """pykka's tell throughput and ask round trips/s (threads, not trio), if installed."""
    try:
        import pykka
    except ImportError:
        return None

    class PykkaSink(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return message

    ref = PykkaSink.start()
    try:
        tells, asks = [], []
        for _ in range(reps):
            gc.collect()
            start = time.perf_counter()
            for i in range(n_tell):
                ref.tell(i)
            ref.ask("sync")  # FIFO: every tell before it has been handled
            tells.append((n_tell, time.perf_counter() - start))
            start = time.perf_counter()
            for i in range(n_ask):
                ref.ask(i)
            asks.append((n_ask, time.perf_counter() - start))
    finally:
        ref.stop()
    return best_rate(tells), best_rate(asks)


# -- the run ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]MISSED[/]"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def sizes(quick: bool) -> tuple[int, int, int]:
    """Messages for tell, round trips for ask, actors for spawn."""
    return (20_000, 3_000, 2_000) if quick else (100_000, 10_000, 10_000)


async def run(args: argparse.Namespace, peer: tuple[float, float] | None) -> bool:
    n_tell, n_ask, n_spawn = sizes(args.quick)
    reps = args.repeat
    all_ok = True

    async with open_system(name="bench", shutdown_timeout=120.0) as system:
        # (a) tell
        section = time.perf_counter()
        fast, plain, tell, tell_nowait = await interleaved(
            reps,
            lambda: raw_channel_fast(n_tell),
            lambda: raw_channel_plain(n_tell),
            lambda: actor_tell(system, n_tell),
            lambda: actor_tell_nowait(system, n_tell),
        )
        table = Table(title=f"(a) tell throughput: {n_tell:,} messages into one actor")
        for col in ("what", "messages/s", "vs raw fast path", "target"):
            table.add_column(col, justify="left" if col == "what" else "right")
        table.add_row(
            "raw channel, send_nowait/receive_nowait + batch checkpoint", rate(fast), "1.00", ""
        )
        table.add_row(
            "raw channel, await send / await receive", rate(plain), f"{plain / fast:.2f}", ""
        )
        ok = tell / fast >= TELL_TARGET
        all_ok &= ok
        table.add_row(
            "await ref.tell(msg)",
            rate(tell),
            f"{tell / fast:.2f}",
            f">= {TELL_TARGET:.2f} {verdict(ok)}",
        )
        ok2 = tell_nowait / fast >= TELL_TARGET
        all_ok &= ok2
        table.add_row(
            f"ref.tell_nowait(msg), checkpoint per {BATCH}",
            rate(tell_nowait),
            f"{tell_nowait / fast:.2f}",
            f">= {TELL_TARGET:.2f} {verdict(ok2)}",
        )
        table.caption = f"measured in {time.perf_counter() - section:.1f}s"
        console.print(table)

        # (b) ask
        section = time.perf_counter()
        raw_event, raw_chan, raw_deadline, ask, ask_none = await interleaved(
            reps,
            lambda: raw_request_event(n_ask),
            lambda: raw_request_channel(n_ask),
            lambda: raw_request_event_deadline(n_ask),
            lambda: actor_ask(system, n_ask, 5.0),
            lambda: actor_ask(system, n_ask, None),
        )
        raw_best = max(raw_event, raw_chan)
        table = Table(title=f"(b) ask round trips: {n_ask:,} sequential requests")
        for col in ("what", "round trips/s", "vs best raw pair", "target"):
            table.add_column(col, justify="left" if col == "what" else "right")
        table.add_row(
            "raw: request channel + trio.Event reply",
            rate(raw_event),
            f"{raw_event / raw_best:.2f}",
            "",
        )
        table.add_row(
            "raw: request channel + one-shot reply channel",
            rate(raw_chan),
            f"{raw_chan / raw_best:.2f}",
            "",
        )
        table.add_row(
            "raw: trio.Event reply, each under move_on_after(5)",
            rate(raw_deadline),
            f"{raw_deadline / raw_best:.2f}",
            "",
        )
        ok = ask / raw_best >= ASK_TARGET
        all_ok &= ok
        table.add_row(
            "await ref.ask(msg)  (default timeout=5.0)",
            rate(ask),
            f"{ask / raw_best:.2f}",
            f">= {ASK_TARGET:.2f} {verdict(ok)}",
        )
        table.add_row(
            "await ref.ask(msg, timeout=None)", rate(ask_none), f"{ask_none / raw_best:.2f}", ""
        )
        table.caption = f"measured in {time.perf_counter() - section:.1f}s"
        console.print(table)

        # (c) spawn and memory
        section = time.perf_counter()
        raw_task, raw_chan_task, spawn = await interleaved(
            reps,
            lambda: raw_spawn(n_spawn, False),
            lambda: raw_spawn(n_spawn, True),
            lambda: actor_spawn(system, n_spawn),
        )

        async def spawn_actors(n: int, *, asked: bool = False) -> Callable[[], Awaitable[None]]:
            supervisor = await system.spawn(actors.Supervisor, shutdown=60.0)
            await trio.testing.wait_all_tasks_blocked()  # started: it takes children
            for _ in range(n):
                ref = await system.spawn(Idle, supervisor=supervisor)
                if asked:
                    await ref.ask(None)

            async def cleanup() -> None:
                await supervisor.stop()

            return cleanup

        actor_mem = await memory_per(n_spawn, spawn_actors)
        # For reference, no target: an actor holds more once it has had a message (its
        # message deque, and the cancel scope it enters at its first message).
        asked_mem = await memory_per(n_spawn, lambda n: spawn_actors(n, asked=True))

        async def spawn_raw(n: int, with_channel: bool) -> Callable[[], Awaitable[None]]:
            scope_box: list[trio.CancelScope] = []
            done = trio.Event()

            async def host(task_status: trio.TaskStatus[None]) -> None:
                keep = []
                async with trio.open_nursery() as nursery:
                    scope_box.append(nursery.cancel_scope)
                    for _ in range(n):
                        if with_channel:
                            send, receive = trio.open_memory_channel[Any](CAPACITY)
                            keep.append(send)
                            nursery.start_soon(_raw_actor_like, receive)
                        else:
                            nursery.start_soon(trio.sleep_forever)
                    task_status.started()
                done.set()

            await outer.start(host)

            async def cleanup() -> None:
                scope_box[0].cancel()
                await done.wait()

            return cleanup

        async with trio.open_nursery() as outer:
            task_mem = await memory_per(n_spawn, lambda n: spawn_raw(n, False))
            chan_task_mem = await memory_per(n_spawn, lambda n: spawn_raw(n, True))

        table = Table(title=f"(c) spawn rate and memory: {n_spawn:,} idle actors")
        for col in ("what", "spawned/s", "bytes each (tracemalloc)", "bytes each (RSS)", "target"):
            table.add_column(col, justify="left" if col == "what" else "right")
        table.add_row(
            "raw trio task (sleep_forever)",
            rate(raw_task),
            f"{task_mem[0]:,.0f}",
            f"{task_mem[1]:,.0f}",
            "",
        )
        table.add_row(
            "raw trio task + its own memory channel",
            rate(raw_chan_task),
            f"{chan_task_mem[0]:,.0f}",
            f"{chan_task_mem[1]:,.0f}",
            "",
        )
        ok_rate = spawn >= SPAWN_TARGET
        ok_mem = actor_mem[0] <= MEMORY_TARGET
        all_ok &= ok_rate and ok_mem
        table.add_row(
            "await system.spawn(Idle)",
            rate(spawn),
            f"{actor_mem[0]:,.0f}",
            f"{actor_mem[1]:,.0f}",
            f">= {SPAWN_TARGET:,}/s {verdict(ok_rate)}; <= {MEMORY_TARGET:,} B {verdict(ok_mem)}",
        )
        table.add_row(
            "the same, idle again after one ask (reference)",
            "",
            f"{asked_mem[0]:,.0f}",
            f"{asked_mem[1]:,.0f}",
            "",
        )
        table.caption = f"measured in {time.perf_counter() - section:.1f}s"
        console.print(table)
        console.print(
            f"spawn rate vs raw task + channel: {spawn / raw_chan_task:.2f}; "
            f"memory vs raw task + channel: {actor_mem[0] / chan_task_mem[0]:.2f}x"
        )
        if peer is not None:
            pykka_tell, pykka_ask = peer
            table = Table(title="(d) a peer: pykka ThreadingActor (threads), same messages")
            for col in ("what", "per second", "await ref.tell / ref.ask vs pykka"):
                table.add_column(col, justify="left" if col == "what" else "right")
            table.add_row(
                f"pykka tell, {n_tell // 5:,} messages",
                rate(pykka_tell),
                f"{tell / pykka_tell:.1f}x",
            )
            table.add_row(
                f"pykka ask, {n_ask // 5:,} round trips", rate(pykka_ask), f"{ask / pykka_ask:.1f}x"
            )
            table.caption = "measured in threads, before the trio benchmarks"
        console.print(table)
    return all_ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is kept")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target is missed"
    )
    args = parser.parse_args()
    console.print(
        f"Python {sys.version.split()[0]}, trio {trio.__version__}, {os.cpu_count()} CPU(s), "
        f"{'quick' if args.quick else 'full'} sizes, best of {args.repeat}"
    )
    started = time.perf_counter()
    n_tell, n_ask, _ = sizes(args.quick)
    peer = pykka_rates(n_tell // 5, n_ask // 5, args.repeat)
    ok = trio.run(run, args, peer)
    console.print(
        f"total {time.perf_counter() - started:.1f}s; targets {'all met' if ok else 'NOT all met'}"
    )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())

"""Chaos over Redis, clients and entries: a client process SIGSTOPped while more of its
tasks finish than its replies stream keeps; a 10x overload of a small queue; foreign and
malformed entries in a ready stream; entries forged with the ids of pending tasks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from chaos_helpers import (
    REMOVE,
    Memory,
    Outcomes,
    duplicated,
    envelope,
    raw_redis,
    read_json,
    redis_keys,
    serving,
    start_process,
    start_worker,
    stop,
    struck,
    submit_numbers,
    succeeded,
    wait_for,
)
from chaos_tasks import queue, small

from queueing import connect

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(300)]


#: From SIGCONT to every receipt of the paused client resolved: a read shows the gap at
#: once, and one sweep reads the records (a margin for a loaded machine; without the gap
#: check the periodic sweep, every 15 s, would find them).
PAUSE_RECOVERY = 10.0
#: The replies streams' cap (entries) in the processes of that scenario (`chaos_tasks`
#: reads it): an entry carries the notices of one outcome write (a batch), so the default
#: cap, 10,000 entries, would take far more tasks to overflow.
REPLIES_MAXLEN = 100


async def test_a_client_paused_while_more_than_the_replies_cap_of_its_tasks_finish(
    make_redis_server: Any, tmp_path: Path, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = 5_000
    monkeypatch.setenv("QUEUEING_CHAOS_REPLIES_MAXLEN", str(REPLIES_MAXLEN))
    scenario.scenario = f"a client SIGSTOPped while {tasks:,} of its tasks finish"
    scenario.broker = "redis"
    scenario.promise = (
        f"every receipt resolves from the stored outcome, though its replies stream kept "
        f"~{REPLIES_MAXLEN:,} entries (batches of notices); 0 lost; recovery: SIGCONT to the "
        "last receipt resolved "
        f"(< {PAUSE_RECOVERY:g} s: the trimmed notices are seen at the first read)"
    )
    server = make_redis_server()
    url = server.url_with(prefix="chaos")
    runs = tmp_path / "runs"
    runs.mkdir()
    out = tmp_path / "receipts.log"
    client = start_process(["chaos_client.py", url, str(out), str(tasks), "1000"], tmp_path)
    workers: list[Any] = []
    memory = Memory()
    memory.watch("client", client.pid)
    memory.watch("redis", server.process.pid)
    try:
        async with raw_redis(url) as raw, trio.open_nursery() as nursery:
            nursery.start_soon(memory.sample_loop)

            async def all_submitted() -> bool:
                assert client.poll() is None, "the client died"
                return out.exists() and len(out.read_text().splitlines()) == tasks

            await wait_for(all_submitted, 120, 0.1)
            client.send_signal(signal.SIGSTOP)
            workers = [
                start_worker(url, tmp_path, runs, seconds=0, concurrency=16) for _ in range(2)
            ]
            memory.watch("worker", workers[0].pid)

            async def all_done() -> bool:
                return await succeeded(raw, url) == tasks

            await wait_for(all_done, 180, 0.1)
            (replies,) = await raw.keys(redis_keys(url).replies("chaos", "*"))
            # Notices kept: an entry's fields are its task ids (the opening one is `id`).
            kept = sum(
                len(entry.field_values or {})
                for entry in await raw.xrange(replies)
                if "id" not in (entry.field_values or {})
            )
            client.send_signal(signal.SIGCONT)
            resumed_at = time.time()
            with trio.fail_after(120):
                while client.poll() is None:  # noqa: ASYNC110 - a process, no event
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    finally:
        stop([client, *workers])
    summary = read_json(Path(str(out) + ".json"))
    twice, _ = duplicated(runs)
    scenario.tasks = tasks
    scenario.lost = summary["lost"]
    scenario.unresolved = tasks - summary["ok"] - summary["lost"] - summary["wrong"]
    scenario.duplicated = len(twice)
    scenario.recovery = summary["done_at"] - resumed_at
    scenario.memory = memory.peaks()
    struck(kept < tasks - 1000, "the replies stream kept every notice: nothing to prove")
    assert summary == {**summary, "ok": tasks, "wrong": 0, "lost": 0, "failed": 0}
    assert client.returncode == 0
    assert scenario.recovery < PAUSE_RECOVERY


OVERLOAD_SECONDS = 12.0
#: Growth of a process's memory from the first third of the overload to its end.
FLAT_MB = 15.0


async def test_ten_times_overload_of_a_small_queue_keeps_memory_flat(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = f"overload: 64 submitters vs 4 slots, maxsize {small.maxsize}"
    scenario.broker = "redis"
    scenario.promise = (
        f"outstanding never over maxsize; the queue full most of the time; memory of "
        f"client, worker and Redis flat (< {FLAT_MB:g} MB growth over {OVERLOAD_SECONDS:g} s); "
        "every accepted task runs once"
    )
    server = make_redis_server()
    url = server.url_with(prefix="chaos")
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = start_worker(url, tmp_path, runs, target="chaos_tasks:small", concurrency=4)
    keys = redis_keys(url)
    memory = Memory()
    memory.watch("client", os.getpid())
    memory.watch("worker", worker.pid)
    memory.watch("redis", server.process.pid)
    levels: list[int] = []
    submitted = 0
    try:
        async with raw_redis(url) as raw, trio.open_nursery() as nursery:

            async def watch_outstanding() -> None:
                while True:
                    levels.append(int(await raw.get(keys.outstanding("small")) or 0))
                    await trio.sleep(0.1)

            await wait_for(lambda: serving_one(raw, url, worker), 60, 0.1)
            async with connect(url, small) as system:

                async def submitter(first: int) -> None:
                    nonlocal submitted
                    number = first
                    while True:
                        await system.submit("small", number)  # the receipt is dropped
                        submitted += 1
                        number += 64

                started = time.monotonic()
                nursery.start_soon(memory.sample_loop, 0.5)
                nursery.start_soon(watch_outstanding)
                async with trio.open_nursery() as submitters:
                    for first in range(64):
                        submitters.start_soon(submitter, first)
                    await trio.sleep(OVERLOAD_SECONDS)
                    submitters.cancel_scope.cancel()

                async def drained() -> bool:
                    return int(await raw.get(keys.outstanding("small")) or 0) == 0

                await wait_for(drained, 60, 0.1)
                done = await succeeded(raw, url, "small")
            nursery.cancel_scope.cancel()
    finally:
        stop([worker])
    twice, _ = duplicated(runs)
    scenario.tasks = submitted
    scenario.unresolved = submitted - done
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    growth = {label: _growth(samples, started) for label, samples in memory.samples.items()}
    full = sum(level >= small.maxsize * 0.8 for level in levels) / len(levels)
    scenario.promise += (
        f" (measured: {full:.0%} of samples at 80% of maxsize or more; growth "
        + ", ".join(f"{label} {mb:+.1f}" for label, mb in growth.items())
        + " MB)"
    )
    assert max(levels) <= small.maxsize
    assert full >= 0.5
    assert done == submitted
    assert twice == set()
    assert all(mb < FLAT_MB for mb in growth.values()), growth


def _growth(samples: list[tuple[float, float]], started: float) -> float:
    """The peak of the last third of the overload over the peak of its first third (after
    a second of warming up)."""
    third = OVERLOAD_SECONDS / 3
    early = [mb for at, mb in samples if 1.0 <= at - started <= third]
    late = [mb for at, mb in samples if at - started >= 2 * third]
    return max(late, default=0.0) - max(early, default=0.0)


async def serving_one(raw: Any, url: str, worker: Any) -> bool:
    assert worker.poll() is None, "the worker died at start"
    return await serving(raw, url) == 1


def bad_entries(queue: str) -> dict[str, dict[str, str]]:
    """Entries another program (or an attacker) could write: not tasks of ours."""
    good = 7
    return {
        "foreign fields": {"hello": "world"},
        "missing env": {"id": "t1"},
        "env not json": {"id": "t1", "env": "{not json"},
        "env a list": {"env": "[1, 2]"},
        "env a string": {"env": '"hello"'},
        "wrong version": {"env": envelope(queue, "t1", good, v=2)},
        "no version": {"env": envelope(queue, "t1", good, v=REMOVE)},
        "id a number": {"env": envelope(queue, 123, good)},
        "id empty": {"env": envelope(queue, "", good)},
        "id too long": {"env": envelope(queue, "x" * 5000, good)},
        "wrong queue": {"env": envelope("other", "t1", good)},
        "no payload": {"env": envelope(queue, "t1", REMOVE)},
        "attempts a bool": {"env": envelope(queue, "t1", good, attempts=True)},
        "submitted_at text": {"env": envelope(queue, "t1", good, submitted_at="now")},
        "never submitted": {"env": envelope(queue, f"{queue}:nobody", good)},
        "oversized": {"env": envelope(queue, "t1", "x" * 200_000)},
    }


async def test_foreign_and_malformed_entries_among_real_tasks(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    tasks = 1000
    entries = bad_entries("chaos")
    scenario.scenario = f"{len(entries)} kinds of foreign and malformed entries"
    scenario.broker = "redis"
    scenario.promise = (
        "each dead-lettered with its reason, never run; every real task runs once; "
        "the worker goes on"
    )
    await _with_injected(make_redis_server, tmp_path, scenario, tasks, forged=0)


async def test_entries_forged_with_the_ids_of_pending_tasks(
    make_redis_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.scenario = "entries forged with the ids of pending tasks"
    scenario.broker = "redis"
    scenario.promise = (
        "the forged entries dead-lettered, never run; each receipt resolves with its own "
        "task's result; no task runs twice"
    )
    await _with_injected(make_redis_server, tmp_path, scenario, 1000, forged=50)


async def _with_injected(
    make_redis_server: Any, tmp_path: Path, scenario: Any, tasks: int, forged: int
) -> None:
    """Submit `tasks` (no worker yet), write bad entries (or `forged` entries with the ids
    and a payload of their own), start a worker, and check every outcome."""
    server = make_redis_server()
    url = server.url_with(prefix="chaos")
    keys = redis_keys(url)
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = None
    memory = Memory()
    memory.watch("redis", server.process.pid)
    async with raw_redis(url) as raw, connect(url, queue) as system:
        # Forged entries of tasks not run yet: delayed ones, whose real entries reach the
        # ready stream (after the forged ones) when a worker's promoter moves them.
        first = await submit_numbers(system, tasks // 2, delay=0.5 if forged else None)
        if forged:
            written = [
                {"id": receipt.id, "env": envelope("chaos", receipt.id, 10**6 + number)}
                for number, receipt in first[:forged]
            ]
        else:
            written = list(bad_entries("chaos").values())
        for fields in written:
            await raw.xadd(keys.ready("chaos"), fields)
        second = await submit_numbers(system, tasks - tasks // 2, first=tasks // 2)
        worker = start_worker(url, tmp_path, runs, seconds=0.002)
        memory.watch("worker", worker.pid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(memory.sample_loop)
                outcomes = await Outcomes().gather([*first, *second], timeout=120)

                async def all_dead_lettered() -> bool:
                    return await raw.xlen(keys.dead("chaos")) >= len(written)

                await wait_for(all_dead_lettered, 30)
                letters = await system.dead_letters("chaos", limit=len(written) + 10)
                outstanding = int(await raw.get(keys.outstanding("chaos")) or 0)
                left = await raw.xlen(keys.ready("chaos"))
                nursery.cancel_scope.cancel()
        finally:
            stop([worker])
    twice, _ = duplicated(runs)
    scenario.tasks = tasks
    scenario.lost, scenario.unresolved = outcomes.lost, outcomes.unresolved
    scenario.duplicated = len(twice)
    scenario.memory = memory.peaks()
    assert (outcomes.ok, outcomes.wrong, outcomes.lost, outcomes.unresolved) == (
        tasks,
        0,
        0,
        0,
    ), outcomes.failed
    assert len(letters) == len(written)
    assert all(letter.error and letter.error.type == "BadEntry" for letter in letters)
    assert all(len(letter.error.message) < 1000 for letter in letters if letter.error)
    assert all(letter.id == "" for letter in letters)  # not the real tasks'
    assert twice == set()
    assert (outstanding, left) == (0, 0)
    assert worker.returncode == 0

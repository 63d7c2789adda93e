"""Leases, reclaim, delivery counts, timeouts, delays, expiry and result TTLs on Redis."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import trio
from redis_helpers import key, outcome_of, outstanding, raw_client, task_key, wait_for
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    Queue,
    RetryPolicy,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskState,
    UnknownTask,
    Worker,
    connect,
    open_system,
)

pytestmark = pytest.mark.redis


class Slow(Worker):
    """Sleeps `payload` seconds; logs (task id, start, end) of every run."""

    def __init__(self, log: list[tuple[str, float, float | None]]) -> None:
        self.log = log

    async def handle(self, seconds: float) -> float:
        assert self.task_id is not None
        entry = (self.task_id, time.monotonic(), None)
        self.log.append(entry)
        try:
            await trio.sleep(seconds)
        finally:
            self.log[self.log.index(entry)] = (entry[0], entry[1], time.monotonic())
        return seconds


def slow(log: list[Any], **options: Any) -> Queue:
    return Queue("slow", Slow, worker_kwargs={"log": log}, **options)


class Crash(Exception):
    """Declared fatal: the worker itself is broken."""


class Crashing(Worker):
    fatal = (Crash,)

    async def handle(self, payload: str) -> str:
        raise Crash(f"worker broke on {payload!r}")


class Stuck(Worker):
    """Never finishes (until cancelled): stands for a worker that dies holding its task."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def handle(self, payload: str) -> str:
        self.log.append(payload)
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_slow_task_keeps_its_lease(redis_url: str) -> None:
    """A task running for three leases is renewed, never reclaimed by another worker."""
    log: list[Any] = []
    url = redis_url + "&lease=0.4"
    async with open_system(slow(log), broker=url) as first, open_system(slow(log), broker=url):
        receipt = await first.submit("slow", 1.2)
        assert await receipt.result(timeout=10) == 1.2
        others = [await first.submit("slow", 0.01) for _ in range(10)]
        for other in others:
            await other.result(timeout=5)
    runs = [task_id for task_id, _, _ in log if task_id == receipt.id]
    assert runs == [receipt.id]  # ran once


async def test_tasks_of_a_dead_worker_are_reclaimed_after_the_lease(redis_url: str) -> None:
    log: list[str] = []
    url = redis_url + "&lease=0.5"
    stuck = Queue("work", Stuck, worker_kwargs={"log": log})
    async with open_system(stuck, broker=url, shutdown_timeout=0.1) as doomed:
        receipt = await doomed.submit("work", "x")
        await wait_for(lambda: _has(log, 1))
    # `doomed` stopped with the task unfinished and unacknowledged: durable, so another
    # worker gets it once the lease has run out.
    assert doomed.unfinished == 1
    started = time.monotonic()

    class Quick(Worker):
        async def handle(self, payload: str) -> str:
            return payload.upper()

    async with open_system(Queue("work", Quick), broker=url) as rescuer:
        found = rescuer.receipt(receipt.id)
        assert await found.result(timeout=10) == "X"
        took = time.monotonic() - started
        status = await found.status()
    assert took > 0.3  # it waited out the lease (the upper bound is the result's timeout)
    assert status.deliveries == 2
    assert status.attempts == 1  # the attempt that died is not counted


async def test_a_task_that_kills_its_workers_is_dead_lettered_as_poison(redis_url: str) -> None:
    log: list[str] = []
    url = redis_url + "&lease=0.3"
    queue = Queue("work", Stuck, worker_kwargs={"log": log}, max_deliveries=2)
    async with open_system(queue, broker=url, shutdown_timeout=0.05) as system:
        receipt = await system.submit("work", "poison")
        task_id = receipt.id
        await wait_for(lambda: _has(log, 1))
    for deliveries in (2, 3):
        async with open_system(queue, broker=url, shutdown_timeout=0.05) as system:
            if deliveries == 2:
                await wait_for(lambda: _has(log, 2))  # reclaimed and run again
            else:  # the third delivery is over the limit: not run, dead-lettered
                failure = await outcome_of(system.receipt(task_id), timeout=5)
                assert isinstance(failure, TaskFailed)
                assert failure.outcome is TaskState.DEAD_LETTERED
                assert failure.error_type == "Poison"
                (letter,) = await system.dead_letters("work")
                assert letter.id == task_id
                assert letter.deliveries == 3
                async with raw_client(url) as client:
                    assert await outstanding(client, url, "work") == 0
    assert log == ["poison", "poison"]


async def test_a_crashing_worker_redelivers_then_dead_letters_poison(redis_url: str) -> None:
    queue = Queue("crashing", Crashing, max_deliveries=3, max_restarts=10)
    async with open_system(queue, broker=redis_url) as system:
        failure = await outcome_of(await system.submit("crashing", "boom"), timeout=20)
        assert isinstance(failure, TaskFailed)
        assert failure.outcome is TaskState.DEAD_LETTERED
        assert failure.error_type == "Poison"
        (letter,) = await system.dead_letters("crashing")
        assert letter.deliveries == 4


async def test_running_task_is_cancelled_through_its_receipt(redis_url: str) -> None:
    log: list[Any] = []
    url = redis_url + "&lease=0.6"
    async with open_system(slow(log), broker=url) as system:
        receipt = await system.submit("slow", 30.0)
        await wait_for(lambda: _has(log, 1))
        cancelled_at = time.monotonic()
        assert await receipt.cancel() is True
        with pytest.raises(TaskCancelled):
            await receipt.result(timeout=5)
        # The handler runs in another process (here: another broker object); it learns
        # of the cancel at its next lease renewal.
        await wait_for(lambda: _ended(log), timeout=5)  # stopped, not run to its end (30s)
        assert log[0][2] > cancelled_at
        assert await (await system.submit("slow", 0.0)).result(timeout=5) == 0.0
        await system.drain(timeout=5)
        async with raw_client(url) as client:
            assert await outstanding(client, url, "slow") == 0


async def test_timeout_fails_the_attempt_and_retries(redis_url: str) -> None:
    log: list[Any] = []
    retry = RetryPolicy(stop=stop_after_attempt(2), wait=wait_fixed(0.05))
    async with open_system(slow(log, timeout=0.2, retry=retry), broker=redis_url) as system:
        failure = await outcome_of(await system.submit("slow", 5.0), timeout=10)
        assert isinstance(failure, TaskFailed)
        assert failure.error_type == "queueing.TaskTimeout"
        assert failure.attempts == 2
        assert len(log) == 2
        # Each attempt was cut at its timeout, not run to its end (5s).
        assert all(end is not None and end - start < 4.0 for _, start, end in log)


async def test_delayed_submit_starts_after_the_delay(redis_url: str) -> None:
    log: list[Any] = []
    async with open_system(slow(log), broker=redis_url) as system:
        submitted = time.monotonic()
        receipt = await system.submit("slow", 0.0, delay=0.3)
        assert (await receipt.status()).state is not TaskState.SUCCEEDED
        assert await receipt.result(timeout=5) == 0.0
        started = log[0][1] - submitted
        assert started > 0.28  # not before its delay (the upper bound is the result's timeout)


async def test_delayed_submit_from_a_client_reaches_the_workers(redis_url: str) -> None:
    log: list[Any] = []
    async with open_system(slow(log), broker=redis_url), connect(redis_url) as client:
        receipt = await client.submit("slow", 0.0, delay=0.2)
        assert await receipt.result(timeout=5) == 0.0


async def test_expired_before_it_started(redis_url: str) -> None:
    log: list[Any] = []
    async with open_system(slow(log), broker=redis_url) as system:
        busy = await system.submit("slow", 0.5)
        late = await system.submit("slow", 0.0, expires=0.1)
        with pytest.raises(TaskExpired):
            await late.result(timeout=5)
        assert await busy.result(timeout=5) == 0.5
        assert [task_id for task_id, _, _ in log] == [busy.id]
        async with raw_client(redis_url) as client:
            await system.drain(timeout=5)
            assert await outstanding(client, redis_url, "slow") == 0


async def test_outcome_is_forgotten_after_its_ttl(redis_url: str) -> None:
    async with open_system(slow([], result_ttl=1.0), broker=redis_url) as system:
        receipt = await system.submit("slow", 0.0)
        assert await receipt.result(timeout=5) == 0.0
        async with raw_client(redis_url) as client:
            assert 0 < await client.pttl(task_key(redis_url, receipt.id)) <= 1000
        async with connect(redis_url) as other:
            assert await other.receipt(receipt.id).result(timeout=5) == 0.0
            await trio.sleep(1.2)
            with pytest.raises(UnknownTask):
                await other.receipt(receipt.id).result(timeout=5)


async def _has(log: list[Any], n: int) -> bool:
    await trio.lowlevel.checkpoint()
    return len(log) >= n


async def _ended(log: list[Any]) -> bool:
    await trio.lowlevel.checkpoint()
    return bool(log) and log[0][2] is not None


async def test_a_dead_workers_task_is_reclaimed_before_the_backlog(redis_url: str) -> None:
    """Busy workers still take over a dead worker's task once its lease has run out, not
    only when the queue has drained."""
    starts: dict[str, list[float]] = {}

    class Busy(Worker):
        async def handle(self, name: str) -> str:
            starts.setdefault(name, []).append(time.monotonic())
            if name == "stuck" and len(starts[name]) == 1:
                await trio.sleep_forever()  # its worker is about to die
            await trio.sleep(0.05)
            return name

    lease = 0.3
    url = f"{redis_url}&lease={lease}"
    async with open_system(Queue("q", Busy), broker=url, shutdown_timeout=0.05) as doomed:
        stuck = await doomed.submit("q", "stuck")
        await wait_for(lambda: _has(list(starts), 1))
    died = time.monotonic()
    async with open_system(Queue("q", Busy, workers=2), broker=url) as rescuer:
        backlog = [await rescuer.submit("q", f"t{n}") for n in range(60)]
        assert await rescuer.receipt(stuck.id).result(timeout=20) == "stuck"
        for receipt in backlog:
            await receipt.result(timeout=20)
    rerun = starts["stuck"][1] - died
    drained = max(at for name, (at, *_) in starts.items() if name != "stuck") - died
    # The rescue came at the next reclaim after the lease, ahead of the backlog, not after it.
    assert rerun < drained, (rerun, drained)


async def test_a_stalled_worker_does_not_take_back_a_task_another_worker_reclaimed(
    redis_server: Any,
) -> None:
    url = redis_server.url_with(prefix=f"t{secrets.token_hex(4)}", lease=0.6)
    gate = trio.Event()

    class Hold(Worker):
        async def handle(self, payload: int) -> int:
            await gate.wait()
            return payload

    async with open_system(Queue("hold", Hold), broker=url) as system, raw_client(url) as client:
        receipt = await system.submit("hold", 7)
        ready = key(url, "hold", "ready")

        async def fetched() -> bool:
            return bool(await client.xpending(ready, "workers", start="-", end="+", count=10))

        await wait_for(fetched)
        (entry,) = await client.xpending(ready, "workers", start="-", end="+", count=10)
        # Another process reclaims it, as if this one had stalled past its lease.
        await client.xclaim(ready, "workers", "other", 0, [entry.identifier], justid=True)
        await trio.sleep(0.6)  # more than one lease renewal (every lease/3)
        (after,) = await client.xpending(ready, "workers", start="-", end="+", count=10)
        assert after.consumer == "other"
        gate.set()
        assert await receipt.result(timeout=10) == 7  # the run here still counts (first wins)


async def test_a_status_read_while_the_outcome_comes_does_not_take_the_receipt_back(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status()` looks the record up; if the outcome's notice is read while that lookup is
    under way, the record it brings back (still running) must not undo the outcome: the
    receipt would say running for ever, and `result()` would never be woken."""
    log: list[Any] = []
    async with open_system(slow(log), broker=redis_url), connect(redis_url) as client:
        receipt = await client.submit("slow", 0.3)
        broker = client._broker  # type: ignore[attr-defined]
        lookup = broker.lookup

        async def answered_after_the_outcome(task_id: str) -> Any:
            record = await lookup(task_id)  # pending or running: the task sleeps 0.3 s
            assert record is not None
            assert not record.state.final
            await receipt.result(timeout=5)  # its notice is read meanwhile
            return record  # what the lookup read before the outcome

        monkeypatch.setattr(broker, "lookup", answered_after_the_outcome)
        status = await receipt.status()
        monkeypatch.setattr(broker, "lookup", lookup)
        assert status.state is TaskState.SUCCEEDED
        assert receipt.done()
        assert await receipt.result(timeout=5) == 0.3

"""The Redis Streams broker against a real (private) Redis, through the public API.

Redis keeps wall-clock time, so these tests wait for real: backoffs and leases are kept to
fractions of a second.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from redis_helpers import envelope, key, outcome_of, outstanding, raw_client, wait_for
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    BrokerError,
    Full,
    PayloadError,
    PayloadTooLarge,
    Queue,
    QueueFull,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskState,
    Transient,
    UnknownQueue,
    UnknownTask,
    Worker,
    connect,
    open_system,
)
from queueing.brokers.redis import _consumer

pytestmark = pytest.mark.redis


class Double(Worker):
    async def handle(self, number: int) -> int:
        return 2 * number


class Gated(Worker):
    """Waits for `gate` before answering; logs every payload it starts."""

    def __init__(self, gate: trio.Event, seen: list[Any]) -> None:
        self.gate = gate
        self.seen = seen

    async def handle(self, payload: Any) -> Any:
        self.seen.append(payload)
        await self.gate.wait()
        return payload


class Sleepy(Worker):
    async def handle(self, payload: float) -> float:
        await trio.sleep(payload)
        return payload


class Flaky(Worker):
    """Fails transiently on the first attempt; logs the wall-clock time of each attempt."""

    def __init__(self, times: list[tuple[str, float]]) -> None:
        self.times = times

    async def handle(self, payload: str) -> str:
        self.times.append((payload, time.time()))
        if self.attempt == 1:
            raise Transient("first attempt fails")
        return payload.upper()


class Broken(Worker):
    """Fails for good while `state["broken"]`."""

    def __init__(self, state: dict[str, bool]) -> None:
        self.state = state

    async def handle(self, payload: str) -> str:
        if self.state["broken"]:
            raise ValueError(f"cannot handle {payload!r}")
        return payload.upper()


class Counting(Worker):
    """Returns how many times it has run (anything): a second run answers differently."""

    def __init__(self, runs: list[str]) -> None:
        self.runs = runs

    async def handle(self, payload: str) -> int:
        self.runs.append(payload)
        return len(self.runs)


def gated(gate: trio.Event, seen: list[Any], **options: Any) -> Queue:
    return Queue("gated", Gated, worker_kwargs={"gate": gate, "seen": seen}, **options)


async def test_submit_returns_the_result(redis_url: str) -> None:
    async with open_system(Queue("double", Double, workers=2), broker=redis_url) as system:
        for number in range(50):  # one at a time: each reply races its submit's answer
            receipt = await system.submit("double", number)
            assert await receipt.result(timeout=5) == 2 * number
        receipts = [await system.submit("double", n) for n in range(50)]
        assert [await r.result(timeout=5) for r in receipts] == [2 * n for n in range(50)]
        status = await receipts[0].status()
        assert status.state is TaskState.SUCCEEDED
        assert status.attempts == 1


async def test_reject_when_full_raises_queue_full(redis_url: str) -> None:
    gate, seen = trio.Event(), []
    queue = gated(gate, seen, maxsize=3, when_full=Full.REJECT)
    async with open_system(queue, broker=redis_url) as system, raw_client(redis_url) as client:
        receipts = [await system.submit("gated", n) for n in range(3)]
        with pytest.raises(QueueFull, match="gated"):
            await system.submit("gated", 3)
        assert await outstanding(client, redis_url, "gated") == 3
        gate.set()
        assert [await r.result(timeout=5) for r in receipts] == [0, 1, 2]
        await system.drain(timeout=5)
        assert await outstanding(client, redis_url, "gated") == 0
        assert await (await system.submit("gated", 4)).result(timeout=5) == 4


async def test_wait_when_full_never_exceeds_maxsize(redis_url: str) -> None:
    maxsize = 5
    highest = 0
    done = False
    queue = Queue("sleepy", Sleepy, workers=3, maxsize=maxsize, when_full=Full.WAIT)
    async with open_system(queue, broker=redis_url) as system, raw_client(redis_url) as client:

        async def watch() -> None:
            nonlocal highest
            while not done:
                highest = max(highest, await outstanding(client, redis_url, "sleepy"))

        async def submit_and_wait(results: list[float]) -> None:
            receipt = await system.submit("sleepy", 0.01)
            results.append(await receipt.result(timeout=20))

        results: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as burst:
                for _ in range(60):
                    burst.start_soon(submit_and_wait, results)
            done = True
        assert results == [0.01] * 60
        assert highest == maxsize  # reached, never exceeded
        await system.drain(timeout=5)
        assert await outstanding(client, redis_url, "sleepy") == 0


async def test_wait_when_full_gives_up_after_full_timeout(redis_url: str) -> None:
    gate, seen = trio.Event(), []
    queue = gated(gate, seen, maxsize=1, full_timeout=0.2)
    async with open_system(queue, broker=redis_url) as system:
        first = await system.submit("gated", 1)
        started = time.monotonic()
        with pytest.raises(QueueFull, match="gated"):
            await system.submit("gated", 2)
        assert time.monotonic() - started > 0.15  # it waited for room before giving up
        gate.set()
        assert await first.result(timeout=5) == 1


async def test_transient_failure_is_retried_after_backoff(redis_url: str) -> None:
    times: list[tuple[str, float]] = []
    queue = Queue(
        "flaky",
        Flaky,
        worker_kwargs={"times": times},
        retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(0.3)),
    )
    async with open_system(queue, broker=redis_url) as system, raw_client(redis_url) as client:
        receipt = await system.submit("flaky", "ok")
        delayed = key(redis_url, "flaky", "delayed")
        # The backoff is waited out in the delayed set, not in a worker.
        await wait_for(lambda: client.zscore(delayed, receipt.id), timeout=5, every=0.005)
        assert await receipt.result(timeout=5) == "OK"
        status = await receipt.status()
        assert status.attempts == 2
        assert len(times) == 2
        assert times[1][1] - times[0][1] >= 0.29
        assert await client.zcard(delayed) == 0
        assert await client.hlen(key(redis_url, "flaky", "envs")) == 0
        stats = await client.hgetall(key(redis_url, "flaky", "stats"))
        assert stats["retried"] == "1"
        assert stats["succeeded"] == "1"
        assert await outstanding(client, redis_url, "flaky") == 0


async def test_short_backoff_retries_promptly(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A promoter that slept its idle time instead of until the retry was due would hold
    # the retries for minutes: the results' timeout, not a wall-clock bound, catches it.
    monkeypatch.setattr(_consumer, "PROMOTE_IDLE", 600.0)
    times: list[tuple[str, float]] = []
    queue = Queue(
        "flaky",
        Flaky,
        worker_kwargs={"times": times},
        retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(0.05)),
    )
    async with open_system(queue, broker=redis_url) as system:
        receipts = [await system.submit("flaky", f"t{n}") for n in range(5)]
        assert [await r.result(timeout=60) for r in receipts] == [f"T{n}" for n in range(5)]
    for n in range(5):
        first, second = (at for name, at in times if name == f"t{n}")
        assert second - first >= 0.045  # not before its backoff


async def test_permanent_failure_is_dead_lettered_then_requeued(redis_url: str) -> None:
    state = {"broken": True}
    queue = Queue("broken", Broken, worker_kwargs={"state": state})
    async with open_system(queue, broker=redis_url) as system, raw_client(redis_url) as client:
        receipt = await system.submit("broken", "abc")
        failure = await outcome_of(receipt)
        assert isinstance(failure, TaskFailed)
        assert failure.outcome is TaskState.FAILED
        assert "cannot handle 'abc'" in str(failure)
        letters = await system.dead_letters("broken")
        assert [(d.id, d.payload, d.attempts) for d in letters] == [(receipt.id, "abc", 1)]
        assert letters[0].error is not None
        assert letters[0].error.type == "ValueError"
        assert await outstanding(client, redis_url, "broken") == 0

        state["broken"] = False
        (again,) = await system.requeue("broken")
        assert again.id != receipt.id
        assert await again.result(timeout=5) == "ABC"
        assert await system.dead_letters("broken") == []
        assert isinstance(await outcome_of(system.receipt(receipt.id)), TaskFailed)
        assert await outstanding(client, redis_url, "broken") == 0


async def test_purge_dead_letters(redis_url: str) -> None:
    queue = Queue("broken", Broken, worker_kwargs={"state": {"broken": True}})
    async with open_system(queue, broker=redis_url) as system:
        for n in range(3):
            await outcome_of(await system.submit("broken", f"p{n}"))
        assert len(await system.dead_letters("broken")) == 3
        assert await system.purge_dead_letters("broken") == 3
        assert await system.dead_letters("broken") == []


async def test_first_result_wins_over_a_duplicate_run(redis_url: str) -> None:
    runs: list[str] = []
    queue = Queue("counting", Counting, worker_kwargs={"runs": runs})
    async with open_system(queue, broker=redis_url) as system, raw_client(redis_url) as client:
        receipt = await system.submit("counting", "once")
        assert await receipt.result(timeout=5) == 1
        # A copy of the finished task's entry (as after a lost ack): its record says it has
        # an outcome, so the copy is acknowledged and dropped, not run, and the first result
        # stands. (A true second run, after a stall past the lease, is in the chaos tests.)
        env = envelope("counting", receipt.id, "once")
        await client.xadd(key(redis_url, "counting", "ready"), {"id": receipt.id, "env": env})
        await wait_for(lambda: _stream_empty(client, key(redis_url, "counting", "ready")))
        assert len(runs) == 1
        await system.drain(timeout=5)
        async with connect(redis_url) as other:
            assert await other.receipt(receipt.id).result(timeout=5) == 1
        assert await receipt.result(timeout=5) == 1
        assert await outstanding(client, redis_url, "counting") == 0
        stats = await client.hgetall(key(redis_url, "counting", "stats"))
        assert stats["succeeded"] == "1"


async def _stream_empty(client: Any, stream: str) -> bool:
    return int(await client.xlen(stream)) == 0


async def _ran(runs: list[str], times: int) -> bool:
    await trio.lowlevel.checkpoint()
    return len(runs) >= times


async def test_connect_client_submits_to_workers_elsewhere(redis_url: str) -> None:
    async with open_system(Queue("double", Double, workers=2), broker=redis_url) as workers:
        async with connect(redis_url) as client:
            assert client.names == ["double"]
            receipts = [await client.submit("double", n) for n in range(20)]
            assert [await r.result(timeout=5) for r in receipts] == [2 * n for n in range(20)]
        assert workers.stats()["double"].succeeded == 20


async def test_receipt_found_by_id_from_another_client(redis_url: str) -> None:
    gate, seen = trio.Event(), []
    async with (
        open_system(gated(gate, seen), broker=redis_url),
        connect(redis_url) as alice,
        connect(redis_url) as bob,
    ):
        finished = await alice.submit("gated", "early")
        running = await alice.submit("gated", "late")
        await wait_for(lambda: _ran(seen, 1), timeout=5)
        found = bob.receipt(running.id)
        assert (await found.status()).state is TaskState.PENDING
        gate.set()
        assert await found.result(timeout=5) == "late"
        assert await bob.receipt(finished.id).result(timeout=5) == "early"
        assert (await bob.receipt(finished.id).status()).state is TaskState.SUCCEEDED


async def test_unknown_task_id(redis_url: str) -> None:
    async with open_system(Queue("double", Double), broker=redis_url) as system:
        with pytest.raises(UnknownTask, match="no-such-task"):
            await system.receipt("no-such-task").result(timeout=5)
        async with connect(redis_url) as client:
            with pytest.raises(UnknownTask, match="no-such-task"):
                await client.receipt("no-such-task").result(timeout=5)
            with pytest.raises(UnknownTask):
                await client.receipt("no-such-task").status()


async def test_cancel_a_pending_task(redis_url: str) -> None:
    gate, seen = trio.Event(), []
    async with (
        open_system(gated(gate, seen), broker=redis_url) as system,
        raw_client(redis_url) as client,
    ):
        busy = await system.submit("gated", "busy")
        await wait_for(lambda: _ran(seen, 1), timeout=5)
        waiting = await system.submit("gated", "waiting")
        assert await waiting.cancel() is True
        assert await waiting.cancel() is False
        with pytest.raises(TaskCancelled):
            await waiting.result(timeout=5)
        gate.set()
        assert await busy.result(timeout=5) == "busy"
        assert await busy.cancel() is False
        after = await system.submit("gated", "after")
        assert await after.result(timeout=5) == "after"
        assert seen == ["busy", "after"]  # the cancelled one never ran
        await system.drain(timeout=5)
        assert await outstanding(client, redis_url, "gated") == 0


async def test_outstanding_returns_to_zero_after_mixed_work(redis_url: str) -> None:
    times: list[tuple[str, float]] = []
    state = {"broken": True}
    queues = [
        Queue("double", Double, workers=3),
        Queue(
            "flaky",
            Flaky,
            worker_kwargs={"times": times},
            retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(0.05)),
        ),
        Queue("broken", Broken, worker_kwargs={"state": state}),
    ]
    async with (
        open_system(*queues, broker=redis_url) as system,
        raw_client(redis_url) as client,
    ):
        receipts = []
        for n in range(30):
            receipts.append(await system.submit("double", n))
            if n % 3 == 0:
                receipts.append(await system.submit("flaky", f"f{n}"))
            if n % 5 == 0:
                receipts.append(await system.submit("broken", f"b{n}"))
        later = await system.submit("double", 1, delay=0.2)
        assert await later.cancel() is True  # cancelled while it waits in the delayed set
        for receipt in receipts:
            await outcome_of(receipt)
        assert isinstance(await outcome_of(later), TaskCancelled)
        await system.drain(timeout=5)
        for name in ("double", "flaky", "broken"):
            assert await outstanding(client, redis_url, name) == 0, name
        assert await client.zcard(key(redis_url, "double", "delayed")) == 0


async def test_unreachable_redis_is_a_broker_error() -> None:
    with socket_closed_port() as port:
        started = time.monotonic()
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
            async with connect(f"redis://127.0.0.1:{port}/0", connect_timeout=1.0):
                pass
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
            async with open_system(Queue("double", Double), broker=f"redis://127.0.0.1:{port}"):
                pass
        assert time.monotonic() - started < 60  # the connect timeouts, not a hang


async def test_silent_server_times_out_with_a_broker_error() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"within 0\.5s"):
            async with connect(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5):
                pass
        assert time.monotonic() - started < 60  # the connect timeout, not a hang


async def test_wrong_password_is_a_clear_broker_error(make_redis_server: Any) -> None:
    server = make_redis_server(password="right-secret")
    port = server.port
    for url in (f"redis://:wrong-secret@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        with pytest.raises(BrokerError, match="password") as info:
            async with connect(url, connect_timeout=2.0):
                pass
        assert "wrong-secret" not in str(info.value)
    async with open_system(Queue("double", Double), broker=server.url_with(prefix="pw")) as s:
        assert await (await s.submit("double", 4)).result(timeout=5) == 8


class socket_closed_port:
    """A port on 127.0.0.1 nobody listens on (bound without listen: connections refused)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


async def test_worker_systems_share_a_queue(redis_url: str) -> None:
    async with open_system(Queue("double", Double), broker=redis_url) as first:
        receipt = await first.submit("double", 1)
        assert await receipt.result(timeout=5) == 2
    # A second run on the same Redis finds the queue declared already; so does a second
    # process serving the same queue alongside.
    async with (
        open_system(Queue("double", Double), broker=redis_url) as second,
        open_system(Queue("double", Double), broker=redis_url) as third,
    ):
        receipts = [await second.submit("double", n) for n in range(40)]
        receipts += [await third.submit("double", n) for n in range(40)]
        assert [await r.result(timeout=5) for r in receipts] == [2 * n for n in range(40)] * 2
        await second.drain(timeout=5)
        ran = second.stats()["double"].succeeded + third.stats()["double"].succeeded
        assert ran == 80


async def test_client_waits_for_room_in_a_queue_served_elsewhere(redis_url: str) -> None:
    maxsize = 3
    highest = 0
    done = False
    queue = Queue("sleepy", Sleepy, workers=2, maxsize=maxsize)
    async with (
        open_system(queue, broker=redis_url),
        connect(redis_url) as client,
        raw_client(redis_url) as raw,
    ):

        async def watch() -> None:
            nonlocal highest
            while not done:
                highest = max(highest, await outstanding(raw, redis_url, "sleepy"))

        async def submit_and_wait(results: list[float]) -> None:
            receipt = await client.submit("sleepy", 0.01)
            results.append(await receipt.result(timeout=20))

        results: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as burst:
                for _ in range(30):
                    burst.start_soon(submit_and_wait, results)
            done = True
        assert results == [0.01] * 30
        assert highest == maxsize


async def test_client_checks_payloads_against_the_queues_it_is_given(redis_url: str) -> None:
    queue = Queue("double", Double, max_payload=64)
    async with open_system(queue, broker=redis_url):
        async with connect(redis_url, queue) as checked:
            with pytest.raises(PayloadError, match="double"):
                await checked.submit("double", "not a number")
            assert await (await checked.submit("double", 5)).result(timeout=5) == 10
        async with connect(redis_url) as unchecked:
            # Without the Queue, the limits declared by the workers still apply.
            with pytest.raises(PayloadTooLarge):
                await unchecked.submit("double", 10**100)
            with pytest.raises(UnknownQueue):
                await unchecked.submit("nosuchqueue", 1)

"""The RabbitMQ broker's own behaviours, beyond the contract suite: its URL, messages that
are not tasks or are stale copies, RabbitMQ's own limits (x-max-length, x-delivery-limit),
the janitor, and lookups from another client."""

from __future__ import annotations

import logging
import math
import secrets
import time
from typing import Any, ClassVar

import pytest
import trio
from rabbit_helpers import (
    envelope,
    outcome_of,
    parts,
    publish,
    ready_count,
    record_key,
    redis_of,
    wait_for,
    with_options,
)

from queueing import (
    BrokerError,
    Full,
    Queue,
    QueueFull,
    TaskFailed,
    TaskState,
    Transient,
    Worker,
    connect,
    open_system,
)
from queueing.brokers import amqp
from queueing.brokers.amqp import _rabbit, _store, _store_reads, _upkeep
from queueing.brokers.amqp._errors import PublishNacked
from queueing.brokers.amqp._rabbit import DELAY_QUEUE_KEEP, MAX_DELAY_HOP, delay_bucket

pytestmark = pytest.mark.amqp

SHUTDOWN = 1.0


class Double(Worker):
    async def handle(self, number: int) -> int:
        return 2 * number


class Crash(Exception):
    """The worker's own state is broken."""


class Counted(Worker):
    """Counts its runs (in `runs`, shared by the test), returns the payload."""

    runs: ClassVar[list[Any]] = []
    fatal = (Crash,)

    async def handle(self, payload: Any) -> Any:
        Counted.runs.append(payload)
        return payload


def served(url: str, *queues: Queue, **options: Any) -> Any:
    return open_system(*queues, broker=url, shutdown_timeout=SHUTDOWN, **options)


# -- the URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "needs a results store"),
        ("amqp://127.0.0.1/?results=memcached://x", "bad results store"),
        ("amqp://127.0.0.1/?results=redis://127.0.0.1:6379/0&prefix=a:b", "prefix must be"),
        ("amqp://127.0.0.1/?results=redis://127.0.0.1:6379/0&lease=-1", "lease must be"),
        ("amqp://127.0.0.1:99999/?results=redis://127.0.0.1:6379/0", "bad AMQP URL"),
        ("amqp://127.0.0.1/?results=redis://x/0&heartbeat=often", "bad AMQP URL"),
        # Before: "known: heartbeat, frame_max, ...", without results, prefix and lease.
        ("amqp://127.0.0.1/?result=redis://x/0", "unknown option 'result'; did you mean 'results'"),
        ("amqp://127.0.0.1/?results=redis://x/0&prefx=a", r"did you mean 'prefix'\?.*lease, heart"),
        ("amqp://127.0.0.1/?results=redis://x/0&prefix=a&prefix=b", "'prefix' is given twice"),
    ],
    ids=[
        "no-results",
        "results-scheme",
        "prefix",
        "lease",
        "port",
        "amqp-option",
        "typo",
        "typo-2",
        "twice",
    ],
)
async def test_a_bad_url_is_refused_with_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BrokerError, match=says):
        async with served(url, Queue("double", Double)):
            pass  # pragma: no cover


async def test_an_unreachable_rabbitmq_fails_at_start_with_the_address(amqp_url: str) -> None:
    _, results, prefix = parts(amqp_url)
    url = f"amqp://guest:guest@127.0.0.1:1/?results={results}&prefix={prefix}"
    with trio.fail_after(30), pytest.raises(BrokerError, match=r"cannot reach RabbitMQ.*:1/"):
        async with connect(url, connect_timeout=0.5):
            pass  # pragma: no cover


async def test_wrong_credentials_say_so(amqp_url: str) -> None:
    url = amqp_url.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(amqp.AuthenticationFailed, match="credentials"):
        async with connect(url):
            pass  # pragma: no cover


def test_delays_round_up_to_a_grid_of_few_queues() -> None:
    assert [delay_bucket(ms) for ms in (0, 0.2, 1, 31)] == [1, 1, 1, 31]
    for ms in range(1, 100_000, 7):
        bucket = delay_bucket(ms)
        assert ms <= bucket <= ms * (1 + 1 / 16)
    # Any backoff over 1.024 s, up to 2.048 s, lands in one of 16 queues.
    assert len({delay_bucket(ms) for ms in range(1025, 2049)}) == 16


def test_a_delay_past_what_rabbitmq_holds_is_cut_into_hops() -> None:
    # RabbitMQ refuses a TTL or an expiry of 2**32 ms (49.7 days) or more.
    assert MAX_DELAY_HOP + DELAY_QUEUE_KEEP * 1000 < 2**32
    assert delay_bucket(MAX_DELAY_HOP - 1) <= MAX_DELAY_HOP
    for ms in (MAX_DELAY_HOP, MAX_DELAY_HOP * 3, 10 * 365 * 86_400_000.0, math.inf):
        assert delay_bucket(ms) == MAX_DELAY_HOP


async def test_a_delay_longer_than_one_delay_queue_holds_runs_at_its_due_time(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One delay queue holds at most MAX_DELAY_HOP (24.8 days); a longer delay comes back
    # early and is published again for the rest, hop after hop, until due. Here with hops
    # of 0.3 s and no slack for early messages: a 1.5 s delay takes four or five.
    monkeypatch.setattr(_rabbit, "MAX_DELAY_HOP", 300)
    monkeypatch.setattr(_store, "EARLY_SLACK", 0)
    Counted.runs = []
    started: list[float] = []

    class Timed(Counted):
        async def handle(self, payload: Any) -> Any:
            started.append(time.time())
            return await super().handle(payload)

    async with served(amqp_url, Queue("hops", Timed)) as system:
        rabbit = system._broker._rabbit  # type: ignore[attr-defined]
        publish = rabbit.publish
        delayed: list[str] = []

        async def counted(info: object, routing: str, *args: object) -> object:
            if ":delay:" in routing:
                delayed.append(routing)
            return await publish(info, routing, *args)

        rabbit.publish = counted
        due = time.time() + 1.5
        receipt = await system.submit("hops", "later", delay=1.5)
        assert await receipt.result(timeout=30) == "later"
    assert Counted.runs == ["later"]
    assert started[0] >= due - 0.01  # not before its due time (wall clock, as stored)
    assert len(delayed) >= 3  # (the submit's own publish may go another way)
    assert all(routing.endswith(":delay:300") for routing in delayed[:-1])


# -- messages that are not the task's ------------------------------------------------


async def test_a_stale_copy_of_a_settled_task_is_dropped_not_run(amqp_url: str) -> None:
    Counted.runs = []
    async with served(amqp_url, Queue("counted", Counted)) as system:
        receipt = await system.submit("counted", "once")
        assert await outcome_of(receipt) == "once"
        # The same task's message again (a publish retried after a lost confirm, say).
        await publish(amqp_url, "counted", envelope("counted", receipt.id, "once"), "stale")
        later = await system.submit("counted", "later")
        assert await outcome_of(later) == "later"
        await system.drain(timeout=10)
        assert await system.dead_letters("counted") == []
    assert Counted.runs == ["once", "later"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not text", "codec can't decode"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"v": 1, "id": "counted:x"}', "field 'queue'"),
    ],
    ids=["bytes", "json-array", "fields-missing"],
)
async def test_a_message_that_is_not_a_task_is_dead_lettered_with_why(
    amqp_url: str, body: bytes, reason: str
) -> None:
    Counted.runs = []
    async with served(amqp_url, Queue("counted", Counted)) as system:
        await publish(amqp_url, "counted", body, "junk")

        async def filed() -> bool:
            return bool(await system.dead_letters("counted"))

        await wait_for(filed)
        [letter] = await system.dead_letters("counted")
        after = await system.submit("counted", "after")
        assert await outcome_of(after) == "after"
    assert letter.error is not None
    assert reason in letter.error.message
    assert (letter.id, letter.state) == ("", TaskState.DEAD_LETTERED)
    assert Counted.runs == ["after"]


async def test_a_task_message_without_a_record_is_dead_lettered(amqp_url: str) -> None:
    Counted.runs = []
    async with served(amqp_url, Queue("counted", Counted)) as system:
        await publish(amqp_url, "counted", envelope("counted", "counted:nobody", 1), "n")

        async def filed() -> bool:
            return bool(await system.dead_letters("counted"))

        await wait_for(filed)
        [letter] = await system.dead_letters("counted")
    assert letter.error is not None
    assert "no task 'counted:nobody' was submitted" in letter.error.message
    assert Counted.runs == []


# -- RabbitMQ's own limits -------------------------------------------------------------


async def test_a_ready_queue_over_its_x_max_length_refuses_submits_as_full(
    amqp_url: str,
) -> None:
    queue = Queue("capped", Double, maxsize=2, when_full=Full.REJECT)
    async with connect(amqp_url, queue) as client:
        first = await client.submit("capped", 1)  # declares the queue: x-max-length 2
        # Messages published by another program fill RabbitMQ's own queue past its
        # length (quorum queues refuse once over the limit), though the store has room.
        for n in range(2):
            await publish(amqp_url, "capped", envelope("capped", f"capped:other-{n}", n))
        with pytest.raises(QueueFull, match="'capped'"):
            await client.submit("capped", 2)
        assert await client._broker.outstanding("capped") == 1  # type: ignore[attr-defined]
    assert await ready_count(amqp_url, "capped") == 3
    assert first.id.startswith("capped:")


async def test_a_task_rabbitmq_dead_letters_past_its_delivery_limit_gets_an_outcome(
    amqp_url: str,
) -> None:
    queue = Queue("fragile", Double, max_deliveries=1)
    async with connect(amqp_url, queue) as client:
        receipt = await client.submit("fragile", 21)  # x-delivery-limit 1
        # A consumer that keeps dying before it settles it (nack with requeue counts too).
        plain, _, prefix = parts(amqp_url)
        async with amqp.connect(plain) as connection:
            channel = await connection.open_channel()
            for _ in range(2):
                delivery = await channel.get(f"{prefix}:fragile")
                assert delivery is not None
                await delivery.nack(requeue=True)
            await trio.sleep(0.2)
            assert await channel.get(f"{prefix}:fragile") is None  # RabbitMQ took it away
        # A serving process's coroner turns RabbitMQ's dead letter into the outcome.
        async with served(amqp_url, queue) as system:
            failure = await outcome_of(receipt)
            letters = await system.dead_letters("fragile")
    assert isinstance(failure, TaskFailed)
    assert (failure.outcome, failure.error_type) == (TaskState.DEAD_LETTERED, "Poison")
    assert "x-delivery-limit=1" in failure.error
    assert [(d.id, d.state, d.payload) for d in letters] == [
        (receipt.id, TaskState.DEAD_LETTERED, 21)
    ]


async def test_a_queue_declared_before_with_other_limits_is_used_as_it_is(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(amqp_url, Queue("double", Double, maxsize=10)) as system:
        assert await outcome_of(await system.submit("double", 1)) == 2
    with caplog.at_level(logging.WARNING, logger="queueing.rabbitmq"):
        async with served(amqp_url, Queue("double", Double, maxsize=20)) as system:
            assert await outcome_of(await system.submit("double", 2)) == 4
    assert "exists with other arguments" in caplog.text


# -- the janitor -----------------------------------------------------------------------


async def test_a_task_whose_client_stopped_before_its_publish_still_runs_once(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_upkeep, "UNCONFIRMED_GRACE", 0.2)
    monkeypatch.setattr(_upkeep, "JANITOR_EVERY", 0.1)
    Counted.runs = []
    queue = Queue("counted", Counted)
    async with served(amqp_url, queue) as system:
        # A client that reserved a task and stopped before publishing it: its record (and
        # its envelope, kept until RabbitMQ confirms) is all there is.
        broker: Any = system._broker
        task = system._engine.task(system._runtimes["counted"], "orphan", None)
        entry = (task, "lost-nonce", broker_envelope(task), "", "")
        [answers] = await broker._store.reserve_batch([(queue_info(system), [entry])])
        assert answers == [broker_admission("ACCEPTED")]
        assert await outcome_of(system.receipt(task.id)) == "orphan"
    assert Counted.runs == ["orphan"]


def broker_envelope(task: Any) -> str:
    from queueing.brokers.redis._wire import encode_envelope

    return encode_envelope(task)


def queue_info(system: Any) -> Any:
    return system._runtimes["counted"].info


def broker_admission(name: str) -> Any:
    from queueing.brokers import Admission

    return Admission[name]


# -- receipts and lookups --------------------------------------------------------------


async def test_another_client_finds_a_task_by_id_and_gets_its_outcome(amqp_url: str) -> None:
    gate = trio.Event()

    class Gated(Worker):
        async def handle(self, number: int) -> int:
            await gate.wait()
            return number

    async with served(amqp_url, Queue("gated", Gated)) as system:
        receipt = await system.submit("gated", 7)
        async with connect(amqp_url) as other:
            found = other.receipt(receipt.id)
            assert (await found.status()).state in (TaskState.PENDING, TaskState.RUNNING)
            gate.set()
            with trio.fail_after(10):
                assert await found == 7
            assert (await found.status()).state is TaskState.SUCCEEDED


async def test_a_record_lost_from_the_results_store_resolves_as_lost(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store_reads, "SWEEP_EVERY", 0.5)  # when waited-for ids are read again
    gate = trio.Event()

    class Gated(Worker):
        async def handle(self, number: int) -> int:
            await gate.wait()
            return number

    async with served(amqp_url, Queue("gated", Gated)) as system:
        receipt = await system.submit("gated", 7)
        assert (await receipt.status()).state in (TaskState.PENDING, TaskState.RUNNING)
        async with redis_of(amqp_url) as client:
            await client.delete([record_key(amqp_url, receipt.id)])  # Redis lost it
        with trio.fail_after(30):
            failure = await outcome_of(receipt, timeout=30)
        gate.set()
    assert isinstance(failure, TaskFailed)
    assert failure.outcome is TaskState.LOST


async def test_status_reports_queues_and_the_live_worker(amqp_url: str) -> None:
    async with served(amqp_url, Queue("double", Double)) as system:
        assert await outcome_of(await system.submit("double", 1)) == 2
        broker: Any = system._broker

        async def beating() -> bool:
            return bool((await broker.status())["workers"])

        await wait_for(beating, timeout=10)
        info = await broker.status()
    figures = info["queues"]["double"]
    assert (figures["outstanding"], figures["ready"], figures["succeeded"]) == (0, 0, 1)
    [(name, worker)] = info["workers"].items()
    assert worker["queues"] == ["double"]
    assert secrets.compare_digest(name, broker.client_id)


# -- tasks running for long, and cancelled from elsewhere ------------------------------


async def test_a_task_running_past_several_lease_checks_stays_ours(amqp_url: str) -> None:
    Counted.runs = []

    class Slow(Worker):
        async def handle(self, payload: str) -> str:
            Counted.runs.append(payload)
            await trio.sleep(1.0)  # the dispatcher checks its tasks every lease/3 = 0.1 s
            return payload

    url = with_options(amqp_url, lease=0.3)
    async with served(url, Queue("slow", Slow)) as system:
        receipt = await system.submit("slow", "long")
        assert await outcome_of(receipt) == "long"
        assert (await receipt.status()).deliveries == 1
    assert Counted.runs == ["long"]


async def test_a_task_cancelled_by_another_client_stops_where_it_runs(amqp_url: str) -> None:
    started = trio.Event()
    stopped: list[str] = []

    class Long(Worker):
        async def handle(self, payload: str) -> str:
            if payload == "quick":
                return payload
            started.set()
            try:
                await trio.sleep(30)
            except trio.Cancelled:
                stopped.append(payload)
                raise
            return payload  # pragma: no cover

    url = with_options(amqp_url, lease=0.3)
    async with served(url, Queue("long", Long)) as system:
        receipt = await system.submit("long", "run")
        with trio.fail_after(10):
            await started.wait()
        async with connect(url) as other:
            assert await other.receipt(receipt.id).cancel() is True
        failure = await outcome_of(receipt)
        with trio.fail_after(10):
            while not stopped:  # noqa: ASYNC110 - the handler notes it
                await trio.sleep(0.02)
        after = await system.submit("long", "quick")
        assert await outcome_of(after) == "quick"  # its only worker is free again
    assert isinstance(failure, TaskFailed)
    assert failure.outcome is TaskState.CANCELLED
    assert stopped == ["run"]


async def test_a_retry_refused_by_its_new_delay_queue_is_published_again(amqp_url: str) -> None:
    # A delay queue declared a moment ago may refuse its first messages (Basic.Nack): the
    # retry is declared and published again instead of crashing the worker.
    attempts: list[int] = []
    refused: list[str] = []

    class Flaky(Worker):
        async def handle(self, name: str) -> str:
            attempts.append(self.attempt)
            if self.attempt == 1:
                raise Transient("not yet")
            return name

    queue = Queue("refused", Flaky)
    async with open_system(queue, broker=amqp_url, shutdown_timeout=1.0) as system:
        rabbit = system._broker._rabbit  # type: ignore[attr-defined]
        publish = rabbit.publish

        async def refuse_first_delay(info: object, routing: str, *args: object) -> object:
            if ":delay:" in routing and not refused:
                refused.append(routing)
                raise PublishNacked("refused", routing_key=routing)
            return await publish(info, routing, *args)

        rabbit.publish = refuse_first_delay
        receipt = await system.submit("refused", "x")
        with trio.fail_after(30):
            assert await receipt.result(timeout=30) == "x"
        assert system.stats()["refused"].restarts == 0
    assert len(refused) == 1
    assert attempts == [1, 2]

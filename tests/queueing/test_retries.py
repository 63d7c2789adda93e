"""Retries with tenacity's own policy objects: which errors, how often, how long apart."""

from __future__ import annotations

import itertools
import time
import warnings
from typing import Any

import pytest
import trio
from queueing_helpers import outcome_of
from tenacity import (
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

from queueing import (
    InvalidQueue,
    Queue,
    RetryPolicy,
    TaskFailed,
    TaskState,
    Transient,
    Worker,
    open_system,
)


class Glitch(Transient):
    """A transient failure, worth retrying."""


class Flaky(Worker):
    """Fails with `error` for the first `payload["fail"]` attempts; logs attempt times."""

    def __init__(self, log: list[tuple[str, int, float]], error: type[Exception] = Glitch):
        self.log = log
        self.error = error

    async def handle(self, payload: dict[str, Any]) -> str:
        self.log.append((payload["name"], self.attempt, trio.current_time()))
        await trio.sleep(payload.get("takes", 0))
        if self.attempt <= payload["fail"]:
            raise self.error(f"{payload['name']} attempt {self.attempt} failed")
        return payload["name"]


def flaky(log: list[tuple[str, int, float]], **options: Any) -> Queue:
    error = options.pop("error", Glitch)
    return Queue("flaky", Flaky, worker_kwargs={"log": log, "error": error}, **options)


def task(name: str, fail: int, takes: float = 0.0) -> dict[str, Any]:
    return {"name": name, "fail": fail, "takes": takes}


def times(log: list[tuple[str, int, float]], name: str) -> list[float]:
    return [t for n, _, t in log if n == name]


async def test_transient_error_is_retried_until_the_task_succeeds(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(log, retry=RetryPolicy(stop=stop_after_attempt(5), wait=wait_fixed(1)))
    async with open_system(queue) as system:
        receipt = await system.submit("flaky", task("a", fail=2))
        assert await receipt == "a"
        status = await receipt.status()
        assert (status.state, status.attempts) == (TaskState.SUCCEEDED, 3)
        assert [attempt for _, attempt, _ in log] == [1, 2, 3]


async def test_retries_wait_as_the_wait_policy_says(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(log, retry=RetryPolicy(stop=stop_after_attempt(5), wait=wait_fixed(5)))
    async with open_system(queue) as system:
        assert await (await system.submit("flaky", task("a", fail=3))) == "a"
    assert times(log, "a") == pytest.approx([0.0, 5.0, 10.0, 15.0])


async def test_exponential_backoff_doubles_each_time(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    policy = RetryPolicy(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=1, max=100))
    async with open_system(flaky(log, retry=policy)) as system:
        assert await (await system.submit("flaky", task("a", fail=4))) == "a"
    # Backoffs of 1, 2, 4, 8 seconds after attempts that fail at once.
    assert times(log, "a") == pytest.approx([0.0, 1.0, 3.0, 7.0, 15.0])


async def test_backoff_is_counted_from_the_end_of_the_failed_attempt(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(log, retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(5)))
    async with open_system(queue) as system:
        assert await (await system.submit("flaky", task("a", fail=1, takes=2))) == "a"
    assert times(log, "a") == pytest.approx([0.0, 7.0])


async def test_a_task_waiting_out_its_backoff_holds_no_worker(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(
        log, workers=1, retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(10))
    )
    async with open_system(queue) as system:
        backing_off = await system.submit("flaky", task("a", fail=1))
        other = await system.submit("flaky", task("b", fail=0, takes=3))
        await trio.sleep(1)
        assert (await backing_off.status()).state is TaskState.SCHEDULED
        stats = system.stats()["flaky"]
        assert (stats.in_flight, stats.scheduled) == (1, 1)
        assert await other == "b"
        assert trio.current_time() == pytest.approx(3.0)  # not after a's retry at t=10
        assert await backing_off == "a"
    assert times(log, "a") == pytest.approx([0.0, 10.0])
    assert times(log, "b") == pytest.approx([0.0])


async def test_non_retryable_error_fails_the_task_at_once(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(log, error=ValueError)
    async with open_system(queue) as system:
        receipt = await system.submit("flaky", task("a", fail=10))
        with pytest.raises(TaskFailed) as info:
            await receipt
        assert trio.current_time() == 0.0
        error = info.value
        assert error.outcome is TaskState.FAILED
        assert error.attempts == 1
        assert error.error_type == "ValueError"
        assert error.error == "a attempt 1 failed"
        assert "ValueError: a attempt 1 failed" in str(error)
        assert (await receipt.status()).state is TaskState.FAILED
        assert [letter.id for letter in await system.dead_letters("flaky")] == [receipt.id]
    assert len(log) == 1


async def test_exhausted_retries_dead_letter_the_task_with_its_cause(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(log, retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1)))
    async with open_system(queue) as system:
        before = time.time()
        receipt = await system.submit("flaky", task("a", fail=99))
        error = await outcome_of(receipt)
        assert isinstance(error, TaskFailed)
        assert error.outcome is TaskState.DEAD_LETTERED
        assert error.attempts == 3
        assert error.error_type == "test_retries.Glitch"
        assert error.error == "a attempt 3 failed"
        (letter,) = await system.dead_letters("flaky")
        status = await receipt.status()
    assert letter.id == receipt.id
    assert letter.state is TaskState.DEAD_LETTERED
    assert letter.attempts == 3
    assert letter.error is not None
    assert letter.error.type == "test_retries.Glitch"
    assert "Glitch: a attempt 3 failed" in letter.error.traceback
    assert letter.payload == task("a", fail=99)
    assert before <= letter.submitted_at <= letter.failed_at <= time.time()
    assert status.finished_at == letter.failed_at
    assert status.submitted_at == letter.submitted_at


async def test_the_default_policy_retries_transient_errors_for_two_minutes(
    autojump_clock: Any,
) -> None:
    log: list[tuple[str, int, float]] = []
    async with open_system(flaky(log)) as system:
        error = await outcome_of(await system.submit("flaky", task("a", fail=999)))
    assert isinstance(error, TaskFailed)
    assert error.outcome is TaskState.DEAD_LETTERED
    started = times(log, "a")
    # A retry follows every failure within two minutes of the first attempt, none after.
    assert started[-2] - started[0] < 120 <= started[-1] - started[0] <= 120 + 15.1
    gaps = [b - a for a, b in itertools.pairwise(started)]
    # Exponential with a little jitter: about 0.1, 0.2, 0.4, 0.8 seconds... capped at 15 s.
    for gap, base in zip(gaps, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8], strict=False):
        assert base <= gap <= base + 0.1 + 1e-9
    assert all(15.0 <= gap <= 15.1 + 1e-9 for gap in gaps[8:])
    assert error.attempts == len(started)


async def test_the_default_policy_rides_out_a_minutes_outage(autojump_clock: Any) -> None:
    outage_ends = 60.0

    class Backend(Worker):
        async def handle(self, n: int) -> int:
            if trio.current_time() < outage_ends:
                raise ConnectionRefusedError(f"backend down (job {n})")
            return n

    async with open_system(Queue("calls", Backend, workers=4)) as system:
        receipts = []
        for n in range(40):  # submitted over the outage's first 40 seconds
            receipts.append(await system.submit("calls", n))
            await trio.sleep(1)
        assert [await r for r in receipts] == list(range(40))
        stats = system.stats()["calls"]
    assert (stats.succeeded, stats.dead_lettered, stats.failed) == (40, 0, 0)
    assert trio.current_time() < outage_ends + 15.2  # each came back within a backoff


@pytest.mark.parametrize("error", [ConnectionError, TimeoutError, Glitch])
async def test_the_default_policy_retries_connection_errors_and_timeouts(
    autojump_clock: Any, error: type[Exception]
) -> None:
    log: list[tuple[str, int, float]] = []
    async with open_system(flaky(log, error=error)) as system:
        assert await (await system.submit("flaky", task("a", fail=2))) == "a"
    assert len(log) == 3


async def test_a_custom_retry_predicate_chooses_what_is_retried(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    policy = RetryPolicy(
        stop=stop_after_attempt(3), wait=wait_fixed(1), retry=retry_if_exception_type(KeyError)
    )
    async with open_system(flaky(log, error=KeyError, retry=policy)) as system:
        assert await (await system.submit("flaky", task("a", fail=2))) == "a"


async def test_a_custom_retry_predicate_fails_other_errors_at_once(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    policy = RetryPolicy(retry=retry_if_exception_type(KeyError))
    async with open_system(flaky(log, retry=policy)) as system:  # raises Glitch
        error = await outcome_of(await system.submit("flaky", task("a", fail=2)))
    assert isinstance(error, TaskFailed)
    assert (error.outcome, error.attempts) == (TaskState.FAILED, 1)


async def test_stop_after_delay_counts_from_the_first_attempt(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    policy = RetryPolicy(stop=stop_after_delay(10), wait=wait_fixed(3))
    async with open_system(flaky(log, retry=policy)) as system:
        error = await outcome_of(await system.submit("flaky", task("a", fail=99)))
    assert isinstance(error, TaskFailed)
    assert error.outcome is TaskState.DEAD_LETTERED
    assert times(log, "a") == pytest.approx([0.0, 3.0, 6.0, 9.0, 12.0])


async def test_never_policy_makes_the_first_failure_final(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    async with open_system(flaky(log, retry=RetryPolicy.never())) as system:
        error = await outcome_of(await system.submit("flaky", task("a", fail=1)))
    assert isinstance(error, TaskFailed)
    assert error.attempts == 1
    assert error.outcome is TaskState.DEAD_LETTERED


async def test_retried_and_failed_tasks_are_counted(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    queue = flaky(log, retry=RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1)))
    async with open_system(queue) as system:
        ok = await system.submit("flaky", task("ok", fail=2))
        dead = await system.submit("flaky", task("dead", fail=9))
        await outcome_of(ok)
        await outcome_of(dead)
        stats = system.stats()["flaky"]
    assert (stats.retried, stats.succeeded, stats.dead_lettered, stats.failed) == (4, 1, 1, 0)


def test_retry_policy_takes_tenacity_objects_only() -> None:
    with pytest.raises(InvalidQueue, match="tenacity stop object"):
        RetryPolicy(stop=5)  # type: ignore[arg-type]


def test_the_default_policy_builds_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RetryPolicy()
        Queue("q", Flaky)


def _broken(state: Any) -> Any:
    raise ZeroDivisionError("a bug in the policy")


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(retry=_broken),
        RetryPolicy(stop=_broken),
        RetryPolicy(wait=_broken),
        RetryPolicy(wait=lambda state: "soon"),
    ],
    ids=["retry-raises", "stop-raises", "wait-raises", "wait-not-a-number"],
)
async def test_a_retry_policy_that_raises_fails_the_task_and_says_why(
    autojump_clock: Any, policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the worker asking the policy crashed after the handler had returned, and the
    # task was neither retried nor settled: no outcome until shutdown.
    log: list[tuple[str, int, float]] = []
    async with open_system(flaky(log, retry=policy)) as system:
        failing = await system.submit("flaky", task("a", fail=1))
        with pytest.raises(TaskFailed) as info:
            await failing
        assert await (await system.submit("flaky", task("b", fail=0))) == "b"
        stats = system.stats()["flaky"]
    assert info.value.outcome is TaskState.FAILED
    assert info.value.attempts == 1
    assert stats.restarts == 0
    assert "the retry policy" in caplog.text
    assert "the task fails without retry" in caplog.text

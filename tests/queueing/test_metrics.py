"""Prometheus metrics (`queueing.metrics`) of an in-process system: names, types, labels,
values, and the HTTP endpoint that serves them."""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_fixed

from queueing import (
    Queue,
    QueueingError,
    RetryPolicy,
    TaskFailed,
    Transient,
    Worker,
    metrics,
    open_system,
)

#: Every metric family, with its type (the documented list: docs/concepts/observability.md).
FAMILIES = {
    "queueing_tasks": "counter",
    "queueing_tasks_submitted": "counter",
    "queueing_task_duration_seconds": "histogram",
    "queueing_queue_wait_seconds": "histogram",
    "queueing_tasks_in_progress": "gauge",
    "queueing_queue_depth": "gauge",
    "queueing_retries": "counter",
    "queueing_dead_letters": "gauge",
    "queueing_worker_restarts": "counter",
    "queueing_lease_reclaims": "counter",
    "queueing_workers": "gauge",
}


class Job(Worker):
    """`{"sleep": s}` sleeps; `{"fail": "transient"}` fails with Transient (retried);
    `{"fail": "value"}` with ValueError (not retried)."""

    async def handle(self, job: dict[str, Any]) -> str:
        await trio.sleep(job.get("sleep", 0))
        if job.get("fail") == "transient":
            raise Transient("try again")
        if job.get("fail") == "value":
            raise ValueError("bad job")
        return "ok"


def jobs(workers: int = 1) -> Queue:
    retry = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1))
    return Queue("jobs", Job, workers=workers, retry=retry)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped[(name, tuple(sorted({"queue": "jobs", **labels}.items())))]


async def test_every_family_is_exposed_with_its_type(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(jobs()) as system:
        metrics.register(system, registry)
        await (await system.submit("jobs", {}))
        text = generate_latest(registry).decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types == FAMILIES


async def test_outcomes_retries_and_dead_letters_are_counted(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(jobs(workers=2)) as system:
        metrics.register(system, registry)
        receipts = [
            await system.submit("jobs", job)
            for job in ({}, {}, {"fail": "transient"}, {"fail": "value"})
        ]
        outcomes = [await outcome_of(receipt) for receipt in receipts]
        scraped = samples(registry)
    assert [type(outcome) for outcome in outcomes] == [str, str, TaskFailed, TaskFailed]
    assert value(scraped, "queueing_tasks_total", outcome="succeeded") == 2
    assert value(scraped, "queueing_tasks_total", outcome="failed") == 1  # ValueError
    assert value(scraped, "queueing_tasks_total", outcome="dead_lettered") == 1  # 3 attempts
    assert value(scraped, "queueing_tasks_total", outcome="cancelled") == 0
    assert value(scraped, "queueing_tasks_submitted_total") == 4
    assert value(scraped, "queueing_retries_total") == 2
    assert value(scraped, "queueing_dead_letters") == 2  # FAILED and DEAD_LETTERED are kept
    assert value(scraped, "queueing_workers") == 2
    # 2 + 3 + 1 attempts; 4 first attempts waited in the queue.
    assert value(scraped, "queueing_task_duration_seconds_count") == 6
    assert value(scraped, "queueing_queue_wait_seconds_count") == 4


async def test_histograms_measure_attempts_and_waits(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(jobs(workers=1)) as system:
        metrics.register(system, registry)
        # One worker: the second task waits 0.3 s for the first, then runs 0.02 s.
        first = await system.submit("jobs", {"sleep": 0.3})
        second = await system.submit("jobs", {"sleep": 0.02})
        await first
        await second
        scraped = samples(registry)

    def bucket(name: str, le: str) -> float:
        return value(scraped, f"{name}_bucket", le=le)

    assert bucket("queueing_task_duration_seconds", "0.01") == 0
    assert bucket("queueing_task_duration_seconds", "0.025") == 1
    assert bucket("queueing_task_duration_seconds", "0.25") == 1
    assert bucket("queueing_task_duration_seconds", "0.5") == 2
    assert bucket("queueing_task_duration_seconds", "+Inf") == 2
    assert value(scraped, "queueing_task_duration_seconds_sum") == pytest.approx(0.32)
    assert bucket("queueing_queue_wait_seconds", "0.001") == 1  # the first: at once
    assert bucket("queueing_queue_wait_seconds", "0.25") == 1
    assert bucket("queueing_queue_wait_seconds", "0.5") == 2
    assert value(scraped, "queueing_queue_wait_seconds_sum") == pytest.approx(0.3)


async def test_histograms_keep_every_observation_across_scrapes_and_folds(
    autojump_clock: Any,
) -> None:
    # More attempts than a histogram keeps unfolded (metrics.PENDING-ish), scraped midway
    # and at the end: every attempt is counted once, in its bucket, and in the sum.
    registry = CollectorRegistry()
    n = 5_000
    async with open_system(jobs(workers=8)) as system:
        metrics.register(system, registry)
        receipts = await system.submit_many("jobs", [{"sleep": 0.02}] * 2_000)
        for receipt in receipts:
            await receipt
        midway = samples(registry)
        receipts = await system.submit_many("jobs", [{"sleep": 0.02}] * (n - 2_000))
        for receipt in receipts:
            await receipt
        scraped = samples(registry)

    assert value(midway, "queueing_task_duration_seconds_count") == 2_000
    assert value(scraped, "queueing_task_duration_seconds_count") == n
    assert value(scraped, "queueing_task_duration_seconds_bucket", le="0.01") == 0
    assert value(scraped, "queueing_task_duration_seconds_bucket", le="0.025") == n
    assert value(scraped, "queueing_task_duration_seconds_sum") == pytest.approx(0.02 * n)
    assert value(scraped, "queueing_queue_wait_seconds_count") == n


async def test_gauges_show_the_queue_as_it_is_now(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(jobs(workers=2)) as system:
        metrics.register(system, registry)
        receipts = [await system.submit("jobs", {"sleep": 10}) for _ in range(5)]
        await trio.sleep(1)
        busy = samples(registry)
        for receipt in receipts:
            await receipt
        idle = samples(registry)
    assert (value(busy, "queueing_tasks_in_progress"), value(busy, "queueing_queue_depth")) == (
        2,
        3,
    )
    assert (value(idle, "queueing_tasks_in_progress"), value(idle, "queueing_queue_depth")) == (
        0,
        0,
    )


class Crashy(Worker):
    fatal = (ConnectionResetError,)

    async def handle(self, crashes: int) -> str:
        if self.attempt == 1 and crashes:
            raise ConnectionResetError("the worker's connection broke")
        return "ok"


async def test_worker_restarts_are_counted(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(Queue("crashy", Crashy)) as system:
        metrics.register(system, registry)
        assert await (await system.submit("crashy", 1)) == "ok"
        scraped = samples(registry)
    assert scraped[("queueing_worker_restarts_total", (("queue", "crashy"),))] == 1
    assert scraped[("queueing_lease_reclaims_total", (("queue", "crashy"),))] == 0


async def test_close_leaves_the_registry_and_stops_observing(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(jobs()) as system:
        collector = metrics.register(system, registry)
        collector.close()
        await (await system.submit("jobs", {}))
        assert b"queueing_" not in generate_latest(registry)
        again = metrics.register(system, registry)  # a fresh start: observes from now on
        await (await system.submit("jobs", {}))
        scraped = samples(registry)
        again.close()
    assert value(scraped, "queueing_task_duration_seconds_count") == 1
    assert value(scraped, "queueing_tasks_total", outcome="succeeded") == 2  # the system's


async def test_two_registries_of_one_system_both_see_every_attempt(autojump_clock: Any) -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    async with open_system(jobs()) as system:
        one = metrics.register(system, first)
        metrics.register(system, second)
        await (await system.submit("jobs", {"sleep": 0.02}))
        one.close()  # the other goes on observing
        await (await system.submit("jobs", {"sleep": 0.02}))
        scraped = samples(second)
    assert value(scraped, "queueing_task_duration_seconds_count") == 2
    assert value(scraped, "queueing_task_duration_seconds_bucket", le="0.025") == 2
    assert value(scraped, "queueing_queue_wait_seconds_count") == 2


async def test_one_registry_takes_a_system_once(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with open_system(jobs()) as system:
        metrics.register(system, registry)
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            metrics.register(system, registry)


async def test_buckets_must_be_positive_and_distinct(autojump_clock: Any) -> None:
    async with open_system(jobs()) as system:
        for buckets in ((), (0.0, 1.0), (1.0, 1.0)):
            with pytest.raises(QueueingError, match="buckets must be distinct positive"):
                metrics.register(system, CollectorRegistry(), buckets=buckets)


async def test_the_http_endpoint_serves_the_registry() -> None:
    # Real time: a real socket.
    registry = CollectorRegistry()
    async with open_system(jobs()) as system, trio.open_nursery() as nursery:
        metrics.register(system, registry)
        await (await system.submit("jobs", {}))
        port = await nursery.start(metrics.serve, 0, "127.0.0.1", registry)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            scrape = await client.get("/metrics")
            openmetrics = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            head = await client.head("/metrics")
            missing = await client.get("/nothing")
            posted = await client.post("/metrics")
        nursery.cancel_scope.cancel()
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    assert 'queueing_tasks_total{outcome="succeeded",queue="jobs"} 1.0' in scrape.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) > 0
    assert (missing.status_code, posted.status_code) == (404, 405)


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-0.01, max_value=400.0, allow_nan=False),
            st.sampled_from(metrics.BUCKETS),  # exactly on a bound: `le` counts it there
            st.floats(min_value=0.0, max_value=metrics.BUCKETS[0]),  # the first bucket
        ),
        max_size=300,
    ),
    st.booleans(),
)
def test_a_histogram_folded_in_bulk_counts_as_one_observation_at_a_time(
    values: list[float], negative: bool
) -> None:
    # The bulk fold (chunks of 64: one within the first bucket counted in one pass, else
    # sorted then searched) against the plain rule: each value in the first bucket whose
    # bound is >= it; below zero counts as zero (in a histogram that may see one).
    from queueing._metrics import Histogram

    if not negative:
        values = [max(value, 0.0) for value in values]  # a duration's histogram
    histogram = Histogram(metrics.BUCKETS, negative=negative)
    for value in values:
        histogram.observe(value)
    expected = [0] * (len(metrics.BUCKETS) + 1)
    for value in values:
        expected[bisect.bisect_left(metrics.BUCKETS, value)] += 1
    cumulative = list(itertools.accumulate(expected))
    assert [count for _, count in histogram.buckets()] == cumulative
    assert histogram.sum == pytest.approx(sum(max(value, 0.0) for value in values))


async def test_a_duration_counts_the_attempt_only(autojump_clock: Any) -> None:
    # Neither the waits of a rate limit before the next start nor a worker's idle time
    # between two tasks count in the attempt before them.
    registry = CollectorRegistry()
    limited = Queue("jobs", Job, workers=1, rate_limit="2/s")
    async with open_system(limited) as system:
        metrics.register(system, registry)
        receipts = await system.submit_many("jobs", [{"sleep": 0.02}] * 5)
        for receipt in receipts:
            await receipt
        await trio.sleep(10)  # idle
        await (await system.submit("jobs", {"sleep": 0.02}))
        await trio.sleep(1)
        scraped = samples(registry)
    assert value(scraped, "queueing_task_duration_seconds_count") == 6
    assert value(scraped, "queueing_task_duration_seconds_bucket", le="0.025") == 6
    assert value(scraped, "queueing_task_duration_seconds_sum") == pytest.approx(0.12)


def test_a_histogram_counts_chunks_within_one_bucket_and_across_many() -> None:
    # Runs of values that share a bucket (a chunk counted at once), on a bound, below
    # zero, and runs spread over every bucket, in one fold and across folds.
    from queueing._metrics import Histogram

    histogram = Histogram(metrics.BUCKETS)
    spread = [bound * factor for bound in metrics.BUCKETS for factor in (0.5, 1.0, 1.5)]
    runs = [[0.0002] * 1000, [0.004] * 130, [-0.003] * 70, [0.001] * 64, spread * 9, [500.0] * 3]
    values = [value for run in runs for value in run]
    for value in values[:700]:
        histogram.observe(value)
    histogram.fold()
    for value in values[700:]:
        histogram.observe(value)
    expected = [0] * (len(metrics.BUCKETS) + 1)
    for value in values:
        expected[bisect.bisect_left(metrics.BUCKETS, value)] += 1
    assert [count for _, count in histogram.buckets()] == list(itertools.accumulate(expected))
    assert histogram.sum == pytest.approx(sum(max(value, 0.0) for value in values))


def test_observations_made_while_another_thread_folds_are_all_counted() -> None:
    # A scrape from another thread (prometheus-client's own server) folds while the event
    # loop appends: nothing is lost or counted twice.
    import threading

    from queueing._metrics import Histogram

    histogram = Histogram(metrics.BUCKETS)
    n = 200_000
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            histogram.buckets()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(n):
            histogram.observe(0.002 if i % 2 else 0.2)
    finally:
        done.set()
        scraper.join()
    buckets = dict(histogram.buckets())
    assert (buckets["0.0025"], buckets["0.25"], buckets["+Inf"]) == (n / 2, n, n)
    assert histogram.sum == pytest.approx(n / 2 * 0.202)


async def test_each_queue_has_its_own_histograms(autojump_clock: Any) -> None:
    # Two queues, attempts of known lengths (a mock clock: exact) spread over the buckets,
    # more than a fold takes at once: each queue's counts, buckets and sum, by its label.
    registry = CollectorRegistry()
    lengths = [0.0005, 0.003, 0.07, 0.3, 2.0]
    n = 1_500
    queues = [Queue("jobs", Job, workers=4), Queue("other", Job, workers=2)]
    async with open_system(*queues) as system:
        metrics.register(system, registry)
        receipts = await system.submit_many(
            "jobs", [{"sleep": lengths[i % len(lengths)]} for i in range(n)]
        )
        receipts += await system.submit_many("other", [{"sleep": 0.04}] * 10)
        for receipt in receipts:
            await receipt
        scraped = samples(registry)

    def bucket(queue: str, le: str) -> float:
        return scraped[("queueing_task_duration_seconds_bucket", (("le", le), ("queue", queue)))]

    each = n // len(lengths)
    assert [bucket("jobs", le) for le in ("0.001", "0.005", "0.1", "0.5", "2.5", "+Inf")] == [
        each * k for k in range(1, 6)
    ] + [n]
    assert bucket("jobs", "0.0025") == each
    assert value(scraped, "queueing_task_duration_seconds_sum") == pytest.approx(
        each * sum(lengths)
    )
    assert value(scraped, "queueing_queue_wait_seconds_count") == n
    assert [bucket("other", le) for le in ("0.025", "0.05", "+Inf")] == [0, 10, 10]
    assert value(scraped, "queueing_task_duration_seconds_count", queue="other") == 10
    assert value(scraped, "queueing_task_duration_seconds_sum", queue="other") == (
        pytest.approx(0.4)
    )
    assert value(scraped, "queueing_tasks_total", queue="other", outcome="succeeded") == 10


async def test_durations_are_exact_whichever_way_an_attempt_ends(autojump_clock: Any) -> None:
    # One worker, attempts of known lengths (a mock clock: exact), ending each way in
    # turn: a plain success (its end read once, for the latency and the duration alike),
    # a failure, a retried failure, a success with a result that is not plain data, and
    # many quick successes (more than a fold takes at once, all in the first bucket).
    class Mixed(Worker):
        async def handle(self, job: dict[str, Any]) -> Any:
            await trio.sleep(job["sleep"])
            if job.get("fail") == "value" or (job.get("fail") == "once" and self.attempt == 1):
                raise (ValueError if job["fail"] == "value" else Transient)("no")
            return {"done": True} if job.get("dict") else "ok"

    retry = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1))
    registry = CollectorRegistry()
    quick = [{"sleep": 0.0004}] * 150
    jobs = [
        {"sleep": 0.0004},
        {"sleep": 0.3, "fail": "value"},
        {"sleep": 0.002},
        {"sleep": 0.04, "fail": "once"},  # two attempts of 0.04
        {"sleep": 0.7, "dict": True},
        *quick,
        {"sleep": 3.0},
    ]
    async with open_system(Queue("jobs", Mixed, workers=1, retry=retry)) as system:
        metrics.register(system, registry)
        receipts = [await system.submit("jobs", job) for job in jobs]
        for receipt in receipts:
            await outcome_of(receipt)
        scraped = samples(registry)

    durations = [job["sleep"] for job in jobs] + [0.04]  # the retry's second attempt
    expected = [0] * (len(metrics.BUCKETS) + 1)
    for duration in durations:
        expected[bisect.bisect_left(metrics.BUCKETS, duration)] += 1
    buckets = [
        value(scraped, "queueing_task_duration_seconds_bucket", le=le)
        for le in [repr(float(bound)) for bound in metrics.BUCKETS] + ["+Inf"]
    ]
    assert buckets == list(itertools.accumulate(expected))
    assert value(scraped, "queueing_task_duration_seconds_count") == len(durations)
    assert value(scraped, "queueing_task_duration_seconds_sum") == pytest.approx(sum(durations))
    # One worker: each task waited for every attempt before it (and the retry's wait of 1 s
    # does not hold up the next task: the worker takes it meanwhile).
    assert value(scraped, "queueing_queue_wait_seconds_count") == len(jobs)


def test_a_chunk_of_durations_within_the_first_bound_in_all_counts_there() -> None:
    # A duration histogram counts a chunk whose sum is within the first bound in the first
    # bucket without sorting it; a chunk of values each within the first bound but whose
    # sum is not, or with one value past it, is counted value by value: the same counts.
    from queueing._metrics import CHUNK, Histogram

    first = metrics.BUCKETS[0]
    runs = [
        [first / CHUNK] * CHUNK,  # the sum is the bound (or a rounding off it)
        [first / 2] * CHUNK,  # each within the bound, their sum far past it
        [0.0] * (CHUNK - 1) + [first],  # exactly on the bound
        [0.0] * (CHUNK - 1) + [first * 1.0001],  # one just past it
        [first / (4 * CHUNK)] * (CHUNK - 1) + [0.2],  # one far past it
        [0.0] * CHUNK,
    ]
    values = [value for run in runs for value in run]
    histogram = Histogram(metrics.BUCKETS, negative=False)
    for value in values:
        histogram.observe(value)
    expected = [0] * (len(metrics.BUCKETS) + 1)
    for value in values:
        expected[bisect.bisect_left(metrics.BUCKETS, value)] += 1
    assert [count for _, count in histogram.buckets()] == list(itertools.accumulate(expected))
    assert expected[0] == len(values) - 2
    assert histogram.sum == pytest.approx(sum(values))

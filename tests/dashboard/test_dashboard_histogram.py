"""The latency histograms the processes publish: percentiles within half a bucket, and
counts that add up and subtract across reports."""

from __future__ import annotations

import math
from typing import Any

import trio
from dash_helpers import naps
from hypothesis import given
from hypothesis import strategies as st

from queueing import open_system
from queueing._report import BUCKET_GROWTH, Histogram, ProcessReport
from queueing._stats import RING, Latency

latencies = st.lists(st.floats(min_value=1e-3, max_value=1e5), min_size=1, max_size=300)
percents = st.floats(min_value=0, max_value=100)


def exact(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@given(latencies, percents)
def test_a_percentile_is_within_half_a_bucket_of_the_exact_one(
    values: list[float], p: float
) -> None:
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    estimate = histogram.percentile(p)
    assert estimate is not None
    truth = exact(values, p)
    assert truth / BUCKET_GROWTH**0.5 * (1 - 1e-9) <= estimate <= truth * BUCKET_GROWTH**0.5


@given(latencies, latencies)
def test_a_later_report_less_an_earlier_one_is_what_came_between(
    before: list[float], between: list[float]
) -> None:
    earlier, later, expected = Histogram(), Histogram(), Histogram()
    for value in before:
        earlier.add(value)
        later.add(value)
    for value in between:
        later.add(value)
        expected.add(value)
    assert later.minus(earlier).counts == expected.counts
    merged = Histogram()
    merged.merge(earlier)
    merged.merge(expected)
    assert merged.counts == later.counts


def test_an_empty_histogram_has_no_percentile() -> None:
    assert Histogram().percentile(50) is None


def test_a_histogram_travels_as_json_and_junk_counts_as_nothing() -> None:
    histogram = Histogram()
    for value in (0.01, 0.01, 2.5):
        histogram.add(value)
    assert Histogram.from_doc(histogram.to_doc()).counts == histogram.counts
    junk = {"x": 1, "-3": 2, "5": "many", "7": -1, "100000": 4, "12": 2}
    assert Histogram.from_doc(junk).counts == {12: 2.0}
    assert Histogram.from_doc(["not", "a", "mapping"]).counts == {}


def test_the_ring_gives_its_newest_latencies_in_order() -> None:
    ring = Latency()
    for i in range(RING + 10):
        ring.add(float(i))
    assert len(ring) == RING
    assert ring.newest(3) == [float(RING + 7), float(RING + 8), float(RING + 9)]
    assert len(ring.newest(RING + 10)) == RING
    assert ring.newest(RING)[0] == 10.0


async def test_a_report_counts_every_task_even_past_the_ring(autojump_clock: Any) -> None:
    async with open_system(naps(workers=50, maxsize=RING * 3)) as system:
        report = ProcessReport(system)
        await system.submit_many("naps", [0.5] * 10)
        await trio.sleep(1)
        assert report.latency("naps").total == 10
        await system.submit_many("naps", [1.0] * (RING * 2))
        await system.drain()
        histogram = report.latency("naps")
    assert round(histogram.total) == 10 + RING * 2
    assert histogram.percentile(50) is not None

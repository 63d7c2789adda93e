"""Prometheus metrics of a queue system, with prometheus-client (the `metrics` extra).

Counters and gauges are read from the system's own figures when Prometheus scrapes (the
engine counts them anyway: nothing more per task). The two histograms are observed per
attempt through an `ended` hook (`_observe.py`) into plain lists, folded into bucket
counts in bulk and exposed as Prometheus histograms at scrape time: cheaper per task than
a `prometheus_client.Histogram` (a lock and a bucket search per observation);
bench/observe_bench.py measures the cost.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ._exceptions import QueueingError
from ._observe import PENDING, Hooks, Timings, add_hooks
from ._task import Task

if TYPE_CHECKING:
    from ._runtime import QueueRuntime
    from ._system import QueueSystem

#: Upper bounds (seconds) of the histograms' buckets, unless `register(buckets=...)`.
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
#: Observations a fold takes at a time (see `Histogram.fold`).
CHUNK = 128
#: The outcomes of `queueing_tasks_total`, and the `QueueStats` field each is read from.
OUTCOMES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "dead_lettered": "dead_lettered",
    "cancelled": "cancelled",
    "expired": "expired",
}


class Histogram:
    """Bucket counts and a sum. Observations are appended to a list (one C call per
    task, by the worker loop itself) and folded into the buckets in bulk (see `fold`) at
    a scrape or every `PENDING` observations: a fraction of the per-task cost of a bucket
    search per observation. The event loop appends without a lock; a fold (from a scrape
    in another thread too) takes a prefix of the list and deletes exactly it, each step
    atomic under the GIL, so an observation appended meanwhile is never lost; folds take
    a lock among themselves (one per fold, not per observation)."""

    __slots__ = ("bounds", "counts", "lock", "negative", "pending", "total")

    def __init__(self, bounds: Sequence[float], negative: bool = True) -> None:
        self.bounds = list(bounds)
        #: Whether an observation may be below zero (counted as zero): a wait, whose
        #: start and submit may be read on two machines' clocks. An attempt's duration
        #: (one process's clock) never is.
        self.negative = negative
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.pending: list[float] = []
        self.total = 0.0
        self.lock = threading.Lock()

    @property
    def sum(self) -> float:
        self.fold()
        return self.total

    def observe(self, value: float) -> None:
        self.pending.append(value)
        if len(self.pending) >= PENDING:
            self.fold()

    def fold(self) -> None:
        """Move the pending observations into the counts, `CHUNK` at a time: each chunk
        is sorted (a short sort: cheap per value, and in C), then searched once per
        bound between its smallest and its largest value (a chunk whose values share a
        bucket, as a queue's attempts taking much the same time do: no search). In a
        histogram of values never below zero (`negative` False: durations), a chunk
        whose sum is within the first bound is counted there without a sort: the sum,
        needed anyway, is at least its largest value (quick attempts' durations come in
        no order: a sort's compares are guessed wrong half the time, and a `max()` pass
        is four C calls a value)."""
        with self.lock:
            self._fold()

    def _fold(self) -> None:
        pending = self.pending
        n = len(pending)
        if not n:
            return
        bounds = self.bounds
        counts = self.counts
        total = self.total
        left, right = bisect.bisect_left, bisect.bisect_right
        first = bounds[0]
        quick = not self.negative
        for start in range(0, n, CHUNK):
            stop = start + CHUNK
            chunk = pending[start : stop if stop < n else n]  # appends meanwhile go after n
            if quick:
                # Values never below zero: their float sum is at least the largest of
                # them (adding a value >= 0 never rounds below either term), so a sum
                # within the first bound puts them all in the first bucket.
                part = sum(chunk)
                if part <= first:
                    counts[0] += len(chunk)
                    total += part
                    continue
            chunk.sort()
            at = left(bounds, chunk[0])  # the bucket of the smallest: its `le` >= it
            top = left(bounds, chunk[-1])  # and of the largest
            if at == top:
                counts[at] += len(chunk)
            else:
                below = 0
                for i in range(at, top):
                    done = right(chunk, bounds[i])  # values <= the bound: `le`
                    counts[i] += done - below
                    below = done
                counts[top] += len(chunk) - below
            if chunk[0] < 0.0:
                # A wait below zero (two machines' clocks a little apart) counts as zero:
                # it is in the first bucket already, and adds nothing to the sum.
                chunk = chunk[left(chunk, 0.0) :]
            total += sum(chunk)
        del pending[:n]
        self.total = total

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as Prometheus exposes them."""
        self.fold()
        counts = list(self.counts)
        total = 0
        result = []
        for bound, count in zip([*self.bounds, math.inf], counts, strict=True):
            total += count
            result.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(total)))
        return result


def timings_of(duration: Histogram, wait: Histogram) -> Timings:
    """Where a queue's attempts are recorded for its two histograms (see `_observe.Timings`)."""

    def fold() -> None:
        duration.fold()
        wait.fold()

    return Timings(duration.pending, wait.pending, fold)


def meter(
    clock: Callable[[], float], duration: Histogram, wait: Histogram
) -> Callable[[Task, float, BaseException | None], None]:
    """One queue's `ended` hook, feeding its two histograms (a second collector of a
    system: the first one's are fed by the worker loop itself)."""
    record = timings_of(duration, wait).record

    def ended(task: Task, started: float, error: BaseException | None) -> None:
        record(task, started, clock())

    return ended


class QueueMetrics(Collector):
    """The Prometheus collector of one `QueueSystem` (see `register`).

    Metrics, each labelled with `queue`:

    - `queueing_tasks_total{queue,outcome}` (counter): tasks that reached an outcome
      (`succeeded`, `failed`, `dead_lettered`, `cancelled`, `expired`);
    - `queueing_tasks_submitted_total` (counter): tasks accepted;
    - `queueing_task_duration_seconds` (histogram): each attempt, from its start to its
      outcome handed to the broker (a retry's attempts count one each);
    - `queueing_queue_wait_seconds` (histogram): from the submit (or a pipeline's hand-over
      from the previous stage) to the first attempt's start;
    - `queueing_tasks_in_progress` (gauge): attempts running in this process now;
    - `queueing_queue_depth` (gauge): tasks waiting (ready, or scheduled for a retry or a
      delay), over every process of a shared broker;
    - `queueing_retries_total` (counter): failed attempts scheduled to run again;
    - `queueing_dead_letters` (gauge): dead letters kept now;
    - `queueing_worker_restarts_total` (counter): workers restarted by their supervisor;
    - `queueing_lease_reclaims_total` (counter): tasks this process took over after the
      lease of an earlier delivery ran out (its process died or stalled);
    - `queueing_workers` (gauge): workers this process runs.

    Counts are this process's in a system that serves queues (each worker process exposes
    its own: sum them); in a `connect()` client they are every process's, as the broker
    keeps them. `queueing_queue_depth` and `queueing_dead_letters` are the queue's own,
    the same from every process (take the max, not the sum).
    """

    def __init__(
        self, system: QueueSystem, buckets: Sequence[float] = BUCKETS, histograms: bool = True
    ) -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(b <= 0 for b in bounds) or len(set(bounds)) != len(bounds):
            raise QueueingError(
                f"buckets must be distinct positive numbers of seconds, got {list(buckets)!r}"
            )
        self.system = system
        clock = system._engine.clock
        #: Per queue: the histograms of durations and of waits.
        self._histograms: dict[str, tuple[Histogram, Histogram]] = {}

        #: The runtimes whose `timings` slot this collector took (see `close`).
        self._timed: list[tuple[QueueRuntime, Timings]] = []

        def hooks(rt: QueueRuntime) -> Hooks:
            duration, wait = self._histograms[rt.name] = (
                Histogram(bounds, negative=False),
                Histogram(bounds),
            )
            if rt.timings is None:
                # The worker loop records into the histograms' lists itself: no call per
                # task. A second collector of the same system uses a hook instead.
                rt.timings = timings_of(duration, wait)
                self._timed.append((rt, rt.timings))
                return Hooks()
            return Hooks(ended=meter(clock, duration, wait))

        self._unhook: Callable[[], None] | None = (
            add_hooks(system._runtimes, hooks) if histograms else None
        )
        self._registries: list[CollectorRegistry] = []

    def close(self) -> None:
        """Stop observing, and leave every registry it was registered in."""
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        for rt, timings in self._timed:
            if rt.timings is timings:
                rt.timings = None
        self._timed.clear()
        for registry in self._registries:
            registry.unregister(self)
        self._registries.clear()

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.system.stats())

    def _families(self, stats: dict[str, Any]) -> Iterator[Metric]:
        system = self.system
        runtimes = system._runtimes
        tasks = CounterMetricFamily(
            "queueing_tasks", "Tasks that reached an outcome.", labels=["queue", "outcome"]
        )
        submitted = CounterMetricFamily(
            "queueing_tasks_submitted", "Tasks accepted.", labels=["queue"]
        )
        duration = HistogramMetricFamily(
            "queueing_task_duration_seconds",
            "Attempts, from their start to their outcome.",
            labels=["queue"],
        )
        wait = HistogramMetricFamily(
            "queueing_queue_wait_seconds",
            "Time from the submit to the first attempt's start.",
            labels=["queue"],
        )
        in_progress = GaugeMetricFamily(
            "queueing_tasks_in_progress", "Attempts running in this process.", labels=["queue"]
        )
        depth = GaugeMetricFamily(
            "queueing_queue_depth",
            "Tasks waiting: ready, or scheduled for a retry or a delay.",
            labels=["queue"],
        )
        retries = CounterMetricFamily(
            "queueing_retries", "Failed attempts scheduled to run again.", labels=["queue"]
        )
        dead = GaugeMetricFamily("queueing_dead_letters", "Dead letters kept.", labels=["queue"])
        restarts = CounterMetricFamily(
            "queueing_worker_restarts", "Workers restarted by their supervisor.", labels=["queue"]
        )
        reclaims = CounterMetricFamily(
            "queueing_lease_reclaims",
            "Tasks taken over after the lease of an earlier delivery ran out.",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "queueing_workers", "Workers this process runs.", labels=["queue"]
        )
        for name, figures in stats.items():
            rt = runtimes[name]
            for outcome, field in OUTCOMES.items():
                tasks.add_metric([name, outcome], getattr(figures, field))
            submitted.add_metric([name], figures.submitted)
            histograms = self._histograms.get(name)
            if histograms is not None:
                duration.add_metric([name], histograms[0].buckets(), histograms[0].sum)
                wait.add_metric([name], histograms[1].buckets(), histograms[1].sum)
            in_progress.add_metric([name], rt.in_flight)
            depth.add_metric([name], figures.depth)
            retries.add_metric([name], figures.retried)
            letters = self._dead_letters(name)
            if letters is not None:
                dead.add_metric([name], letters)
            restarts.add_metric([name], figures.restarts)
            reclaims.add_metric([name], rt.reclaimed)
            workers.add_metric([name], rt.spec.workers if system._serving else 0)
        yield from (tasks, submitted, duration, wait, in_progress, depth, retries, dead)
        yield from (restarts, reclaims, workers)

    def _dead_letters(self, queue: str) -> int | None:
        system = self.system
        figures = system._broker.figures_nowait(queue) or system._remote.get(queue) or {}
        letters = figures.get("dead_letters")
        return None if letters is None else int(letters)


def register(
    system: QueueSystem,
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = BUCKETS,
    histograms: bool = True,
) -> QueueMetrics:
    """Collect the system's metrics into `registry` (default: prometheus-client's global
    `REGISTRY`); returns the collector (`close()` takes it out again).

    Args:
        system: a running system (`open_system`, `run_system`'s `main`, `connect`).
        registry: where to register; a user's own registry embeds the metrics in an app
            that serves them itself (`prometheus_client.generate_latest(registry)`).
        buckets: upper bounds in seconds of the two histograms' buckets.
        histograms: False leaves out the two histograms: every other metric is read from
            the system's own figures at scrape time, so nothing is done per task (the
            histograms cost a little per task: see bench/observe_bench.py).

    Raises:
        QueueingError: the buckets are not distinct positive numbers.
        ValueError: the registry has metrics of these names already (prometheus-client's
            refusal: register a system once per registry).
    """
    collector = QueueMetrics(system, buckets, histograms)
    target = REGISTRY if registry is None else registry
    try:
        target.register(collector)
    except BaseException:
        collector.close()
        raise
    collector._registries.append(target)
    return collector


# -- serving over HTTP -----------------------------------------------------------------------

#: The longest request head read (bytes), and the seconds a client gets to send it.
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 10.0
#: Scrapes served at once (more wait for a slot).
MAX_SCRAPES = 8


async def serve(
    port: int,
    host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `registry` (default: prometheus-client's `REGISTRY`) over HTTP at
    `http://host:port/metrics` until cancelled, in the caller's nursery: `port =
    await nursery.start(serve, 9464)` (port 0: any free port; the bound one is returned;
    `nursery.start(serve, 9464, "0.0.0.0", registry)` for another address or registry).

    Read-only (GET or HEAD of `/metrics` or `/`; anything else is a 404), one response per
    connection, in the format the scraper asks for (`Accept`: OpenMetrics or text).

    Raises:
        OSError: the address cannot be bound (in use, not local).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    await serve_listeners(listeners, registry, task_status=task_status)


async def serve_listeners(
    listeners: list[trio.SocketListener],
    registry: CollectorRegistry | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`serve` on listeners bound already (a caller that reports a failure to bind its
    own way); `task_status` gets the first one's port."""
    target = REGISTRY if registry is None else registry
    slots = trio.CapacityLimiter(MAX_SCRAPES)

    async def handler(stream: trio.SocketStream) -> None:
        async with slots, stream:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await _answer(stream, target)

    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(int(bound))


async def _answer(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > MAX_REQUEST:
            await stream.send_all(_response(431, b"request head too large\n", "text/plain"))
            return
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            return
        head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
        await stream.send_all(_response(405, b"only GET and HEAD\n", "text/plain"))
        return
    path = parts[1].split("?", 1)[0]
    if path not in ("/metrics", "/"):
        await stream.send_all(_response(404, b"not found: try /metrics\n", "text/plain"))
        return
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    await stream.send_all(_response(200, body, content_type, head_only=parts[0] == "HEAD"))


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


def _response(status: int, body: bytes, content_type: str, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body

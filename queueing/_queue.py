"""`Queue` and `Pipeline`: the specs a user declares."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import tenacity

from actors import Overflow

from ._convert import check_handler_types
from ._exceptions import InvalidQueue
from ._ratelimit import RateLimit, rate_key, rate_limit
from ._retry import RetryPolicy
from ._validate import positive_int, seconds, tenant_limit, worker_count

if TYPE_CHECKING:
    from ._worker import Worker

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

R = TypeVar("R")

#: The policy of a full queue is an `actors.Overflow`, the one vocabulary of the runtime
#: for a full mailbox. A queue takes `Overflow.WAIT` (backpressure) or `Overflow.REJECT`;
#: `Full` is the same enum under the name earlier releases used.
Full = Overflow
_QUEUE_POLICIES = (Overflow.WAIT, Overflow.REJECT)
#: A pool's default restart intensity, per worker (within the queue's `within` seconds).
RESTARTS_PER_WORKER = 10
#: The most bytes one result may take serialized, by default (`Queue(max_result=)`): far
#: below what any broker holds in one value (Redis: 512 MB), so that a huge result fails
#: its task with a clear error instead of straining the broker.
DEFAULT_MAX_RESULT = 16 * 1024 * 1024
#: The most `max_payload` and `max_result` may be: 512 MiB, the most one value a broker
#: holds: Redis's bulk strings (proto-max-bulk-len) and RabbitMQ's messages (the hard limit
#: of its max_message_size) stop there. A larger limit would only move the refusal from
#: `submit` to the broker, with a less clear error.
MAX_VALUE_BYTES = 512 * 1024 * 1024
#: The most shards a queue may have (`Queue(shards=)`).
MAX_SHARDS = 1024
#: The longest a worker that keeps crashing waits before its next restart (by default).
MAX_RESTART_BACKOFF = 0.5


def _default_restart_backoff() -> Any:
    # Not wait_exponential_jitter(initial=...): deprecated in tenacity 9.2.
    return tenacity.wait_exponential(
        multiplier=0.01, max=MAX_RESTART_BACKOFF
    ) + tenacity.wait_random(0, 0.01)


def _check_handle(queue: str, worker: type) -> None:
    """A `handle` a worker can call with one payload, that returns its result."""
    handle = worker.handle  # type: ignore[attr-defined]
    where = f"Queue({queue!r}): {worker.__name__}.handle"
    if inspect.isasyncgenfunction(inspect.unwrap(handle)):
        raise InvalidQueue(
            f"{where} is an async generator (it yields): a task has one result, so "
            "return it (collect the items in a list), or report progress with "
            "self.progress(...)"
        )
    try:
        signature = inspect.signature(handle)
    except (TypeError, ValueError):
        return  # a callable without a readable signature: called as it is
    try:
        signature.bind(worker, None)  # (self, payload)
    except TypeError:
        raise InvalidQueue(
            f"{where}{signature} cannot be called with one payload: define it as "
            "`async def handle(self, payload)` (any other parameters need defaults); "
            "pass several values as one payload (a dataclass, a dict or a list)"
        ) from None


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidQueue(
            f"{kind} name must be 1-100 characters of letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit), got {name!r}"
        )


#: The largest tenant weight (`Queue(tenant_weights=)`): its ratio to the smallest bounds
#: how far the virtual times of fair queuing move per start.
MAX_WEIGHT = 1000.0
MIN_WEIGHT = 0.001


def check_weight(queue: str, tenant: object, weight: object) -> None:
    """A tenant's weight: a number from `MIN_WEIGHT` to `MAX_WEIGHT`."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not MIN_WEIGHT <= weight <= MAX_WEIGHT
    ):
        raise InvalidQueue(
            f"Queue({queue!r}) tenant_weights: the weight of tenant {tenant!r:.80} must be a "
            f"number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g} (1 is the default share), "
            f"got {weight!r:.80}"
        )


def _as_tuple(values: Iterable[Any]) -> tuple[Any, ...]:
    """A typed converter (attrs' `converter=tuple` hides the field's type from mypy)."""
    return tuple(values)


@attrs.frozen(eq=False)
class Queue(Generic[R]):
    """A named processing queue: a worker class, its pool, and the queue's limits.

    Args:
        name: unique within a system; letters, digits, `_`, `.`, `-`.
        worker: the `Worker` subclass that handles this queue's tasks.
        workers: how many workers run (each handles one task at a time); at most 10,000.
        maxsize: the most outstanding tasks (queued, waiting for a retry, or running).
        when_full: what `submit` does at `maxsize`: `Overflow.WAIT` (wait for room) or
            `Overflow.REJECT` (raise `QueueFull` at once).
        full_timeout: with `Full.WAIT`, the longest `submit` waits before `QueueFull`.
        max_payload: the most bytes one serialized payload may take.
        retry: when to retry a failed task (see `RetryPolicy`).
        timeout: seconds one attempt may run; an attempt past it fails with `TaskTimeout`
            (retried by the default policy). None: no limit.
        result_ttl: seconds a finished task's outcome stays retrievable by id (each kept
            outcome takes broker memory: docs/concepts/receipts.md says how much).
        max_deliveries: how many times a task may be handed to a worker that then crashed
            before it is dead-lettered as poison.
        threads: for a sync `def handle`, the most handler threads at once (default: workers).
        worker_args: positional arguments of the worker class, at every (re)start.
        worker_kwargs: keyword arguments of the worker class, at every (re)start.
        max_restarts: the worker pool supervisor's restart intensity: more than
            `max_restarts` worker restarts within `within` seconds and the pool gives up,
            which stops the system with `WorkersCrashed` (as `Supervisor(max_restarts=,
            within=)`). Default: 10 restarts per worker within 10 s.
        within: the window of `max_restarts`, in seconds.
        restart_backoff: a tenacity wait strategy for a worker that keeps crashing (one
            that crashed once is replaced at once; see `Supervisor(backoff=)`); default:
            exponential from 10 ms to 0.5 s, with jitter (so a worker that cannot start at
            all trips the default intensity within seconds, and the system stops with
            `WorkersCrashed`).
        reset_after: seconds a restarted worker must run before its next crash counts as a
            first one again (its backoff starts over).
        shards: over how many parts a broker spreads a hot queue (Redis: that many hash
            tags, so a Redis Cluster spreads it over that many slots, and nodes); 1 keeps
            it whole. Brokers without parts (memory, SQLite, RabbitMQ) ignore it. See
            docs/how-to/redis-cluster-sentinel.md.
        rate_limit: at most this many task starts (retries included) per period, over every
            process: `"100/s"`, `"/m"`, `"/h"`, `RateLimit(100, per=1.0)` or
            `(100, timedelta(seconds=1))`. Starts are spread evenly. None: no limit.
        rate_key: with `rate_limit`, a function of the (structured) payload whose result
            (a str, or anything `str()` makes one) names the budget a task draws on: each
            key gets the whole `rate_limit` (per customer, per remote host).
        retry_ahead: a retry whose backoff has run out starts ahead of the new tasks
            waiting at its priority (retries among themselves in the order they became
            due), never ahead of a higher priority: keeps the time-to-result of retried
            tasks short when the queue has a backlog. False (the default): a retry joins
            the back of its priority, behind the tasks already waiting, so new work is
            never held back by retries. See docs/concepts/retries.md.
        tenant: a function of the payload (as given to `submit`) naming the task's tenant,
            for submits that give no `tenant=` (e.g. `lambda job: job.customer`). Waiting
            tasks are shared out fairly between tenants: see docs/concepts/fair-share.md.
            It runs in the submitting process, so a client without this `Queue` object
            (`queueing.connect(url)`) passes `tenant=` itself.
        tenant_weights: each tenant's share of the starts, relative to the default of 1:
            a mapping from tenant to a number > 0, or a function of the tenant's name
            returning one. A tenant of weight 2 gets twice the starts of one of weight 1
            while both have tasks waiting.
        tenant_concurrency: the most tasks of one tenant running at once, over every
            process serving the queue (its other tasks wait while others' run). None: no
            limit.
        tenant_maxsize: the most outstanding tasks of one tenant (a submit past it waits
            or is refused as at `maxsize`, naming the tenant), so that one tenant's backlog
            cannot fill the queue for everyone. None: only `maxsize` applies.
        max_result: the most bytes one result of `handle` may take serialized (16 MiB by
            default); a larger one fails its task with a `PayloadError` naming the limit
            (not retried by default), on every broker. Return a reference (a key, a URL)
            to large data instead.

    A `Queue` is generic in its worker's result type: `Queue("fetch", Fetch)` with
    `class Fetch(Worker[Page, bytes])` is a `Queue[bytes]`, and `system.submit(fetch, ...)`
    returns a `Receipt[bytes]`.
    """

    name: str
    worker: type[Worker[Any, R]]
    workers: int = 1
    maxsize: int = 10_000
    when_full: Overflow = Overflow.WAIT
    full_timeout: float | None = None
    max_payload: int = 1024 * 1024
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    timeout: float | None = None
    result_ttl: float = 3600.0
    max_deliveries: int = 3
    threads: int | None = None
    worker_args: tuple[Any, ...] = ()
    worker_kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    max_restarts: int | None = None
    within: float = 10.0
    restart_backoff: Any = attrs.field(factory=lambda: _default_restart_backoff())
    reset_after: float = 1.0
    shards: int = 1
    rate_limit: RateLimit | None = attrs.field(default=None, converter=rate_limit)
    rate_key: Any = attrs.field(default=None, converter=rate_key)
    retry_ahead: bool = False
    tenant: Any = None
    tenant_weights: Any = None
    tenant_concurrency: int | None = None
    tenant_maxsize: int | None = None
    max_result: int = DEFAULT_MAX_RESULT

    def __attrs_post_init__(self) -> None:
        from ._worker import Worker

        _check_name("queue", self.name)
        if not (isinstance(self.worker, type) and issubclass(self.worker, Worker)):
            raise InvalidQueue(
                f"Queue({self.name!r}) needs a Worker subclass as its worker, got "
                f"{self.worker!r}: define `class MyWorker(Worker)` with "
                "`async def handle(self, payload)` and pass the class"
            )
        if self.worker.handle is Worker.handle:
            raise InvalidQueue(
                f"Queue({self.name!r}): {self.worker.__name__} does not implement handle(): "
                "define `async def handle(self, payload)` (or a plain `def handle` for "
                "blocking work) on it"
            )
        _check_handle(self.name, self.worker)
        check_handler_types(self.worker.handle, self.name)
        worker_count("workers", self.workers)
        positive_int("maxsize", self.maxsize)
        if self.when_full not in _QUEUE_POLICIES:
            raise InvalidQueue(
                f"when_full must be Overflow.WAIT or Overflow.REJECT, got {self.when_full!r}: "
                "a queue never drops an accepted task"
            )
        seconds("full_timeout", self.full_timeout, optional=True)
        for field in ("max_payload", "max_result"):
            size = getattr(self, field)
            positive_int(field, size, 16)
            if size > MAX_VALUE_BYTES:
                raise InvalidQueue(
                    f"{field} must be at most {MAX_VALUE_BYTES} bytes (512 MiB, the most one "
                    f"value a Redis or RabbitMQ broker holds), got {size!r}: store large data "
                    "elsewhere (a file, an object store) and pass a reference to it"
                )
        if not isinstance(self.retry, RetryPolicy):
            raise InvalidQueue(f"retry must be a RetryPolicy, got {self.retry!r}")
        seconds("timeout", self.timeout, optional=True)
        seconds("result_ttl", self.result_ttl)
        positive_int("max_deliveries", self.max_deliveries)
        if self.threads is not None:
            worker_count("threads", self.threads)
        if self.max_restarts is not None:
            positive_int("max_restarts", self.max_restarts, 0)
        seconds("within", self.within)
        if not callable(self.restart_backoff):
            raise InvalidQueue(
                "restart_backoff takes a tenacity wait strategy (e.g. "
                f"tenacity.wait_exponential(...)), got {self.restart_backoff!r}"
            )
        seconds("reset_after", self.reset_after)
        positive_int("shards", self.shards)
        if self.shards > MAX_SHARDS:
            raise InvalidQueue(
                f"shards must be at most {MAX_SHARDS}, got {self.shards!r}: a few per "
                "Redis Cluster node spread a queue enough"
            )
        if not isinstance(self.retry_ahead, bool):
            raise InvalidQueue(
                f"Queue({self.name!r}) retry_ahead must be True or False, got {self.retry_ahead!r}"
            )
        if self.rate_key is not None and self.rate_limit is None:
            raise InvalidQueue(
                f"Queue({self.name!r}) has a rate_key but no rate_limit: give the limit "
                'each key gets, e.g. rate_limit="10/s"'
            )
        if self.tenant is not None and not callable(self.tenant):
            raise InvalidQueue(
                f"Queue({self.name!r}) tenant must be a function of the payload naming its "
                f"tenant (e.g. lambda job: job.customer), got {self.tenant!r:.80}"
            )
        weights = self.tenant_weights
        if weights is not None and not callable(weights):
            if not isinstance(weights, Mapping):
                raise InvalidQueue(
                    f"Queue({self.name!r}) tenant_weights must be a mapping of tenant to "
                    f"weight, or a function of the tenant's name, got {weights!r:.80}"
                )
            for tenant, weight in weights.items():
                check_weight(self.name, tenant, weight)
        tenant_limit("tenant_concurrency", self.tenant_concurrency)
        tenant_limit("tenant_maxsize", self.tenant_maxsize)
        if self.tenant_maxsize is not None and self.tenant_maxsize > self.maxsize:
            raise InvalidQueue(
                f"Queue({self.name!r}) tenant_maxsize ({self.tenant_maxsize}) must be at most "
                f"maxsize ({self.maxsize})"
            )

    def weight_of(self, tenant: str) -> float:
        """`tenant_weights`' weight of a tenant (1 by default), checked."""
        weights = self.tenant_weights
        if weights is None:
            return 1.0
        weight = weights(tenant) if callable(weights) else weights.get(tenant, 1.0)
        check_weight(self.name, tenant, weight)
        return float(weight)

    @property
    def restart_limit(self) -> int:
        """`max_restarts`, or its default: 10 restarts per worker (within `within`)."""
        return (
            RESTARTS_PER_WORKER * self.workers if self.max_restarts is None else self.max_restarts
        )


@attrs.frozen(eq=False)
class Pipeline:
    """Queues chained so each stage's result is the next stage's payload.

    A submission to the pipeline's name returns one receipt that resolves with the last
    stage's result (a list, in order, if a stage fanned out with `FanOut`) or fails with
    the first failure, naming its stage. When a later stage is full, workers of the earlier
    stage wait, and in the end so does `submit`.
    """

    name: str
    stages: Sequence[Queue[Any]] = attrs.field(converter=_as_tuple)

    def __attrs_post_init__(self) -> None:
        _check_name("pipeline", self.name)
        if not self.stages:
            raise InvalidQueue(f"Pipeline({self.name!r}) needs at least one stage")
        seen: set[str] = set()
        for stage in self.stages:
            if not isinstance(stage, Queue):
                raise InvalidQueue(
                    f"Pipeline({self.name!r}) stages must be Queue objects, got {stage!r}"
                )
            if stage.name in seen:
                raise InvalidQueue(
                    f"Pipeline({self.name!r}) uses queue {stage.name!r} twice; a stage "
                    "waiting on itself could deadlock: declare a second Queue"
                )
            seen.add(stage.name)


@attrs.frozen
class FanOut:
    """Return this from a pipeline stage to hand several payloads to the next stage.

    The pipeline's receipt then resolves to the list of final results, in order.
    """

    items: Sequence[Any] = attrs.field(converter=_as_tuple)

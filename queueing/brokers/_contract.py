"""The broker contract: what a broker stores, and the calls the engine makes to it.

A broker is storage. It keeps accepted tasks until each reaches exactly one outcome, with
the queue's limits, leases, delays, dead letters and kept outcomes. It knows nothing of
workers, actors, receipts, cancel scopes or counters: the engine (the dispatcher, the
worker pools and the receipt side) does all of that, on every broker alike, through the
calls below. docs/concepts/brokers.md says how to write one; tests/contract runs the same
scenarios on every broker.

Two kinds of broker, by `shared`:

- in-process (`shared = False`, `memory://`): only this process uses the storage. A task
  accepted ready is handed to this process's workers by the engine at once; `claim`
  returns only tasks that became ready inside the broker later (a delay or a retry
  backoff ran out). Such a broker answers `lookup_nowait`; with no I/O to wait for, it may
  also offer `accept_nowait` and `settle_nowait` (`nowait = True`; its async forms do the
  same): the engine's per-task path then makes no coroutine per call.
- shared (`shared = True`, `redis://`, `sqlite://`, `amqp://`): many processes use one
  storage. Every ready task is taken with `claim`, which leases it to this process until
  it is settled, retried or its lease runs out (`lease` seconds without `renew`): then it
  is claimable again, by any process, with its `deliveries` count kept.

Fair share. A task may have a tenant (`tenant_of`: `submit(tenant=)`); one without is of
the queue's default tenant. Among the ready tasks of one priority, every broker hands them
out in the same order, start-time fair queuing over flows (a flow: the ready tasks of one
tenant at one priority, FIFO; it exists while it has some):

- each priority of a queue has a virtual time `V` (0 at first), each flow a start tag `S`;
- a flow that gets its first ready task starts at `S = V`;
- the next task is the head of the flow with the highest priority, then the lowest `S`,
  then the one whose `S` was set first (in the order flows got their tags);
- taking a flow's task sets `V = S` (of its priority), then `S += 1 / weight` for the
  flow's next task (`QueueInfo.weight_of`, 1 by default).

So tenants with tasks waiting take turns, one task each (with weights, in proportion), in
the order they arrived; a tenant that submits 10,000 tasks first delays a tenant that
submits after it by at most one task per other tenant; a queue without tenants is FIFO.
A retried task (`retry_at`) joins the back of its flow once due (with `retry_ahead`, the
front, behind the flow's earlier due retries); a task handed back (released, its lease
ran out, its worker crashed) goes first, as without tenants. With `tenant_concurrency`,
a tenant with that many tasks claimed and not yet settled, retried or released is
skipped: its flows are set aside, and come back with `S = max(S, V)` once it is below the
limit. Taking a task costs the same with 10 or 10,000 tenants waiting (at most
logarithmic in the number of flows).

Task ids are `<queue>:<unique>` (queue names never contain `:`), so a broker finds a
task's queue from its id alone (`lookup`, `cancel`). A pipeline run's id is
`<pipeline>:<unique>`; its stage tasks' ids are `<stage queue>:<run id>.<suffix>`, so a
stage task's run is found from its id too (`run_of`).

Methods need not checkpoint (the engine does); a method that talks to a server retries
lost connections itself and raises `BrokerError` only when it gives up. The methods the
engine's background loops call (`claim`, `renew`, `wait_settled`, `run`) never give up on a
storage that is only away for now: they log and retry (a loop that raised would have its
actor restarted, and past a few restarts the system stops), and raise only for what no
retry can fix (a bad configuration, a schema it does not know). Times called
"broker clock" are `broker.clock()` seconds (trio's clock in memory, so tests can use a
MockClock; wall-clock seconds elsewhere); `submitted_at`/`finished_at` are wall clock.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import attrs
import trio

from .._exceptions import BrokerError
from .._ratelimit import LocalRates, RateLimit
from .._task import DeadLetter, ErrorInfo, PipelineTask, Progress, Task, TaskState

#: The shortest lease (seconds) a shared broker takes. A process renews the leases of the
#: tasks it runs every `lease / 3`, each renewal a round trip to the broker: a lease much
#: shorter than that round trip runs out between two renewals, and every running task
#: would be delivered again to another process.
MIN_LEASE = 0.1


def check_lease(lease: float) -> float:
    """The lease, or `BrokerError` when it is shorter than `MIN_LEASE`."""
    if lease < MIN_LEASE:
        raise BrokerError(
            f"lease must be at least {MIN_LEASE:g} seconds (leases are renewed every "
            f"lease / 3, each renewal a round trip to the broker), got {lease!r}: "
            "use a lease longer than a network blip, e.g. ?lease=30 (the default)"
        )
    return lease


def query_options(query: str, where: str) -> list[tuple[str, str]]:
    """A broker URL's query options, in their order; `BrokerError` for one given twice
    (which of them would win is a guess: a prefix names another system). `where` names
    the URL in the message ("bad Redis URL '...'")."""
    options = parse_qsl(query, keep_blank_values=True)
    seen: set[str] = set()
    for key, _ in options:
        if key in seen:
            raise BrokerError(f"{where}: option {key!r} is given twice; give it once")
        seen.add(key)
    return options


def queue_of(task_id: str) -> str:
    """The queue (or pipeline) named in a task id; "" if the id names none."""
    head, sep, _ = task_id.partition(":")
    return head if sep else ""


def run_of(task_id: str) -> str | None:
    """The run a pipeline stage task's id belongs to (None for any other id)."""
    _, sep, rest = task_id.partition(":")
    pipeline, sep2, tail = rest.partition(":")
    if not sep or not sep2 or "." not in tail:
        return None
    return f"{pipeline}:{tail.partition('.')[0]}"  # the unique part has no dot


@attrs.frozen
class QueueInfo:
    """What a broker knows of one queue: its name and its limits."""

    name: str
    maxsize: int
    """The most outstanding tasks (accepted, without an outcome yet)."""
    max_payload: int
    """The most bytes of one serialized payload (a broker refuses bigger stored entries)."""
    result_ttl: float
    """Seconds an outcome stays retrievable by id."""
    max_deliveries: int = 3
    """How many times a task may be handed to a worker that then crashed, for one attempt
    (the engine dead-letters it as poison past that; a broker with a delivery limit of its
    own, such as RabbitMQ's `x-delivery-limit`, sets it from this)."""
    shards: int = 1
    """How many parts a broker may spread the queue's storage over (Redis: hash tags, so
    Cluster slots); a broker that has no use for it keeps the queue whole."""
    rate_limit: RateLimit | None = None
    """The most task starts per period (`take_start`), per key if the queue has a
    `rate_key`; None: no limit (the engine then never calls `take_start`)."""
    retry_ahead: bool = False
    """Whether a task made ready again by `retry_at` (attempts > 0) starts, once due, ahead
    of the tasks waiting at its priority that were never tried (retries among themselves
    by due time), and never ahead of a higher priority. False: it joins the back of its
    priority like a new task. A task handed back by a crashed worker goes first either
    way (the engine does that, in process; a shared broker delivers an expired lease
    first)."""
    tenant_concurrency: int | None = None
    """The most tasks of one tenant (`tenant_of`) claimed and without an outcome or a
    retry at once, over every process (see `Broker.claim`); None: no limit."""
    tenant_maxsize: int | None = None
    """The most outstanding tasks of one tenant (`accept` answers TENANT_FULL past it)."""
    weight_of: Callable[[str], float] | None = None
    """A tenant's share of the starts (`Queue(tenant_weights=)`; None: 1 for every
    tenant). Used by the process that claims (a client that submits may not know it)."""


@attrs.frozen
class TenantFigures:
    """One tenant's tasks in one queue, now (`QueueSystem.tenants`, `queueing status`)."""

    tenant: str
    """Its name; "" for the default tenant (the tasks without one)."""
    waiting: int
    """Ready (or due) and not claimed."""
    running: int
    """Claimed and without an outcome or a retry (what `tenant_concurrency` caps)."""


class Admission(enum.Enum):
    """What `accept` did with a new task."""

    ACCEPTED = "accepted"
    """Stored: it counts toward `maxsize` until it has an outcome."""
    FULL = "full"
    """Not stored: the queue holds `maxsize` outstanding tasks."""
    TENANT_FULL = "tenant full"
    """Not stored: the task's tenant holds `tenant_maxsize` outstanding tasks (the queue
    itself has room)."""
    EXISTS = "exists"
    """Not stored again: a task with that id was accepted before (a repeated submit,
    a pipeline stage run twice). Ids are unique, so this is the same task."""


class Broker(abc.ABC):
    """Storage of tasks until each reaches exactly one outcome.

    Capabilities are class attributes, not types: the engine never checks which broker it
    has, only what it can do.
    """

    #: Whether accepted tasks survive this process (and, for a server, a restart of it).
    durable: bool = False
    #: Whether other processes take tasks from the same storage (see the module doc).
    shared: bool = False
    #: Whether `accept_nowait` and `settle_nowait` work (in-process brokers): the engine's
    #: per-task path then calls them instead of their async forms.
    nowait: bool = False
    #: Seconds a claimed task stays leased without `renew` (shared brokers).
    lease: float = math.inf
    #: The clock of due times, deadlines and leases (seconds).
    clock: Callable[[], float] = staticmethod(trio.current_time)
    #: Pipeline runs (see `RunStore`).
    runs: RunStore
    #: `take_start`'s default: rate limits kept in this process (made at the first call).
    _local_rates: LocalRates | None = None

    # -- life ------------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, queues: Mapping[str, QueueInfo], *, serve: bool) -> AsyncIterator[None]:
        """Hold connections for the system's life, for `queues` (all this process knows
        of). `serve`: this process runs workers for them (declare what a consumer needs);
        False for a client that only submits and reads outcomes. Raises `BrokerError` with
        the reason (unreachable, bad credentials) if it cannot be used."""
        yield

    async def run(self) -> None:
        """Background work for the system's life (promoting due tasks, batching writes,
        heartbeats), until cancelled. The default has none."""
        await trio.sleep_forever()

    async def flush(self) -> None:  # noqa: B027 - optional: nothing to wait for by default
        """Wait until every write made so far has reached the storage (at shutdown)."""

    async def abandon(self, reason: str) -> list[Task]:
        """At shutdown, after the workers stopped. A durable broker keeps unfinished tasks
        (another process or a restart runs them) and returns []; one that is not durable
        settles each one CANCELLED with `reason` and returns them."""
        return []

    # -- the client side -------------------------------------------------------------------

    @abc.abstractmethod
    async def accept(self, queue: QueueInfo, task: Task, *, due: float | None = None) -> Admission:
        """Store a new task, atomically with `queue.maxsize`: ACCEPTED only while fewer than
        `maxsize` tasks of the queue are outstanding. With `due` (broker clock) it becomes
        ready then (SCHEDULED until); else it is ready now (a shared broker makes it
        claimable; an in-process one leaves its delivery to the engine)."""

    def accept_nowait(self, queue: QueueInfo, task: Task) -> Admission:
        """`accept` of a ready task without waiting, by in-process brokers."""
        raise NotImplementedError(f"{type(self).__name__} accepts with `await accept()`")

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        """Store new ready tasks in order, as many as fit: returns how many of the first
        were ACCEPTED (or EXISTS): it stops at the first FULL or TENANT_FULL. The default
        accepts one at a time."""
        taken = 0
        for task in tasks:
            admission = await self.accept(queue, task)
            if admission is Admission.FULL or admission is Admission.TENANT_FULL:
                break
            taken += 1
        return taken

    @abc.abstractmethod
    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        """Return when the queue may have room (an outcome was recorded since), or after
        `timeout` seconds. A hint: `accept` decides."""

    @abc.abstractmethod
    async def lookup(self, task_id: str) -> Task | None:
        """The stored record (with its outcome once it has one); None if the id is unknown
        or its outcome's TTL ran out."""

    def lookup_nowait(self, task_id: str) -> Task | None:
        """`lookup` without waiting, by in-process brokers (the record itself)."""
        raise NotImplementedError(f"{type(self).__name__} looks tasks up with `await lookup()`")

    @abc.abstractmethod
    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        """The records of those of `task_ids` that have an outcome; when none has yet, wait
        up to `timeout` seconds for one to get it (then [] if none did). The stored outcome
        is what counts: a notice that was lost or trimmed must not keep a caller waiting.

        `task_ids` may be a live set (the engine passes its own, which grows while the call
        waits): a broker reads it again when it wakes, rather than copying it once.

        An id whose record the storage lost (a server restarted without persistence, a
        flush) comes back as a record in state `LOST`, once the broker is sure (its record
        is gone, checked again after a delay): no caller waits forever for it."""

    def on_outcome(self, deliver: Callable[[Task], bool]) -> None:  # noqa: B027 - optional
        """Optional, for a broker that learns of outcomes by itself (a notice read): it may
        call `deliver(record)` with a record that got its outcome as soon as it has it,
        without waiting for a `wait_settled` call to hand it over (one turn of the
        scheduler less on the way to the receipt). `deliver` returns whether the record
        was waited for: one that was not is kept for `wait_settled` as before. The default
        calls nothing."""

    @abc.abstractmethod
    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        """Settle a task CANCELLED with `error` unless it has an outcome; returns its record
        if this call cancelled it, None if it had an outcome already or is unknown. A
        queued task is never handed out after this; a running one is settled now (its
        worker learns it at its next `renew`, or at once in process)."""

    # -- the worker side -------------------------------------------------------------------

    @abc.abstractmethod
    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        """Up to `n` ready tasks of `queue`, leased to this process; wait up to `wait`
        seconds when there is none. Includes tasks whose lease ran out (a dead process's),
        with their `deliveries` count. Ready tasks are taken by priority first, then by
        fair share between tenants (the module doc's "Fair share"); a queue whose tasks
        never had a tenant is plain FIFO within a priority. One process may have several
        claims of one queue under way at once (its dispatcher runs up to two, each for
        other idle workers): each hands out tasks no other claim does, and a claim
        cancelled before it returned hands back what it took."""

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        """Extend the leases of tasks this process holds; returns those it no longer does
        (another process reclaimed them after this one stalled past the lease, or they were
        settled elsewhere: cancelled, say; their `state` then says so). In process: []."""
        return []

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:  # noqa: B027
        """Hand back claimed tasks that were never started (shutdown), so that another
        process can take them without waiting out the lease. Optional."""

    @abc.abstractmethod
    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        """Record the task's outcome (`state` final) and release it: first outcome wins.
        Returns False if this process knows it had one already. Sets the outcome fields on
        `task` (`Task.settle`). May return before the write is durable (batched); `flush`
        waits for it. May wait while the broker is behind on writing (backpressure)."""

    def settle_nowait(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        """`settle` without waiting, by in-process brokers."""
        raise NotImplementedError(f"{type(self).__name__} settles with `await settle()`")

    @abc.abstractmethod
    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        """Release a task that failed an attempt and make it ready again at `due` (broker
        clock), with its record as it stands (attempts, error, first_started); SCHEDULED
        until then. It stays outstanding."""

    @abc.abstractmethod
    async def dead_letter(
        self, queue: QueueInfo, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        """`settle` with `state` (FAILED or DEAD_LETTERED) and keep the task among the
        queue's dead letters (bounded: the oldest go first)."""

    async def take_start(
        self, queue: QueueInfo, key: str, within: float, task_id: str | None = None
    ) -> float:
        """Book a start on `queue.rate_limit` (for `key`: "" for the queue as a whole):
        returns the seconds until the next free start of that key. When that is at most
        `within`, the start is booked for the caller (who starts a task then); else nothing
        is taken (the caller asks again later), unless `task_id` is given: then the start
        is booked for that task, which the caller defers to it, and the task's next call
        (with its id) finds its booking (the seconds until it; the booking is used once
        that is at most `within`) instead of booking another. The starts of a key with
        bookings also pass a limiter of the starts actually made (with
        `queue.rate_limit.slack`), so tasks that come back late for their bookings start
        late rather than lose them, and never bunch up. Atomic across every process that
        shares the storage; a booking is kept an hour past its time. The default keeps the
        limits in this process (exact in process; a shared broker without its own would
        limit each process on its own)."""
        assert queue.rate_limit is not None
        rates = self._local_rates
        if rates is None:
            rates = self._local_rates = LocalRates(self.clock)
        return float(rates.take(queue.name, queue.rate_limit, key, within, task_id))

    async def tenant_figures(self, queue: str, limit: int) -> list[TenantFigures] | None:
        """The tenants of `queue` with the most tasks waiting (then running), at most
        `limit`, over every process (for `queueing status` and `inspect`). None (the
        default, in-process brokers): the engine counts them itself."""
        return None

    async def rate_figures(self) -> dict[str, dict[str, Any]]:
        """Each rate-limited queue's figures, over every process sharing the storage (for
        `queueing status`): `limit` (its text, "100/s"), `last_period` (starts in the last
        complete period of the limit) and `started` (all starts so far). The default:
        those of the limits `take_start`'s default keeps in this process."""
        rates = self._local_rates
        return {} if rates is None else rates.figures()

    # -- dead letters and figures ----------------------------------------------------------

    @abc.abstractmethod
    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        """The newest `limit` dead letters of `queue`, oldest first."""

    @abc.abstractmethod
    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        """Remove and return dead letters: those with `ids`, or all of the queue's."""

    @abc.abstractmethod
    async def outstanding(self, queue: str) -> int:
        """Tasks of `queue` accepted and without an outcome (all processes)."""

    async def declared(self) -> dict[str, QueueInfo]:
        """The queues that serving processes declared (for a client that knows none)."""
        return {}

    async def figures(self, queue: str) -> dict[str, int] | None:
        """A shared broker's figures of `queue`, over every process: `outstanding`,
        `in_flight`, `scheduled`, `dead_letters`, and the totals `submitted`, `succeeded`,
        `failed`, `retried`, `dead_lettered`, `cancelled`, `expired` it keeps (those it
        does not keep are left out). None: figures are only this process's (the default)."""
        return None

    def figures_nowait(self, queue: str) -> dict[str, int] | None:
        """By in-process brokers: the figures of `queue` that only the broker knows
        (`dead_letters`: how many it keeps), without waiting, for metrics read at any
        moment. None (the default): a shared broker's come from `figures`."""
        return None

    # -- progress (optional) ----------------------------------------------------------------

    async def store_progress(
        self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]
    ) -> None:
        """Keep the latest progress of tasks of `queue` this process runs (a batch: the
        engine coalesces a handler's reports), replacing what was kept for each; kept as
        long as the task's outcome is (the queue's `result_ttl`) or longer, and bounded.
        Best effort: a `BrokerError` loses this batch only (the next report goes again).

        The default does not store progress: `Worker.progress` then reaches only the
        receipts of this process."""
        raise NotImplementedError(
            f"{type(self).__name__} does not store task progress (Broker.store_progress): "
            "receipts in other processes do not see it; use a broker that does (memory://, "
            "sqlite://, redis://)"
        )

    async def read_progress(self, task_ids: Collection[str]) -> dict[str, Progress]:
        """The latest stored progress of those of `task_ids` that have any (a task that
        never reported, or whose progress is no longer kept, is left out)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not store task progress (Broker.read_progress)"
        )

    async def declare_pipelines(self, pipelines: Mapping[str, Sequence[str]]) -> None:  # noqa: B027
        """Publish the pipelines a serving process runs (name: its stage queues, in order),
        so that a client that knows none can submit to them by name. Optional: a broker
        without it leaves such clients to pass the `Pipeline` objects to `connect()`."""

    async def declared_pipelines(self) -> dict[str, tuple[str, ...]]:
        """The pipelines serving processes published (`declare_pipelines`)."""
        return {}

    async def declare_payload_types(self, types: Mapping[str, str]) -> None:  # noqa: B027
        """Publish the payload type of each queue a serving process runs (queue name: a
        description as JSON text, opaque to the broker), replacing what was published for
        that queue, so that a client that knows none checks payloads before it submits.
        Optional: a broker without it leaves such clients to check nothing."""

    async def declared_payload_types(self) -> dict[str, str]:
        """The latest description published for each queue (`declare_payload_types`)."""
        return {}


class RunStore(abc.ABC):
    """Pipeline runs: a run is a task of its own (its record is a `PipelineTask` named by the
    pipeline), resolved when its last branch ends or at its first failure. Every step is
    idempotent: a stage task that runs twice after a crash repeats them harmlessly."""

    @abc.abstractmethod
    async def start(
        self, run: PipelineTask, queue: QueueInfo, first: PipelineTask, *, due: float | None
    ) -> Admission:
        """Accept a pipeline submission: `first` into `queue` as `Broker.accept` does and,
        only if it is ACCEPTED, the run's record (findable by `lookup`)."""

    @abc.abstractmethod
    async def ended(self, run_id: str) -> bool:
        """Whether the run has an outcome already (its stage tasks are then skipped)."""

    @abc.abstractmethod
    async def advance(
        self, run_id: str, stage_task_id: str, children: int, fanned: bool
    ) -> PipelineTask | None:
        """A stage task succeeded and hands `children` payloads to the next stage (counted
        once per stage task). Returns the run's record if this completed it (no branch
        left: a fan-out to nothing)."""

    @abc.abstractmethod
    async def branch_done(
        self, run_id: str, path: tuple[int, ...], result: Any
    ) -> PipelineTask | None:
        """A last-stage task succeeded with `result` (once per branch). Returns the run's
        record, SUCCEEDED with every branch's result (a list by path if it fanned out), if
        this was the last branch."""

    @abc.abstractmethod
    async def end(
        self, run_id: str, stage: PipelineTask, state: TaskState, error: ErrorInfo | None
    ) -> PipelineTask | None:
        """A stage task ended without a result, or the run was cancelled: the run ends with
        `state` (first outcome wins; its `stage`, `attempts` and `deliveries` from `stage`).
        Returns the run's record if this call ended it."""

"""The live side of one queue in this process: its codecs, its buffer, its figures."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import cattrs
import trio

from ._convert import Codec, handler_types
from ._stats import Latency
from .brokers._contract import QueueInfo

if TYPE_CHECKING:
    from actors import ActorRef, Mailbox

    from ._observe import EndHook, SendHook, StartHook, Timings
    from ._queue import Queue
    from ._ranked import Fair, Ranked
    from ._task import Task


class QueueRuntime:
    """One queue as this process runs it.

    The counters are the one place figures are recorded (the engine updates them; brokers
    never do). `buffer` is the queue's in-process buffer of ready tasks, an
    `actors.Mailbox` owned by the dispatcher and read by the pool's workers (None in a
    client that serves no queue).

    Slots: the engine, the workers and the broker read and count here several times per
    task, and an instance dict of this many attributes is a dict lookup per read (CPython
    shares the keys of an instance dict only up to 30 attributes).
    """

    __slots__ = (
        "buffer",
        "cancelled",
        "dead_lettered",
        "direct_int",
        "direct_result_str",
        "direct_str",
        "ended",
        "expired",
        "failed",
        "fair",
        "held",
        "id_prefix",
        "in_flight",
        "info",
        "latency",
        "limiter",
        "name",
        "outstanding",
        "payload_codec",
        "pool",
        "ranked",
        "ranking",
        "reclaimed",
        "result_codec",
        "retried",
        "room_waiters",
        "scheduled",
        "sending",
        "spec",
        "starting",
        "submitted",
        "succeeded",
        "sync",
        "timings",
    )

    def __init__(self, spec: Queue[Any], converter: cattrs.Converter) -> None:
        self.spec = spec
        self.name = spec.name
        self.info = QueueInfo(
            spec.name,
            spec.maxsize,
            spec.max_payload,
            spec.result_ttl,
            spec.max_deliveries,
            spec.shards,
            spec.rate_limit,
            spec.retry_ahead,
            spec.tenant_concurrency,
            spec.tenant_maxsize,
            None if spec.tenant_weights is None else spec.weight_of,
        )
        payload_type, result_type = handler_types(spec.worker.handle)
        self.payload_codec = Codec(converter, payload_type, spec.name, "payload")
        self.result_codec = Codec(converter, result_type, spec.name, "result", spec.max_result)
        # The longest str result taken as it is (within `max_result` at 6 bytes a
        # character, the longest JSON escape, plus the quotes).
        self.direct_result_str = (spec.max_result - 2) // 6
        # Payloads submit may take as they are (no converter, no size count): an int of at
        # most 24 bytes of JSON, a str at most 6 bytes a character (escapes) plus quotes.
        limit = spec.max_payload
        self.direct_int = payload_type in (Any, int) and limit >= 24
        self.direct_str = (limit - 2) // 6 if payload_type in (Any, str) else -1
        self.sync = not inspect.iscoroutinefunction(spec.worker.handle)
        self.limiter = trio.CapacityLimiter(spec.threads or spec.workers) if self.sync else None
        self.buffer: Mailbox | None = None
        #: In process, once a task with a priority was submitted: the waiting tasks by
        #: priority, which the dispatcher feeds to the buffer on demand (`_ranked.py`).
        self.ranked: Ranked | None = None
        self.ranking = trio.Event()  # set when `ranked` is made
        #: In process, once a task with a tenant was submitted: `ranked` is this store,
        #: which shares waiting tasks out between tenants (`_ranked.Fair`).
        self.fair: Fair | None = None
        #: Tasks this process claimed from a shared broker and has not settled (leases).
        self.held: dict[str, Task] = {}
        self.pool: ActorRef | None = None
        self.in_flight = 0
        #: Accepted here and without an outcome (exact for an in-process broker).
        self.outstanding = 0
        self.room_waiters = 0
        self.scheduled = 0
        self.submitted = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.cancelled = 0
        self.expired = 0
        #: Tasks this process claimed again after an earlier delivery ended without an
        #: outcome (a lease ran out: its process died or stalled).
        self.reclaimed = 0
        self.latency = Latency()
        #: What the ids of its tasks start with ("<queue>:<the engine's prefix>"): set by
        #: the engine.
        self.id_prefix = ""
        # Observers' hooks (metrics, traces; see `_observe.py`). Empty unless one is
        # registered: where they are called, an empty list costs one truthiness check.
        self.sending: list[SendHook] = []
        self.starting: list[StartHook] = []
        self.ended: list[EndHook] = []
        #: The metrics' histograms' observations, recorded by the worker loop itself.
        self.timings: Timings | None = None

    def restarts(self) -> int:
        """Worker restarts so far (the pool's children's)."""
        pool = self.pool
        if pool is None or not pool.is_alive:
            return 0
        return sum(ref.stats().restarts for ref in pool.which_children())

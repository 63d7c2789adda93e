"""The Redis Streams broker (`redis://`, `rediss://`): many processes, many machines.

Layout, flows and guarantees are described in docs/concepts/delivery-guarantees.md.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import secrets
import socket
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
import trio

from .._exceptions import BrokerError, QueueFull, SystemStopping, UnknownTask
from .._queue import Full
from .._receipt import PipelineReceipt
from .._task import DeadLetter, Envelope, ErrorInfo, TaskState
from . import _scripts
from ._base import Broker
from ._wire import (
    BadEntry,
    apply_outcome,
    decode_dead_letter,
    decode_envelope,
    encode_dead_letter,
    encode_envelope,
    encode_outcome,
    path_key,
)

if TYPE_CHECKING:
    import coredis

    from .._runtime import QueueRuntime

log = logging.getLogger("queueing.redis")
T = TypeVar("T")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_COUNTERS = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.EXPIRED: "expired",
    TaskState.DEAD_LETTERED: "dead_lettered",
}


@functools.cache
def _retryable_errors() -> tuple[type[BaseException], ...]:
    """What `_retrying` retries: a lost connection, or a Redis that lost its scripts or
    groups (restarted). Built once: coredis is imported only when the broker is used."""
    import coredis.exceptions as ce

    return (
        ce.ConnectionError,
        OSError,
        TimeoutError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        ce.NoScriptError,
        ce.StreamConsumerGroupError,
    )


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take our own options (`prefix`, `lease`) out of the URL's query string."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs = []
    for key, value in parse_qsl(parts.query):
        if key in ("prefix", "lease"):
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


_SCRIPTS = (
    "SUBMIT",
    "FINISH",
    "RETRY",
    "PROMOTE",
    "REJECT_ENTRY",
    "ADVANCE",
    "BRANCH",
    "RUN_FAIL",
    "RENEW",
)


# The longest blocking read a caller's task makes (waiting for room, drain): a cancellation
# waits for it to end (see RedisBroker._attempt).
_SHIELDED_BLOCK = 0.05
# How much longer than `block` one shielded call may take before it is given up.
_ATTEMPT_GRACE = 10.0


class _Slot:
    __slots__ = ("answer", "args", "error", "event", "keys")

    def __init__(self, keys: list[str], args: list[Any]) -> None:
        self.keys = keys
        self.args = args
        self.answer = 0
        self.error: BaseException | None = None
        self.event = trio.Event()


class _Op:
    __slots__ = ("args", "keys", "script")

    def __init__(self, script: str, keys: list[str], args: list[Any]) -> None:
        self.script = script
        self.keys = keys
        self.args = args


class RedisBroker(Broker):
    """Tasks in Redis Streams: consumer groups, leases, reclaim, delayed retries, results.

    Args:
        url: `redis://[user:password@]host:port/db` or `rediss://...` for TLS.
        prefix: every key starts with `{prefix:...}`; one prefix per system.
        lease: seconds a fetched task stays ours without a heartbeat; a dead worker's
            tasks are reclaimed by others after this long.
        block: seconds one blocking read waits before it checks again.
        connect_timeout: seconds to reach Redis at start-up before `BrokerError`.
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "queueing",
        lease: float = 30.0,
        block: float = 2.0,
        connect_timeout: float = 5.0,
        max_dead_letters: int = 10_000,
    ) -> None:
        url, options = _split_options(url)
        prefix = options.get("prefix", prefix)
        lease = float(options.get("lease", lease))
        if not prefix or any(c in prefix for c in "{}: "):
            raise BrokerError(
                f"prefix must be non-empty without '{{', '}}', ':' or spaces: {prefix!r}"
            )
        if not math.isfinite(lease) or lease <= 0:
            raise BrokerError(f"lease must be a number of seconds > 0, got {lease!r}")
        self.url = url
        self.prefix = prefix
        self.lease = lease
        self.block = block
        self.connect_timeout = connect_timeout
        self.max_dead_letters = max_dead_letters
        self.clock: Callable[[], float] = time.time
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.congested = False
        #: False for a client that only submits (`queueing.connect`): no fetching.
        self.serving = True
        self._client: coredis.Redis[str] | None = None
        self._shas: dict[str, str] = {}
        self._runtimes: dict[str, QueueRuntime] = {}
        self._ops: list[_Op] = []
        self._ops_lot = trio.lowlevel.ParkingLot()
        self._flushed = trio.lowlevel.ParkingLot()
        self._held: dict[str, dict[str, tuple[Envelope, str | None]]] = {}
        self._reply_to: dict[str, str | None] = {}
        self._waiting: weakref.WeakValueDictionary[str, Envelope] = weakref.WeakValueDictionary()
        self._foreign: weakref.WeakValueDictionary[str, Envelope] = weakref.WeakValueDictionary()
        self._foreign_lot = trio.lowlevel.ParkingLot()
        #: Where `_done_loop` reads the `done` stream from (None: no one is waiting).
        self._done_from: str | None = None
        # Promoters sleep until the earliest due time (at most 1 s) or until a retry or a
        # delayed task of ours is written, which may be due sooner.
        self._promote_lot = trio.lowlevel.ParkingLot()
        self._scheduled = False
        #: Queues whose lease check found no free worker: their fetch loop reclaims
        #: first when one frees up (a dead worker's tasks must not wait for a backlog).
        self._reclaim_due: set[str] = set()
        self._cache: dict[str, dict[str, int]] = {}
        self._submits: list[_Slot] = []
        self._submit_lot = trio.lowlevel.ParkingLot()

    # -- keys ------------------------------------------------------------------------------

    def _k(self, queue: str, what: str) -> str:
        return f"{{{self.prefix}:{queue}}}:{what}"

    def _g(self, what: str) -> str:
        return f"{{{self.prefix}}}:{what}"

    @property
    def client(self) -> coredis.Redis[str]:
        if self._client is None:
            raise BrokerError("the Redis broker is not connected (use it inside open_system)")
        return self._client

    # -- connection ------------------------------------------------------------------------

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        try:
            import coredis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BrokerError(
                "the Redis broker needs coredis: pip install 'trio-queueing[redis]'"
            ) from exc
        try:
            client = coredis.Redis.from_url(
                self.url, decode_responses=True, connect_timeout=self.connect_timeout
            )
        except Exception as exc:
            raise BrokerError(f"bad Redis URL {self._safe_url()!r}: {exc}") from exc
        # Errors are raised after the client's task group has closed, so that the caller
        # gets them as they are (as with memory://), not wrapped in an ExceptionGroup.
        error: Exception | None = None
        async with client:
            self._client = client
            try:
                with trio.fail_after(self.connect_timeout):
                    await client.ping()
                    await self._load_scripts()
                    if self.serving:
                        for name, rt in self._runtimes.items():
                            await self._declare(name, rt)
            except trio.TooSlowError:
                error = BrokerError(
                    f"cannot reach Redis at {self._safe_url()} within {self.connect_timeout:g}s: "
                    "check the host, port and network"
                )
            except BrokerError as exc:
                error = exc
            except Exception as exc:
                error = BrokerError(
                    f"cannot use Redis at {self._safe_url()}: {type(exc).__name__}: {exc} "
                    "(check the URL, the password or ACL user, and rediss:// for TLS)"
                )
                error.__cause__ = exc
            if error is None:
                try:
                    yield
                except Exception as exc:
                    error = exc
                finally:
                    self._client = None
        self._client = None
        if error is not None:
            raise error

    def _safe_url(self) -> str:
        if "@" in self.url:
            scheme, rest = self.url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.url

    async def _declare(self, name: str, rt: QueueRuntime) -> None:
        client = self.client
        try:
            await client.xgroup_create(self._k(name, "ready"), "workers", "0", mkstream=True)
        except Exception as exc:
            import coredis.exceptions

            # Declared already (another worker, or an earlier run): coredis parses the
            # BUSYGROUP reply into this error, whose message lacks the word.
            busy = isinstance(exc, coredis.exceptions.StreamDuplicateConsumerGroupError)
            if not busy and "BUSYGROUP" not in str(exc):
                raise
        spec = rt.spec
        config = {"maxsize": spec.maxsize, "max_payload": spec.max_payload}
        await client.hset(self._g("queues"), {name: _dumps(config)})

    def attach(self, runtimes: dict[str, QueueRuntime]) -> None:
        self._runtimes = runtimes
        for name in runtimes:
            self._held[name] = {}

    # -- resilience ------------------------------------------------------------------------

    async def _retrying(
        self, what: str, fn: Callable[[], Awaitable[T]], *, background: bool = False
    ) -> T:
        """Run `fn`, retrying lost connections with jittered backoff (no limit).

        Each attempt is shielded from the caller's cancellation (see `_attempt`), except
        for the background loops' blocking reads (`background=True`), which are cancelled
        only when the system stops and closes the client anyway.
        """
        import coredis.exceptions as ce

        retryable = _retryable_errors()
        try:
            # The common case, without building a tenacity retry object per call.
            return await self._attempt(what, fn, background)
        except retryable:
            pass  # handled (and retried) below

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("redis %s failed (%s); retrying", what, exc)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(retryable),
            wait=tenacity.wait_exponential(multiplier=0.05, max=2.0)
            + tenacity.wait_random(0, 0.05),
            sleep=trio.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await self._attempt(what, fn, background)
                except ce.NoScriptError:
                    # Redis restarted (its script cache is empty) or SCRIPT FLUSH ran.
                    await self._load_scripts()
                    raise
                except ce.StreamDuplicateConsumerGroupError:
                    raise
                except ce.StreamConsumerGroupError:
                    # NOGROUP: Redis lost our groups (restarted without persistence, or
                    # FLUSHALL); declare them again so the workers go on.
                    for name, rt in self._runtimes.items() if self.serving else ():
                        await self._declare(name, rt)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, what: str, fn: Callable[[], Awaitable[T]], background: bool) -> T:
        """One call to Redis, which the caller's cancellation does not interrupt.

        coredis (6.9) loses a slot of its connection pool for good whenever a command is
        cancelled midway: after 64 of them (a `move_on_after` around a `submit` that waits
        for room, say) every later command waits forever. So a cancellation waits for the
        command to finish: one round trip, or at most `_SHIELDED_BLOCK` for the blocking
        reads callers make. Its own deadline still ends a command Redis never answers.
        """
        if background:
            return await fn()
        answered = False
        with trio.CancelScope(
            shield=True, deadline=trio.current_time() + self.block + _ATTEMPT_GRACE
        ):
            result = await fn()
            answered = True
        if not answered:
            raise BrokerError(
                f"redis {what} got no answer within {self.block + _ATTEMPT_GRACE:g}s; "
                "is the server overloaded or stopped?"
            )
        await trio.lowlevel.checkpoint_if_cancelled()  # the caller's cancellation, now
        return result

    async def _load_scripts(self) -> None:
        for name in _SCRIPTS:
            self._shas[name] = await self.client.script_load(getattr(_scripts, name))

    async def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.client.evalsha(self._shas[name], keys=keys, args=args)

    # -- submit ----------------------------------------------------------------------------

    def _submit_call(
        self, rt: QueueRuntime, env: Envelope, delay: float | None
    ) -> tuple[list[str], list[Any]]:
        name = rt.name
        due = "" if not delay else str(int((self.clock() + delay) * 1000))
        pending = "P" + _dumps(
            {"state": "pending", "queue": name, "submitted_at": env.submitted_at}
        )
        return (
            [
                self._k(name, "outstanding"),
                self._k(name, "ready"),
                self._g(f"task:{env.id}"),
                self._k(name, "delayed"),
                self._k(name, "envs"),
                self._k(name, "stats"),
            ],
            [rt.spec.maxsize, env.id, encode_envelope(env, self.consumer), pending, due],
        )

    async def submit(
        self,
        rt: QueueRuntime,
        env: Envelope,
        when_full: Full,
        timeout: float | None,
        delay: float | None = None,
    ) -> None:
        keys, args = self._submit_call(rt, env, delay)
        await self._submit_until_accepted(rt, env, keys, args, when_full, timeout)
        if delay:
            self._promote_lot.unpark_all()

    async def _submit_until_accepted(
        self,
        rt: QueueRuntime,
        env: Envelope,
        keys: list[str],
        args: list[Any],
        when_full: Full,
        timeout: float | None,
    ) -> None:
        # Waiting before the script runs: a fast worker's reply can be read before this
        # task resumes (weak: a refused task's envelope just goes away).
        self._waiting[env.id] = env
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            answer = await self._submit_batched(keys, args)
            if answer == 1:
                break
            if answer == -1:
                if env.pipeline is not None:
                    return  # a stage that ran again submits the same children: done already
                raise BrokerError(f"task id {env.id!r} exists already in Redis")
            if when_full is Full.REJECT:
                raise QueueFull(rt.name, rt.spec.maxsize)
            left = deadline - trio.current_time()
            if left <= 0:
                raise QueueFull(rt.name, rt.spec.maxsize, timeout)
            # Finishing tasks push tokens to `room`; wait for one (a blocking read, short:
            # a cancellation waits for it to end, see _attempt).
            wait = max(0.01, min(left, _SHIELDED_BLOCK))
            await self._retrying(
                "wait for room", lambda: self.client.blpop([self._k(rt.name, "room")], timeout=wait)
            )
        rt.submitted += 1

    async def _submit_batched(self, keys: list[str], args: list[Any]) -> int:
        """Queue one submit script call for the submit loop, which sends every call queued
        meanwhile in one pipeline: concurrent submitters share round trips."""
        slot = _Slot(keys, args)
        self._submits.append(slot)
        if self._submit_lot:
            self._submit_lot.unpark()
        try:
            await slot.event.wait()
        except trio.Cancelled:
            for index, queued in enumerate(self._submits):
                if queued is slot:  # not sent yet: withdrawn, nothing was accepted
                    del self._submits[index]
                    raise
            # Already sent: Redis may be accepting it right now. Wait for the answer, so
            # that an accepted task's receipt reaches the caller; the caller's cancellation
            # takes effect at its next checkpoint.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.block + _ATTEMPT_GRACE
                await slot.event.wait()
            if not slot.event.is_set():
                raise BrokerError(
                    "Redis did not answer a submit in time (the task may have been accepted)"
                ) from None
        if slot.error is not None:
            raise slot.error
        return slot.answer

    async def _submit_loop(self) -> None:
        batch: list[_Slot] = []
        try:
            while True:
                if not self._submits:
                    await self._submit_lot.park()
                    continue
                batch, self._submits = self._submits[:500], self._submits[500:]
                await self._send_submits(batch)
        finally:
            # Stopped (the system shuts down): nobody is left to answer these.
            for slot in [*batch, *self._submits]:
                if not slot.event.is_set():
                    slot.error = SystemStopping(
                        "the system shut down before Redis answered this submit "
                        "(the task may have been accepted)"
                    )
                    slot.event.set()
            self._submits = []

    async def _send_submits(self, batch: list[_Slot]) -> None:
        sends = 0

        async def send() -> Any:
            nonlocal sends
            sends += 1
            async with self.client.pipeline(transaction=False) as pipe:
                calls = [
                    pipe.evalsha(self._shas["SUBMIT"], keys=slot.keys, args=slot.args)
                    for slot in batch
                ]
            return [await call for call in calls]

        try:
            answers = await self._retrying("submit", send)
        except Exception as exc:
            for slot in batch:
                slot.error = BrokerError(f"submit failed: {type(exc).__name__}: {exc}")
                slot.event.set()
            return
        for slot, answer in zip(batch, answers, strict=True):
            # Sent again after a lost connection: "exists" is our own earlier send
            # that Redis applied before the connection broke (ids are ours alone).
            slot.answer = 1 if sends > 1 and int(answer) == -1 else int(answer)
            slot.event.set()

    # -- pipeline runs ----------------------------------------------------------------------

    async def start_run(
        self,
        rt: QueueRuntime,
        stage: Envelope,
        run: PipelineReceipt,
        when_full: Full,
        timeout: float | None,
        delay: float | None = None,
    ) -> None:
        keys, args = self._submit_call(rt, stage, delay)
        keys += [self._g(f"task:{run.id}"), self._g(f"run:{run.id}")]
        marker = "P" + _dumps(
            {"state": "pending", "queue": run.queue, "submitted_at": run.submitted_at}
        )
        args += [marker, run.queue, self.consumer, run.submitted_at, max(1, int(rt.ttl))]
        self._waiting[run.id] = run  # before: the run may end before this task resumes
        await self._submit_until_accepted(rt, stage, keys, args, when_full, timeout)

    def run_ended(self, stage: Envelope) -> bool:
        return False  # checked in Redis: the scripts ignore branches of an ended run

    def _run_keys(self, stage: Envelope) -> list[str]:
        return [self._g(f"run:{stage.pipeline}"), self._g(f"task:{stage.pipeline}")]

    async def advance(self, stage: Envelope, children: int, fanned: bool) -> None:
        keys = self._run_keys(stage)
        args = [
            stage.id,
            children,
            "1" if fanned else "0",
            time.time(),
            self.prefix,
            stage.pipeline,
        ]
        await self._retrying("advance a pipeline", lambda: self._eval("ADVANCE", keys, args))

    def branch_done(self, stage: Envelope, data: Any) -> None:
        args = [path_key(stage.path), _dumps(data), time.time(), self.prefix, stage.pipeline]
        self._push(_Op("BRANCH", self._run_keys(stage), args))

    def fail_run(self, stage: Envelope, state: TaskState, error: ErrorInfo | None) -> None:
        run = PipelineReceipt(
            stage.pipeline or "", stage.route or "", None, stage.submitted_at, 0.0
        )
        run.state, run.error, run.stage = state, error, stage.stage
        run.attempts, run.deliveries, run.finished_at = (
            stage.attempts,
            stage.deliveries,
            time.time(),
        )
        args = [encode_outcome(run), 3600, self.prefix, stage.pipeline]
        self._push(_Op("RUN_FAIL", self._run_keys(stage), args))

    # -- the worker side -------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for rt in self._runtimes.values() if self.serving else ():
                nursery.start_soon(self._fetch_loop, rt)
                nursery.start_soon(self._promote_loop, rt)
            nursery.start_soon(self._flush_loop)
            nursery.start_soon(self._submit_loop)
            nursery.start_soon(self._lease_loop)
            nursery.start_soon(self._reply_loop)
            nursery.start_soon(self._done_loop)
            if self.serving:
                nursery.start_soon(self._heartbeat_loop)
            task_status.started()

    async def _fetch_loop(self, rt: QueueRuntime) -> None:
        ready_key = self._k(rt.name, "ready")
        held = self._held[rt.name]
        max_bytes = rt.spec.max_payload + 4096
        while True:
            free = len(rt.idle) - len(rt.ready)
            if free <= 0:
                await rt.hungry.park()
                continue
            if rt.name in self._reclaim_due:
                self._reclaim_due.discard(rt.name)
                await self._reclaim(rt, ready_key, int(self.lease * 1000), free)
                continue
            if self._ops:
                # Outcomes are waiting to be written: send them and ask for the next tasks
                # in one round trip (the common case for a busy worker).
                batch, self._ops = self._ops[:1000], self._ops[1000:]
                answer = await self._retrying(
                    "write outcomes and fetch",
                    lambda: self._send_and_fetch(batch, ready_key, free),
                    background=True,
                )
                self._after_flush()
            else:
                block_ms = int(self.block * 1000)
                answer = await self._retrying(
                    "fetch",
                    lambda: self.client.xreadgroup(
                        "workers",
                        self.consumer,
                        count=free,
                        block=block_ms,
                        streams={ready_key: ">"},
                    ),
                    background=True,
                )
            entries = (answer or {}).get(ready_key, ())
            if entries:
                await self._accept(rt, entries, held, max_bytes, redelivered=False)

    async def _send_and_fetch(self, batch: list[_Op], ready_key: str, count: int) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            for op in batch:
                pipe.evalsha(self._shas[op.script], keys=op.keys, args=op.args)
            fetch = pipe.xreadgroup("workers", self.consumer, count=count, streams={ready_key: ">"})
        return await fetch

    def _after_flush(self) -> None:
        if self._scheduled:
            self._scheduled = False
            self._promote_lot.unpark_all()
        if len(self._ops) <= 2000:
            self.congested = False
            self._flushed.unpark_all()

    async def _accept(
        self,
        rt: QueueRuntime,
        entries: Any,
        held: dict[str, tuple[Envelope, str | None]],
        max_bytes: int,
        *,
        redelivered: bool,
        deliveries: dict[str, int] | None = None,
    ) -> None:
        fresh: list[tuple[str, Envelope, str | None]] = []
        for entry in entries:
            try:
                env, reply_to = decode_envelope(dict(entry.field_values), rt.name, max_bytes)
            except BadEntry as exc:
                self._reject_entry(rt, entry.identifier, dict(entry.field_values), str(exc))
                continue
            env.entry = entry.identifier
            env.deliveries = (deliveries or {}).get(entry.identifier, 1) - 1
            fresh.append((entry.identifier, env, reply_to))
        for entry_id, env, reply_to in fresh:
            held[entry_id] = (env, reply_to)
            self._reply_to[env.id] = reply_to
            rt.push(env)

    def _reject_entry(
        self, rt: QueueRuntime, entry: str, fields: dict[str, Any], reason: str
    ) -> None:
        log.warning("queue %r: entry %s is not a task (%s); dead-lettered", rt.name, entry, reason)
        letter = encode_dead_letter(
            DeadLetter(
                id="",
                queue=rt.name,
                payload={str(k)[:100]: str(v)[:4096] for k, v in list(fields.items())[:20]},
                state=TaskState.DEAD_LETTERED,
                error=ErrorInfo("BadEntry", reason),
                attempts=0,
                deliveries=1,
                submitted_at=0.0,
                failed_at=time.time(),
            )
        )
        self._ops.append(
            _Op(
                "REJECT_ENTRY",
                [self._k(rt.name, "ready"), self._k(rt.name, "dead")],
                [entry, letter, self.max_dead_letters],
            )
        )
        self._ops_lot.unpark_all()

    def _finish_call(
        self, rt: QueueRuntime, env: Envelope, dead: str | None, notify: bool = True
    ) -> tuple[list[str], list[Any]]:
        name = rt.name
        reply_to = self._reply_to.pop(env.id, None)
        return (
            [
                self._g(f"task:{env.id}"),
                self._k(name, "ready"),
                self._k(name, "outstanding"),
                self._k(name, "stats"),
                self._g(f"replies:{reply_to or '-'}"),
                self._g("done"),
                self._k(name, "room"),
                self._k(name, "dead"),
                self._k(name, "delayed"),
                self._k(name, "envs"),
            ],
            [
                encode_outcome(env),
                max(1, int(rt.ttl)),
                env.entry or "",
                _COUNTERS.get(env.state, "cancelled"),
                env.id,
                dead or "",
                self.max_dead_letters,
                "1" if (reply_to and notify) else "0",
            ],
        )

    def finish(
        self,
        rt: QueueRuntime | None,
        env: Envelope,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        if rt is None or env.state.final:
            return False
        self._release(rt, env)
        env.state = state
        env.value = result
        env.error = error
        env.finished_at = time.time()
        if state is TaskState.SUCCEEDED:
            rt.succeeded += 1
            rt.latency.add(env.finished_at - env.submitted_at)
        elif state is TaskState.CANCELLED:
            rt.cancelled += 1
        elif state is TaskState.EXPIRED:
            rt.expired += 1
        self._push(_Op("FINISH", *self._finish_call(rt, env, None)))
        return True

    def dead_letter(
        self, rt: QueueRuntime, env: Envelope, state: TaskState, error: ErrorInfo | None
    ) -> None:
        if env.state.final:
            return
        self._release(rt, env)
        env.state = state
        env.error = error
        env.finished_at = time.time()
        if state is TaskState.FAILED:
            rt.failed += 1
        else:
            rt.dead_lettered += 1
        letter = encode_dead_letter(
            DeadLetter(
                id=env.id,
                queue=rt.name,
                payload=env.payload,
                state=state,
                error=error,
                attempts=env.attempts,
                deliveries=env.deliveries,
                submitted_at=env.submitted_at,
                failed_at=env.finished_at,
            )
        )
        self._push(_Op("FINISH", *self._finish_call(rt, env, letter)))

    def schedule(self, rt: QueueRuntime, env: Envelope, delay: float) -> None:
        self._release(rt, env)
        env.state = TaskState.SCHEDULED
        reply_to = self._reply_to.pop(env.id, None)
        due = str(int((self.clock() + delay) * 1000))
        name = rt.name
        self._push(
            _Op(
                "RETRY",
                [
                    self._k(name, "ready"),
                    self._k(name, "delayed"),
                    self._k(name, "envs"),
                    self._k(name, "stats"),
                    self._g(f"task:{env.id}"),
                ],
                [env.entry or "", env.id, encode_envelope(env, reply_to), due],
            )
        )
        self._scheduled = True

    def redeliver(self, rt: QueueRuntime, env: Envelope) -> None:
        # Still ours in the group's pending list; the next free worker here runs it.
        env.state = TaskState.PENDING
        rt.push_front(env)

    def _release(self, rt: QueueRuntime, env: Envelope) -> None:
        if env.entry is not None:
            self._held[rt.name].pop(env.entry, None)

    def _push(self, op: _Op) -> None:
        self._ops.append(op)
        if len(self._ops) > 2000:
            self.congested = True
        if self._ops_lot:
            self._ops_lot.unpark_all()

    async def flush(self) -> None:
        while self._ops:
            await self._flushed.park()
        await trio.lowlevel.checkpoint()

    async def relieve(self) -> None:
        while self.congested:
            await self._flushed.park()

    async def _flush_loop(self) -> None:
        while True:
            if not self._ops:
                self.congested = False
                self._flushed.unpark_all()
                await self._ops_lot.park()
                # Let a fetch loop woken at the same time take these outcomes along with
                # its next read (one round trip instead of two).
                await trio.lowlevel.checkpoint()
                continue
            batch, self._ops = self._ops[:1000], self._ops[1000:]

            async def send(batch: list[_Op] = batch) -> None:
                async with self.client.pipeline(transaction=False) as pipe:
                    for op in batch:
                        pipe.evalsha(self._shas[op.script], keys=op.keys, args=op.args)

            await self._retrying("write outcomes", send)
            self._after_flush()

    async def _lease_loop(self) -> None:
        """Renew the lease of every task we hold; reclaim tasks of dead workers."""
        lease_ms = int(self.lease * 1000)
        while True:
            await trio.sleep(self.lease / 3)
            for name, held in self._held.items():
                rt = self._runtimes[name]
                ready_key = self._k(name, "ready")
                if held:
                    ids = list(held)
                    lost = await self._retrying(
                        "renew leases",
                        lambda: self._eval("RENEW", [ready_key], [self.consumer, *ids]),
                    )
                    self._forget(rt, held, [str(entry) for entry in lost or ()])
                    await self._cancel_finished(rt, held)
                free = len(rt.idle) - len(rt.ready)
                if free > 0:
                    await self._reclaim(rt, ready_key, lease_ms, free)
                else:
                    self._reclaim_due.add(name)

    def _forget(
        self, rt: QueueRuntime, held: dict[str, tuple[Envelope, str | None]], lost: list[str]
    ) -> None:
        """Entries another process reclaimed (this one stalled past its lease) are its now:
        one not started here is dropped; one running here runs on, and the first outcome
        written wins."""
        for entry in lost:
            pair = held.pop(entry, None)
            if pair is None:
                continue
            env = pair[0]
            log.warning(
                "queue %r: task %s was reclaimed by another worker after this one stalled "
                "past its lease (%gs)",
                rt.name,
                env.id,
                self.lease,
            )
            if env.state is TaskState.PENDING:
                env.state = TaskState.CANCELLED  # local only: the worker skips it

    async def _cancel_finished(
        self, rt: QueueRuntime, held: dict[str, tuple[Envelope, str | None]]
    ) -> None:
        running = [env for env, _ in held.values() if env.state is TaskState.RUNNING]
        if not running:
            return
        keys = [self._g(f"task:{env.id}") for env in running]
        states = await self._retrying("check cancels", lambda: self.client.mget(keys))
        for env, state in zip(running, states, strict=True):
            if state is not None and state.startswith("F") and env.scope is not None:
                apply_outcome(env, state[1:])
                env.scope.cancel()

    async def _reclaim(self, rt: QueueRuntime, ready_key: str, lease_ms: int, free: int) -> None:
        answer = await self._retrying(
            "reclaim",
            lambda: self.client.xautoclaim(
                ready_key, "workers", self.consumer, lease_ms, "0-0", count=free
            ),
        )
        entries = [entry for entry in (answer[1] if answer else ()) if entry.field_values]
        deleted = list(answer[2]) if answer and len(answer) > 2 else []
        if deleted:  # cancelled (deleted) while a dead worker held them
            await self._retrying("ack", lambda: self.client.xack(ready_key, "workers", deleted))
        if not entries:
            return
        counts: dict[str, int] = {}
        for entry in entries:
            ident = str(entry.identifier)

            async def delivered(ident: str = ident) -> int:
                pending = await self.client.xpending(
                    ready_key, "workers", start=ident, end=ident, count=1
                )
                first = pending[0] if isinstance(pending, tuple) and pending else None
                return int(getattr(first, "delivered", 1))

            counts[ident] = await self._retrying("delivery count", delivered)
        log.warning("queue %r: reclaimed %d task(s) of a dead worker", rt.name, len(entries))
        await self._accept(
            rt,
            entries,
            self._held[rt.name],
            rt.spec.max_payload + 4096,
            redelivered=True,
            deliveries=counts,
        )

    async def _promote_loop(self, rt: QueueRuntime) -> None:
        keys = [self._k(rt.name, "delayed"), self._k(rt.name, "envs"), self._k(rt.name, "ready")]
        while True:
            now_ms = int(self.clock() * 1000)
            moved, nxt = await self._retrying(
                "promote", lambda: self._eval("PROMOTE", keys, [now_ms, 500])
            )
            if int(moved) >= 500:
                continue
            wait = 1.0 if nxt == "" else (float(nxt) / 1000 - self.clock())
            with trio.move_on_after(min(max(wait, 0.0), 1.0)):
                await self._promote_lot.park()

    async def _heartbeat_loop(self) -> None:
        key = self._g("workers")
        try:
            while True:
                info = {
                    "ts": time.time(),
                    "queues": list(self._runtimes),
                    "workers": sum(rt.spec.workers for rt in self._runtimes.values()),
                    "in_flight": sum(rt.in_flight for rt in self._runtimes.values()),
                }
                await self._retrying(
                    "heartbeat", lambda: self.client.hset(key, {self.consumer: _dumps(info)})
                )
                await self._refresh_cache()
                await trio.sleep(2.0)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0), suppress(Exception):
                await self.client.hdel(key, [self.consumer])

    async def queue_configs(self) -> dict[str, dict[str, Any]]:
        """The queues that workers declared in Redis, with their limits."""
        raw = await self._retrying("queues", lambda: self.client.hgetall(self._g("queues")))
        return {name: json.loads(value) for name, value in raw.items()}

    async def _refresh_cache(self) -> None:
        for name in self._runtimes:
            value = await self.client.get(self._k(name, "outstanding"))
            self._cache[name] = {"outstanding": int(value or 0)}

    # -- the client side -------------------------------------------------------------------

    async def _reply_loop(self) -> None:
        """Resolve the receipts of our own submissions from our `replies` stream."""
        replies = self._g(f"replies:{self.consumer}")
        # From the start, never "$": the stream is ours alone, and "$" would miss a reply
        # written before the first read, or between a read that timed out and the next.
        last = "0-0"
        block_ms = int(self.block * 1000)
        while True:
            answer = await self._retrying(
                "read replies",
                lambda: self.client.xread({replies: last}, count=1000, block=block_ms),
                background=True,
            )
            for entry in (answer or {}).get(replies, ()):
                last = str(entry.identifier)
                env = self._waiting.pop(str(entry.field_values.get("id", "")), None)
                if env is not None and not env.state.final:
                    apply_outcome(env, str(entry.field_values.get("o", "{}")))

    async def _done_loop(self) -> None:
        """Resolve receipts found by id (`system.receipt`): read `done` notices from where
        `watch` stood before it read the outcome, for as long as such receipts are waited on."""
        done = self._g("done")
        block_ms = int(self.block * 1000)
        while True:
            start = self._done_from
            if start is None or not self._foreign:
                self._done_from = None
                await self._foreign_lot.park()
                continue
            answer = await self._retrying(
                "read done",
                lambda: self.client.xread({done: start}, count=1000, block=block_ms),
                background=True,
            )
            entries = (answer or {}).get(done, ())
            if entries:
                if self._done_from == start:
                    self._done_from = str(entries[-1].identifier)
                ids = {str(entry.field_values.get("id", "")) for entry in entries}
                wanted = [env for task_id, env in self._foreign.items() if task_id in ids]
            else:  # quiet: check them all (a notice may have been trimmed from `done`)
                wanted = [env for env in self._foreign.values() if env.entry is None]
            if wanted:
                await self._refresh_many(wanted)

    async def _refresh_many(self, envs: list[Envelope]) -> None:
        keys = [self._g(f"task:{env.id}") for env in envs]
        states = await self._retrying("read outcomes", lambda: self.client.mget(keys))
        for env, state in zip(envs, states, strict=True):
            if state is not None and state.startswith("F") and not env.state.final:
                apply_outcome(env, state[1:])
                self._foreign.pop(env.id, None)

    def lookup(self, task_id: str) -> Envelope | None:
        env = self._waiting.get(task_id) or self._foreign.get(task_id)
        if env is None:
            # Maybe a pipeline run's; a stage task's id is its run's id, a dot, and more.
            run = task_id.split(".", 1)[0] if "." in task_id else None
            env = PipelineReceipt(task_id, "", None, 0.0, 0.0, pipeline=run)
            env.entry = "?"  # not checked yet: `watch` asks Redis first
            self._foreign[task_id] = env
        return env

    async def watch(self, env: Envelope) -> None:
        if env.entry != "?":
            await trio.lowlevel.checkpoint()
            return
        if self._done_from is None:
            # A task that finishes after the GET below has its notice after this entry.
            newest = await self._retrying(
                "read done", lambda: self.client.xrevrange(self._g("done"), count=1)
            )
            if self._done_from is None:
                self._done_from = str(newest[0].identifier) if newest else "0-0"
                self._foreign_lot.unpark_all()
        state = await self._retrying(
            "read outcome", lambda: self.client.get(self._g(f"task:{env.id}"))
        )
        if state is None:
            self._foreign.pop(env.id, None)
            raise UnknownTask(env.id)
        env.entry = None
        if state.startswith("F"):
            apply_outcome(env, state[1:])
            self._foreign.pop(env.id, None)
        else:
            doc = json.loads(state[1:].split("\n", 1)[0])
            env.queue = str(doc.get("queue", ""))

    async def cancel(self, env: Envelope) -> bool:
        await self.watch(env)
        if env.state.final:
            return False
        rt = self._runtimes.get(env.queue)
        if rt is None:  # a pipeline run: end the run; its branches are skipped or ignored
            env.state = TaskState.CANCELLED
            env.error = ErrorInfo("Cancelled", "cancelled through its receipt")
            env.finished_at = time.time()
            keys = [self._g(f"run:{env.id}"), self._g(f"task:{env.id}")]
            args = [encode_outcome(env), 3600, self.prefix, env.id]
            first = await self._retrying("cancel", lambda: self._eval("RUN_FAIL", keys, args))
            if env.event is not None:
                env.event.set()
            return bool(first)
        env.state = TaskState.CANCELLED
        env.error = ErrorInfo("Cancelled", "cancelled through its receipt")
        env.finished_at = time.time()
        keys, args = self._finish_call(rt, env, None, notify=False)
        args[2] = ""  # not an entry we hold
        first = await self._retrying("cancel", lambda: self._eval("FINISH", keys, args))
        if env.event is not None:
            env.event.set()
        if env.scope is not None:
            env.scope.cancel()
        if first and env.pipeline is not None:
            # One stage task of a run: the run cannot complete without it.
            self.fail_run(env, TaskState.CANCELLED, env.error)
        return bool(first)

    # -- dead letters, drain, stats ----------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        entries = await self._retrying(
            "dead letters", lambda: self.client.xrevrange(self._k(queue, "dead"), count=limit)
        )
        return [
            decode_dead_letter(str(entry.field_values.get("d", "{}")))
            for entry in reversed(entries)
        ]

    async def take_dead_letters(self, queue: str, ids: list[str] | None) -> list[DeadLetter]:
        key = self._k(queue, "dead")
        entries = await self._retrying("dead letters", lambda: self.client.xrange(key))
        taken = []
        remove = []
        for entry in entries:
            letter = decode_dead_letter(str(entry.field_values.get("d", "{}")))
            if ids is None or letter.id in ids:
                taken.append(letter)
                remove.append(entry.identifier)
        if remove:
            await self._retrying("dead letters", lambda: self.client.xdel(key, remove))
        return taken

    def outstanding(self, queue: str) -> int:
        return self._cache.get(queue, {}).get("outstanding", 0)

    async def drain(self) -> None:
        keys = [self._k(name, "outstanding") for name in self._runtimes]
        while True:
            values = await self._retrying("drain", lambda: self.client.mget(keys))
            if all(int(v or 0) <= 0 for v in values) and not self._ops:
                return
            # Each finished task pushes a token to its queue's `room` list: block on those.
            rooms = [self._k(name, "room") for name in self._runtimes]
            await self._retrying("drain", lambda: self.client.blpop(rooms, timeout=_SHIELDED_BLOCK))

    def abandon(self, reason: str) -> int:
        # Durable: unfinished tasks stay in Redis (pending or in the group's pending list)
        # and another worker runs them; nothing to cancel here.
        return sum(len(held) for held in self._held.values())

    async def status(self) -> dict[str, Any]:
        """Queue figures and live workers, read from Redis (for `queueing status`)."""
        client = self.client
        queues = await client.hgetall(self._g("queues"))
        result: dict[str, Any] = {"queues": {}, "workers": {}}
        for name in sorted(queues):
            ready = self._k(name, "ready")
            summary = await client.xpending(ready, "workers")
            in_flight = int(getattr(summary, "pending", 0) or 0)
            stats = await client.hgetall(self._k(name, "stats"))
            result["queues"][name] = {
                "outstanding": int(await client.get(self._k(name, "outstanding")) or 0),
                "in_flight": in_flight,
                "ready": await client.xlen(ready) - in_flight,
                "scheduled": await client.zcard(self._k(name, "delayed")),
                "dead_letters": await client.xlen(self._k(name, "dead")),
                **{k: int(v) for k, v in stats.items()},
            }
        now = time.time()
        for worker, raw in (await client.hgetall(self._g("workers"))).items():
            info = json.loads(raw)
            if now - float(info.get("ts", 0)) < 10:
                result["workers"][worker] = info
        return result

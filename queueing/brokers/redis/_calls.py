"""Calls to Redis: the connection, the scripts, retries of lost connections, and shielding.

Every call the broker makes goes through `Calls.retrying`; every script call goes through
`Calls.script` (which a test wraps to check that each call's keys share one hash tag).

On a plain Redis (not Cluster, not Sentinel), the hot paths (script calls, `pipelined`,
the claim's and the notices' reads, the room's pops) go through `Calls.fast`, the lean
client of `_resp` (a fraction of coredis's CPU per round trip); the cold paths keep
`Calls.client` (coredis). The environment variable `QUEUEING_REDIS_CLIENT=coredis` makes
`fast` coredis too (A/B runs, debugging).
"""

from __future__ import annotations

import contextvars
import functools
import importlib.resources
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
import trio

from ..._exceptions import BrokerError
from ._servers import kind_of, open_client
from ._url import safe_url

if TYPE_CHECKING:
    import coredis

    from ._resp import LeanRedis

log = logging.getLogger("queueing.redis")
T = TypeVar("T")


class _NeverRaised(Exception):
    """Stands for the lean client's `Unsupported` until the lean client is opened."""


#: The scripts in lua/, by name (each `name.lua`).
SCRIPTS = (
    "check",
    "claim",
    "finish",
    "lookup",
    "outcomes",
    "probe",
    "promote",
    "rate",
    "reject",
    "release",
    "renew",
    "retry",
    "run",
    "submit",
    "take",
    "take_dead",
    "take_fair",
    "watch",
)
#: Shared pieces of Lua (lua/_NAME.lua), loaded in front of the scripts that use them.
PRELUDES = {
    "claim": ("_entry", "_fair"),
    "submit": ("_entry", "_ranking", "_fair"),
    "promote": ("_entry", "_ranking", "_fair"),
    "release": ("_entry",),
    "take": ("_entry",),
    "take_fair": ("_entry", "_fair"),
    "finish": ("_fair",),
    "retry": ("_fair",),
}
#: How much longer than its own wait one shielded call may take before it is given up.
ATTEMPT_GRACE = 10.0
#: Backoff between retries of a lost connection (seconds): exponential, capped, jittered.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
BACKOFF_JITTER = 0.05
#: While Redis is unreachable, how often one PING checks whether it is back (seconds).
PROBE_EVERY = 0.1
#: The environment variable that chooses the hot paths' client on a plain Redis.
CLIENT_ENV = "QUEUEING_REDIS_CLIENT"
CLIENTS = ("lean", "coredis")


def lean_wanted(url: str) -> bool:
    """Whether the hot paths use the lean client (`_resp`) for `url`: a plain Redis URL,
    unless `QUEUEING_REDIS_CLIENT=coredis`."""
    choice = os.environ.get(CLIENT_ENV, "lean").strip().lower() or "lean"
    if choice not in CLIENTS:
        raise BrokerError(
            f"{CLIENT_ENV} must be one of {', '.join(CLIENTS)}, got {choice!r} "
            f"(unset it for the default, lean)"
        )
    return choice == "lean" and kind_of(url) == "redis"


class NoAnswer(BrokerError):
    """Redis took a call and did not answer within its limit (stopped, or overloaded)."""


@functools.cache
def lua_sources() -> dict[str, str]:
    """The text of every script, read from the package (lua/*.lua), each after the shared
    pieces it uses (`PRELUDES`)."""
    folder = importlib.resources.files(__package__).joinpath("lua")

    def read(name: str) -> str:
        return folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")

    return {
        name: "".join(read(part) + "\n" for part in PRELUDES.get(name, ())) + read(name)
        for name in SCRIPTS
    }


def _retryable(exc: BaseException) -> bool:
    """What `Calls.retrying` retries: a lost connection, or a Redis that lost its scripts
    or groups (restarted)."""
    import coredis.exceptions as ce

    return isinstance(exc, (*_connection_errors(), ce.NoScriptError)) or _lost_group(exc)


@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    import coredis.exceptions as ce

    return (
        ce.ConnectionError,
        # A Redis Cluster or a Sentinel set-up in the middle of a failover or a slot
        # migration: the same call goes through once the new master answers.
        ce.ClusterDownError,
        ce.ClusterError,
        ce.ClusterResponseError,  # a command sent to every node, one of them down
        ce.TryAgainError,
        ce.AskError,
        ce.UnblockedError,
        ce.ReadOnlyError,
        ce.SentinelError,
        OSError,
        TimeoutError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
    )


def _lost_group(exc: BaseException) -> bool:
    """NOGROUP, raised by a command or from inside a script."""
    import coredis.exceptions as ce

    if isinstance(exc, ce.StreamDuplicateConsumerGroupError):
        return False
    return isinstance(exc, ce.StreamConsumerGroupError) or (
        isinstance(exc, ce.ResponseError) and "NOGROUP" in str(exc)
    )


class Calls:
    """One Redis client for the broker's life, its scripts, and resilient calls.

    Args:
        url: the Redis URL without our options.
        connect_timeout: seconds to reach Redis at start-up.
        block: seconds one blocking read waits; bounds how long a shielded call may take.
    """

    def __init__(self, url: str, *, connect_timeout: float, block: float) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.block = block
        #: A Redis Cluster: a command or a script takes keys of one slot only.
        self.cluster = kind_of(url) == "cluster"
        self._client: coredis.Redis[str] | None = None
        #: The lean client of the hot paths (None: coredis for everything).
        self.use_lean = lean_wanted(url)
        self._lean: LeanRedis | None = None
        #: The lean client's `Unsupported`, bound when the lean client is opened: `_resp`
        #: imports coredis, which stays an optional import until the broker connects.
        self._unsupported: type[Exception] = _NeverRaised
        #: The lean client's `NoReply` (a guarded call had no reply in time), bound then.
        self._no_reply: type[Exception] = _NeverRaised
        #: The lean client's `HAND_BACK`, bound when the lean client is opened (an import
        #: inside `_attempt` cost as much as the rest of its work).
        self._hand_back: contextvars.ContextVar[bool] | None = None
        self._shas: dict[str, str] = {}
        #: Called (awaited) after Redis lost our consumer groups: declares them again.
        self.redeclare: Callable[[], Awaitable[None]] | None = None
        #: Called when Redis answers again after a lost connection.
        self.on_reconnect: list[Callable[[], None]] = []
        self._up = trio.Event()
        self._up.set()
        self._down = trio.lowlevel.ParkingLot()

    @property
    def client(self) -> coredis.Redis[str]:
        if self._client is None:
            raise BrokerError("the Redis broker is not connected (use it inside connect())")
        return self._client

    @property
    def fast(self) -> Any:
        """The hot paths' client: the lean one (`_resp.LeanRedis`, whose methods take
        coredis's arguments and answer in its shapes) on a plain Redis, else coredis's."""
        lean = self._lean
        return lean if lean is not None else self.client

    @property
    def up(self) -> bool:
        """False from a lost connection until Redis answers again."""
        return self._up.is_set()

    # -- connection ------------------------------------------------------------------------

    @asynccontextmanager
    async def connected(self, ready: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
        """Open the client, check it with a PING, load the scripts and run `ready` (declare
        queues); errors become `BrokerError`s that say what to check."""
        try:
            import coredis  # noqa: F401  (the client is made in _servers)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BrokerError(
                "the Redis broker needs coredis: pip install 'trio-queueing[redis]'"
            ) from exc
        # Errors are raised after the client's task group has closed, so that the caller
        # gets them as they are, not wrapped in an ExceptionGroup.
        error: BaseException | None = None
        async with (
            open_client(self.url, connect_timeout=self.connect_timeout) as client,
            self._open_lean() as lean,
        ):
            self._client = client
            try:
                with trio.fail_after(self.connect_timeout):
                    await client.ping()
                    if lean is not None:
                        await lean.ping()
                        self._lean = lean
                    await self.load_scripts()
                    await ready()
            except trio.TooSlowError:
                error = BrokerError(
                    f"cannot reach Redis at {safe_url(self.url)} within "
                    f"{self.connect_timeout:g}s: check the host, port and network"
                )
            except BrokerError as exc:
                error = exc
            except Exception as exc:
                error = BrokerError(
                    f"cannot use Redis at {safe_url(self.url)}: {type(exc).__name__}: {exc} "
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
                    self._lean = None
        self._client = None
        self._lean = None
        if error is not None:
            raise error

    @asynccontextmanager
    async def _open_lean(self) -> AsyncIterator[LeanRedis | None]:
        if not self.use_lean:
            yield None
            return
        from ._resp import HAND_BACK, NoReply, Unsupported, open_lean

        self._unsupported = Unsupported
        self._no_reply = NoReply
        self._hand_back = HAND_BACK
        async with open_lean(self.url, connect_timeout=self.connect_timeout) as lean:
            # A guarded call's limit, as `_attempt`'s for a call that does not block.
            lean.guard = self.block + ATTEMPT_GRACE
            yield lean

    async def load_scripts(self) -> None:
        """Load every script: in one round trip on one Redis (a start-up over a slow link
        waits one round trip for them all, not one each: 20 of 200 ms took it past the
        connect timeout); one by one on a cluster, whose client sends each to every node."""
        sources = lua_sources()
        if self.cluster:
            for name, source in sources.items():
                self._shas[name] = await self.client.script_load(source)
            return
        async with self.client.pipeline(transaction=False) as pipe:
            loads = {name: pipe.script_load(source) for name, source in sources.items()}
        for name, load in loads.items():
            self._shas[name] = await load

    # -- scripts ----------------------------------------------------------------------------

    def script(self, target: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        """Call script `name` on `target` (the client, or a pipeline being filled): the
        one place every script call passes."""
        return target.evalsha(self._shas[name], keys=keys, args=args)

    async def eval(self, what: str, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, retried (see `retrying`)."""
        return await self.retrying(what, functools.partial(self._eval, name, keys, args))

    async def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.script(self.fast, name, keys, args)

    async def pipelined(
        self, what: str, fill: Callable[[Any], list[Any]], *, deliver: bool = True
    ) -> list[Any]:
        """Commands in one round trip: `fill(pipe)` queues them and returns their results
        (awaited after the pipeline ran). Retried as a whole; a command that failed for
        another reason (a key of the wrong type, say) has its exception as its result.
        With the lean client, a `fill` that asks for a command its pipeline lacks runs on
        coredis's."""

        async def send() -> list[Any]:
            async with self.client.pipeline(transaction=False, raise_on_error=False) as pipe:
                calls = fill(pipe)
            results: list[Any] = []
            for call in calls:
                try:
                    results.append(await call)
                except Exception as exc:
                    if _retryable(exc):
                        raise  # the whole pipeline again: its scripts are idempotent
                    results.append(exc)  # one command's error, for its caller to report
            return results

        lean = self._lean
        if lean is not None:
            unsupported = self._unsupported

            async def send_lean() -> list[Any]:
                pipe = lean.pipeline()
                try:
                    calls = fill(pipe)
                except unsupported:
                    return await self._shielded(send)
                await lean.run_pipe(pipe, True)
                results: list[Any] = []
                for call in calls:
                    value = call.value
                    if isinstance(value, Exception) and _retryable(value):
                        raise value  # the whole pipeline again: its scripts are idempotent
                    results.append(value)  # (one command's error, for its caller to report)
                return results

            return await self.retrying(what, send_lean, deliver=deliver, guarded=True)
        return await self.retrying(what, send, deliver=deliver)

    async def _shielded(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn` shielded, given up (`NoReply`) after a call's limit: inside a guarded call
        (see `_attempt`), a part that is not the lean client's own guarded round trip."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.block + ATTEMPT_GRACE
            return await fn()
        raise self._no_reply("no answer in time")

    async def scripts(
        self, what: str, calls: Sequence[tuple[str, list[str], list[Any]]]
    ) -> list[Any]:
        """Script calls (name, keys, args) in one round trip, answered as `pipelined`
        answers; a single one goes without a pipeline (which costs more than the call)."""
        if len(calls) != 1:

            def fill(pipe: Any) -> list[Any]:
                return [self.script(pipe, name, keys, args) for name, keys, args in calls]

            return await self.pipelined(what, fill)
        ((name, keys, args),) = calls
        lean = self._lean
        if lean is not None:

            async def one_lean() -> list[Any]:
                pipe = lean.pipeline()
                call = self.script(pipe, name, keys, args)
                await lean.run_pipe(pipe, True)
                value = call.value
                if isinstance(value, Exception) and _retryable(value):
                    raise value
                return [value]  # (the call's error, for its caller to report)

            return await self.retrying(what, one_lean, guarded=True)

        async def one() -> list[Any]:
            try:
                return [await self.script(self.fast, name, keys, args)]
            except Exception as exc:
                if _retryable(exc):
                    raise
                return [exc]  # the call's error, for its caller to report

        return await self.retrying(what, one)

    # -- resilience ------------------------------------------------------------------------

    async def retrying(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        *,
        background: bool = False,
        wait: float | None = None,
        deliver: bool = True,
        guarded: bool = False,
    ) -> T:
        """Run `fn`, retrying lost connections with jittered backoff (no limit).

        Each attempt is shielded from the caller's cancellation (see `_attempt`), except
        for the background loops' blocking reads (`background=True`), which are cancelled
        only when the system stops and closes the client anyway. `wait`: how long `fn`
        may block in Redis (a blocking read), on top of one round trip. `deliver=False`:
        a cancellation that came during the call is left for the caller's next checkpoint
        (a caller that must hand back what the call took, first). `guarded`: `fn` makes one
        guarded round trip of the lean client (`LeanRedis.run`), which is not cancelled
        midway and gives up after the call's limit by itself (see `_attempt`).
        """
        try:
            # The common case, without building a tenacity retry object per call.
            result = await self._attempt(what, fn, background, wait, deliver, guarded)
        except Exception as exc:
            if not await self._recover(exc):
                raise
        else:
            if not self._up.is_set():
                self._answered()
            return result

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("redis %s failed (%s); retrying", what, exc)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_retryable),
            wait=tenacity.wait_exponential(multiplier=BACKOFF_FIRST, max=BACKOFF_MAX)
            + tenacity.wait_random(0, BACKOFF_JITTER),
            sleep=self._backoff,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    result = await self._attempt(what, fn, background, wait, deliver, guarded)
                except Exception as exc:
                    await self._recover(exc)
                    raise
                self._answered()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _recover(self, exc: BaseException) -> bool:
        """After a failed call: what makes a retry worth it, done; False if it is not."""
        import coredis.exceptions as ce

        if isinstance(exc, _connection_errors()):
            if self._up.is_set():
                self._up = trio.Event()
                self._down.unpark_all()
            return True
        try:
            if isinstance(exc, ce.NoScriptError):
                # Redis restarted (its script cache is empty) or SCRIPT FLUSH ran.
                await self._attempt("load scripts", self.load_scripts, False, None)
                return True
            if _lost_group(exc):
                # NOGROUP: Redis lost our groups (restarted without persistence, or
                # FLUSHALL); declare them again so the workers go on.
                if self.redeclare is not None:
                    await self._attempt("declare queues", self.redeclare, False, None)
                return True
        except Exception as again:
            if not _retryable(again):
                raise
            return True  # the retry will tell
        return False

    def _answered(self) -> None:
        if not self._up.is_set():
            self._up.set()
            for callback in self.on_reconnect:
                callback()

    async def _backoff(self, seconds: float) -> None:
        """Sleep between retries, cut short when Redis answers again (`probe`)."""
        with trio.move_on_after(seconds):
            await self._up.wait()

    async def probe(self) -> None:
        """Background: while Redis is unreachable, PING it often, so that every call
        waiting out its backoff goes on as soon as it is back (and leases get renewed)."""
        while True:
            if self._up.is_set():
                await self._down.park()
                continue
            try:
                await self._attempt("ping", self.fast.ping, False, PROBE_EVERY)
                self._answered()
            except BrokerError:
                pass  # no answer in time: still down
            except Exception as exc:
                if not _retryable(exc):
                    raise
            if not self._up.is_set():
                await trio.sleep(PROBE_EVERY)

    async def _attempt(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        background: bool,
        wait: float | None,
        deliver: bool = True,
        guarded: bool = False,
    ) -> T:
        """One call to Redis, which the caller's cancellation does not interrupt.

        coredis (6.9) loses a slot of its connection pool for good whenever a command is
        cancelled midway: after 64 of them (a `move_on_after` around a `submit` that waits
        for room, say) every later command waits forever. So a cancellation waits for the
        command to finish: one round trip, or the blocking reads' own short waits. Its own
        deadline still ends a command Redis never answers.

        A blocking read (`wait`) of the lean client on a plain socket is not shielded: a
        cancellation has Redis end it at once and the read returns what it took
        (`LeanRedis.blocking`), so a stop does not wait out the read's `wait`.

        A guarded call (`guarded`, on the lean client's connection while it is up on a
        plain socket) goes without a cancel scope: the lean client itself keeps the
        caller's cancellation out of its round trip and gives it up after the limit
        (`LeanRedis.run`), for a fraction of a scope's cost (a scope's entry and exit, with
        its deadline, cost about as much as the rest of a claim's round trip).
        """
        if background:
            return await fn()
        limit = (self.block if wait is None else wait) + ATTEMPT_GRACE
        answered = False
        lean = self._lean
        if guarded and wait is None and lean is not None and lean.guardable():
            try:
                result = await fn()
            except self._no_reply:
                raise NoAnswer(
                    f"redis {what} got no answer within {limit:g}s; "
                    "is the server overloaded or stopped?"
                ) from None
            if deliver:
                await trio.lowlevel.checkpoint_if_cancelled()  # the caller's cancellation
            return result
        if wait is not None and lean is not None and lean.interruptible:
            hand_back = self._hand_back
            assert hand_back is not None
            token = hand_back.set(True)
            try:
                with trio.CancelScope(deadline=trio.current_time() + limit):
                    result = await fn()
                    answered = True
            finally:
                hand_back.reset(token)
        else:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + limit):
                try:
                    result = await fn()
                    answered = True
                except self._no_reply:
                    pass  # a guarded call that gave up: as if the deadline had come
        if not answered:
            raise NoAnswer(
                f"redis {what} got no answer within {limit:g}s; "
                "is the server overloaded or stopped?"
            )
        if deliver:
            await trio.lowlevel.checkpoint_if_cancelled()  # the caller's cancellation, now
        return result

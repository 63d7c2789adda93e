"""Retry policies built from tenacity's own stop/wait/retry objects."""

from __future__ import annotations

import builtins
import errno
import logging
import socket
import sys
from typing import Any, cast

import attrs
import tenacity
from tenacity.retry import RetryBaseT
from tenacity.stop import StopBaseT
from tenacity.wait import WaitBaseT

from ._exceptions import InvalidQueue, Transient
from ._validate import MAX_DELAY

log = logging.getLogger("queueing")

#: What the default policy retries for sure: our `Transient` (and `TaskTimeout`), and the
#: standard library's timeouts and connection errors.
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (
    Transient,
    builtins.TimeoutError,
    builtins.ConnectionError,
)

#: OS errors that say "the network, or the other side, is not there right now".
TRANSIENT_ERRNOS = frozenset(
    code
    for code in (
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EPIPE,
        errno.EAGAIN,
        getattr(socket, "EAI_AGAIN", None),  # a temporary failure of name resolution
    )
    if code is not None
)

#: The transient errors of common client libraries, by module and class name. A library is
#: never imported for this: its classes are looked up only if a program imported it.
CLIENT_TRANSIENT: dict[str, tuple[str, ...]] = {
    "httpx": ("TimeoutException", "NetworkError", "RemoteProtocolError"),
    "httpcore": ("TimeoutException", "NetworkError", "RemoteProtocolError"),
    "aiohttp": ("ClientConnectionError", "ServerTimeoutError", "ClientPayloadError"),
    "requests": ("ConnectionError", "Timeout"),
    "urllib3.exceptions": ("TimeoutError", "ProtocolError", "NewConnectionError"),
    "coredis.exceptions": ("ConnectionError", "TimeoutError", "BusyLoadingError"),
    "redis.exceptions": ("ConnectionError", "TimeoutError", "BusyLoadingError"),
    "asyncpg.exceptions": (
        "ConnectionDoesNotExistError",
        "TooManyConnectionsError",
        "CannotConnectNowError",
    ),
    "trio": ("BrokenResourceError",),
    "anyio": ("BrokenResourceError",),
}

#: HTTP statuses that mean "try again later" (rate limited, the gateway or service down).
TRANSIENT_HTTP_STATUS = frozenset((408, 425, 429, 500, 502, 503, 504))


def _client_classes() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name, names in CLIENT_TRANSIENT.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def is_transient(exc: BaseException) -> bool:
    """Whether the default policy retries `exc`: `Transient`, timeouts, connection errors
    (the standard library's and those of common clients: httpx, aiohttp, requests, coredis,
    redis-py, asyncpg, trio and anyio streams), OS errors of an unreachable network, and
    HTTP errors with a "try later" status (429, 502, 503, 504...).

    Also an exception group whose every exception is transient (a nursery in a trio
    handler wraps what its tasks raised), and an `OSError` without an errno raised from a
    transient one (`trio.open_tcp_stream` and `anyio.connect_tcp` raise "all attempts to
    connect failed" from the connection errors of each address)."""
    return _transient(exc, 0)


#: How deep `is_transient` looks into groups and causes.
_DEPTH = 4


def _transient(exc: BaseException, depth: int) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return depth < _DEPTH and all(_transient(e, depth + 1) for e in exc.exceptions)
    if type(exc) is OSError and exc.errno is None and exc.__cause__ is not None:
        return depth < _DEPTH and _transient(exc.__cause__, depth + 1)
    if isinstance(exc, DEFAULT_TRANSIENT):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    if isinstance(exc, _client_classes()):
        return True
    response = getattr(exc, "response", None)  # httpx.HTTPStatusError, requests.HTTPError
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return type(exc).__name__ in ("HTTPStatusError", "HTTPError", "ClientResponseError") and (
        status in TRANSIENT_HTTP_STATUS or getattr(exc, "status", None) in TRANSIENT_HTTP_STATUS
    )


#: How long the default policy keeps retrying one task, from its first attempt: long enough
#: to ride out a minute's outage of whatever the handler calls.
DEFAULT_RETRY_FOR = 120.0
#: The default backoff: from 0.1 s, doubling, at most this long between two attempts.
DEFAULT_MAX_BACKOFF = 15.0


def _default_stop() -> StopBaseT:
    return tenacity.stop_after_delay(DEFAULT_RETRY_FOR)


def _default_wait() -> WaitBaseT:
    # Not wait_exponential_jitter(initial=...): tenacity 9.2 deprecated `initial` (a
    # DeprecationWarning at every Queue()), and `multiplier` is missing from older 9.x.
    return tenacity.wait_exponential(
        multiplier=0.1, max=DEFAULT_MAX_BACKOFF
    ) + tenacity.wait_random(0, 0.1)


def _default_retry() -> RetryBaseT:
    return tenacity.retry_if_exception(is_transient)


def _callable(what: str) -> Any:
    def check(_: Any, attribute: Any, value: Any) -> None:
        if not callable(value):
            raise InvalidQueue(
                f"RetryPolicy({attribute.name}=...) takes a tenacity {what} object "
                f"(e.g. tenacity.{what}_...), got {value!r}"
            )

    return check


@attrs.frozen
class RetryPolicy:
    """When and how a failed task is tried again, in tenacity's own terms.

    Args:
        stop: when to give up (default `stop_after_delay(120)`: keep trying for two minutes
            from the first attempt, which rides out a minute's outage).
        wait: the backoff before the next attempt (default
            `wait_exponential(multiplier=0.1, max=15) + wait_random(0, 0.1)`).
        retry: which failures are worth retrying (default `retry_if_exception(is_transient)`:
            `Transient`, timeouts and connection errors, the standard library's and those of
            common client libraries, see `queueing._retry.is_transient`); any other error
            fails the task at once.

    While a task waits out its backoff it holds no worker.
    """

    stop: StopBaseT = attrs.field(factory=_default_stop, validator=_callable("stop"))
    wait: WaitBaseT = attrs.field(factory=_default_wait, validator=_callable("wait"))
    retry: RetryBaseT = attrs.field(factory=_default_retry, validator=_callable("retry"))

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that never retries: the first failure is final."""
        return cls(stop=tenacity.stop_after_attempt(1))

    def decide(
        self, error: BaseException, attempt: int, first_started: float, now: float
    ) -> float | bool | None:
        """Whether and when to try again after `attempt` failed with `error`.

        Returns:
            False if the error is not retryable, None if the attempts are exhausted,
            else the delay in seconds before the next attempt: the wait strategy's
            answer, within 0 and `MAX_DELAY` (NaN counts as 0).
        """
        state = tenacity.RetryCallState(cast(Any, None), None, (), {})
        state.start_time = first_started
        state.attempt_number = attempt
        state.outcome = tenacity.Future.construct(attempt, error, True)
        state.outcome_timestamp = now
        try:
            if not self.retry(state):
                return False
            if self.stop(state):
                return None
            wait = float(self.wait(state))
        except Exception:
            # A policy that raises (or waits "soon") must still end the task: the worker
            # that asked would crash with the task neither retried nor settled.
            log.exception(
                "the retry policy %r raised on attempt %d's %s: the task fails without retry",
                self,
                attempt,
                type(error).__name__,
            )
            return False
        # max(0.0, nan) is 0.0; min(inf, MAX_DELAY) is MAX_DELAY: a due time every broker
        # can store (an infinite one crashed the worker scheduling it, over and over).
        return min(max(0.0, wait), MAX_DELAY)

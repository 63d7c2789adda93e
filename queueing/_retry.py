"""Retry policies built from tenacity's own stop/wait/retry objects."""

from __future__ import annotations

import builtins
from typing import Any, cast

import attrs
import tenacity
from tenacity.retry import RetryBaseT
from tenacity.stop import StopBaseT
from tenacity.wait import WaitBaseT

from ._exceptions import InvalidQueue, Transient

#: What the default policy retries: our `Transient` (and `TaskTimeout`), plus connection
#: errors and timeouts raised by client libraries.
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (
    Transient,
    builtins.TimeoutError,
    builtins.ConnectionError,
)


def _default_stop() -> StopBaseT:
    return tenacity.stop_after_attempt(5)


def _default_wait() -> WaitBaseT:
    # Not wait_exponential_jitter(initial=...): tenacity 9.2 deprecated `initial` (a
    # DeprecationWarning at every Queue()), and `multiplier` is missing from older 9.x.
    return tenacity.wait_exponential(multiplier=0.1, max=30.0) + tenacity.wait_random(0, 0.1)


def _default_retry() -> RetryBaseT:
    return tenacity.retry_if_exception_type(DEFAULT_TRANSIENT)


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
        stop: when to give up (default `stop_after_attempt(5)`: five attempts in all).
        wait: the backoff before the next attempt (default
            `wait_exponential(multiplier=0.1, max=30) + wait_random(0, 0.1)`).
        retry: which failures are worth retrying (default: `Transient`, `TimeoutError`,
            `ConnectionError` and their subclasses); any other error fails the task at once.

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
            else the delay in seconds before the next attempt.
        """
        state = tenacity.RetryCallState(cast(Any, None), None, (), {})
        state.start_time = first_started
        state.attempt_number = attempt
        state.outcome = tenacity.Future.construct(attempt, error, True)
        state.outcome_timestamp = now
        if not self.retry(state):
            return False
        if self.stop(state):
            return None
        return max(0.0, float(self.wait(state)))

"""One set of checks for user-given settings, each error naming the setting and the fix."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ._exceptions import InvalidQueue
from ._task import MAX_PRIORITY, MAX_TENANT, MIN_PRIORITY

#: The largest count a setting may hold (`maxsize`, `max_payload`...): what every broker
#: stores exactly (SQLite's INTEGER is 64-bit, Redis's Lua numbers are doubles).
MAX_COUNT = 2**53

#: The longest a task may wait to start: a submit's `delay` or `expires`, or a retry's
#: backoff (ten years). Brokers keep due times as integer milliseconds of the wall clock
#: (Redis's scores, RabbitMQ's delay queues), which a float past this cannot give; and a
#: longer wait is a task that never runs.
MAX_DELAY = 10 * 365 * 86_400.0


#: The most workers (and handler threads) one queue runs in one process: each is an actor
#: with its own mailbox and supervision (and a thread, each, for a sync handler). More
#: concurrency comes from more processes (`queueing worker` on other machines).
MAX_WORKERS = 10_000


def positive_int(what: str, value: object, minimum: int = 1) -> None:
    """An int (not a bool) of at least `minimum`, at most `MAX_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidQueue(f"{what} must be an int >= {minimum}, got {value!r}")
    if value > MAX_COUNT:
        raise InvalidQueue(f"{what} must be at most {MAX_COUNT} (2**53), got {value!r}")


def worker_count(what: str, value: object) -> None:
    """A number of workers or threads: an int from 1 to `MAX_WORKERS`."""
    positive_int(what, value)
    assert isinstance(value, int)
    if value > MAX_WORKERS:
        raise InvalidQueue(
            f"{what} must be at most {MAX_WORKERS} per queue in one process, got {value!r}: "
            "run more processes (queueing worker) for more concurrency"
        )


def seconds(
    what: str,
    value: object,
    *,
    optional: bool = False,
    zero: bool = False,
    most: float | None = None,
) -> None:
    """A number of seconds: > 0 (>= 0 with `zero`), at most `most` if given; None too when
    `optional`."""
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise InvalidQueue(f"{what} must be a number of seconds {bound}, got {value!r}")
    if most is not None and value > most:
        instead = " (None: no limit)" if optional else ""
        raise InvalidQueue(
            f"{what} must be at most {most:g} seconds ({most / 86_400:g} days), "
            f"got {value!r}{instead}"
        )


def wait_timeout(value: object) -> None:
    """The `timeout` of a wait (`Receipt.result`, `drain`): None, or a number of seconds
    >= 0 (0 looks once, without waiting). A plain `ValueError` (`TypeError` for what is
    not a number), as trio's `move_on_after` raises: a wait's argument is no setting of a
    queue, so not `InvalidQueue`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"timeout must be a number of seconds >= 0 or None, got {type(value).__name__} "
            f"{value!r}"
        )
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"timeout must be a number of seconds >= 0 (0: look once, without waiting; "
            f"None: no limit), got {value!r}"
        )


def priority(value: object) -> None:
    """A task priority: an int (not a bool) within `MIN_PRIORITY`..`MAX_PRIORITY`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueue(
            f"priority must be an int from {MIN_PRIORITY} (the default, lowest) to "
            f"{MAX_PRIORITY} (highest), got {value!r} ({type(value).__name__})"
        )
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidQueue(
            f"priority must be from {MIN_PRIORITY} (the default, lowest) to {MAX_PRIORITY} "
            f"(highest), got {value!r}; waiting tasks of higher priority start first"
        )


def tenant(value: object) -> None:
    """A tenant name: a str of 1 to `MAX_TENANT` printable characters."""
    if not isinstance(value, str):
        raise InvalidQueue(
            f"tenant must be a str naming the client the task is for (e.g. a customer id), "
            f"got {value!r:.80} ({type(value).__name__}); None leaves it out"
        )
    if not value or len(value) > MAX_TENANT or not value.isprintable():
        raise InvalidQueue(
            f"tenant must be 1 to {MAX_TENANT} printable characters (no control characters), "
            f"got {value!r:.80}"
        )


def tenant_limit(what: str, value: object) -> None:
    """`Queue(tenant_concurrency=)` / `Queue(tenant_maxsize=)`: None or an int >= 1."""
    if value is not None:
        positive_int(what, value)


def payload_list(payloads: object) -> list[Any]:
    """The payloads of a `submit_many`, as a list: an iterable, but not a str, bytes or a
    mapping (whose characters, bytes or keys would each become a task)."""
    if isinstance(payloads, str | bytes | bytearray | Mapping) or not isinstance(
        payloads, Iterable
    ):
        raise InvalidQueue(
            f"submit_many takes an iterable of payloads (a list, say), got the "
            f"{type(payloads).__name__} {payloads!r:.80}: pass [{payloads!r:.80}] to submit "
            "it as one task"
        )
    return list(payloads)

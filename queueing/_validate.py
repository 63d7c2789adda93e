"""One set of checks for user-given settings, each error naming the setting and the fix."""

from __future__ import annotations

import math

from ._exceptions import InvalidQueue
from ._task import MAX_PRIORITY, MIN_PRIORITY


def positive_int(what: str, value: object, minimum: int = 1) -> None:
    """An int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidQueue(f"{what} must be an int >= {minimum}, got {value!r}")


def seconds(what: str, value: object, *, optional: bool = False, zero: bool = False) -> None:
    """A number of seconds: > 0 (>= 0 with `zero`); None too when `optional`."""
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

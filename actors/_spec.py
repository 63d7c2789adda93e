"""What a supervisor is told about a child: `ChildSpec`, the strategies and restart types."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, Generic

import attrs

from ._actor import Actor
from ._exceptions import InvalidActor, InvalidConfig
from ._mailbox import Overflow, check_config
from ._ref import M


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them fails."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped (in reverse start order) and all start again."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and the children started after it."""


class Restart(enum.Enum):
    """When a stopped child is started again."""

    PERMANENT = "permanent"
    """Always, whether it failed or stopped normally."""
    TRANSIENT = "transient"
    """Only if it failed (an exception); a normal stop is final."""
    TEMPORARY = "temporary"
    """Never: any stop is final."""


def check_actor_class(actor: object) -> None:
    if not (isinstance(actor, type) and issubclass(actor, Actor)):
        raise InvalidActor(
            f"expected an Actor subclass, got {actor!r}: define `class My(Actor)` with an "
            "`async def receive(self, message)` and pass the class itself (not an instance)"
        )


def check_seconds(what: str, value: float, *, zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidConfig(f"{what} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise InvalidConfig(f"{what} must be {'>=' if zero else '>'} 0, got {value!r}")


@attrs.frozen
class ChildSpec(Generic[M]):
    """How a supervisor starts (and restarts) one child.

    Args:
        actor: the Actor subclass; each start builds `actor(*args, **kwargs)`.
        name: a unique name to register it under (generated if None).
        restart: when to start it again (see `Restart`).
        shutdown: seconds it gets to finish its current message when stopped; then it is
            cancelled (0: cancelled at once, OTP's `brutal_kill`).
        mailbox_size: its mailbox's capacity.
        overflow: its mailbox's policy when full.
        factory: builds the instance at each (re)start instead of `actor(*args, **kwargs)`
            (Akka's `Props(creator)`): a callable of no arguments returning an instance of
            `actor`. For code that must hand the new instance something before it runs.
    """

    actor: type[Actor[M]]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    name: str | None = None
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    mailbox_size: int = 1000
    overflow: Overflow = Overflow.WAIT
    factory: Callable[[], Actor[M]] | None = None

    def __attrs_post_init__(self) -> None:
        check_actor_class(self.actor)
        if not isinstance(self.restart, Restart):
            raise InvalidConfig(
                f"restart must be a Restart member ({', '.join(r.name for r in Restart)}), "
                f"got {self.restart!r}"
            )
        check_seconds("shutdown", self.shutdown)
        check_config(self.mailbox_size, self.overflow)
        if self.factory is not None and not callable(self.factory):
            raise InvalidConfig(f"factory must be a callable of no arguments, got {self.factory!r}")
        if self.factory is not None and (self.args or self.kwargs):
            raise InvalidConfig("give a ChildSpec either a factory or args/kwargs, not both")

    def build(self) -> Actor[M]:
        """A new instance for one (re)start."""
        if self.factory is None:
            return self.actor(*self.args, **self.kwargs)
        instance = self.factory()
        if not isinstance(instance, self.actor):
            raise InvalidActor(
                f"the factory of {self.actor.__name__} returned {instance!r}, "
                f"not an instance of {self.actor.__name__}"
            )
        return instance

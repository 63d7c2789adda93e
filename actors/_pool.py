"""Pools: a supervisor of identical routees that routes each message to one of them."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._actor import Actor
from ._child import _Child
from ._exceptions import ActorError, InvalidConfig
from ._mailbox import Overflow
from ._reply import ErrorReply
from ._spec import ChildSpec, Restart
from ._supervisor import Supervisor

log = logging.getLogger("actors")


class Routing(enum.Enum):
    """How a `Pool` picks the routee for a message."""

    ROUND_ROBIN = "round_robin"
    """Each routee in turn (Akka's `RoundRobinPool`)."""
    LEAST_BUSY = "least_busy"
    """An idle routee if there is one, else the one with the fewest queued messages
    (Akka's `SmallestMailboxPool`)."""


class Pool(Supervisor):
    """A supervisor of `size` identical routees that hands each message it receives to one
    of them, as `routing` says (Akka's pool routers).

    Send to the pool's ref as to any actor: a `tell` goes to one routee; an `ask` is
    answered by the routee that handles it (the pool only forwards it). The routees are
    ordinary supervised children (`strategy`, `max_restarts`, `backoff`... apply); a
    restarted routee keeps its mailbox, so it keeps its share of the work. Routees added
    with `spawn(..., supervisor=pool)` take work too; stopped ones take none.

    Build one with `Pool.spec(...)`.
    """

    def __init__(
        self,
        routee: ChildSpec[Any],
        size: int,
        *,
        routing: Routing = Routing.ROUND_ROBIN,
        prefix: str | None = None,
        **options: Any,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidConfig(f"a pool's size must be an int >= 1, got {size!r}")
        if not isinstance(routing, Routing):
            raise InvalidConfig(
                f"routing must be a Routing member ({', '.join(r.name for r in Routing)}), "
                f"got {routing!r}"
            )
        routees = [
            attrs.evolve(routee, name=f"{prefix}-{index}" if prefix else None)
            for index in range(1, size + 1)
        ]
        super().__init__(routees, **options)
        self.routing = routing
        self._turn = 0

    @classmethod
    def spec(  # type: ignore[override]  # a pool takes one routee spec, not a list of children
        cls,
        actor: type[Actor[Any]],
        size: int,
        *,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        routing: Routing = Routing.ROUND_ROBIN,
        name: str | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = math.inf,
        routee_shutdown: float = 5.0,
        mailbox_size: int = 1000,
        overflow: Overflow = Overflow.WAIT,
        **options: Any,
    ) -> ChildSpec[Any]:
        """A ChildSpec for a pool of `size` routees built as `actor(*args, **kwargs)`.

        Args:
            routing: how a message's routee is chosen.
            name: the pool's name; its routees are named `name-1`, `name-2`...
            restart, shutdown: the pool's own, as a child of its supervisor.
            routee_shutdown, mailbox_size, overflow: each routee's (its `ChildSpec`).
            options: the pool's supervisor options: `strategy`, `max_restarts`, `within`,
                `backoff`, `reset_after`.
        """
        routee = ChildSpec(
            actor,
            args=args,
            kwargs=dict(kwargs or {}),
            shutdown=routee_shutdown,
            mailbox_size=mailbox_size,
            overflow=overflow,
        )
        return ChildSpec(
            cls,
            args=(routee, size),
            kwargs={"routing": routing, "prefix": name, **options},
            name=name,
            restart=restart,
            shutdown=shutdown,
        )

    async def receive(self, message: Any) -> Any:
        """Route `message` to a routee (an `ask` is answered by the routee)."""
        routee = self._choose()
        pending = self._cell.asking
        if routee is None:
            error = ActorError(
                f"pool {self.name!r} has no routee left to take a {type(message).__name__} "
                "message (every one was stopped)"
            )
            if pending is not None:
                return ErrorReply(error)
            log.warning("%s; the message is dropped", error)
            return None
        if pending is not None:
            self._cell.asking = None  # the routee answers it
            try:
                await routee.cell.mailbox.put(pending)
            except ActorError as exc:
                pending._fail(exc)
            return None
        try:
            await routee.cell.ref.tell(message)
        except ActorError as exc:
            log.warning(
                "pool %r could not pass a %s message to %r: %s",
                self.name,
                type(message).__name__,
                routee.cell.name,
                exc,
            )
        return None

    def _choose(self) -> _Child | None:
        routees = [child for child in self._children if not child.removing]
        if not routees:
            return None
        count = len(routees)
        start = self._turn % count
        self._turn = start + 1
        if self.routing is Routing.ROUND_ROBIN:
            return routees[start]
        best = routees[start]
        best_load = math.inf
        for offset in range(count):
            child = routees[(start + offset) % count]
            box = child.cell.mailbox
            queued = len(box)
            if queued == 0 and box._reader is not None:
                return child  # parked, waiting for a message: idle
            if queued < best_load:
                best, best_load = child, queued
        return best

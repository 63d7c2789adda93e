"""Supervisors: run children in a nursery, restart them by strategy, escalate when stuck."""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
import tenacity
import trio
from tenacity.wait import WaitBaseT

from ._actor import Actor, ActorRef, ActorState, _Cell, _SystemMessage
from ._child import _Child, _ChildExited, _run_child
from ._exceptions import ActorStopped, InvalidActor, InvalidConfig, SupervisorGaveUp
from ._mailbox import Mailbox, Overflow, check_config

if TYPE_CHECKING:
    from collections.abc import Coroutine

log = logging.getLogger("actors")


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


def _check_actor_class(actor: object) -> None:
    if not (isinstance(actor, type) and issubclass(actor, Actor)):
        raise InvalidActor(
            f"expected an Actor subclass, got {actor!r}: define `class My(Actor)` with an "
            "`async def receive(self, message)` and pass the class itself (not an instance)"
        )


def _check_positive(what: str, value: float, *, zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidConfig(f"{what} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise InvalidConfig(f"{what} must be {'>=' if zero else '>'} 0, got {value!r}")


@attrs.frozen
class ChildSpec:
    """How a supervisor starts (and restarts) one child.

    Args:
        actor: the Actor subclass; each start builds `actor(*args, **kwargs)`.
        name: a unique name to register it under (generated if None).
        restart: when to start it again (see `Restart`).
        shutdown: seconds it gets to finish its current message when stopped; then it is
            cancelled.
        mailbox_size: its mailbox's capacity.
        overflow: its mailbox's policy when full.
        factory: builds the instance at each (re)start instead of `actor(*args, **kwargs)`
            (Akka's `Props(creator)`): a callable of no arguments returning an instance of
            `actor`. For code that must hand the new instance something before it runs.
    """

    actor: type[Actor]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    name: str | None = None
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    mailbox_size: int = 1000
    overflow: Overflow = Overflow.WAIT
    factory: Callable[[], Actor] | None = None

    def __attrs_post_init__(self) -> None:
        _check_actor_class(self.actor)
        if not isinstance(self.restart, Restart):
            raise InvalidConfig(
                f"restart must be a Restart member ({', '.join(r.name for r in Restart)}), "
                f"got {self.restart!r}"
            )
        _check_positive("shutdown", self.shutdown)
        check_config(self.mailbox_size, self.overflow)
        if self.factory is not None and not callable(self.factory):
            raise InvalidConfig(f"factory must be a callable of no arguments, got {self.factory!r}")
        if self.factory is not None and (self.args or self.kwargs):
            raise InvalidConfig("give a ChildSpec either a factory or args/kwargs, not both")

    def build(self) -> Actor:
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


class _RemoveChild(_SystemMessage):
    __slots__ = ("child", "timeout")

    def __init__(self, child: _Child, timeout: float | None) -> None:
        self.child = child
        self.timeout = timeout


def _default_backoff() -> WaitBaseT:
    # Not wait_exponential_jitter(initial=...): tenacity 9.2 deprecated `initial`, and its
    # replacement `multiplier` is missing from older 9.x releases.
    return tenacity.wait_exponential(multiplier=0.01, max=1.0) + tenacity.wait_random(0, 0.01)


class Supervisor(Actor):
    """An actor that starts children, watches them, and restarts them by `strategy`.

    More than `max_restarts` restarts within `within` seconds and it gives up: it stops
    every child and fails with `SupervisorGaveUp`, which its own supervisor handles like any
    child failure (escalation). Between restarts it waits as the tenacity wait strategy
    `backoff` says (attempt number = restarts in the current window). Children run in the
    supervisor's nursery, so none outlives it.

    Args:
        children: the static children, launched in order (their `on_start` hooks run
            concurrently; each child's own messages wait until its `on_start` is done).
        strategy: which children restart when one fails.
        max_restarts: restart intensity: restarts allowed within `within` seconds.
        within: the intensity window in seconds.
        backoff: a tenacity wait strategy (`wait_exponential(...)`, `wait_fixed(...)`...);
            None for the default, exponential from 10ms up to 1s with a little jitter.
            Pass `tenacity.wait_none()` to restart at once.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: WaitBaseT | None = None,
    ) -> None:
        for spec in children:
            if not isinstance(spec, ChildSpec):
                hint = spec.__name__ if isinstance(spec, type) else "MyActor"
                raise InvalidConfig(
                    f"children must be ChildSpec objects, got {spec!r}: "
                    f"wrap an actor class as ChildSpec({hint}, ...)"
                )
        if not isinstance(strategy, Strategy):
            raise InvalidConfig(
                f"strategy must be a Strategy member ({', '.join(s.name for s in Strategy)}), "
                f"got {strategy!r}"
            )
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise InvalidConfig(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        _check_positive("within", within, zero=False)
        self.specs = tuple(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = float(within)
        self.backoff = _default_backoff() if backoff is None else backoff
        self._children: list[_Child] = []
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        self._accepting = False
        self._failed_child: tuple[_Child, BaseException | None] | None = None
        self._backoff_scope: trio.CancelScope | None = None
        self._ready: Callable[[], None] | None = None

    @classmethod
    def spec(
        cls,
        children: Sequence[ChildSpec] = (),
        *,
        name: str | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = math.inf,
        **options: Any,
    ) -> ChildSpec:
        """A ChildSpec that nests a supervisor under another one (a supervision tree)."""
        return ChildSpec(
            cls,
            args=(tuple(children),),
            kwargs=options,
            name=name,
            restart=restart,
            shutdown=shutdown,
        )

    @property
    def children(self) -> list[ActorRef]:
        """References to the current children, in start order."""
        return [child.cell.ref for child in self._children]

    async def receive(self, message: Any) -> Any:
        log.warning("supervisor %r ignored a %s message", self.name, type(message).__name__)

    # -- running -------------------------------------------------------------------------

    async def _main(self, cell: _Cell) -> None:
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._accepting = True
            try:
                await self.on_start()
                for spec in self.specs:
                    self._add(spec)
                for child in list(self._children):
                    await child.wait_started()
                cell.state = ActorState.RUNNING
                if self._ready is not None:
                    self._ready()  # the root: the system is up
                elif cell.child is not None:
                    cell.child._set_started()  # spawn() and a parent's start wait for this
                await cell.loop(self)
            except Exception as exc:
                failure = exc
            self._accepting = False
            await self._stop_all()
        if failure is not None:
            raise failure

    def _add(self, spec: ChildSpec) -> ActorRef:
        if not self._accepting or self._nursery is None:
            raise ActorStopped(self.name, "a stopping supervisor starts no children")
        system = self.system
        name = spec.name or system._generate_name(spec.actor)
        cell = _Cell(system, name, Mailbox(spec.mailbox_size, spec.overflow, owner=name))
        system._register(cell)
        child = _Child(self, spec, cell, supervises=issubclass(spec.actor, Supervisor))
        cell.child = child
        self._children.append(child)
        self._launch(child)
        return cell.ref

    def _launch(self, child: _Child) -> None:
        assert self._nursery is not None
        child.incarnation += 1
        child.running = True
        child.done = None
        child.scope = trio.CancelScope()
        child.stopping = False
        child.cell.stop_requested = False
        # Named after the actor: readable in trio's task tree, and no name string to build.
        self._nursery.start_soon(_run_child, child, name=child.cell.name)

    def _system_message(self, message: Any) -> Coroutine[Any, Any, None] | None:
        if type(message) is _ChildExited:
            return self._on_child_exit(message)
        if type(message) is _RemoveChild:
            return self._remove(message.child, message.timeout)
        notice: Coroutine[Any, Any, None] | None = super()._system_message(message)
        return notice

    def _request_removal(self, child: _Child, timeout: float | None) -> None:
        self._cell.mailbox.put_system(_RemoveChild(child, timeout))

    # -- decisions -----------------------------------------------------------------------

    async def _on_child_exit(self, message: _ChildExited) -> None:
        child = message.child
        stale = message.incarnation != child.incarnation
        if child.stopping or stale or child not in self._children:
            return
        reason = message.reason
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and reason is None):
            self._children.remove(child)
            child.cell.finish(reason)
            return
        now = trio.current_time()
        window = self._restart_times
        window.append(now)
        while window and window[0] <= now - self.within:
            window.popleft()
        if len(window) > self.max_restarts:
            child.cell.state = ActorState.STOPPED
            error = SupervisorGaveUp(self.name, child.cell.name, self.max_restarts, self.within)
            self._failed_child = (child, reason)
            raise error from reason
        group = self._restart_group(child)
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
        for other in group:
            # As in OTP: a TEMPORARY sibling stopped by the strategy is never restarted.
            if other is not child and other.spec.restart is Restart.TEMPORARY:
                self._children.remove(other)
                other.cell.finish(other.exit_reason)
        group = [member for member in group if member in self._children]
        for member in group:
            member.cell.state = ActorState.RESTARTING
        state = tenacity.RetryCallState(cast(Any, None), None, (), {})
        state.attempt_number = len(window)
        delay = float(self.backoff(state))
        if delay > 0:
            with trio.CancelScope() as backoff:
                self._backoff_scope = backoff
                await trio.sleep(delay)
            if backoff.cancelled_caught:
                return  # stopping: _stop_all finishes them
        for member in group:
            if member in self._children:
                member.cell.restarts += 1
                self._launch(member)

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        return self._children[self._children.index(child) :]

    async def _stop(self, child: _Child, timeout: float | None = None) -> None:
        """Stop one child gracefully, then cancel it at its deadline."""
        if not child.running:
            return
        assert child.scope is not None
        child.stopping = True
        child.cell.request_stop()
        with trio.move_on_after(child.spec.shutdown if timeout is None else timeout):
            await child.wait_done()
        if child.running:
            child.scope.cancel()
            await child.wait_done()

    async def _remove(self, child: _Child, timeout: float | None) -> None:
        if child not in self._children:
            return
        await self._stop(child, timeout)
        if child in self._children:
            self._children.remove(child)
        child.cell.finish(child.exit_reason)

    async def _stop_all(self) -> None:
        failed = self._failed_child
        for child in reversed(list(self._children)):
            await self._stop(child)
            reason = failed[1] if failed and failed[0] is child else child.exit_reason
            child.cell.finish(reason)
        self._children.clear()

    def _stop_requested(self) -> None:
        if self._backoff_scope is not None:
            self._backoff_scope.cancel()
        super()._stop_requested()

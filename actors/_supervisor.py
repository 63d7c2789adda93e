"""Supervisors: run children in a nursery, restart them by strategy, escalate when stuck."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import tenacity
import trio
from tenacity.wait import WaitBaseT

from ._actor import Actor, _Cell
from ._child import _Child, _ChildExited, _run_child
from ._exceptions import ActorError, ActorStopped, InvalidConfig, SupervisorGaveUp
from ._mailbox import Mailbox
from ._ref import ActorRef, ActorState
from ._reply import ErrorReply
from ._spec import ChildSpec, Restart, Strategy, check_seconds

__all__ = ["ChildSpec", "Restart", "Strategy", "Supervisor"]

log = logging.getLogger("actors")
# Restarts, at WARNING after a crash (INFO after a normal exit of a PERMANENT child).
restart_log = logging.getLogger("actors.restarts")
# A supervisor giving up, at ERROR (the root's too: then the system stops).
supervisor_log = logging.getLogger("actors.supervisors")

# A child that ran this long since its last (re)start, after starting successfully, has
# recovered: its next crash is restarted at once again. Akka's `resetBackoffAfter`.
DEFAULT_RESET_AFTER = 1.0


def _default_backoff() -> WaitBaseT:
    # Not wait_exponential_jitter(initial=...): tenacity 9.2 deprecated `initial`, and its
    # replacement `multiplier` is missing from older 9.x releases.
    return tenacity.wait_exponential(multiplier=0.01, max=1.0) + tenacity.wait_random(0, 0.01)


class _PendingRestart:
    """Children whose restart waits out a backoff, in a task of the supervisor's nursery."""

    __slots__ = ("members", "scope")

    def __init__(self, members: list[_Child]) -> None:
        self.members = members
        self.scope = trio.CancelScope()
        for member in members:
            member.pending = self

    def drop(self, child: _Child) -> None:
        """`child` no longer waits here (removed, or part of a newer restart)."""
        child.pending = None
        if child in self.members:
            self.members.remove(child)
            if not self.members:
                self.scope.cancel()


class Supervisor(Actor):
    """An actor that starts children, watches them, and restarts them by `strategy`.

    Restarts follow OTP for intensity and Akka for backoff. More than `max_restarts`
    restarts (of any of its children) within `within` seconds and it gives up: it stops
    every child and fails with `SupervisorGaveUp`, which its own supervisor handles like any
    child failure (escalation). Backoff is per child: a child that crashed once is
    restarted at once; one that crashes again before it has run `reset_after` seconds
    waits as the tenacity wait strategy `backoff` says (attempt 1, 2, 3... for its 2nd,
    3rd, 4th restart in a row). A child's backoff never delays another child, a spawn or a
    stop. Children run in the supervisor's nursery, so none outlives it.

    Args:
        children: the static children, launched in order (their `on_start` hooks run
            concurrently; each child's own messages wait until its `on_start` is done).
        strategy: which children restart when one fails.
        max_restarts: restart intensity: restarts allowed within `within` seconds.
        within: the intensity window in seconds.
        backoff: a tenacity wait strategy (`wait_exponential(...)`, `wait_fixed(...)`...);
            None for the default, exponential from 10ms up to 1s with a little jitter.
            Pass `tenacity.wait_none()` to restart at once every time.
        reset_after: seconds a restarted child must run (after a successful `on_start`)
            for its next crash to count as a first one again.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec[Any]] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: WaitBaseT | None = None,
        reset_after: float = DEFAULT_RESET_AFTER,
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
        check_seconds("within", within, zero=False)
        check_seconds("reset_after", reset_after)
        self.specs = tuple(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = float(within)
        self.backoff = _default_backoff() if backoff is None else backoff
        self.reset_after = float(reset_after)
        self._children: list[_Child] = []
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        self._accepting = False
        self._failed_child: tuple[_Child, BaseException | None] | None = None
        self._ready: Callable[[], None] | None = None

    @classmethod
    def spec(
        cls,
        children: Sequence[ChildSpec[Any]] = (),
        *,
        name: str | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = math.inf,
        **options: Any,
    ) -> ChildSpec[Any]:
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
    def children(self) -> list[ActorRef[Any]]:
        """References to the current children, in start order."""
        return [child.cell.ref for child in self._children]

    async def receive(self, message: Any) -> Any:
        """A supervisor takes no messages: an `ask` gets an error, a `tell` is logged."""
        if self._cell.asking is not None:
            return ErrorReply(
                ActorError(
                    f"supervisor {self.name!r} takes no messages (got a "
                    f"{type(message).__name__}); send to its children: "
                    "ref.which_children(), or system.lookup(name)"
                )
            )
        log.warning("supervisor %r ignored a %s message", self.name, type(message).__name__)
        return None

    # -- running -------------------------------------------------------------------------

    async def _main(self, cell: _Cell) -> None:
        try:
            await self._supervise(cell)
        except BaseException:
            # Cancelled from outside (a shutdown deadline): the children's tasks ended with
            # the nursery, each finishing its actor; a child waiting out its backoff has no
            # task, so it is finished here, or its ref would look alive for ever.
            for child in self._children:
                child.cell.finish(child.exit_reason)
            raise

    async def _supervise(self, cell: _Cell) -> None:
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._accepting = True
            self._wake_spawners()
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

    def _wake_spawners(self) -> None:
        changes = self._cell.system._changes
        if changes:
            changes.unpark_all()

    def _add(self, spec: ChildSpec[Any]) -> ActorRef[Any]:
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
        child.launched_at = trio.current_time()
        child.cell.stop_requested = False
        started = child.started
        if started is not None and started.is_set():
            child.started = trio.Event()  # a supervisor: its new subtree has not started yet
        # Named after the actor: readable in trio's task tree, and no name string to build.
        self._nursery.start_soon(_run_child, child, name=child.cell.name)

    def _system_message(self, message: Any) -> Coroutine[Any, Any, None] | None:
        if type(message) is _ChildExited:
            return self._on_child_exit(message)
        notice: Coroutine[Any, Any, None] | None = super()._system_message(message)
        return notice

    def _request_removal(self, child: _Child, timeout: float | None) -> None:
        """`ref.stop()`: stop `child` for good, in a task of this supervisor's nursery, so
        that neither a busy supervisor nor a cancelled caller holds it up."""
        if child.removing:
            return
        child.removing = True
        if child.pending is not None:
            child.pending.drop(child)
        assert self._nursery is not None
        self._nursery.start_soon(self._remove, child, timeout)

    # -- decisions -----------------------------------------------------------------------

    def _on_child_exit(self, message: _ChildExited) -> Coroutine[Any, Any, None] | None:
        child = message.child
        stale = message.incarnation != child.incarnation
        if child.stopping or child.removing or stale or child not in self._children:
            return None
        reason = message.reason
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and reason is None):
            self._children.remove(child)
            child.cell.finish(reason)
            return None
        now = trio.current_time()
        window = self._restart_times
        window.append(now)
        while window and window[0] <= now - self.within:
            window.popleft()
        if len(window) > self.max_restarts:
            child.cell.state = ActorState.STOPPED
            error = SupervisorGaveUp(self.name, child.cell.name, self.max_restarts, self.within)
            self._failed_child = (child, reason)
            supervisor_log.error("%s; last failure: %r", error, reason, exc_info=reason)
            raise error from reason
        came_up = child.cell.state is not ActorState.STARTING
        if came_up and now - child.launched_at >= self.reset_after:
            child.in_a_row = 0  # it had recovered: this crash counts as a first one
        child.in_a_row += 1
        delay = 0.0 if child.in_a_row == 1 else self._backoff_delay(child.in_a_row - 1)
        group = self._restart_group(child)
        self._log_restart(child, group, reason, delay)
        if len(group) == 1:
            self._schedule(group, delay)
            return None
        return self._restart_after_stopping(child, group, delay)

    def _backoff_delay(self, attempt: int) -> float:
        state = tenacity.RetryCallState(cast(Any, None), None, (), {})
        state.attempt_number = attempt
        return max(0.0, float(self.backoff(state)))

    def _log_restart(
        self, child: _Child, group: list[_Child], reason: BaseException | None, delay: float
    ) -> None:
        names = ", ".join(repr(member.cell.name) for member in group)
        if len(group) > 1:
            names = f"{names} ({self.strategy.name} after {child.cell.name!r} stopped)"
        when = "at once" if delay <= 0 else f"in {delay:.3g}s"
        if reason is None:
            restart_log.info(
                "supervisor %s restarts %s %s after a normal exit (a PERMANENT child)",
                self._cell.ref.path,
                names,
                when,
            )
            return
        restart_log.warning(
            "supervisor %s restarts %s %s (restart %d in a row) after %r",
            self._cell.ref.path,
            names,
            when,
            child.in_a_row,
            reason,
        )

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        return self._children[self._children.index(child) :]

    async def _restart_after_stopping(
        self, child: _Child, group: list[_Child], delay: float
    ) -> None:
        """ONE_FOR_ALL / REST_FOR_ONE: stop the rest of the group (reverse start order),
        then restart the group. Synchronous, as in OTP: the stops are awaited here."""
        for member in group:
            if member.pending is not None:
                member.pending.drop(member)  # this restart replaces the one it waited for
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
        for other in group:
            # As in OTP: a TEMPORARY sibling stopped by the strategy is never restarted.
            if other is not child and other.spec.restart is Restart.TEMPORARY:
                if other in self._children:
                    self._children.remove(other)
                other.cell.finish(other.exit_reason)
        self._schedule([m for m in group if m in self._children and not m.removing], delay)

    def _schedule(self, group: list[_Child], delay: float) -> None:
        """Restart `group` after `delay` seconds: at once, or from a task of the nursery, so
        that the wait holds up nothing else."""
        for member in group:
            if member.pending is not None:
                member.pending.drop(member)
            member.cell.state = ActorState.RESTARTING
        if delay <= 0:
            for member in group:
                self._relaunch(member)
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._restart_later, _PendingRestart(list(group)), delay)

    async def _restart_later(self, pending: _PendingRestart, delay: float) -> None:
        with pending.scope:
            await trio.sleep(delay)
        if pending.scope.cancelled_caught:
            return
        for member in list(pending.members):
            member.pending = None
            self._relaunch(member)

    def _relaunch(self, child: _Child) -> None:
        if (
            child.removing
            or child.running
            or not self._accepting
            or self._cell.stop_requested
            or child not in self._children
        ):
            return
        child.cell.restarts += 1
        self._launch(child)

    async def _stop(self, child: _Child, timeout: float | None = None) -> None:
        """Stop one child gracefully, then cancel it at its deadline."""
        if not child.running:
            return
        assert child.scope is not None
        child.stopping = True
        child.cell.request_stop()
        deadline = child.spec.shutdown if timeout is None else timeout
        with trio.move_on_after(deadline):
            await child.wait_done()
        if child.running:
            child.scope.cancel()
            await child.wait_done()
            if isinstance(child.exit_reason, trio.TooSlowError):
                child.exit_reason = trio.TooSlowError(_too_slow(child.cell.name, deadline))

    async def _remove(self, child: _Child, timeout: float | None) -> None:
        await self._stop(child, timeout)
        if child in self._children:
            self._children.remove(child)
        child.cell.finish(child.exit_reason)

    async def _stop_all(self) -> None:
        for child in self._children:
            if child.pending is not None:
                child.pending.scope.cancel()
                child.pending = None
        failed = self._failed_child
        for child in reversed(list(self._children)):
            await self._stop(child)
            reason = failed[1] if failed and failed[0] is child else child.exit_reason
            child.cell.finish(reason)
        self._children.clear()

    def _stop_requested(self) -> None:
        for child in self._children:
            if child.pending is not None:
                child.pending.scope.cancel()  # stopping: no restart is worth waiting for
        super()._stop_requested()


def _too_slow(name: str, deadline: float) -> str:
    if deadline == 0:
        return (
            f"actor {name!r} was cancelled at once, as its shutdown deadline of 0 asks (it was "
            "busy: a deadline of a few seconds lets it finish its message and run on_stop)"
        )
    return (
        f"actor {name!r} did not stop within its shutdown deadline ({deadline:g}s) "
        "and was cancelled"
    )

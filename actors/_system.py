"""The actor system: a root supervisor, a registry of names, and graceful shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from tenacity.wait import WaitBaseT

from ._actor import Actor, _Cell
from ._ask import _AskTimer
from ._exceptions import (
    ActorNotFound,
    ActorStopped,
    InvalidConfig,
    NameTaken,
    SupervisorGaveUp,
    SupervisorRestarting,
)
from ._mailbox import Mailbox, Overflow
from ._ref import ActorRef, M
from ._run import _raise_single
from ._run import run_system as run_system  # re-exported: libraries import it from here
from ._run import run_with_signals as run_with_signals
from ._spec import ChildSpec, Restart, Strategy
from ._spec import check_seconds as _check_positive
from ._supervisor import DEFAULT_RESET_AFTER, Supervisor

if TYPE_CHECKING:
    from ._timers import _TimerService

log = logging.getLogger("actors")

T = TypeVar("T")

_NUMBERS = (int, float)
# Distinct option sets whose spec `spawn` keeps for reuse (a bound on that cache).
_MAX_SHARED_SPECS = 256
# How long `spawn(..., supervisor=ref)` waits for a supervisor that is restarting.
SPAWN_WAIT = 5.0


class ActorSystem:
    """A running actor system. Get one from `open_system()` or `run_system(main=...)`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        name: str,
        strategy: Strategy,
        max_restarts: int,
        within: float,
        backoff: WaitBaseT | None,
        shutdown_timeout: float,
        reset_after: float = DEFAULT_RESET_AFTER,
    ) -> None:
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self._nursery = nursery
        self._names: dict[str, _Cell] = {}
        self._counters: dict[str, int] = {}
        self._spawns = 0
        self._specs: dict[tuple[Any, ...], ChildSpec[Any]] = {}
        self._ask_timer = _AskTimer()
        # Started by the first timer an actor sets (see _timers.py).
        self._timers: _TimerService | None = None
        # Spawns waiting for a restarting supervisor park here; woken when a supervisor
        # starts accepting children, or an actor stops for good.
        self._changes = trio.lowlevel.ParkingLot()
        self._failure: BaseException | None = None
        self._stopped = trio.Event()
        self._root = Supervisor(
            (),
            strategy=strategy,
            max_restarts=max_restarts,
            within=within,
            backoff=backoff,
            reset_after=reset_after,
        )
        self._root_cell = _Cell(self, "root", Mailbox(1000, owner="root"))
        self._register(self._root_cell)

    @property
    def root(self) -> ActorRef[Any]:
        """The root supervisor, parent of every actor spawned without `supervisor=`."""
        return self._root_cell.ref

    # -- registry ------------------------------------------------------------------------

    def _generate_name(self, actor: type[Actor[Any]]) -> str:
        """`Class-N`, numbered per class."""
        base = actor.__name__
        count = self._counters.get(base, 0)
        while True:
            count += 1
            name = f"{base}-{count}"
            if name not in self._names:
                self._counters[base] = count
                return name

    def _register(self, cell: _Cell) -> None:
        if cell.name in self._names:
            raise NameTaken(cell.name)
        self._names[cell.name] = cell

    def _unregister(self, cell: _Cell) -> None:
        if self._names.get(cell.name) is cell:
            del self._names[cell.name]

    def lookup(self, name: str) -> ActorRef[Any]:
        """The running actor registered as `name`.

        Raises:
            ActorNotFound: no such actor (the message lists the registered names).
        """
        cell = self._names.get(name)
        if cell is None:
            raise ActorNotFound(name, list(self._names))
        return cell.ref

    @property
    def names(self) -> list[str]:
        """The names of every running actor."""
        return list(self._names)

    # -- spawning ------------------------------------------------------------------------

    async def spawn(
        self,
        actor: type[Actor[M]] | ChildSpec[M],
        *args: Any,
        name: str | None = None,
        supervisor: ActorRef[Any] | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = 5.0,
        mailbox_size: int = 1000,
        overflow: Overflow = Overflow.WAIT,
        **kwargs: Any,
    ) -> ActorRef[M]:
        """Start an actor under `supervisor` (the root by default) and return its ref.

        `actor` is an Actor subclass, built as `actor(*args, **kwargs)` at each (re)start,
        or a full `ChildSpec`. The keyword arguments named above are spawn's own; pass an
        actor's keyword argument of the same name through `ChildSpec(kwargs=...)`. The child
        is added at run time (like OTP's dynamic children): it is not restarted if its
        supervisor itself is restarted. A plain actor's messages wait in its mailbox until
        its `on_start` is done; spawning a `Supervisor` returns once it has started its
        children (and they theirs), so they can be looked up at once.

        A supervisor that is restarting (between two incarnations) is waited for, up to 5
        seconds.

        Raises:
            InvalidActor: `actor` is not an Actor subclass.
            InvalidConfig: a bad mailbox size, policy or deadline.
            NameTaken: `name` is in use.
            ActorStopped: the supervisor is stopping, or has stopped.
            SupervisorRestarting: the supervisor was still restarting after the wait.
        """
        spec: ChildSpec[Any]
        if isinstance(actor, ChildSpec):
            spec = actor
            if args or kwargs:
                raise InvalidConfig("pass constructor arguments in the ChildSpec, not to spawn()")
        elif (
            not args
            and not kwargs
            and name is None
            and type(mailbox_size) is int
            and type(shutdown) in _NUMBERS
            and type(restart) is Restart
            and type(overflow) is Overflow
            and isinstance(actor, type)
        ):
            # Specs are immutable, so actors spawned with the same options share one: no
            # spec (and its kwargs dict) per actor, and no validation per spawn.
            key = (actor, restart, shutdown, mailbox_size, overflow)
            shared = self._specs.get(key)
            if shared is None:
                shared = ChildSpec(
                    actor,
                    restart=restart,
                    shutdown=shutdown,
                    mailbox_size=mailbox_size,
                    overflow=overflow,
                )
                if len(self._specs) < _MAX_SHARED_SPECS:
                    self._specs[key] = shared
            spec = shared
        else:
            spec = ChildSpec(
                actor,
                args=args,
                kwargs=kwargs,
                name=name,
                restart=restart,
                shutdown=shutdown,
                mailbox_size=mailbox_size,
                overflow=overflow,
            )
        owner = self._root_cell if supervisor is None else supervisor._cell
        instance = owner.instance
        if not isinstance(instance, Supervisor) or not instance._accepting:
            instance = await self._wait_for_supervisor(owner)
        ref: ActorRef[M] = instance._add(spec)
        child = ref._cell.child
        if child is not None and child.started is not None:
            # A supervisor: return once its subtree is up, so its children can be looked up
            # or added to.
            await child.wait_started()
        else:
            # A cancellation point every call; a schedule point every few (spawning in a
            # loop stays fair without a round trip per actor).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._spawns += 1
            if self._spawns >= 64:
                self._spawns = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
        return ref

    async def _wait_for_supervisor(self, owner: _Cell) -> Supervisor:
        """The running instance of the supervisor `owner`, waiting (up to SPAWN_WAIT) if it
        is between two incarnations."""
        child = owner.child
        if child is not None and not issubclass(child.spec.actor, Supervisor):
            raise InvalidConfig(f"supervisor= must be a Supervisor's ref, got {owner.ref!r}")
        with trio.move_on_after(SPAWN_WAIT):
            while True:
                if owner.terminated is not None or owner is self._root_cell:
                    raise ActorStopped(owner.name, "cannot spawn under a stopped supervisor")
                instance = owner.instance
                if isinstance(instance, Supervisor) and instance._accepting:
                    return instance
                await self._changes.park()
        raise SupervisorRestarting(owner.name, SPAWN_WAIT)

    # -- running and stopping ------------------------------------------------------------

    async def _run_root(self, *, task_status: trio.TaskStatus[None]) -> None:
        cell = self._root_cell
        root = self._root
        root._cell = cell
        cell.instance = root
        root._ready = task_status.started
        reason: BaseException | None = None
        try:
            await root._main(cell)
        except Exception as exc:
            reason = exc
            if not isinstance(exc, SupervisorGaveUp):  # reported as it gave up
                log.error("the root supervisor of system %r failed", self.name, exc_info=exc)
        finally:
            cell.finish(reason)
            self._stopped.set()
        if reason is not None:
            self._failure = reason
            self._nursery.cancel_scope.cancel()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop every actor gracefully: children stop in reverse start order, each with its
        own shutdown deadline; whatever still runs after `timeout` seconds is cancelled."""
        self._root_cell.request_stop()
        with trio.move_on_after(self.shutdown_timeout if timeout is None else timeout):
            await self._stopped.wait()
        if not self._stopped.is_set():
            log.warning("system %r: shutdown deadline passed, cancelling what is left", self.name)
            self._nursery.cancel_scope.cancel()

    async def wait_stopped(self) -> None:
        """Wait until the system has stopped."""
        await self._stopped.wait()


@asynccontextmanager
async def open_system(
    *,
    name: str = "system",
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: WaitBaseT | None = None,
    reset_after: float = DEFAULT_RESET_AFTER,
    shutdown_timeout: float = 10.0,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the `async with` block.

    On exit the system shuts down gracefully (see `ActorSystem.shutdown`). If the root
    supervisor gives up, the block is cancelled and `SupervisorGaveUp` is raised.

    Args:
        strategy, max_restarts, within, backoff, reset_after: the root supervisor's policy
            (see `Supervisor`).
        shutdown_timeout: seconds a graceful shutdown may take before the rest is cancelled.
    """
    _check_positive("shutdown_timeout", shutdown_timeout)
    system: ActorSystem | None = None
    try:
        async with trio.open_nursery() as nursery:
            system = ActorSystem(
                nursery,
                name=name,
                strategy=strategy,
                max_restarts=max_restarts,
                within=within,
                backoff=backoff,
                shutdown_timeout=shutdown_timeout,
                reset_after=reset_after,
            )
            await nursery.start(system._ask_timer.run)
            await nursery.start(system._run_root)
            try:
                yield system
            finally:
                try:
                    await system.shutdown()
                finally:
                    system._ask_timer.stop()
                    if system._timers is not None:
                        system._timers.stop()
    except BaseExceptionGroup as group:
        _raise_single(group)
    if system is not None and system._failure is not None:
        raise system._failure

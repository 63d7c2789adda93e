"""A supervisor's record of one child, and the task that runs each of its incarnations."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ._actor import Actor, ActorState, _Cell, _end_incarnation
from ._exceptions import SupervisorGaveUp
from ._mailbox import _abort_read
from ._notices import _SystemMessage

if TYPE_CHECKING:
    from ._supervisor import ChildSpec, Supervisor, _PendingRestart

log = logging.getLogger("actors")
# Crash reports, one per crash, at ERROR (OTP's crash report, Akka's error log).
crash_log = logging.getLogger("actors.crashes")


class _Child:
    """A supervisor's record of one child, across its restarts."""

    __slots__ = (
        "cell",
        "done",
        "exit_reason",
        "in_a_row",
        "incarnation",
        "launched_at",
        "pending",
        "removing",
        "running",
        "scope",
        "spec",
        "started",
        "stopping",
        "supervisor",
    )

    def __init__(
        self, supervisor: Supervisor, spec: ChildSpec[Any], cell: _Cell, *, supervises: bool
    ) -> None:
        self.supervisor = supervisor
        self.spec = spec
        self.cell = cell
        self.incarnation = 0
        # Why the last incarnation ended (None: normally); the reason a final stop reports.
        self.exit_reason: BaseException | None = None
        self.running = False
        # Made only when someone waits for the current incarnation to end (idle actors are
        # many, and an Event is a good part of an idle actor's memory).
        self.done: trio.Event | None = None
        self.scope: trio.CancelScope | None = None
        self.stopping = False
        # ref.stop() asked for it: it is never started again.
        self.removing = False
        # Its own restart backoff: restarts in a row (reset once it ran long enough), when
        # the current incarnation was launched, and the restart waiting out its backoff.
        self.in_a_row = 0
        self.launched_at = 0.0
        self.pending: _PendingRestart | None = None
        # For a supervisor only: set once its whole subtree has started (so its children can
        # be looked up). A plain actor counts as started at once.
        self.started = trio.Event() if supervises else None

    async def wait_started(self) -> None:
        if self.started is None:
            await trio.lowlevel.checkpoint()
        else:
            await self.started.wait()

    def _set_started(self) -> None:
        if self.started is not None:
            self.started.set()

    async def wait_done(self) -> None:
        """Wait until the current incarnation has ended."""
        if not self.running:
            await trio.lowlevel.checkpoint()
            return
        if self.done is None:
            self.done = trio.Event()
        await self.done.wait()

    def _ended(self) -> None:
        self.running = False
        if self.done is not None:
            self.done.set()


class _ChildExited(_SystemMessage):
    __slots__ = ("child", "incarnation", "reason")

    def __init__(self, child: _Child, incarnation: int, reason: BaseException | None) -> None:
        self.child = child
        self.incarnation = incarnation
        self.reason = reason


def _report_crash(cell: _Cell, error: Exception) -> None:
    """Log a crash report: where in the tree, doing what, and the traceback."""
    if isinstance(error, SupervisorGaveUp):
        return  # the supervisor that gave up has reported it
    if cell.failed_on is not None:
        doing = f"handling a {cell.failed_on} message"
        cell.failed_on = None
    elif cell.instance is None:
        doing = "being built"
    elif cell.state is ActorState.STARTING:
        doing = "starting"
    else:
        doing = "running"
    crash_log.error("actor %s crashed %s: %r", cell.ref.path, doing, error, exc_info=error)


async def _run_child(child: _Child) -> None:
    """One incarnation of a child: the body of its task.

    Memory and spawn time per idle actor are mostly this coroutine and what it holds while
    parked (bench/actors_bench.py measures both), hence its shape:

    - An actor that never had a message is parked right here (see below): `_Cell.loop`,
      a coroutine of its own, starts only with the first message.
    - Few locals (trio materializes the frame object, so each one costs memory): the scope
      is read from `child` rather than passed.
    - A plain actor without an `on_start` of its own waits for its first message (or a
      stop) before it enters its cancel scope: entering one is most of the cost of a spawn,
      and its status a good part of an idle actor. Nothing is lost: the scope is only ever
      cancelled after a stop request, which wakes the waiting actor, and it enters the
      (then cancelled) scope before running anything that could block.
    """
    cell = child.cell
    scope = child.scope
    assert scope is not None
    reason: BaseException | None = None
    instance: Actor[Any] | None = None
    try:
        cell.state = ActorState.STARTING
        try:
            instance = child.spec.build()
            instance._cell = cell
            cell.instance = instance
        except Exception as exc:
            reason = exc
            _report_crash(cell, exc)
        mailbox = cell.mailbox
        if (
            instance is not None
            and type(instance)._main is Actor._main
            and type(instance).on_start is Actor.on_start
            and type(instance).run is Actor.run
            and instance._receive_timeout is None
            and (child.incarnation == 1 or type(instance).on_restart is Actor.on_restart)
        ):
            cell.state = ActorState.RUNNING
            if not cell.stop_requested and mailbox._take_would_wait():
                task = mailbox._park_reader()
                try:
                    await trio.lowlevel.wait_task_rescheduled(_abort_read)
                except BaseException:
                    mailbox._unpark_reader(task)
                    raise
        with scope:
            try:
                if instance is None:
                    pass
                else:
                    if child.incarnation > 1 and type(instance).on_restart is not Actor.on_restart:
                        await instance.on_restart(child.exit_reason)
                    if type(instance)._main is not Actor._main:
                        await instance._main(cell)
                    else:
                        if cell.state is ActorState.STARTING:
                            await instance.on_start()
                            cell.state = ActorState.RUNNING
                        if type(instance).run is Actor.run:
                            await cell.loop(instance)  # Actor.run, one call less
                        else:
                            await instance.run()
            except Exception as exc:
                reason = exc
                _report_crash(cell, exc)
            if instance is not None:
                # An incarnation that failed to start stays STARTING: its supervisor reads
                # that as "never came up", which its restart backoff does not forgive.
                if cell.state is ActorState.RUNNING:
                    cell.state = ActorState.STOPPING
                try:
                    await instance.on_stop()
                except Exception as exc:
                    log.warning("on_stop of actor %s raised", cell.ref.path, exc_info=exc)
                    if reason is None:
                        reason = exc
        if scope.cancelled_caught:
            # Its supervisor rewrites this with the deadline it actually gave (Supervisor._stop).
            reason = trio.TooSlowError(
                f"actor {cell.name!r} did not stop within its shutdown deadline and was cancelled"
            )
    except BaseException:
        # The whole subtree is being torn down (or interrupted): end for good.
        _end_incarnation(cell, instance, None, False)
        child._set_started()
        child._ended()
        cell.finish(None)
        raise
    _end_incarnation(cell, instance, reason, reason is not None and not child.stopping)
    cell.instance = None
    child.exit_reason = reason
    child._set_started()  # also when it failed to start: nobody waits for it forever
    child._ended()
    child.supervisor._cell.mailbox.put_system(_ChildExited(child, child.incarnation, reason))

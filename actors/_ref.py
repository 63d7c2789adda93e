"""Actor references, and the value types they report (state, stats, termination)."""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, overload

import attrs
import outcome
import trio
from typing_extensions import TypeVar

from ._ask import _Ask
from ._exceptions import ActorError, AskTimeout
from ._mailbox import _SCHEDULE_EVERY, Overflow
from ._notices import _Notice
from ._reply import Request

if TYPE_CHECKING:
    from ._actor import _Cell
    from ._supervisor import Supervisor

# The message type an actor takes: `Actor[M]`, `ActorRef[M]`. Defaults to Any, so plain
# `Actor` and `ActorRef` stay valid under mypy --strict; contravariant, as a ref is a sink
# (a ref taking any `Event` may stand where a ref taking `Click`s is wanted).
M = TypeVar("M", default=Any, contravariant=True)
R = TypeVar("R")


class ActorState(enum.Enum):
    """Where an actor is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"


@attrs.frozen
class Terminated:
    """Death-watch notice: `actor` has stopped for good.

    `reason` is None for a normal stop, or the exception that ended it.
    """

    actor: ActorRef
    reason: BaseException | None


@attrs.frozen
class ActorStats:
    """A snapshot of one actor's counters."""

    name: str
    state: ActorState
    queued: int
    capacity: int
    received: int
    processed: int
    failed: int
    restarts: int
    dropped: int
    rejected: int
    undelivered: int


class ActorRef(Generic[M]):
    """The only handle to an actor. Stays valid across restarts; compare with `==`.

    `ActorRef[Msg]` is typed by the messages the actor takes: mypy then checks what is
    sent with `tell` and `ask`, and types an `ask` of a `Request[R]` message as `R`.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def path(self) -> str:
        """Where the actor sits in the supervision tree: `"root/bank/accounts/alice"`."""
        names = [self._cell.name]
        child = self._cell.child
        while child is not None:
            parent = child.supervisor._cell
            names.append(parent.name)
            child = parent.child
        return "/".join(reversed(names))

    @property
    def is_alive(self) -> bool:
        """False once the actor has stopped for good."""
        return self._cell.terminated is None

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.name} {self._cell.state.value}>"

    async def tell(self, message: M) -> None:
        """Send a message; waits only for mailbox room (with `Overflow.WAIT`).

        Raises:
            ActorStopped: the actor has stopped.
            MailboxFull: the mailbox is full and its policy is REJECT.
            MailboxDeadlock: waiting for room would never end (a cycle of full mailboxes).
        """
        # Mailbox.put's fast path, inlined: one coroutine less per tell (measured by
        # bench/actors_bench.py). Still a cancellation point on every call, and still yields
        # every _SCHEDULE_EVERY sends.
        mailbox = self._cell.mailbox
        await trio.lowlevel.checkpoint_if_cancelled()
        items = mailbox._items
        if type(items) is deque and len(items) < mailbox.capacity and not mailbox._closed:
            # Mailbox.put_nowait's common case, inlined too (room in a mailbox that has
            # had messages before).
            items.append(message)
            mailbox.received += 1
            if mailbox._reader is not None:
                mailbox.wake_reader()
            mailbox._sends += 1
            if mailbox._sends >= _SCHEDULE_EVERY:
                mailbox._sends = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            mailbox.put_nowait(message)
        except trio.WouldBlock:
            pass
        else:
            mailbox._sends += 1
            if mailbox._sends >= _SCHEDULE_EVERY:
                mailbox._sends = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await mailbox.put(message)  # full: wait for room (outside the except clause)

    def tell_nowait(self, message: M) -> None:
        """Send a message without waiting, for code that cannot await.

        Raises:
            trio.WouldBlock: full with the WAIT policy.
            MailboxFull: full with the REJECT policy.
            ActorStopped: the actor has stopped.
        """
        self._cell.mailbox.put_nowait(message)

    @overload
    async def ask(self, message: Request[R], *, timeout: float | None = 5.0) -> R: ...

    @overload
    async def ask(self, message: M, *, timeout: float | None = 5.0) -> Any: ...

    async def ask(self, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Send a message and wait for `receive`'s return value (or its exception).

        Args:
            timeout: seconds to wait for the reply (covering the wait for mailbox room);
                None waits without limit.

        Raises:
            AskTimeout: no reply within `timeout`.
            ActorStopped: the actor stopped before answering.
            MailboxFull: the policy refused or dropped the message.
            Exception: whatever `receive` raised for this message, or the error of an
                `ErrorReply` it returned.
        """
        pending = _Ask(message)
        if timeout is None:
            # No deadline, no CancelScope: entering and leaving one costs about as much as
            # the rest of the round trip (bench/actors_bench.py measures both).
            return await self._send_and_wait(pending)
        cell = self._cell
        mailbox = cell.mailbox
        timer = cell.system._ask_timer
        if timer.running and (
            len(mailbox) < mailbox.capacity or mailbox.overflow is not Overflow.WAIT
        ):
            # The fast path: room in the mailbox, so the deadline is the system timer's.
            await trio.lowlevel.checkpoint_if_cancelled()
            mailbox.put_nowait(pending)
            if pending.result is not None:
                return pending.result.unwrap()  # dropped by the overflow policy
            fifo = timer.add(pending, timeout, cell.name)
            pending.task = trio.lowlevel.current_task()
            try:
                return await trio.lowlevel.wait_task_rescheduled(pending._abort)
            finally:
                while fifo and fifo[0].result is not None:
                    fifo.popleft()
        with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
            return await self._send_and_wait(pending)
        # Only reached when the deadline cancelled the wait (a reply returns above).
        if scope.cancelled_caught:
            # The late reply, if any, finds no task to wake and is discarded.
            pending.result = outcome.Value(None)
            raise AskTimeout(self._cell.name, type(message).__name__, timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_and_wait(self, pending: _Ask) -> Any:
        await self._cell.mailbox.put(pending)
        if pending.result is None:

            def abort(_: Any) -> trio.lowlevel.Abort:
                pending.task = None
                return trio.lowlevel.Abort.SUCCEEDED

            pending.task = trio.lowlevel.current_task()
            return await trio.lowlevel.wait_task_rescheduled(abort)
        return pending.result.unwrap()

    async def stop(self, *, timeout: float | None = None) -> Terminated:
        """Stop the actor for good (after its current message) and wait until it has.

        Its supervisor removes it; `timeout` overrides the child's shutdown deadline, after
        which it is cancelled. The stop is carried out by the supervisor's nursery, not by
        the caller: it completes even if the caller is cancelled, and it works while the
        supervisor is busy (from another child's `on_stop`, during a restart).

        Raises:
            ActorError: called from inside the actor itself or one of its descendants,
                which would wait for its own end (use `self.stop()` inside the actor).
        """
        cell = self._cell
        child = cell.child
        if cell.terminated is None:
            _refuse_stopping_from_inside(cell)
            if child is not None:
                child.supervisor._request_removal(child, timeout)
            else:
                # The root supervisor has no parent to remove it: it stops its children
                # (each within its own deadline) and then itself, like system.shutdown().
                cell.request_stop()
        return await self.join()

    async def join(self) -> Terminated:
        """Wait until the actor has stopped for good; returns why."""
        cell = self._cell
        if cell.terminated is None:
            if cell.terminated_event is None:
                cell.terminated_event = trio.Event()
            await cell.terminated_event.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert cell.terminated is not None
        return cell.terminated

    def watch(self, watcher: ActorRef[Any]) -> None:
        """Send `watcher` a `Terminated` message when this actor stops for good.

        If it has stopped already, the notice is sent at once.
        """
        cell = self._cell
        if cell.terminated is not None:
            watcher._cell.mailbox.put_system(_Notice(cell.terminated))
            return
        if cell.watchers is None:
            cell.watchers = []
        if watcher not in cell.watchers:
            cell.watchers.append(watcher)

    def unwatch(self, watcher: ActorRef[Any]) -> None:
        """Stop sending `watcher` a `Terminated` message for this actor."""
        if self._cell.watchers and watcher in self._cell.watchers:
            self._cell.watchers.remove(watcher)

    def which_children(self) -> list[ActorRef[Any]]:
        """The current children of this supervisor, in start order (OTP's
        `which_children`).

        Raises:
            ActorError: this actor is not a running `Supervisor`.
        """
        return _supervisor_of(self).children

    def stats(self) -> ActorStats:
        """A snapshot of the actor's state and counters."""
        cell = self._cell
        box = cell.mailbox
        return ActorStats(
            name=cell.name,
            state=cell.state,
            queued=len(box),
            capacity=box.capacity,
            received=box.received,
            processed=cell.processed,
            failed=cell.failed,
            restarts=cell.restarts,
            dropped=box.dropped,
            rejected=box.rejected,
            undelivered=cell.undelivered,
        )


def _refuse_stopping_from_inside(cell: _Cell) -> None:
    """Raise if the current task runs `cell`'s actor or one of its descendants: waiting for
    that actor's end would wait for the caller's own, until the shutdown deadline."""
    from ._child import _run_child

    code = _run_child.__code__
    current = trio.lowlevel.current_task()
    task: trio.lowlevel.Task | None = current
    while task is not None:
        coro = task.coro
        if getattr(coro, "cr_code", None) is code:  # an actor's task: which one?
            frame = getattr(coro, "cr_frame", None)
            inside = cell.child is None or (
                frame is not None and frame.f_locals.get("child") is cell.child
            )
            if inside:
                who = "itself" if task is current else "one of its descendants"
                raise ActorError(
                    f"actor {cell.name!r} cannot be stopped with ref.stop() from {who}: "
                    "the stop would wait for the caller's own end. Inside the actor, call "
                    "self.stop() (its restart type decides what follows); to end a whole "
                    "subtree for good, have an actor outside it call ref.stop()"
                )
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None


def _supervisor_of(ref: ActorRef[Any]) -> Supervisor:
    instance = ref._cell.instance
    from ._supervisor import Supervisor

    if not isinstance(instance, Supervisor):
        raise ActorError(f"actor {ref.name!r} is not a running Supervisor")
    return instance

"""Actors, their references, and the loop that runs one incarnation of an actor."""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
import outcome
import trio

from ._exceptions import ActorError, ActorStopped, AskTimeout
from ._mailbox import _SCHEDULE_EVERY, Mailbox, Overflow, _abort_read

if TYPE_CHECKING:
    from ._child import _Child
    from ._supervisor import Supervisor
    from ._system import ActorSystem

# Between two messages that did not yield themselves, the loop yields at least this often.
_BATCH = 64


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


class Actor:
    """Subclass this and implement `receive`; the runtime calls it one message at a time.

    State lives on the instance. A restart builds a fresh instance from the same class and
    arguments, so nothing of the crashed instance's state survives; the mailbox (and with
    it every queued message and the `ActorRef`) does.
    """

    _cell: _Cell

    async def on_start(self) -> None:
        """Called before the first message; an exception here is a crash (supervised)."""

    async def receive(self, message: Any) -> Any:
        """Handle one message. For an `ask`, the return value is the reply.

        An exception escaping `receive` crashes the actor ("let it crash"): its supervisor
        decides what happens next. For an `ask`, the asker also gets the exception.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement receive()")

    async def on_stop(self) -> None:
        """Called after the last message, on a normal stop and after a crash alike.

        Not called when the actor is cancelled because its shutdown deadline passed.
        """

    @property
    def ref(self) -> ActorRef:
        """This actor's own reference (stable across restarts)."""
        return self._cell.ref

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def system(self) -> ActorSystem:
        """The system this actor runs in."""
        return self._cell.system

    def watch(self, other: ActorRef) -> None:
        """Receive a `Terminated` message when `other` stops for good."""
        other.watch(self.ref)

    def unwatch(self, other: ActorRef) -> None:
        other.unwatch(self.ref)

    def stop(self) -> None:
        """Stop after the current message; the restart type decides what follows."""
        self._cell.request_stop()

    @property
    def stopping(self) -> bool:
        """True once a stop of this incarnation was requested (by `stop()`, its supervisor,
        or the system's shutdown). A `run` override checks it between units of work."""
        return self._cell.stop_requested

    async def run(self) -> None:
        """The body of one incarnation, between `on_start` and `on_stop`.

        By default the message loop: `receive` is called for one message at a time until a
        stop is requested. Override it for an actor that is not a plain message loop (one
        that reads from another source, such as a shared `Mailbox.get()`): return once
        `self.stopping` is true, and use `on_stop_requested` to cut a long wait short. An
        exception escaping `run` is a crash, handled by the supervisor as any other. If the
        shutdown deadline passes first, `run` is cancelled.
        """
        await self._cell.loop(self)

    def on_stop_requested(self) -> None:
        """Called, synchronously, when a stop of this incarnation is requested.

        The default message loop needs nothing here (it is woken anyway). An actor that
        overrides `run` and waits on something else cancels that wait here (a
        `trio.CancelScope` it holds, say) so that it can return promptly.
        """

    async def _main(self, cell: _Cell) -> None:
        """Run one incarnation: on_start, then `run`."""
        await self.on_start()
        cell.state = ActorState.RUNNING
        await self.run()

    def _system_message(self, message: Any) -> Any:
        """Handle a runtime notice; returns a coroutine to await, or None."""
        if type(message) is _Notice:
            return self.receive(message.payload)
        return None

    def _stop_requested(self) -> None:
        """The runtime's own reaction to a stop request, then the public hook."""
        self.on_stop_requested()


class _Ask:
    """An ask in flight: the message and the slot its reply goes to."""

    __slots__ = ("actor", "deadline", "message", "result", "task", "timeout")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.task: trio.lowlevel.Task | None = None
        self.result: outcome.Outcome[Any] | None = None
        self.deadline = math.inf
        self.timeout = 0.0
        self.actor = ""

    def _resolve(self, result: outcome.Outcome[Any]) -> None:
        if self.result is not None:
            return
        self.result = result
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task, result)

    def _fail(self, error: BaseException) -> None:
        self._resolve(outcome.Error(error))

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.task = None  # cancelled from outside: a late reply or the timer finds no task
        return trio.lowlevel.Abort.SUCCEEDED


class _AskTimer:
    """Deadlines of the asks in flight in one system, enforced by one task.

    A CancelScope per ask costs as much as the rest of the round trip, so asks instead
    wait without one and this timer fails those whose deadline passed. Asks with the same
    timeout have deadlines in the order they were made, so each timeout value gets a FIFO;
    answered asks leave the front at once, which keeps the FIFOs short.
    """

    __slots__ = ("_fifos", "_lot", "_scope", "_wake_at", "running")

    def __init__(self) -> None:
        self._scope = trio.CancelScope()
        self._fifos: dict[float, deque[_Ask]] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._wake_at = math.inf
        self.running = False

    def add(self, pending: _Ask, timeout: float, actor: str) -> deque[_Ask]:
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        pending.deadline = deadline = trio.current_time() + timeout
        pending.timeout = timeout
        pending.actor = actor
        fifo.append(pending)
        if deadline < self._wake_at and self._lot:
            self._lot.unpark_all()  # sooner than the timer planned to look again
        return fifo

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            with self._scope:
                await self._run()
        finally:
            self.running = False

    def stop(self) -> None:
        """Stop enforcing deadlines (the system has stopped: no ask is left to time)."""
        self._scope.cancel()

    async def _run(self) -> None:
        while True:
            now = trio.current_time()
            earliest = math.inf
            for fifo in self._fifos.values():
                while fifo:
                    head = fifo[0]
                    if head.result is None and head.deadline > now:
                        earliest = min(earliest, head.deadline)
                        break
                    fifo.popleft()
                    if head.result is None:
                        name = type(head.message).__name__
                        head._fail(AskTimeout(head.actor, name, head.timeout))
            self._wake_at = earliest
            with trio.CancelScope(deadline=earliest):
                await self._lot.park()


class _Cell:
    """The runtime's side of an actor: what outlives any one instance."""

    __slots__ = (
        "child",
        "failed",
        "instance",
        "mailbox",
        "name",
        "processed",
        "ref",
        "restarts",
        "state",
        "stop_requested",
        "system",
        "terminated",
        "terminated_event",
        "undelivered",
        "watchers",
    )

    def __init__(self, system: ActorSystem, name: str, mailbox: Mailbox) -> None:
        self.system = system
        self.name = name
        self.mailbox = mailbox
        self.ref = ActorRef(self)
        self.instance: Actor | None = None
        self.child: _Child | None = None
        self.state = ActorState.STARTING
        self.stop_requested = False
        self.processed = 0
        self.failed = 0
        self.restarts = 0
        self.undelivered = 0
        self.watchers: list[ActorRef] | None = None
        self.terminated: Terminated | None = None
        self.terminated_event: trio.Event | None = None

    def request_stop(self) -> None:
        self.stop_requested = True
        self.mailbox.wake_reader()
        if self.instance is not None:
            self.instance._stop_requested()

    async def loop(self, actor: Actor) -> None:
        """Hand the messages to `actor` one at a time until a stop is requested."""
        mailbox = self.mailbox
        receive = actor.receive
        since_yield = 0
        while not self.stop_requested:
            # Mailbox.get_nowait, inlined: notices first, then the bounded queue; a user message
            # is never a notice, so it is not checked for being one.
            if mailbox._system:
                coro = actor._system_message(mailbox._system.popleft())
                if coro is not None:
                    await coro
                continue
            items = mailbox._items
            if not items:
                # Drained: let the deque go (~760 bytes) while idle; the next message makes
                # one again.
                items = mailbox._items = ()
                # Mailbox.wait_readable, inlined: one coroutine frame less on every idle actor.
                task = mailbox._park_reader()
                try:
                    await trio.lowlevel.wait_task_rescheduled(_abort_read)
                except BaseException:
                    mailbox._unpark_reader(task)
                    raise
                since_yield = 0
                continue
            assert type(items) is deque
            message = items.popleft()
            if mailbox._waiting_putters:
                mailbox._unpark_putter()
            if type(message) is _Ask:
                try:
                    value = await receive(message.message)
                except Exception as exc:
                    message._resolve(outcome.Error(exc))
                    self.failed += 1
                    raise
                except BaseException:
                    # Cancelled mid-handler (shutdown deadline): the asker must not wait on.
                    message._fail(ActorStopped(self.name, "it was cancelled before answering"))
                    raise
                message._resolve(outcome.Value(value))
            else:
                try:
                    await receive(message)
                except Exception:
                    self.failed += 1
                    raise
            self.processed += 1
            since_yield += 1
            if since_yield >= _BATCH:
                since_yield = 0
                await trio.lowlevel.checkpoint()

    def finish(self, reason: BaseException | None) -> None:
        """Stop for good: refuse messages, fail pending asks, tell the watchers."""
        if self.terminated is not None:
            return
        self.state = ActorState.STOPPED
        self.instance = None
        for message in self.mailbox.close():
            if type(message) is _Ask:
                message._fail(ActorStopped(self.name, "it stopped before answering"))
            else:
                self.undelivered += 1
        self.terminated = Terminated(self.ref, reason)
        self.system._unregister(self)
        if self.terminated_event is not None:
            self.terminated_event.set()
        for watcher in self.watchers or ():
            watcher._cell.mailbox.put_system(_Notice(self.terminated))
        self.watchers = None


class _SystemMessage:
    """Base of runtime notices carried by mailboxes."""

    __slots__ = ()


class _Notice(_SystemMessage):
    """A message for the actor's own `receive`, sent by the runtime (e.g. `Terminated`)."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


class ActorRef:
    """The only handle to an actor. Stays valid across restarts; compare with `==`."""

    __slots__ = ("_cell",)

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def is_alive(self) -> bool:
        """False once the actor has stopped for good."""
        return self._cell.terminated is None

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.name} {self._cell.state.value}>"

    async def tell(self, message: Any) -> None:
        """Send a message; waits only for mailbox room (with `Overflow.WAIT`).

        Raises:
            ActorStopped: the actor has stopped.
            MailboxFull: the mailbox is full and its policy is REJECT.
        """
        # Mailbox.put's fast path, inlined: one coroutine less is ~10% of a tell. Still a
        # cancellation point on every call, and still yields every _SCHEDULE_EVERY sends.
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

    def tell_nowait(self, message: Any) -> None:
        """Send a message without waiting, for code that cannot await.

        Raises:
            trio.WouldBlock: full with the WAIT policy.
            MailboxFull: full with the REJECT policy.
            ActorStopped: the actor has stopped.
        """
        self._cell.mailbox.put_nowait(message)

    async def ask(self, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Send a message and wait for `receive`'s return value (or its exception).

        Args:
            timeout: seconds to wait for the reply (covering the wait for mailbox room);
                None waits without limit.

        Raises:
            AskTimeout: no reply within `timeout`.
            ActorStopped: the actor stopped before answering.
            MailboxFull: the policy refused or dropped the message.
            Exception: whatever `receive` raised for this message.
        """
        pending = _Ask(message)
        if timeout is None:
            # No deadline, no CancelScope: entering and leaving one costs about as much as
            # the rest of the round trip (~10 us in trio 0.3x).
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
        which it is cancelled.
        """
        cell = self._cell
        child = cell.child
        if cell.terminated is None:
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

    def watch(self, watcher: ActorRef) -> None:
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

    def unwatch(self, watcher: ActorRef) -> None:
        if self._cell.watchers and watcher in self._cell.watchers:
            self._cell.watchers.remove(watcher)

    def which_children(self) -> list[ActorRef]:
        """The current children of this supervisor, in start order (OTP's
        `which_children`).

        Raises:
            ActorError: this actor is not a running `Supervisor`.
        """
        return _supervisor_of(self).children

    def stats(self) -> ActorStats:
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


def _supervisor_of(ref: ActorRef) -> Supervisor:
    instance = ref._cell.instance
    from ._supervisor import Supervisor

    if not isinstance(instance, Supervisor):
        raise ActorError(f"actor {ref.name!r} is not a running Supervisor")
    return instance

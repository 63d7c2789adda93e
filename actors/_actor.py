"""Actors, and the loop that runs one incarnation of an actor."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Generic

import outcome
import trio

from . import _links, _stash, _timers
from ._ask import _Ask
from ._exceptions import ActorError, ActorStopped
from ._mailbox import Mailbox, _abort_read
from ._notices import _Notice
from ._ref import ActorRef, ActorState, ActorStats, M, Terminated
from ._reply import ErrorReply, Reply
from ._timers import ReceiveTimeout, Timer

if TYPE_CHECKING:
    from ._child import _Child
    from ._system import ActorSystem

# Re-exported for the modules (and the queueing package's internals) that import them here.
__all__ = ["Actor", "ActorRef", "ActorState", "ActorStats", "Terminated", "_Cell"]

# Between two messages that did not yield themselves, the loop yields at least this often.
_BATCH = 64


class Actor(Generic[M]):
    """Subclass this and implement `receive`; the runtime calls it one message at a time.

    State lives on the instance. A restart builds a fresh instance from the same class and
    arguments, so nothing of the crashed instance's state survives; the mailbox (and with
    it every queued message and the `ActorRef`) does. `Actor[Msg]` types the messages it
    takes (see `ActorRef`).
    """

    _cell: _Cell
    # Set by set_receive_timeout(); a class default, so an actor without one pays nothing.
    _receive_timeout: float | None = None

    async def on_start(self) -> None:
        """Called before the first message; an exception here is a crash (supervised)."""

    async def on_restart(self, reason: BaseException | None) -> None:
        """Called on the new instance of a restarted actor, before `on_start`.

        `reason` is the exception that ended the previous incarnation, or None when that
        one stopped normally (a `PERMANENT` actor's `self.stop()`) or was stopped because a
        sibling failed (`ONE_FOR_ALL`, `REST_FOR_ONE`). Akka's `postRestart(reason)`.
        """

    async def receive(self, message: M) -> Any:
        """Handle one message. For an `ask`, the return value is the reply.

        An exception escaping `receive` crashes the actor ("let it crash"): its supervisor
        decides what happens next. For an `ask`, the asker also gets the exception. Return
        an `ErrorReply` to answer an `ask` with an error without crashing, or call
        `defer_reply()` to answer later.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement receive()")

    async def on_stop(self) -> None:
        """Called after the last message, on a normal stop and after a crash alike.

        Not called when the actor is cancelled because its shutdown deadline passed.
        """

    @property
    def ref(self) -> ActorRef[M]:
        """This actor's own reference (stable across restarts)."""
        return self._cell.ref

    @property
    def name(self) -> str:
        """The name the actor is registered under."""
        return self._cell.name

    @property
    def system(self) -> ActorSystem:
        """The system this actor runs in."""
        return self._cell.system

    def watch(self, other: ActorRef[Any]) -> None:
        """Receive a `Terminated` message when `other` stops for good."""
        other.watch(self.ref)

    def unwatch(self, other: ActorRef[Any]) -> None:
        """Stop watching `other`."""
        other.unwatch(self.ref)

    def link(self, other: ActorRef[Any]) -> None:
        """Link this incarnation with `other`'s: when either crashes, the other crashes too
        with `LinkedActorFailed` (OTP's `link/1`; both ways). A normal stop breaks no link.

        Links last one incarnation: a restarted actor links again (in `on_start`). Linking
        to an actor that has stopped for good crashes this one at once.
        """
        _links.link(self._cell, other._cell)

    def unlink(self, other: ActorRef[Any]) -> None:
        """Remove the link with `other`, both ways (nothing happens if there is none)."""
        _links.unlink(self._cell, other._cell)

    def stop(self) -> None:
        """Stop after the current message; the restart type decides what follows."""
        self._cell.request_stop()

    @property
    def stopping(self) -> bool:
        """True once a stop of this incarnation was requested (by `stop()`, its supervisor,
        or the system's shutdown). A `run` override checks it between units of work."""
        return self._cell.stop_requested

    # -- replies ----------------------------------------------------------------------------

    def defer_reply(self) -> Reply[Any]:
        """Inside `receive` for an `ask`: answer later, through the returned `Reply`.

        `receive`'s return value is then ignored, and the actor goes on with its next
        message while the asker waits (up to its timeout) for `reply.send(value)`.

        Raises:
            ActorError: the message being handled is not an `ask` (or was deferred already).
        """
        cell = self._cell
        pending = cell.asking
        if pending is None:
            raise ActorError(
                f"actor {cell.name!r} called defer_reply() outside the handling of an ask "
                "(a tell has nobody to answer, and a deferred ask is answered through the "
                "Reply it returned the first time)"
            )
        cell.asking = None
        return Reply(pending)

    # -- timers -----------------------------------------------------------------------------

    def send_after(self, delay: float, message: Any, *, key: Hashable | None = None) -> Timer:
        """Send this actor `message` after `delay` seconds (OTP's `erlang:send_after`).

        The timer belongs to this incarnation: it is cancelled when the actor stops or
        restarts. A timer with the same `key` as an active one replaces it.
        """
        return _timers.start(self, delay, message, key=key, interval=None)

    def send_every(
        self,
        interval: float,
        message: Any,
        *,
        key: Hashable | None = None,
        initial_delay: float | None = None,
    ) -> Timer:
        """Send this actor `message` every `interval` seconds, the first after
        `initial_delay` (default: `interval`), until cancelled (Akka's
        `startTimerWithFixedDelay`). A tick that finds the mailbox full is skipped, so ticks
        never pile up behind a busy actor. Cancelled with the incarnation, like `send_after`.
        """
        if initial_delay is None:
            initial_delay = interval
        return _timers.start(self, initial_delay, message, key=key, interval=interval)

    def set_receive_timeout(self, seconds: float | None) -> None:
        """Receive a `ReceiveTimeout` message whenever the mailbox stays empty for `seconds`
        (Akka's `setReceiveTimeout`, OTP's `gen_server` timeout); None turns it off.

        Only the default message loop honours it (not a `run` override).
        """
        if seconds is not None:
            _timers.check_delay("receive timeout", seconds)
        self._receive_timeout = seconds
        cell: _Cell | None = getattr(self, "_cell", None)  # None in __init__
        if cell is not None:
            cell.mailbox.wake_reader()  # an idle loop picks the new timeout up now

    # -- stash ------------------------------------------------------------------------------

    def stash(self, message: Any) -> None:
        """Set the message being handled aside, to be handled again after `unstash_all()`
        (Akka's `stash()`). An `ask` stays unanswered until then.

        The stash holds at most the mailbox's capacity; on a restart its messages go back to
        the front of the mailbox, so none is lost.

        Raises:
            StashFull: the stash is full.
        """
        _stash.stash(self, message)

    def unstash_all(self) -> int:
        """Put every stashed message back at the front of the mailbox, in the order they
        were stashed; returns how many."""
        return _stash.unstash_all(self)

    # -- overriding the loop ----------------------------------------------------------------

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
        if type(message) is _links._LinkExit:
            _links.linked_exit(self._cell, message)  # raises if the link still stands
        return None

    def _stop_requested(self) -> None:
        """The runtime's own reaction to a stop request, then the public hook."""
        self.on_stop_requested()


class _Cell:
    """The runtime's side of an actor: what outlives any one instance."""

    __slots__ = (
        "asking",
        "child",
        "failed",
        "failed_on",
        "instance",
        "links",
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
        self.ref: ActorRef[Any] = ActorRef(self)
        self.instance: Actor[Any] | None = None
        self.child: _Child | None = None
        self.state = ActorState.STARTING
        self.stop_requested = False
        self.processed = 0
        self.failed = 0
        self.restarts = 0
        self.undelivered = 0
        self.watchers: list[ActorRef[Any]] | None = None
        self.terminated: Terminated | None = None
        self.terminated_event: trio.Event | None = None
        # The ask being handled, until answered or deferred (defer_reply, stash).
        self.asking: _Ask | None = None
        # The type of the message whose handler crashed, for the crash report.
        self.failed_on: str | None = None
        # Linked actors: peer -> this actor's incarnation when the link was made.
        self.links: dict[_Cell, int] | None = None

    def request_stop(self) -> None:
        self.stop_requested = True
        self.mailbox.wake_reader()
        if self.instance is not None:
            self.instance._stop_requested()

    async def loop(self, actor: Actor[Any]) -> None:
        """Hand the messages to `actor` one at a time until a stop is requested."""
        mailbox = self.mailbox
        mailbox._owner_task = trio.lowlevel.current_task()
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
                # Drained: let the deque go while idle (an empty deque is most of an idle
                # actor's memory); the next message makes one again.
                items = mailbox._items = ()
                if actor._receive_timeout is not None:
                    await self._idle_with_timeout(actor, actor._receive_timeout)
                    since_yield = 0
                    continue
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
                self.asking = message
                try:
                    value = await receive(message.message)
                except Exception as exc:
                    if self.asking is message:
                        self.asking = None
                        message._resolve(outcome.Error(exc))
                    self.failed += 1
                    self.failed_on = type(message.message).__name__
                    raise
                except BaseException:
                    if self.asking is message:
                        # Cancelled mid-handler (shutdown deadline): the asker must not wait on.
                        self.asking = None
                        message._fail(ActorStopped(self.name, "it was cancelled before answering"))
                    raise
                if self.asking is message:
                    self.asking = None
                    if type(value) is ErrorReply:
                        message._fail(value.error)
                    else:
                        message._resolve(outcome.Value(value))
            else:
                try:
                    await receive(message)
                except Exception:
                    self.failed += 1
                    self.failed_on = type(message).__name__
                    raise
            self.processed += 1
            since_yield += 1
            if since_yield >= _BATCH:
                since_yield = 0
                await trio.lowlevel.checkpoint()

    async def _idle_with_timeout(self, actor: Actor[Any], seconds: float) -> None:
        """Wait for a message (or a stop) at most `seconds`; then `receive` a
        `ReceiveTimeout`."""
        mailbox = self.mailbox
        with trio.CancelScope(deadline=trio.current_time() + seconds) as idle:
            task = mailbox._park_reader()
            try:
                await trio.lowlevel.wait_task_rescheduled(_abort_read)
            except BaseException:
                mailbox._unpark_reader(task)
                raise
        if idle.cancelled_caught and not self.stop_requested and not mailbox._items:
            try:
                await actor.receive(ReceiveTimeout(seconds))
            except Exception:
                self.failed += 1
                self.failed_on = ReceiveTimeout.__name__
                raise

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
        system = self.system
        system._unregister(self)
        if self.terminated_event is not None:
            self.terminated_event.set()
        for watcher in self.watchers or ():
            watcher._cell.mailbox.put_system(_Notice(self.terminated))
        self.watchers = None
        if self.links:
            # Links made while it was between incarnations, to one that now never comes.
            _links.end(self, reason, reason is not None)
        if system._changes:
            system._changes.unpark_all()  # a spawn waiting for this supervisor to come back


def _end_incarnation(
    cell: _Cell, instance: Actor[Any] | None, reason: BaseException | None, crashed: bool
) -> None:
    """What an incarnation leaves behind when it ends: its timers are cancelled, its stash
    goes back to the mailbox, and its links are told (if it crashed) or dropped."""
    cell.mailbox._owner_task = None
    cell.asking = None
    if instance is not None:
        _timers.cancel_all(instance)
        _stash.put_back(instance, cell.mailbox)
    if cell.links:
        _links.end(cell, reason, crashed)

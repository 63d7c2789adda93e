"""Exceptions raised by the actor runtime.

The tree::

    ActorError
    ├── ActorStopped          the actor is no longer running (tell/ask to a stopped actor)
    ├── AskTimeout            (also TimeoutError) no reply within the ask timeout
    ├── MailboxFull           the mailbox refused or dropped the message (REJECT / DROP_*)
    ├── ActorNotFound         (also LookupError) no actor registered under a name
    ├── NameTaken             (also ValueError) a name is registered already
    ├── InvalidActor          (also TypeError) something that is not an Actor subclass
    ├── InvalidConfig         (also ValueError) a bad mailbox size, policy, deadline...
    ├── MailboxDeadlock       a send would close a cycle of full WAIT mailboxes
    ├── StashFull             Actor.stash() beyond the stash's capacity
    ├── LinkedActorFailed     a linked actor crashed, so this one crashes too
    ├── SupervisorRestarting  spawn() under a supervisor that did not come back in time
    └── SupervisorGaveUp      restart intensity exceeded: the supervisor escalates
"""

from __future__ import annotations


class ActorError(Exception):
    """Root of every error raised by the actor runtime."""


class ActorStopped(ActorError):
    """The actor has stopped and takes no more messages.

    Attributes:
        actor: the name of the stopped actor.
    """

    def __init__(self, actor: str, detail: str = "") -> None:
        self.actor = actor
        msg = f"actor {actor!r} has stopped and takes no more messages"
        if detail:
            msg += f" ({detail})"
        msg += (
            "; check ref.is_alive before sending, or watch it (ref.join(), Actor.watch) "
            "to learn when it stops"
        )
        super().__init__(msg)


class AskTimeout(ActorError, TimeoutError):
    """No reply came within the ask timeout.

    Attributes:
        actor: the name of the asked actor.
        message_type: the name of the message's type.
        timeout: the timeout in seconds.
    """

    def __init__(self, actor: str, message_type: str, timeout: float) -> None:
        self.actor = actor
        self.message_type = message_type
        self.timeout = timeout
        super().__init__(
            f"actor {actor!r} did not answer a {message_type} message within {timeout:g}s; "
            "pass a larger ask(..., timeout=...) or check that the actor is not blocked"
        )


class MailboxFull(ActorError):
    """The mailbox was full and its overflow policy refused or dropped the message.

    Attributes:
        actor: the name of the actor owning the mailbox.
        capacity: the mailbox's capacity.
    """

    def __init__(self, actor: str, capacity: int, detail: str = "rejected") -> None:
        self.actor = actor
        self.capacity = capacity
        super().__init__(
            f"mailbox of actor {actor!r} is full (capacity {capacity}); message {detail}. "
            "Raise mailbox_size=, or use overflow=Overflow.WAIT for backpressure"
        )


class ActorNotFound(ActorError, LookupError):
    """No actor is registered under that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        shown = ", ".join(sorted(known)[:20]) or "none"
        super().__init__(f"no actor is registered as {name!r}; registered names: {shown}")


class NameTaken(ActorError, ValueError):
    """An actor with that name is registered already."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"an actor named {name!r} is running already; names are unique within a system: "
            "choose another name, or stop the other actor first"
        )


class InvalidActor(ActorError, TypeError):
    """Something that is not an Actor subclass was given where an actor class is needed."""


class InvalidConfig(ActorError, ValueError):
    """A configuration value (mailbox size, policy, deadline...) is out of range."""


class MailboxDeadlock(ActorError):
    """A send would wait for room in a mailbox whose actor waits, in turn, for room in the
    sender's own mailbox (directly or through others): a cycle of full `WAIT` mailboxes in
    which nobody can ever take a message.

    Attributes:
        cycle: the actors' names, from the sender round to the sender again.
    """

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        chain = " -> ".join(repr(name) for name in cycle)
        super().__init__(
            f"sending would deadlock: {chain} each wait for room in the next one's full "
            "mailbox. Break the cycle: answer with the return value of receive (ask) instead "
            "of a tell back, give one direction a mailbox that cannot fill "
            "(overflow=Overflow.REJECT or DROP_*), or send from a separate task"
        )


class StashFull(ActorError):
    """`Actor.stash()` was called with the stash already at its capacity.

    Attributes:
        actor: the stashing actor's name.
        capacity: the stash's capacity (the actor's mailbox size).
    """

    def __init__(self, actor: str, capacity: int) -> None:
        self.actor = actor
        self.capacity = capacity
        super().__init__(
            f"the stash of actor {actor!r} is full ({capacity} messages, its mailbox size); "
            "call unstash_all() once the actor is ready, or raise mailbox_size="
        )


class LinkedActorFailed(ActorError):
    """A linked actor crashed (`Actor.link`), so this actor crashes too (an OTP exit
    signal, Akka's `DeathPactException`). The linked actor's error is the `__cause__`.

    Attributes:
        actor: the name of the linked actor that crashed.
    """

    def __init__(self, actor: str, detail: str = "crashed") -> None:
        self.actor = actor
        super().__init__(
            f"linked actor {actor!r} {detail}, and a link makes its crash this actor's crash; "
            "watch it instead (Actor.watch) to be told with a Terminated message"
        )


class SupervisorRestarting(ActorError):
    """`spawn(..., supervisor=ref)` waited for a restarting supervisor, and it was not
    running again within the wait.

    Attributes:
        supervisor: the supervisor's name.
        waited: the seconds waited.
    """

    def __init__(self, supervisor: str, waited: float) -> None:
        self.supervisor = supervisor
        self.waited = waited
        super().__init__(
            f"supervisor {supervisor!r} is restarting and was not running again within "
            f"{waited:g}s, so nothing was spawned under it; spawn again later, or look at "
            "why it keeps failing (its parent's restart backoff, an on_start that hangs)"
        )


class SupervisorGaveUp(ActorError):
    """A supervisor exceeded its restart intensity and stopped; its parent decides next.

    Attributes:
        supervisor: the supervisor's name.
        child: the name of the child whose failure tripped the limit.
        max_restarts: the configured intensity.
        within: the configured window in seconds.
    """

    def __init__(self, supervisor: str, child: str, max_restarts: int, within: float) -> None:
        self.supervisor = supervisor
        self.child = child
        self.max_restarts = max_restarts
        self.within = within
        if max_restarts == 0:
            limit = "and max_restarts=0 allows no restart"
        else:
            limit = (
                f"and one more restart would make {max_restarts + 1} within {within:g}s, "
                f"more than max_restarts={max_restarts} allows"
            )
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} failed, {limit} (raise "
            "max_restarts= or shorten within= to tolerate more, or fix the failure named in "
            "__cause__)"
        )

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
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} failed more than "
            f"{max_restarts} times within {within:g}s (raise max_restarts= or within= "
            "to tolerate more, or fix the failure named in __cause__)"
        )

"""Runtime notices: messages of the runtime itself, carried ahead of the bounded queue
(`Mailbox.put_system`)."""

from __future__ import annotations

from typing import Any


class _SystemMessage:
    """Base of runtime notices carried by mailboxes (`Mailbox.put_system`)."""

    __slots__ = ()


class _Notice(_SystemMessage):
    """A message for the actor's own `receive`, sent by the runtime (e.g. `Terminated`)."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload

"""Akka's stash: messages an actor sets aside until it is ready for them."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ._exceptions import StashFull

if TYPE_CHECKING:
    from ._actor import Actor
    from ._mailbox import Mailbox


def stash(actor: Actor[Any], message: Any) -> None:
    cell = actor._cell
    stashed: deque[Any] | None = actor.__dict__.get("_stashed")
    if stashed is None:
        stashed = actor.__dict__["_stashed"] = deque()
    if len(stashed) >= cell.mailbox.capacity:
        raise StashFull(cell.name, cell.mailbox.capacity)
    pending = cell.asking
    if pending is not None and pending.message is message:
        cell.asking = None  # answered when it is handled again, after unstash_all()
        stashed.append(pending)
    else:
        stashed.append(message)


def unstash_all(actor: Actor[Any]) -> int:
    stashed: deque[Any] | None = actor.__dict__.get("_stashed")
    if not stashed:
        return 0
    count = len(stashed)
    actor._cell.mailbox._put_back(list(stashed))
    stashed.clear()
    return count


def put_back(actor: Actor[Any], mailbox: Mailbox) -> None:
    """At the end of an incarnation: stashed messages go back to the front of the mailbox
    (the next incarnation handles them, or the final stop counts and fails them)."""
    stashed: deque[Any] | None = actor.__dict__.get("_stashed")
    if stashed:
        mailbox._put_back(list(stashed))
        stashed.clear()

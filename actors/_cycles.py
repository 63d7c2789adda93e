"""Detecting a cycle of full `WAIT` mailboxes before a sender joins it for good."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._exceptions import MailboxDeadlock

if TYPE_CHECKING:
    from ._mailbox import Mailbox

# Senders parked in `Mailbox.put` on a full mailbox, by task: the edges `check_cycle`
# follows. Only waiting senders are in it, so it stays as small as the set of them.
blocked: dict[trio.lowlevel.Task, Mailbox] = {}
# A chain of waiting senders longer than this is not followed further (a cycle that long
# is still a deadlock, but costs more to prove than it is worth on every full send).
_MAX_CYCLE = 32


def check_cycle(target: Mailbox, sender: trio.lowlevel.Task) -> None:
    """Raise `MailboxDeadlock` if `sender` waiting for room in `target` would close a cycle:
    `target`'s actor waits for room in another full mailbox, whose actor waits... and so on
    round to the mailbox that `sender` itself reads."""
    chain: list[Mailbox] = [target]
    owner = target._owner_task
    while owner is not None and len(chain) <= _MAX_CYCLE:
        if owner is sender:
            names = [box.owner for box in chain]
            raise MailboxDeadlock([names[-1], *names])
        box = blocked.get(owner)
        if box is None:
            return
        chain.append(box)
        owner = box._owner_task

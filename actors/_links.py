"""Links (OTP's `link/1`): two incarnations that crash together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exceptions import InvalidConfig, LinkedActorFailed
from ._notices import _SystemMessage

if TYPE_CHECKING:
    from ._actor import _Cell


class _LinkExit(_SystemMessage):
    """Sent to a linked actor: `peer` crashed with `reason`."""

    __slots__ = ("incarnation", "peer", "reason")

    def __init__(self, peer: _Cell, reason: BaseException | None, incarnation: int) -> None:
        self.peer = peer
        self.reason = reason
        self.incarnation = incarnation  # the receiver's, when the link was made


def _incarnation(cell: _Cell, *, next_if_down: bool = False) -> int:
    child = cell.child
    if child is None:
        raise InvalidConfig(f"actor {cell.name!r} is the root supervisor, which takes no links")
    if next_if_down and not child.running:
        return child.incarnation + 1  # restarting: the link is with the next incarnation
    return child.incarnation


def link(me: _Cell, peer: _Cell) -> None:
    if peer is me:
        raise InvalidConfig(f"actor {me.name!r} cannot link to itself")
    mine = _incarnation(me)
    if peer.terminated is not None:
        # OTP: linking to a process that is gone is an exit signal at once.
        me.mailbox.put_system(_LinkExit(peer, peer.terminated.reason, mine))
        if me.links is None:
            me.links = {}
        me.links[peer] = mine
        return
    theirs = _incarnation(peer, next_if_down=True)
    if me.links is None:
        me.links = {}
    if peer.links is None:
        peer.links = {}
    me.links[peer] = mine
    peer.links[me] = theirs


def unlink(me: _Cell, peer: _Cell) -> None:
    if me.links:
        me.links.pop(peer, None)
    if peer.links:
        peer.links.pop(me, None)


def end(cell: _Cell, reason: BaseException | None, crashed: bool) -> None:
    """`cell`'s incarnation ended: tell the linked actors if it crashed, else unlink."""
    links = cell.links
    cell.links = None
    for peer in links or ():
        peer_links = peer.links
        if not peer_links or cell not in peer_links:
            continue
        if crashed:
            peer.mailbox.put_system(_LinkExit(cell, reason, peer_links[cell]))
        else:
            del peer_links[cell]


def linked_exit(me: _Cell, notice: _LinkExit) -> None:
    """Handle a linked actor's crash: crash too, if the link still stands."""
    links = me.links
    if not links or links.get(notice.peer) != notice.incarnation:
        return  # unlinked since, or made by an earlier incarnation
    if me.child is None or me.child.incarnation != notice.incarnation:
        return
    del links[notice.peer]
    if notice.peer.terminated is not None and notice.reason is None:
        raise LinkedActorFailed(notice.peer.name, "had stopped already")
    raise LinkedActorFailed(notice.peer.name) from notice.reason

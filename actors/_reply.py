"""Answering an `ask`: typed requests, error replies, and replies given after `receive`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic

import attrs
import outcome
from typing_extensions import TypeVar

if TYPE_CHECKING:
    from ._ask import _Ask

R = TypeVar("R")


class Request(Generic[R]):
    """Base class of a message that is answered with an `R`.

    Only for the type checker: `await ref.ask(GetBalance())` is typed `int` when
    `class GetBalance(Request[int])`. It adds no field and costs nothing at run time
    (`__slots__ = ()`, so attrs and dataclass subclasses stay slotted).
    """

    __slots__ = ()


@attrs.frozen
class ErrorReply:
    """Return this from `receive` to answer an `ask` with an error, without crashing.

    The asker gets `error` raised; the actor keeps running with its state (Akka's
    `StatusReply.error`). Use it for refusals that are part of the protocol (insufficient
    funds, unknown key); let real failures crash. For a `tell` the return value of
    `receive` is ignored, an `ErrorReply` too.
    """

    error: Exception = attrs.field(validator=attrs.validators.instance_of(Exception))


class Reply(Generic[R]):
    """The answer to one `ask`, given later than the return of `receive`.

    Get it from `Actor.defer_reply()` inside `receive` (OTP's `{noreply, State}` followed
    by `gen_server:reply/2`): the actor goes on with other messages and answers when it can,
    from any task or actor it hands the `Reply` to. Only the first answer counts; one that
    comes after the asker's timeout is discarded. An unanswered `Reply` leaves the asker
    waiting until its `ask` timeout, so always ask with one when a reply may be deferred.
    """

    __slots__ = ("_ask",)

    def __init__(self, ask: _Ask) -> None:
        self._ask = ask

    @property
    def done(self) -> bool:
        """True once answered, or once the asker's timeout has passed."""
        return self._ask.result is not None

    def send(self, value: R) -> None:
        """Answer with `value` (an `ErrorReply` answers with its error)."""
        if isinstance(value, ErrorReply):
            self._ask._resolve(outcome.Error(value.error))
        else:
            self._ask._resolve(outcome.Value(value))

    def fail(self, error: Exception) -> None:
        """Answer with an error: the asker gets `error` raised."""
        self._ask._resolve(outcome.Error(error))

    def __repr__(self) -> str:
        done = " (done)" if self.done else ""
        return f"<Reply to a {type(self._ask.message).__name__} ask{done}>"

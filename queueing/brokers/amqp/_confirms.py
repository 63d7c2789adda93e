"""Publisher confirms: the broker's answer to each publish, by delivery tag."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

import anyio
import anyio.lowlevel

from ._errors import ConnectionClosed, PublishError, PublishNacked, PublishReturned


class Confirmation:
    """The outcome of one publish; `await confirmation.wait()` returns or raises it.

    On a channel without publisher confirms it resolves once the message was written to
    the socket (the broker may still lose it).

    Attributes:
        exchange, routing_key: where it was published.
        delivery_tag: its number among the channel's publishes (None until it was sent,
            and always None without confirms).
    """

    __slots__ = (
        "_done",
        "_error",
        "_event",
        "_on_settle",
        "_returned",
        "delivery_tag",
        "exchange",
        "routing_key",
    )

    def __init__(self, exchange: str, routing_key: str) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.delivery_tag: int | None = None
        self._done = False
        # Made by the first `wait` that finds the outcome unknown (most are never waited
        # for before they are done: a batch's publisher checks them at once).
        self._event: anyio.Event | None = None
        self._error: BaseException | None = None
        self._returned: PublishReturned | None = None
        self._on_settle: Callable[[], None] | None = None

    @property
    def done(self) -> bool:
        """True once the outcome is known."""
        return self._done

    def exception(self) -> BaseException | None:
        """Once `done`: the error `wait` raises, or None if the publish succeeded.

        Raises:
            RuntimeError: the outcome is not known yet.
        """
        if not self._done:
            raise RuntimeError("the publish's outcome is not known yet: await wait()")
        return self._error

    async def wait(self) -> None:
        """Wait for the outcome.

        Raises:
            PublishNacked: the broker refused the message.
            PublishReturned: it was mandatory and no queue took it.
            PublishOutcomeUnknown: the channel or connection closed first.
            ChannelClosed, ConnectionClosed: it was never sent.
        """
        if self._done:
            await anyio.lowlevel.checkpoint()
        else:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        if self._error is not None:
            raise self._error

    def _settle(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
            if self._event is not None:
                self._event.set()
            on_settle, self._on_settle = self._on_settle, None  # no cycle left behind
            if on_settle is not None:
                on_settle()


class Confirms:
    """A confirm-mode channel's publishes awaiting Basic.Ack/Nack, by delivery tag.

    Tags are given in the order publishes go out (the writer calls `register`), which is
    the order the broker numbers them. A Basic.Return precedes the Ack of the message it
    returns; it carries no tag, so returns are matched by message id.
    """

    def __init__(self) -> None:
        self._next_tag = 1
        self._pending: OrderedDict[int, tuple[Confirmation, str | None]] = OrderedDict()
        self._returnable: dict[str, deque[Confirmation]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def register(self, confirmation: Confirmation, message_id: str | None) -> None:
        """Number a publish that is about to be written; `message_id` if mandatory."""
        tag = self._next_tag
        self._next_tag += 1
        confirmation.delivery_tag = tag
        self._pending[tag] = (confirmation, message_id)
        if message_id is not None:
            self._returnable.setdefault(message_id, deque()).append(confirmation)

    def settle(self, tag: int, *, multiple: bool, nack: bool) -> None:
        """A Basic.Ack or Basic.Nack for `tag` (and every earlier tag if `multiple`)."""
        if multiple:
            pending = self._pending
            while pending:
                first = next(iter(pending))
                if first > tag:
                    break
                self._resolve(*pending.popitem(last=False)[1], nack=nack)
        elif (entry := self._pending.pop(tag, None)) is not None:
            self._resolve(*entry, nack=nack)

    def returned(self, message_id: str | None, error: PublishReturned) -> bool:
        """A Basic.Return; False if it matches no pending mandatory publish."""
        waiting = self._returnable.get(message_id) if message_id is not None else None
        if not waiting:
            return False
        # The oldest such publish not returned yet: returns come in publish order.
        for confirmation in waiting:
            if confirmation._returned is None:
                confirmation._returned = error
                return True
        return False

    def fail_all(self, make_error: type[PublishError], cause: BaseException) -> None:
        """The channel closed: every pending publish ends with `make_error` from `cause`."""
        pending, self._pending = self._pending, OrderedDict()
        self._returnable.clear()
        what = "connection" if isinstance(cause, ConnectionClosed) else "channel"
        for confirmation, _ in pending.values():
            error = make_error(
                f"the {what} closed before the broker confirmed the publish to exchange "
                f"{confirmation.exchange!r} with routing key {confirmation.routing_key!r}: "
                f"it may or may not have been routed; publish again if a duplicate is "
                f"acceptable ({cause})",
                exchange=confirmation.exchange,
                routing_key=confirmation.routing_key,
            )
            error.__cause__ = cause
            confirmation._settle(error)

    def _resolve(self, confirmation: Confirmation, message_id: str | None, *, nack: bool) -> None:
        if message_id is not None:
            waiting = self._returnable.get(message_id)
            if waiting is not None:
                waiting.remove(confirmation)
                if not waiting:
                    del self._returnable[message_id]
        if nack:
            confirmation._settle(
                PublishNacked(
                    f"the broker refused (nacked) the message published to exchange "
                    f"{confirmation.exchange!r} with routing key "
                    f"{confirmation.routing_key!r}: e.g. a queue with x-overflow "
                    "reject-publish is full; it was not enqueued, publish it again later",
                    exchange=confirmation.exchange,
                    routing_key=confirmation.routing_key,
                )
            )
        else:
            confirmation._settle(confirmation._returned)

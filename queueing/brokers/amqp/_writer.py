"""The connection's outgoing queue: whole messages in, batches of bytes out.

Every caller hands over the complete bytes of one unit (a method, or a method with its
content header and body frames) as one `Outgoing`. One writer task takes them in order
and sends them, so frames of two messages never interleave, and a caller cancelled while
waiting for room leaves nothing half-written: its unit is either queued whole or not at all.

Anything that must follow the wire order exactly (delivery tags, which reply answers
which request) is decided in `before`, which the writer calls right before the bytes go
out, never earlier.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio
import anyio.lowlevel

from ._errors import fresh


class Outgoing:
    """One unit of bytes for the wire, with hooks around its sending.

    Args:
        data: the bytes.
        before: called by the writer just before sending; False drops the unit (the
            hook itself reports why to whoever waits).
        after: called once the bytes were handed to the socket.
        drop: called with the connection's error if the unit is never sent.
        control: part of a close handshake or a heartbeat: sent even after the
            connection started closing, and never waits for room.
    """

    __slots__ = ("after", "before", "control", "data", "drop")

    def __init__(
        self,
        data: bytes,
        *,
        before: Callable[[], bool] | None = None,
        after: Callable[[], None] | None = None,
        drop: Callable[[BaseException], None] | None = None,
        control: bool = False,
    ) -> None:
        self.data = data
        self.before = before
        self.after = after
        self.drop = drop
        self.control = control


class WriteQueue:
    """A FIFO of `Outgoing` with a bound for callers (`put` waits for room)."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Outgoing] = deque()
        self._limit = limit
        self._has_items = anyio.Event()
        self._has_room = anyio.Event()
        self._has_room.set()
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: Outgoing) -> None:
        """Queue one unit, waiting while the queue is full.

        Raises:
            the connection's error (a copy) once it is closing or closed.
        """
        await anyio.lowlevel.checkpoint()
        while True:
            if self._error is not None:
                raise fresh(self._error)
            if len(self._items) < self._limit:
                break
            if self._has_room.is_set():
                self._has_room = anyio.Event()
            await self._has_room.wait()
        self._append(item)

    def put_now(self, item: Outgoing) -> None:
        """Queue a unit now, past the bound and even while closing (the writer still
        drops non-control units then): for the reader task, which must never wait."""
        self._append(item)

    def _append(self, item: Outgoing) -> None:
        self._items.append(item)
        self._has_items.set()

    async def get_batch(self, max_bytes: int) -> list[Outgoing]:
        """The oldest units, at least one, up to about `max_bytes` together."""
        while not self._items:
            self._has_items = anyio.Event()
            await self._has_items.wait()
        items = self._items
        batch = [items.popleft()]
        size = len(batch[0].data)
        while items and size < max_bytes:
            item = items.popleft()
            batch.append(item)
            size += len(item.data)
        if len(items) < self._limit:
            self._has_room.set()
        return batch

    def refuse(self, error: BaseException) -> None:
        """From now on `put` raises `error`; units waiting for room wake up and raise it."""
        if self._error is None:
            self._error = error
        self._has_room.set()

    def drain(self, error: BaseException) -> None:
        """Drop every queued unit (the writer has stopped), telling each one why."""
        self.refuse(error)
        while self._items:
            item = self._items.popleft()
            if item.drop is not None:
                item.drop(error)

"""The bounded mailbox every actor reads from."""

from __future__ import annotations

import enum
import logging
from collections import deque
from typing import Any

import trio

from ._cycles import blocked, check_cycle
from ._exceptions import ActorStopped, InvalidConfig, MailboxFull

log = logging.getLogger("actors")

# A producer that never has to wait still yields to the scheduler this often, so a tight
# `tell` loop cannot starve other tasks (trio's fairness) while most calls avoid a round trip.
_SCHEDULE_EVERY = 64


class Overflow(enum.Enum):
    """What a full mailbox does with one more message."""

    WAIT = "wait"
    """The sender waits for room: backpressure (the default)."""
    REJECT = "reject"
    """The sender gets `MailboxFull` at once; the message is not queued."""
    DROP_OLDEST = "drop_oldest"
    """The oldest queued message is dropped (counted) to make room."""
    DROP_NEWEST = "drop_newest"
    """The new message is dropped (counted); the queue is unchanged."""


def check_config(capacity: int, overflow: Overflow) -> None:
    """Raise `InvalidConfig` unless `capacity` and `overflow` make a valid mailbox."""
    if type(capacity) is not int or capacity < 1:  # bool and int subclasses are refused too
        raise InvalidConfig(
            f"mailbox capacity must be an int >= 1, got {capacity!r}: "
            "mailboxes are always bounded; pick the most messages to buffer"
        )
    if type(overflow) is not Overflow:
        raise InvalidConfig(
            f"overflow must be an Overflow member ({', '.join(o.name for o in Overflow)}), "
            f"got {overflow!r}"
        )


class Mailbox:
    """A bounded FIFO of messages with an overflow policy; many writers.

    An actor's own mailbox has one reader, its message loop. A mailbox can also be shared
    by several readers that each take the next message with `get()` when they are free
    (Akka's balancing pool: every message goes to exactly one reader, and a busy reader
    holds none that an idle one could take). A producer that fills a shared mailbox on
    demand waits with `wait_for_demand()` until readers wait for messages that are not
    there; several producers may, each fetching for the readers the others' fetches under
    way (`fetching`) do not serve.

    System messages (supervision and death-watch notices) bypass the bound and are read
    first: there is at most one per child or watched actor, so they stay bounded too.

    Args:
        capacity: the most messages the mailbox holds (at least 1).
        overflow: what happens when it is full.
        owner: the owning actor's name, for error messages.
    """

    __slots__ = (
        "_closed",
        "_gets",
        "_getters",
        "_items",
        "_owner_task",
        "_producers",
        "_putters",
        "_reader",
        "_sends",
        "_system",
        "_waiting_putters",
        "_waking",
        "capacity",
        "dropped",
        "overflow",
        "owner",
        "received",
        "rejected",
    )

    def __init__(
        self, capacity: int = 1000, overflow: Overflow = Overflow.WAIT, *, owner: str = "?"
    ) -> None:
        check_config(capacity, overflow)
        self.capacity = capacity
        self.overflow = overflow
        self.owner = owner
        # An empty tuple until the first message, and again whenever the reader has drained
        # it: an idle actor holds no deque (bench/actors_bench.py measures what that saves).
        self._items: deque[Any] | tuple[()] = ()
        # Memory per idle actor matters (bench/actors_bench.py, "memory per idle actor"):
        # the notice queue and the senders' lot are made on first use, and the single
        # reader parks in a plain slot rather than a ParkingLot.
        self._system: deque[Any] | None = None
        self._putters: trio.lowlevel.ParkingLot | None = None
        self._waiting_putters = 0
        self._reader: trio.lowlevel.Task | None = None
        self._closed = False
        self._sends = 0
        # Shared readers (`get`): parked in FIFO order, and how many were woken and have
        # not taken their message yet (a put wakes one reader only if none is on its way;
        # a reader that takes a message and sees more wakes the next: a chain, not a herd).
        self._getters: deque[trio.lowlevel.Task] | None = None
        self._waking = 0
        self._gets = 0
        # Producers that fill the mailbox on demand: where they wait, and the messages
        # their fetches under way bring (made on first use: most mailboxes have none).
        self._producers: _Producers | None = None
        # The task of the actor that reads this mailbox with its message loop, while that
        # loop runs (None otherwise): what `check_cycle` follows from a mailbox to a sender.
        self._owner_task: trio.lowlevel.Task | None = None
        self.received = 0
        self.dropped = 0
        self.rejected = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, message: Any) -> bool:
        """Queue a message without waiting.

        Returns:
            True if queued, False if DROP_NEWEST dropped it.

        Raises:
            trio.WouldBlock: full, with the WAIT policy.
            MailboxFull: full, with the REJECT policy.
            ActorStopped: the mailbox is closed.
        """
        items = self._items
        if type(items) is not deque:
            if self._closed:
                raise ActorStopped(self.owner)
            items = self._items = deque()  # the first message since the reader drained it
        # A closed mailbox holds the empty tuple (close() drops its deque): refused above.
        if len(items) < self.capacity:
            items.append(message)
            self.received += 1
            if self._reader is not None:
                self.wake_reader()
            elif self._getters and not self._waking:
                self._wake_getter()
            return True
        if self._closed:
            raise ActorStopped(self.owner)
        overflow = self.overflow
        if overflow is Overflow.WAIT:
            raise trio.WouldBlock
        if overflow is Overflow.REJECT:
            self.rejected += 1
            raise MailboxFull(self.owner, self.capacity)
        if overflow is Overflow.DROP_OLDEST:
            self._drop(items.popleft())
            items.append(message)
            self.received += 1
            return True  # full, so no reader is waiting
        self._drop(message)
        return False

    def _drop(self, message: Any) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 10_000 == 0:
            log.warning(
                "mailbox of actor %r is full (capacity %d): %d message(s) dropped so far "
                "by policy %s",
                self.owner,
                self.capacity,
                self.dropped,
                self.overflow.name,
            )
        fail = getattr(message, "_fail", None)
        if fail is not None:
            fail(MailboxFull(self.owner, self.capacity, "dropped by " + self.overflow.name))

    async def put(self, message: Any) -> bool:
        """Queue a message, waiting for room with the WAIT policy.

        A cancellation point; yields to the scheduler when it has to wait and at least
        every few calls otherwise.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                queued = self.put_nowait(message)
            except trio.WouldBlock:
                pass
            else:
                self._sends += 1
                if self._sends >= _SCHEDULE_EVERY:
                    self._sends = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return queued
            # Full: park outside the except clause, so the WouldBlock is not kept alive.
            if self._putters is None:
                self._putters = trio.lowlevel.ParkingLot()
            task = trio.lowlevel.current_task()
            if self._owner_task is not None:
                check_cycle(self, task)
            blocked[task] = self
            self._waiting_putters += 1
            try:
                await self._putters.park()
            finally:
                self._waiting_putters -= 1
                del blocked[task]

    def put_system(self, message: Any) -> None:
        """Queue a runtime notice; it bypasses the bound and is read first."""
        if self._closed:
            return
        if self._system is None:
            self._system = deque()
        self._system.append(message)
        if self._reader is not None:
            self.wake_reader()

    def put_first_nowait(self, message: Any) -> None:
        """Queue a message ahead of every other one (Akka's unstash; a task handed back).

        Raises:
            trio.WouldBlock: full (whatever the policy: nothing queued is dropped for it).
            ActorStopped: the mailbox is closed.
        """
        if self._closed:
            raise ActorStopped(self.owner)
        items = self._items
        if len(items) >= self.capacity:
            raise trio.WouldBlock
        if not isinstance(items, deque):
            items = self._items = deque()
        items.appendleft(message)
        self.received += 1
        if self._reader is not None:
            self.wake_reader()
        elif self._getters and not self._waking:
            self._wake_getter()

    def _put_back(self, messages: list[Any]) -> None:
        """Queue taken messages again, ahead of every other one and in their order, over
        the bound if need be (they were accepted once: the stash, at most a mailbox's worth).
        On a closed mailbox they are refused like queued ones: asks fail."""
        if self._closed:
            for message in messages:
                fail = getattr(message, "_fail", None)
                if fail is not None:
                    fail(ActorStopped(self.owner, "it stopped before answering"))
            return
        items = self._items
        if not isinstance(items, deque):
            items = self._items = deque()
        items.extendleft(reversed(messages))
        if self._reader is not None:
            self.wake_reader()

    def get_nowait(self) -> Any:
        """Take the next message (system notices first).

        Raises:
            trio.WouldBlock: nothing is queued.
        """
        if self._system:
            return self._system.popleft()
        items = self._items
        if not items:
            raise trio.WouldBlock
        message = items.popleft()  # a non-empty one is a deque
        if self._waiting_putters:
            self._unpark_putter()
        if items and self._getters and not self._waking:
            self._wake_getter()  # the next reader in the chain
        return message

    async def get(self) -> Any:
        """Take the next message, waiting for one; several tasks may wait at once.

        Each message goes to exactly one reader, in the order readers began to wait. A
        cancellation point; it yields to the scheduler when it waits, and at least every
        few calls otherwise.

        Raises:
            ActorStopped: the mailbox is closed (and empty).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._items or self._system:
                message = self.get_nowait()
                self._gets += 1
                if self._gets >= _SCHEDULE_EVERY:
                    self._gets = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return message
            if self._closed:
                raise ActorStopped(self.owner)
            await self._park_getter()

    async def _park_getter(self) -> None:
        getters = self._getters
        if getters is None:
            getters = self._getters = deque()
        task = trio.lowlevel.current_task()
        getters.append(task)
        producers = self._producers
        if producers is not None and not producers.woken and producers.lot and self.demand > 0:
            producers.wake()

        def abort(_: Any) -> trio.lowlevel.Abort:
            getters.remove(task)  # still parked: a woken reader is not aborted
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self._waking -= 1

    def _wake_getter(self) -> None:
        assert self._getters is not None
        task = self._getters.popleft()
        self._waking += 1
        trio.lowlevel.reschedule(task)

    @property
    def demand(self) -> int:
        """How many `get()` callers wait for messages that are neither queued nor on their
        way (`fetching`)."""
        parked = len(self._getters) if self._getters is not None else 0
        producers = self._producers
        coming = producers.coming if producers is not None else 0
        return max(0, parked - max(0, len(self._items) - self._waking) - coming)

    async def wait_for_demand(self) -> int:
        """Wait until `get()` callers wait for messages that are neither queued nor on their
        way; return how many (for a producer that fetches only what idle readers asked
        for). A producer that fetches them says so with `fetching(n)`, so that another
        producer waiting here fetches only for readers that ask after it.

        Raises:
            ActorStopped: the mailbox is closed.
        """
        producers = self._producing()
        woken = False  # by a reader (`_Producers.wake`): the one producer on its way
        while True:
            if self._closed:
                if woken:
                    producers.woken = False
                raise ActorStopped(self.owner)
            if self.demand > 0:
                # Read after the checkpoint: readers woken with the last messages may ask
                # again meanwhile (they finish quick work), and are counted in one answer.
                try:
                    await trio.lowlevel.checkpoint()
                except BaseException:
                    if woken:
                        producers.woken = False
                    if producers.lot and self.demand > 0:
                        producers.wake()  # the demand this one was woken for
                    raise
                if woken:
                    producers.woken = woken = False
                demand = self.demand
                if demand > 0:
                    return demand
                continue
            if woken:
                producers.woken = woken = False
            await producers.lot.park()
            woken = True

    def fetching(self, n: int) -> _Fetching:
        """`with mailbox.fetching(n):` around a producer's fetch of `n` messages for the
        demand `wait_for_demand` returned (and its puts): other producers do not count
        those readers while it runs. The producer looks at the demand again itself after
        (a fetch that brought fewer leaves demand that wakes nobody)."""
        return _Fetching(self._producing(), n)

    def _producing(self) -> _Producers:
        """The producers' state, made on first use (most mailboxes have no producer)."""
        producers = self._producers
        if producers is None:
            producers = self._producers = _Producers()
        return producers

    def _unpark_putter(self) -> None:
        """Wake one sender waiting for room (a message was just taken)."""
        assert self._putters is not None
        self._putters.unpark()

    def _take_would_wait(self) -> bool:
        """True if nothing is queued (system notices included)."""
        return not (self._system or self._items)

    async def wait_readable(self) -> None:
        """Wait until a message arrives or `wake_reader` is called."""
        if self._system or self._items:
            await trio.lowlevel.checkpoint()
            return
        task = self._park_reader()
        try:
            await trio.lowlevel.wait_task_rescheduled(_abort_read)
        except BaseException:
            self._unpark_reader(task)
            raise

    # The reader parks in the `_reader` slot with `custom_sleep_data` pointing at this
    # mailbox, and `_abort_read` (one function for every mailbox) as its abort function: a
    # bound method as abort function would be one more object on every idle actor. Trio clears
    # `custom_sleep_data` whenever it reschedules a task (documented), so a reader whose wait
    # was cancelled no longer counts as parked here even before it clears the slot itself.

    def _park_reader(self) -> trio.lowlevel.Task:
        """Take the reader's slot for the current task (just before it parks)."""
        reader = self._reader
        if reader is not None and reader.custom_sleep_data is self:
            raise trio.BusyResourceError(
                f"another task is already waiting to read the mailbox of actor {self.owner!r}; "
                "a mailbox has exactly one reader"
            )
        self._reader = task = trio.lowlevel.current_task()
        task.custom_sleep_data = self
        return task

    def _unpark_reader(self, task: trio.lowlevel.Task) -> None:
        """Give up the slot after a wait that did not end by `wake_reader` (cancelled)."""
        if self._reader is task:
            self._reader = None

    def wake_reader(self) -> None:
        """Wake the task waiting in `wait_readable`, if any."""
        reader = self._reader
        if reader is not None:
            self._reader = None
            if reader.custom_sleep_data is self:
                trio.lowlevel.reschedule(reader)

    def close(self) -> list[Any]:
        """Refuse further messages, wake waiting senders and readers, and return what was
        queued."""
        self._closed = True
        left = list(self._items)
        self._items = ()
        self._system = None
        if self._putters is not None:
            self._putters.unpark_all()
        self.wake_reader()
        while self._getters:
            self._wake_getter()  # each finds the mailbox closed
        if self._producers is not None:
            self._producers.lot.unpark_all()
        return left

    def reopen(self) -> None:
        self._closed = False


class _Producers:
    """The producers that fill a mailbox on demand (`Mailbox.wait_for_demand`).

    A reader that parks while there is demand wakes one of them, unless one is on its way
    already: that one reads the demand after a checkpoint, so it counts the readers that
    park meanwhile too. A reader that parks while its wait is served (by messages queued
    or on their way) wakes nobody.
    """

    __slots__ = ("coming", "lot", "woken")

    def __init__(self) -> None:
        self.lot = trio.lowlevel.ParkingLot()
        #: Messages the fetches under way bring (`Mailbox.fetching`).
        self.coming = 0
        #: Whether a producer was woken and has not read the demand yet.
        self.woken = False

    def wake(self) -> None:
        self.woken = True
        self.lot.unpark()


class _Fetching:
    """`Mailbox.fetching`: counts `n` messages on their way while it is entered."""

    __slots__ = ("n", "producers")

    def __init__(self, producers: _Producers, n: int) -> None:
        self.producers = producers
        self.n = n

    def __enter__(self) -> None:
        self.producers.coming += self.n

    def __exit__(self, *exc: object) -> None:
        self.producers.coming -= self.n


def _abort_read(_: Any) -> trio.lowlevel.Abort:
    # The waiting reader is cancelled: trio reschedules it (clearing its custom_sleep_data,
    # which is what `wake_reader` checks), and it clears the mailbox's slot as it unwinds.
    return trio.lowlevel.Abort.SUCCEEDED

"""The writer: one thread per broker owns the SQLite connection and runs requests in
batches; it also tells the event loop about other processes' writes.

- Requests (`call`, `send`) come from many tasks of the event loop. Those made while the
  thread is busy join one batch, and a batch runs in one short transaction
  (`BEGIN IMMEDIATE` when it writes): one lock, one commit, one disk sync for all of them
  (see `_thread.py` for locks and failures). The event loop never waits for the disk, and
  never starts a thread per request.
- Two lanes. Ordered requests (accepts, outcomes, reads) run in the order they were made.
  Lease requests (claims, renewals, releases) run first, in a transaction of their own
  that does not sync the disk: a lease lost in a power failure only means that its task
  runs again, and a claim must not wait for other processes' syncs to reach a worker.
- Batches that nobody waits for (outcomes sent by workers, `send`) run at most once per
  `GROUP_COMMIT` while they come in numbers, so that under load many outcomes share one
  disk sync; when they come one by one they run at once. A request a caller waits for
  (an accept, a read, a flush) runs them at once, ahead of it.
- Between batches, and every `poll` seconds at most when idle (backing off from
  `POLL_MIN`), the thread reads `PRAGMA data_version`, which changes when another
  connection committed. The event loop then wakes every waiter (`Signals.fire_all`):
  that is how a process learns of tasks, outcomes and room made by another one, at worst
  `poll` seconds late (0.05 s by default). What this process writes wakes its own waiters
  as soon as the batch is committed.
- The thread hands finished batches to the event loop through a socket pair (any event
  loop can wait for a socket: trio and asyncio alike, through anyio).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
import time
from typing import Any

import anyio
import anyio.abc

from ..._exceptions import BrokerError
from ._schema import open_database
from ._settings import Settings
from ._thread import Batch, Executor, Failure, Op, data_version, is_busy, locked
from ._tx import Tx

log = logging.getLogger("queueing")

#: The shortest pause between two looks for other processes' writes (after a change).
POLL_MIN = 0.001
#: The least time between two commits of ordered batches that nobody waits for (outcomes
#: sent by workers) while they come in numbers (the last commit had `GROUP_MIN` requests
#: or more): then many outcomes share one disk sync. One at a time runs at once (low
#: latency when the load is light).
GROUP_COMMIT = 0.01
GROUP_MIN = 2
#: Requests waiting to run past which `send` waits for its own (backpressure).
MAX_BACKLOG = 10_000
#: Seconds between two deletions of outcomes whose TTL ran out.
CLEANUP_EVERY = 1.0
#: Rows deleted per cleanup transaction (short transactions; the next pass takes the rest).
CLEANUP_ROWS = 2000
#: Seconds the event loop waits for the thread to finish its last batches at close.
CLOSE_TIMEOUT = 30.0


class Signals:
    """Wake-ups in the event loop, by name (`ready:<queue>`, `room:<queue>`, `settled`).

    A waiter takes the current event *before* it looks at the database, so that a change
    made after its look always wakes it."""

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}

    def event(self, name: str) -> anyio.Event:
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = anyio.Event()
        return event

    def fire(self, name: str) -> None:
        event = self._events.pop(name, None)
        if event is not None:
            event.set()

    def fire_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


class Writer:
    """The thread that owns the connection, and the event loop's side of it."""

    def __init__(self, settings: Settings, owner: str, cleanup: Op) -> None:
        self.settings = settings
        self.owner = owner
        self.signals = Signals()
        #: Requests made and not yet handed back.
        self.backlog = 0
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._wake_thread = threading.Condition(self._lock)
        # Batches made and not yet taken by the thread, and the open one, per lane
        # (index 0: ordered, 1: lease).
        self._queued: tuple[list[Batch], list[Batch]] = ([], [])
        self._open: list[Batch | None] = [None, None]
        self._closing = False
        self._failure: BrokerError | None = None
        # Thread -> event loop: finished batches with their wake-ups, and a count of the
        # other processes' writes seen.
        self._finished: collections.deque[tuple[list[Batch], set[str]]] = collections.deque()
        self._foreign = 0
        self._foreign_seen = 0
        self._thread: threading.Thread | None = None
        #: Until when ordered batches nobody waits for wait for company (monotonic).
        self._linger_until = 0.0
        self._delivering: anyio.CancelScope | None = None
        self._delivered = False
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)

    # -- the event loop's side -------------------------------------------------------------

    async def start(self, group: anyio.abc.TaskGroup) -> None:
        """Open the database in the thread (migrating it), and hand results back through
        `group`; raises `BrokerError` if the file cannot be used."""
        group.start_soon(self._deliver)
        self._thread = threading.Thread(target=self._main, name="queueing-sqlite", daemon=True)
        self._thread.start()
        await self.call(_nothing, write=False)

    def enqueue(
        self, op: Op, args: tuple[Any, ...], write: bool, *, lease: bool, waited: bool
    ) -> tuple[Batch, int]:
        """Add a request to the open batch of its lane; returns the batch and the
        request's index."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise BrokerError(f"the SQLite broker on {self.settings.url!r} is closed")
            batch = self._open[lease]
            if batch is None:
                batch = self._open[lease] = Batch(lease)
                self._queued[lease].append(batch)
                self._wake_thread.notify()
            elif waited and not batch.waited:
                self._wake_thread.notify()  # it may be waiting for company: run it now
            batch.ops.append((op, args))
            batch.writes = batch.writes or write
            batch.waited = batch.waited or waited
            self.backlog += 1
            return batch, len(batch.ops) - 1

    async def call(self, op: Op, *args: Any, write: bool = True, lease: bool = False) -> Any:
        """Run `op(tx, *args)` in the thread, in the next batch; returns what it returned.

        `lease`: a request of the lease lane (see the module doc). A write is waited for
        even if the caller is cancelled meanwhile (shielded): its result (an accepted
        task, a claimed one) must not be lost on the way back. The wait is bounded: the
        thread gives up on a locked file after `busy_timeout`."""
        batch, index = self.enqueue(op, args, write, lease=lease, waited=True)
        if write:
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
        else:
            await batch.done.wait()
        result = batch.results[index]
        if type(result) is Failure:
            raise result.exc
        return result

    async def send(self, op: Op, *args: Any) -> None:
        """Run an ordered write without waiting for it (`flush` waits), unless
        `MAX_BACKLOG` requests wait to run already: then wait for this one (backpressure:
        the disk is slower than the callers). A failure is logged."""
        batch, index = self.enqueue(op, args, True, lease=False, waited=False)
        batch.sent.append(index)
        if self.backlog > MAX_BACKLOG:
            with anyio.CancelScope(shield=True):
                await batch.done.wait()

    async def flush(self) -> None:
        """Wait until every request made so far has run."""
        with self._lock:
            closed = self._closing or self._failure is not None
        if not closed:
            await self.call(_nothing, write=False)

    async def close(self) -> None:
        """Run what is queued, then stop the thread and close the connection."""
        with self._lock:
            self._closing = True
            self._wake_thread.notify()
        thread = self._thread
        if thread is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.join, CLOSE_TIMEOUT)
        self._hand_over()

    def dispose(self) -> None:
        """Close the sockets (after the task group that delivered results has ended)."""
        self._rsock.close()
        self._wsock.close()

    async def _deliver(self) -> None:
        """Hand finished batches to their callers and give the wake-ups, until
        `stop_delivering`. Shielded: when the broker's user is cancelled, its last calls
        (shielded writes, `close`) still need their results handed back."""
        with anyio.CancelScope(shield=True) as scope:
            self._delivering = scope
            if self._delivered:
                return
            while True:
                await anyio.wait_readable(self._rsock)
                with contextlib.suppress(BlockingIOError):
                    self._rsock.recv(4096)
                self._hand_over()

    def stop_delivering(self) -> None:
        """End `_deliver` (once nothing waits for a result any more)."""
        self._delivered = True
        if self._delivering is not None:
            self._delivering.cancel()

    def _hand_over(self) -> None:
        signals = self.signals
        finished = self._finished
        while finished:
            batches, effects = finished.popleft()
            for name in effects:
                signals.fire(name)
            for batch in batches:
                self.backlog -= len(batch.ops)
                for index in batch.sent:
                    result = batch.results[index]
                    if type(result) is Failure:
                        op = batch.ops[index][0].__name__
                        log.error("SQLite broker: %s failed: %s", op, result.exc)
                batch.done.set()
        foreign = self._foreign
        if foreign != self._foreign_seen:
            self._foreign_seen = foreign
            signals.fire_all()

    # -- the thread ------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            conn = open_database(self.settings)
        except BrokerError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            if is_busy(exc):  # another process's write transaction outlasted busy_timeout
                self._fail(locked(self.settings))
            else:
                self._fail(BrokerError(f"{self.settings.url!r}: cannot open the database: {exc}"))
            return
        try:
            self._serve(Executor(conn, self.settings, self.owner))
        except BaseException as exc:
            log.exception("the SQLite broker's writer stopped")
            self._fail(BrokerError(f"{self.settings.url!r}: the writer stopped: {exc!r}"))
        finally:
            conn.close()

    def _take(self, pause: float) -> tuple[list[Batch], list[Batch], bool]:
        """Wait (up to `pause`) for work, and take the batches that may run now: every
        lease batch, and the ordered ones unless they wait for company (see
        `GROUP_COMMIT`) and no caller waits for one of their requests."""
        with self._lock:
            ordered, leases = self._queued
            if not self._closing and not leases:
                if not ordered:
                    self._wake_thread.wait(pause)
                elif not any(batch.waited for batch in ordered):
                    self._wake_thread.wait(max(0.0, self._linger_until - time.monotonic()))
            closing = self._closing
            ordered, leases = self._queued
            run = ordered and (
                closing
                or any(batch.waited for batch in ordered)
                or self._linger_until <= time.monotonic()
            )
            taken = (ordered if run else [], leases)
            self._queued = ([] if run else ordered, [])
            self._open = [None if run else self._open[0], None]
            return taken[0], taken[1], closing

    def _serve(self, executor: Executor) -> None:
        conn = executor.conn
        pause = POLL_MIN
        version = data_version(conn)
        next_cleanup = time.monotonic() + CLEANUP_EVERY
        while True:
            ordered, leases, closing = self._take(pause)
            if leases:
                self._finished.append((leases, executor.run(leases, quick=True)))
                self._poke()
            if ordered:
                self._finished.append((ordered, executor.run(ordered, quick=False)))
                self._poke()
                crowded = sum(len(batch.ops) for batch in ordered) >= GROUP_MIN
                self._linger_until = time.monotonic() + GROUP_COMMIT if crowded else 0.0
            seen = data_version(conn)
            if seen != version:
                version = seen
                self._foreign += 1
                self._poke()
                pause = POLL_MIN
            elif ordered or leases:
                pause = POLL_MIN
            else:
                pause = min(2 * pause, self.settings.poll)
            if time.monotonic() >= next_cleanup:
                deleted = executor.alone(self._cleanup, CLEANUP_ROWS)
                full = isinstance(deleted, int) and deleted >= CLEANUP_ROWS
                next_cleanup = time.monotonic() + (0 if full else CLEANUP_EVERY)
            if closing and not ordered and not leases:
                with self._lock:
                    if not any(self._queued):
                        return

    def _fail(self, exc: BrokerError) -> None:
        """The thread cannot go on: every request gets `exc`, now and later."""
        with self._lock:
            self._failure = exc
            batches = [*self._queued[0], *self._queued[1]]
            self._queued = ([], [])
            self._open = [None, None]
        for batch in batches:
            batch.results = [Failure(exc)] * len(batch.ops)
        self._finished.append((batches, set()))
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wsock.send(b"\0")


def _nothing(tx: Tx) -> None:
    return None

"""The writer: one thread per broker owns the SQLite connection and runs requests in
batches, and tells the event loop about other processes' writes.

- Requests (`call`, `send`) come from many tasks of the event loop. Those made while the
  thread is busy join one batch, and each batch runs in one short transaction
  (`BEGIN IMMEDIATE` when it writes): one lock, one commit, one disk sync for all of them.
  The event loop never waits for the disk, and never starts a thread per request.
- `SQLITE_BUSY` (another process holds the write lock) never reaches a caller: SQLite's
  busy timeout waits for the lock, and a transaction that still finds it taken is rolled
  back and run again with tenacity (backoff with jitter), up to `BUSY_GIVE_UP` seconds;
  only then do its callers get a `BrokerError` saying which file stayed locked.
- Between batches, and every `poll` seconds at most when idle (backing off from
  `POLL_MIN`), the thread reads `PRAGMA data_version`, which changes when another
  connection committed. The event loop then wakes every waiter (`Signals.fire_all`):
  that is how a process learns of tasks, outcomes and room made by another one, at worst
  `poll` seconds late. What this process writes wakes its own waiters when the batch is
  committed, with no delay.
- The thread hands finished batches to the event loop through a socket pair (any event
  loop can wait for a socket: trio and asyncio alike, through anyio).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import tenacity

from ..._exceptions import BrokerError
from ._schema import open_database
from ._settings import Settings
from ._tx import Tx

log = logging.getLogger("queueing")

#: The shortest pause between two looks for other processes' writes (after a change).
POLL_MIN = 0.001
#: Requests run in one transaction at most (a longer batch takes several).
MAX_BATCH = 2000
#: Seconds a transaction is retried while another process holds the lock, then BrokerError.
BUSY_GIVE_UP = 60.0
#: Seconds between two deletions of outcomes whose TTL ran out.
CLEANUP_EVERY = 1.0
#: Rows deleted per cleanup transaction (short transactions; the next pass takes the rest).
CLEANUP_ROWS = 2000
#: Seconds the event loop waits for the thread to finish its last batches at close.
CLOSE_TIMEOUT = 30.0
#: SQLite's primary result codes for "the database is locked".
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED

Op = Callable[..., Any]


class _Error:
    """A request's exception, carried to its caller."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Batch:
    """Requests that run in one transaction; `done` is set once they have."""

    __slots__ = ("done", "ops", "results", "writes")

    def __init__(self) -> None:
        self.ops: list[tuple[Op, tuple[Any, ...]]] = []
        self.results: list[Any] = []
        self.writes = False
        self.done = anyio.Event()


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


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class Writer:
    """The thread that owns the connection, and the event loop's side of it."""

    def __init__(self, settings: Settings, owner: str, cleanup: Op) -> None:
        self.settings = settings
        self.owner = owner
        self.signals = Signals()
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._wake_thread = threading.Condition(self._lock)
        self._queued: list[Batch] = []
        self._open: Batch | None = None
        self._closing = False
        self._failure: BrokerError | None = None
        # Thread -> event loop: finished batches with their wake-ups, and a count of the
        # other processes' writes seen.
        self._finished: collections.deque[tuple[list[Batch], set[str]]] = collections.deque()
        self._foreign = 0
        self._foreign_seen = 0
        self._thread: threading.Thread | None = None
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

    def enqueue(self, op: Op, args: tuple[Any, ...], write: bool) -> tuple[Batch, int]:
        """Add a request to the open batch; returns the batch and the request's index."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise BrokerError(f"the SQLite broker on {self.settings.url!r} is closed")
            batch = self._open
            if batch is None:
                batch = self._open = Batch()
                self._queued.append(batch)
                self._wake_thread.notify()
            batch.ops.append((op, args))
            batch.writes = batch.writes or write
            return batch, len(batch.ops) - 1

    async def call(self, op: Op, *args: Any, write: bool = True) -> Any:
        """Run `op(tx, *args)` in the thread, in the next batch; returns what it returned.

        A write is waited for even if the caller is cancelled meanwhile (shielded): its
        result (an accepted task, a claimed one) must not be lost on the way back. The
        wait is bounded: the thread gives up on a locked file after `BUSY_GIVE_UP`."""
        batch, index = self.enqueue(op, args, write)
        if write:
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
        else:
            await batch.done.wait()
        result = batch.results[index]
        if type(result) is _Error:
            raise result.exc
        return result

    def send(self, op: Op, *args: Any) -> Batch:
        """Run a write in the next batch without waiting for it (`flush` waits)."""
        return self.enqueue(op, args, True)[0]

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
        """Hand finished batches to their callers and give the wake-ups, for good."""
        while True:
            await anyio.wait_readable(self._rsock)
            with contextlib.suppress(BlockingIOError):
                self._rsock.recv(4096)
            self._hand_over()

    def _hand_over(self) -> None:
        signals = self.signals
        finished = self._finished
        while finished:
            batches, effects = finished.popleft()
            for name in effects:
                signals.fire(name)
            for batch in batches:
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
            self._fail(BrokerError(f"{self.settings.url!r}: cannot open the database: {exc}"))
            return
        try:
            self._serve(conn)
        except BaseException as exc:
            log.exception("the SQLite broker's writer stopped")
            self._fail(BrokerError(f"{self.settings.url!r}: the writer stopped: {exc!r}"))
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        pause = POLL_MIN
        version = _data_version(conn)
        next_cleanup = time.monotonic() + CLEANUP_EVERY
        while True:
            with self._lock:
                if not self._queued and not self._closing:
                    self._wake_thread.wait(pause)
                batches, self._queued = self._queued, []
                self._open = None
                closing = self._closing
            if batches:
                self._run(conn, batches)
            seen = _data_version(conn)
            if seen != version:
                version = seen
                self._foreign += 1
                self._poke()
                pause = POLL_MIN
            elif batches:
                pause = POLL_MIN
            else:
                pause = min(2 * pause, self.settings.poll)
            if time.monotonic() >= next_cleanup:
                deleted = self._transaction_alone(conn, self._cleanup, (CLEANUP_ROWS,))
                full = isinstance(deleted, int) and deleted >= CLEANUP_ROWS
                next_cleanup = time.monotonic() + (0 if full else CLEANUP_EVERY)
            if closing and not batches:
                return

    def _run(self, conn: sqlite3.Connection, batches: list[Batch]) -> None:
        items = [(batch, index) for batch in batches for index in range(len(batch.ops))]
        for batch in batches:
            batch.results = [None] * len(batch.ops)
        effects: set[str] = set()
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            write = any(batch.writes for batch, _ in chunk)
            try:
                effects |= self._transaction(conn, chunk, write)
            except BrokerError as exc:  # the file stayed locked, the disk is full...
                for batch, index in chunk:
                    batch.results[index] = _Error(exc)
            except Exception:
                # One request failed: run each alone, so that only that one fails.
                for batch, index in chunk:
                    try:
                        effects |= self._transaction(conn, [(batch, index)], batch.writes)
                    except Exception as exc:
                        batch.results[index] = _Error(exc)
        self._finished.append((batches, effects))
        self._poke()

    def _transaction_alone(self, conn: sqlite3.Connection, op: Op, args: tuple[Any, ...]) -> Any:
        """Run one request of the thread's own (cleanup); its failure is only logged."""
        batch = Batch.__new__(Batch)
        batch.ops = [(op, args)]
        batch.results = [None]
        batch.writes = True
        try:
            self._transaction(conn, [(batch, 0)], True)
        except Exception:
            log.warning("SQLite broker: cleanup of expired outcomes failed", exc_info=True)
            return None
        return batch.results[0]

    def _transaction(
        self, conn: sqlite3.Connection, chunk: list[tuple[Batch, int]], write: bool
    ) -> set[str]:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_busy),
            wait=tenacity.wait_exponential(multiplier=0.005, max=0.5)
            + tenacity.wait_random(0, 0.005),
            stop=tenacity.stop_after_delay(BUSY_GIVE_UP),
            sleep=time.sleep,  # this is the writer's own thread: blocking here is its job
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(conn, chunk, write)
        except sqlite3.OperationalError as exc:
            raise self._broker_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(
        self, conn: sqlite3.Connection, chunk: list[tuple[Batch, int]], write: bool
    ) -> set[str]:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        tx = Tx(conn, time.time(), self.owner)
        try:
            values = [op(tx, *args) for op, args in (batch.ops[i] for batch, i in chunk)]
            tx.finish()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for (batch, index), value in zip(chunk, values, strict=True):
            batch.results[index] = value
        return tx.effects

    def _broker_error(self, exc: sqlite3.OperationalError) -> BrokerError:
        url = self.settings.url
        if _is_busy(exc):
            return BrokerError(
                f"{url!r}: the database stayed locked by another process for "
                f"{BUSY_GIVE_UP:g}s; a program holds a long write transaction on the file "
                "(stop it, or give it its own file)"
            )
        text = str(exc)
        if "full" in text:
            return BrokerError(f"{url!r}: the disk is full ({text}); free some space")
        return BrokerError(f"{url!r}: SQLite failed: {text}")

    def _fail(self, exc: BrokerError) -> None:
        """The thread cannot go on: every request gets `exc`, now and later."""
        with self._lock:
            self._failure = exc
            batches, self._queued = self._queued, []
            self._open = None
        for batch in batches:
            batch.results = [_Error(exc)] * len(batch.ops)
        self._finished.append((batches, set()))
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wsock.send(b"\0")


def _nothing(tx: Tx) -> None:
    return None


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])

"""What the writer thread does with a batch: transactions, locks, failures.

Requests run in transactions of at most `MAX_BATCH`. A transaction that finds the file
locked by another process (`SQLITE_BUSY`) is rolled back and run again with tenacity,
after pauses that start at `BUSY_WAIT_FIRST` and double (with jitter), until the URL's
`busy_timeout` (30 s): only then do its callers get a `BrokerError` naming the file.
SQLite's own busy handler is off: it sleeps a millisecond or more at every miss, while
the processes of one machine each hold the lock for one short transaction at a time.

A request that fails otherwise (a bug, a row that breaks a constraint) rolls its
transaction back; the requests of that transaction then run one by one, so that only the
failing one gets the error.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import anyio
import tenacity

from ..._exceptions import BrokerError
from ._schema import cannot_write, not_writable
from ._settings import Settings
from ._tx import Tx

log = logging.getLogger("queueing")

#: Requests run in one transaction at most (a longer batch takes several).
MAX_BATCH = 2000
#: Seconds between the first two tries of a transaction that found the file locked; the
#: pause doubles at each try, up to `BUSY_WAIT_MAX`, until the URL's `busy_timeout`.
BUSY_WAIT_FIRST = 0.0001
BUSY_WAIT_MAX = 0.005
#: SQLite's primary result codes for "the database is locked".
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED

Op = Callable[..., Any]


class Failure:
    """A request's exception, carried to its caller."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Batch:
    """Requests that run together; `done` is set (in the event loop) once they have."""

    __slots__ = ("_done", "born", "lease", "ops", "results", "sent", "waited", "writes")

    def __init__(self, lease: bool = False) -> None:
        #: In the lease lane (see `Writer.call`).
        self.lease = lease
        self.ops: list[tuple[Op, tuple[Any, ...]]] = []
        self.results: list[Any] = []
        self.writes = False
        #: Whether a caller waits for one of its requests (else it may wait for company).
        self.waited = False
        #: The requests nobody waits for (`Writer.send`): their failures are logged.
        self.sent: list[int] = []
        self.born = time.monotonic()
        self._done: anyio.Event | None = None

    @property
    def done(self) -> anyio.Event:
        """Set once the requests have run (made on first use, in the event loop: the
        thread never touches it)."""
        if self._done is None:
            self._done = anyio.Event()
        return self._done


def is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def locked(settings: Settings) -> BrokerError:
    """The error of a file another process kept locked for longer than `busy_timeout`."""
    return BrokerError(
        f"{settings.url!r}: the database stayed locked by another process for "
        f"{settings.busy_timeout:g}s (busy_timeout); a program holds a long write "
        "transaction on the file (stop it, or give it its own file), or raise ?busy_timeout="
    )


def data_version(conn: sqlite3.Connection) -> int:
    """A number that changes when another connection commits (-1: unknown now)."""
    try:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])
    except sqlite3.OperationalError:  # locked for a moment: a change, as far as we know
        return -1


class Executor:
    """Runs batches on the thread's connection."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings, owner: str) -> None:
        self.conn = conn
        self.settings = settings
        self.owner = owner
        self._level = settings.synchronous  # the connection's `synchronous` now

    def run(self, batches: list[Batch], quick: bool) -> set[str]:
        """Run the batches' requests, filling in their results; returns the wake-ups
        their transactions ask for. `quick`: commit without syncing the disk."""
        self._synchronous("normal" if quick else self.settings.synchronous)
        items = [(batch, index) for batch in batches for index in range(len(batch.ops))]
        for batch in batches:
            batch.results = [None] * len(batch.ops)
        effects: set[str] = set()
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            write = any(batch.writes for batch, _ in chunk)
            try:
                effects |= self._transaction(chunk, write)
            except BrokerError as exc:  # the file stayed locked, the disk is full...
                for batch, index in chunk:
                    batch.results[index] = Failure(exc)
            except Exception:
                for batch, index in chunk:
                    try:
                        effects |= self._transaction([(batch, index)], batch.writes)
                    except Exception as exc:
                        batch.results[index] = Failure(exc)
        return effects

    def alone(self, op: Op, *args: Any) -> Any:
        """Run one request of the thread's own (cleanup); a failure is logged."""
        batch = Batch()
        batch.ops.append((op, args))
        batch.writes = True
        self.run([batch], quick=False)
        result = batch.results[0]
        if type(result) is Failure:
            log.warning("SQLite broker: %s failed: %s", op.__name__, result.exc)
            return None
        return result

    def _synchronous(self, level: str) -> None:
        if level != self._level:
            self.conn.execute(f"PRAGMA synchronous={level.upper()}")
            self._level = level

    def _transaction(self, chunk: list[tuple[Batch, int]], write: bool) -> set[str]:
        try:
            try:
                return self._once(chunk, write)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_exception(is_busy),
                wait=tenacity.wait_exponential(multiplier=BUSY_WAIT_FIRST, max=BUSY_WAIT_MAX)
                + tenacity.wait_random(0, BUSY_WAIT_FIRST),
                stop=tenacity.stop_after_delay(self.settings.busy_timeout),
                sleep=time.sleep,  # this is the writer's own thread: blocking here is its job
                reraise=True,
            )
            for attempt in retrying:
                with attempt:
                    return self._once(chunk, write)
        except sqlite3.OperationalError as exc:
            raise self._broker_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, chunk: list[tuple[Batch, int]], write: bool) -> set[str]:
        conn = self.conn
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
        if is_busy(exc):
            return locked(self.settings)
        text = str(exc)
        if "full" in text:
            return BrokerError(f"{url!r}: the disk is full ({text}); free some space")
        if cannot_write(exc):
            return not_writable(self.settings, exc)
        return BrokerError(f"{url!r}: SQLite failed: {text}")

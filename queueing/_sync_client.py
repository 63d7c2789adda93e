"""`connect_sync()`: the blocking client, for synchronous code (Flask, Django, scripts).

A `SyncClient` is a trio `connect()` client running in a thread of its own
(`_thread.ClientThread`); each method blocks its caller until that client answers. One
client serves every thread of a process (a threaded WSGI server's request threads).
"""

from __future__ import annotations

import atexit
from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

import cattrs

from ._exceptions import QueueingError
from ._libraries import current_library, not_in_asyncio
from ._open import BROKER_TIMEOUT, connect_trio
from ._queue import Pipeline, Queue
from ._receipt import WATCH_EVERY, Receipt
from ._stats import QueueStats
from ._system import QueueSystem
from ._task import DeadLetter, TaskStatus
from ._thread import ClientThread
from ._validate import payload_list
from .brokers._contract import TenantFigures

R = TypeVar("R")
T = TypeVar("T")


class SyncReceipt(Generic[R]):
    """A `Receipt` for synchronous code: the same members, each one blocking.

    `receipt.id`, `receipt.queue`, `receipt.done()`, `receipt.result(timeout=None)` (the
    result, or `TaskFailed`, `ResultTimeout`...), `receipt.status()`, `receipt.watch()`,
    `receipt.cancel()`.
    `SyncClient.submit()` and `SyncClient.receipt(id)` hand them out.
    """

    __slots__ = ("_inner", "_thread")

    def __init__(self, inner: Receipt[R], thread: ClientThread) -> None:
        self._inner = inner
        self._thread = thread

    @property
    def id(self) -> str:
        """The task id: unique, and a reference for later (`client.receipt(id)`)."""
        return self._inner.id

    @property
    def queue(self) -> str:
        """The queue or pipeline the task was submitted to."""
        return self._inner.queue

    def __repr__(self) -> str:
        return repr(self._inner).replace("<Receipt", "<SyncReceipt", 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyncReceipt) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def done(self) -> bool:
        """Whether the task has its outcome (as far as this process knows)."""
        return self._inner.done()

    def result(self, timeout: float | None = None) -> R:
        """Block until the outcome; return the result or raise why there is none.

        Raises:
            ResultTimeout: no outcome within `timeout` seconds (the task goes on).
            TaskFailed: it failed (`TaskCancelled`, `TaskExpired`, `TaskLost` are kinds).
            UnknownTask: no task has this id (a receipt found by id).
        """
        return self._thread.call(partial(self._inner.result, timeout))

    def status(self) -> TaskStatus:
        """A snapshot: state, attempts, deliveries, times, the last error."""
        return self._thread.call(self._inner.status)

    def cancel(self) -> bool:
        """Cancel the task; True if this call cancelled it, False if it had an outcome."""
        return self._thread.call(self._inner.cancel)

    def watch(self, interval: float = WATCH_EVERY) -> Iterator[TaskStatus]:
        """Follow the task (`Receipt.watch`): a new `TaskStatus` at each change of its
        state, attempts or progress, blocking in between; the last carries the outcome."""
        steps = self._inner.watch(interval)
        while True:
            try:
                yield self._thread.call(steps.__anext__)
            except StopAsyncIteration:
                return


class SyncClient:
    """The blocking client `connect_sync()` returns; use it as a context manager, or call
    `close()`. Thread-safe: share one per process.

    Its methods are those of the trio client (`QueueSystem`), blocking, with the same
    semantics and errors. A client left open is closed when the interpreter exits.
    """

    def __init__(self, thread: ClientThread, system: QueueSystem) -> None:
        self._thread = thread
        self._system = system
        atexit.register(self.close)

    def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return self._thread.call(fn)

    @property
    def names(self) -> list[str]:
        """The queues and pipelines this client knows."""
        return self._system.names

    @property
    def converter(self) -> cattrs.Converter:
        """The converter of payloads and results."""
        return self._system.converter

    @property
    def closed(self) -> bool:
        """Whether the client was closed."""
        return self._thread.closed

    @overload
    def submit(
        self,
        name: Queue[R],
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> SyncReceipt[R]: ...

    @overload
    def submit(
        self,
        name: str | Pipeline,
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> SyncReceipt[Any]: ...

    def submit(
        self,
        name: str | Queue[Any] | Pipeline,
        payload: Any,
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> SyncReceipt[Any]:
        """As `QueueSystem.submit`, blocking until the task is accepted (or refused)."""
        fn = partial(
            self._system.submit,
            name,
            payload,
            delay=delay,
            expires=expires,
            timeout=timeout,
            key=key,
            priority=priority,
            tenant=tenant,
        )
        try:
            receipt = self._call(fn)
        except QueueingError as exc:
            self._rewrap(exc)
            raise
        return SyncReceipt(receipt, self._thread)

    def submit_many(
        self,
        name: str | Queue[Any] | Pipeline,
        payloads: Iterable[Any],
        *,
        delay: float | None = None,
        expires: float | None = None,
        timeout: float | None = None,
        key: Callable[[Any], str] | None = None,
        priority: int = 0,
        tenant: str | None = None,
    ) -> list[SyncReceipt[Any]]:
        """As `QueueSystem.submit_many`; a refusal's `.accepted` holds `SyncReceipt`s."""
        fn = partial(
            self._system.submit_many,
            name,
            payload_list(payloads),
            delay=delay,
            expires=expires,
            timeout=timeout,
            key=key,
            priority=priority,
            tenant=tenant,
        )
        try:
            receipts = self._call(fn)
        except QueueingError as exc:
            self._rewrap(exc)
            raise
        return [SyncReceipt(r, self._thread) for r in receipts]

    def _rewrap(self, exc: QueueingError) -> None:
        """A refused submit's `.accepted` and `.unknown` receipts, made `SyncReceipt`s."""
        exc.accepted = [SyncReceipt(r, self._thread) for r in exc.accepted]
        exc.unknown = [SyncReceipt(r, self._thread) for r in exc.unknown]

    def receipt(self, task_id: str) -> SyncReceipt[Any]:
        """As `QueueSystem.receipt`: the task is looked up at the receipt's first call
        (`result()`, `status()`, `cancel()`), which raises `UnknownTask` if there is none."""
        self._thread.check()
        # Safe from this thread: with a shared broker, finding a receipt by id only reads.
        return SyncReceipt(self._system.receipt(task_id), self._thread)

    def stats(self) -> dict[str, QueueStats]:
        """As `QueueSystem.stats` (it only reads counters, so it is safe from any thread)."""
        self._thread.check()
        return self._system.stats()

    def drain(self, timeout: float | None = None) -> None:
        """As `QueueSystem.drain`: block until no task is outstanding (`DrainTimeout`)."""
        self._call(partial(self._system.drain, timeout))

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """As `QueueSystem.dead_letters`."""
        return self._call(partial(self._system.dead_letters, queue, limit))

    def tenants(self, queue: str, limit: int = 10) -> list[TenantFigures]:
        """As `QueueSystem.tenants`."""
        return self._call(partial(self._system.tenants, queue, limit))

    def requeue(self, queue: str, ids: list[str] | None = None) -> list[SyncReceipt[Any]]:
        """As `QueueSystem.requeue`."""
        receipts = self._call(partial(self._system.requeue, queue, ids))
        return [SyncReceipt(r, self._thread) for r in receipts]

    def purge_dead_letters(self, queue: str) -> int:
        """As `QueueSystem.purge_dead_letters`."""
        return self._call(partial(self._system.purge_dead_letters, queue))

    def close(self) -> None:
        """Close the client: writes flushed, calls still waiting end with `SystemStopping`.
        Further calls raise `SystemStopping`. Closing twice is harmless."""
        atexit.unregister(self.close)
        self._thread.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect_sync(
    url: str | None = None,
    *specs: Queue[Any] | Pipeline,
    converter: cattrs.Converter | None = None,
    connect_timeout: float = 5.0,
    broker_timeout: float | None = BROKER_TIMEOUT,
) -> SyncClient:
    """The blocking client of queues served by worker processes elsewhere, for synchronous
    code (Flask, Django, scripts): `with queueing.connect_sync(url) as client:`.

    It connects before it returns. Options are those of `connect()`. Open one per process
    (after any fork) and share it between threads.

    Raises:
        BrokerError: the broker cannot be reached within `connect_timeout`.
        InvalidQueue: no URL, or not a shared broker's.
        QueueingError: called inside an event loop (use `connect()` there).
    """
    library = current_library()
    if library is not None:
        raise QueueingError(
            f"connect_sync() blocks its thread, and this code runs in a {library} task: "
            "use `async with queueing.connect(url) as client` there"
        )
    not_in_asyncio("connect_sync()")
    opener = partial(
        connect_trio,
        url,
        *specs,
        converter=converter,
        connect_timeout=connect_timeout,
        broker_timeout=broker_timeout,
    )
    thread = ClientThread(opener)
    return SyncClient(thread, thread.start())

"""`connect()`: a client of shared-broker queues, under trio or asyncio.

Under trio, `connect()` is the trio client itself (`_open.connect_trio`). Under asyncio,
it is an `AsyncioClient`: the same trio client running in a thread of its own
(`_thread.ClientThread`), its calls made from the asyncio loop without blocking it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from contextlib import suppress
from functools import partial
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import cattrs

from ._exceptions import QueueingError
from ._libraries import current_library
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


def _resolve(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)


async def _call(thread: ClientThread, fn: Callable[[], Awaitable[T]]) -> T:
    """`await fn()` on the client's trio thread, from an asyncio task; cancelling the
    asyncio task cancels the call there."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(value: Any, exc: BaseException | None) -> None:
        with suppress(RuntimeError):  # that loop is closed: nobody waits for this any more
            loop.call_soon_threadsafe(_resolve, future, value, exc)

    call = thread.start_call(fn, deliver)
    try:
        return await future
    except asyncio.CancelledError:
        call.cancel()
        raise


class _AsyncioReceipt(Receipt[R]):
    """A `Receipt` for asyncio code: the same members, each awaited on the client's thread."""

    __slots__ = ("_inner", "_thread")

    def __init__(self, inner: Receipt[R], thread: ClientThread) -> None:
        super().__init__(inner._task, inner._system, checked=inner._checked)
        self._inner = inner
        self._thread = thread

    def __await__(self) -> Generator[Any, None, R]:
        return self.result().__await__()

    async def result(self, timeout: float | None = None) -> R:
        return await _call(self._thread, partial(self._inner.result, timeout))

    async def status(self) -> TaskStatus:
        return await _call(self._thread, self._inner.status)

    async def cancel(self) -> bool:
        return await _call(self._thread, self._inner.cancel)

    def watch(self, interval: float = WATCH_EVERY) -> AsyncIterator[TaskStatus]:
        return _AsyncioWatch(self._inner.watch(interval), self._thread)


class _AsyncioWatch:
    """`Receipt.watch` for asyncio code: each step runs on the client's thread."""

    __slots__ = ("_inner", "_thread")

    def __init__(self, inner: AsyncIterator[TaskStatus], thread: ClientThread) -> None:
        self._inner = inner
        self._thread = thread

    def __aiter__(self) -> _AsyncioWatch:
        return self

    async def __anext__(self) -> TaskStatus:
        return await _call(self._thread, self._inner.__anext__)


def _rewrap(exc: QueueingError, thread: ClientThread) -> None:
    """A refused submit's `.accepted` and `.unknown` receipts, made asyncio receipts."""
    exc.accepted = [_AsyncioReceipt(r, thread) for r in exc.accepted]
    exc.unknown = [_AsyncioReceipt(r, thread) for r in exc.unknown]


class AsyncioClient:
    """What `async with queueing.connect(url) as client` gives under asyncio.

    The same client methods as the `QueueSystem` that `connect()` gives under trio, with the
    same semantics and errors; its receipts are `Receipt`s whose awaits run on the client's
    own trio thread. Workers run elsewhere (`queueing worker MODULE --broker URL`).
    Cancelling an asyncio task cancels its call; a `submit` cancelled after the broker
    accepted the task leaves it accepted without a receipt, so retry such a submit with
    the same `key=`.
    """

    def __init__(self, thread: ClientThread, system: QueueSystem) -> None:
        self._thread = thread
        self._system = system

    @property
    def names(self) -> list[str]:
        """The queues and pipelines this client knows."""
        return self._system.names

    @property
    def converter(self) -> cattrs.Converter:
        """The converter of payloads and results."""
        return self._system.converter

    @overload
    async def submit(
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
    ) -> Receipt[R]: ...

    @overload
    async def submit(
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
    ) -> Receipt[Any]: ...

    async def submit(
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
    ) -> Receipt[Any]:
        """As `QueueSystem.submit`."""
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
            receipt = await _call(self._thread, fn)
        except QueueingError as exc:
            _rewrap(exc, self._thread)
            raise
        return _AsyncioReceipt(receipt, self._thread)

    async def submit_many(
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
    ) -> list[Receipt[Any]]:
        """As `QueueSystem.submit_many`."""
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
            receipts = await _call(self._thread, fn)
        except QueueingError as exc:
            _rewrap(exc, self._thread)
            raise
        return [_AsyncioReceipt(r, self._thread) for r in receipts]

    def receipt(self, task_id: str) -> Receipt[Any]:
        """As `QueueSystem.receipt`: the task is looked up at the receipt's first await."""
        self._thread.check()
        # Safe from this thread: with a shared broker, finding a receipt by id only reads.
        return _AsyncioReceipt(self._system.receipt(task_id), self._thread)

    def stats(self) -> dict[str, QueueStats]:
        """As `QueueSystem.stats` (it only reads counters, so it is safe from here)."""
        self._thread.check()
        return self._system.stats()

    async def drain(self, timeout: float | None = None) -> None:
        """As `QueueSystem.drain`."""
        await _call(self._thread, partial(self._system.drain, timeout))

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """As `QueueSystem.dead_letters`."""
        return await _call(self._thread, partial(self._system.dead_letters, queue, limit))

    async def tenants(self, queue: str, limit: int = 10) -> list[TenantFigures]:
        """As `QueueSystem.tenants`."""
        return await _call(self._thread, partial(self._system.tenants, queue, limit))

    async def requeue(self, queue: str, ids: list[str] | None = None) -> list[Receipt[Any]]:
        """As `QueueSystem.requeue`."""
        receipts = await _call(self._thread, partial(self._system.requeue, queue, ids))
        return [_AsyncioReceipt(r, self._thread) for r in receipts]

    async def purge_dead_letters(self, queue: str) -> int:
        """As `QueueSystem.purge_dead_letters`."""
        return await _call(self._thread, partial(self._system.purge_dead_letters, queue))

    async def aclose(self) -> None:
        """Close the client: its writes are flushed, calls still waiting end with
        `SystemStopping`. `async with connect(...)` does this on exit."""
        await asyncio.to_thread(self._thread.close)


class _Connect:
    """The async context manager `connect()` returns: a trio client under trio, an
    `AsyncioClient` under asyncio."""

    def __init__(self, url: str | None, specs: tuple[Queue[Any] | Pipeline, ...], **options: Any):
        self._open = partial(connect_trio, url, *specs, **options)
        self._trio: Any = None
        self._asyncio: AsyncioClient | None = None

    async def __aenter__(self) -> QueueSystem:
        library = current_library()
        if library == "trio":
            self._trio = self._open()
            return cast(QueueSystem, await self._trio.__aenter__())
        if library == "asyncio":
            thread = ClientThread(self._open)
            system = await asyncio.to_thread(thread.start)
            self._asyncio = AsyncioClient(thread, system)
            # Typed as the trio client: an AsyncioClient has the same client methods.
            return cast(QueueSystem, self._asyncio)
        raise QueueingError(
            f"connect() works under trio and asyncio, not {library}: from synchronous code "
            "use queueing.connect_sync(url)"
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._trio is not None:
            return cast(bool | None, await self._trio.__aexit__(exc_type, exc, tb))
        if self._asyncio is not None:
            await self._asyncio.aclose()
        return None


def connect(
    url: str | None = None,
    *specs: Queue[Any] | Pipeline,
    converter: cattrs.Converter | None = None,
    connect_timeout: float = 5.0,
    broker_timeout: float | None = BROKER_TIMEOUT,
) -> _Connect:
    """A client of queues served by worker processes elsewhere: it submits and waits.

    `async with queueing.connect(url) as client:` works under trio (the client is a
    `QueueSystem` in the caller's run) and under asyncio (an `AsyncioClient` with the same
    methods, semantics and errors, its trio client in a thread of its own). From
    synchronous code, use `connect_sync()`.

    Queues and pipelines are known from what workers declared in the broker, with the
    payload type each queue's `handle` takes: a payload that does not match it raises
    `PayloadError` at the caller, as with the `Queue` objects (docs/concepts/queues.md,
    "Submitting by name"). Pass the same `Queue` objects as `specs` for the full check of
    your own converter and to use their `when_full` and `full_timeout`.

    Args:
        url: a shared broker's URL; default: the `QUEUEING_BROKER` environment variable.
        connect_timeout: seconds to reach the broker before `BrokerError`.
        broker_timeout: seconds one `submit` waits for a stalled or unreachable broker
            before `BrokerError` (on top of any wait for room its queue allows); None
            waits as long as the broker takes to come back.
    """
    return _Connect(
        url,
        specs,
        converter=converter,
        connect_timeout=connect_timeout,
        broker_timeout=broker_timeout,
    )

"""A trio run in a thread of its own, holding one `connect()` client for code that is not
trio: the asyncio client and the blocking client are thin facades over it.

Why a thread: the engine is trio code through and through (cancel scopes, parking lots,
`trio.Event`s); running one trio client beside any other event loop (asyncio's, or none)
keeps one implementation of every operation, with every semantic and error the same.
A call crosses threads twice: `TrioToken.run_sync_soon` starts it as a task in the
client's nursery, and the caller's `deliver` hands its outcome back (bench/web_bench.py
measures what that costs).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, TypeVar

import trio

from ._exceptions import SystemStopping
from ._system import QueueSystem

log = logging.getLogger("queueing")
T = TypeVar("T")
#: The callback a call's outcome goes to: (value, None) or (None, exception).
Deliver = Callable[[Any, BaseException | None], None]
#: Seconds `close()` waits for the thread to finish after the client closed.
JOIN_TIMEOUT = 30.0


class Call:
    """One call running on the client's thread: the caller may cancel it."""

    __slots__ = ("_cancelled", "_scope", "_thread")

    def __init__(self, thread: ClientThread) -> None:
        self._thread = thread
        self._scope: trio.CancelScope | None = None
        self._cancelled = False

    def cancel(self) -> None:
        """Cancel the call where it is (from any thread); its outcome is then dropped."""
        self._cancelled = True
        self._thread._soon(self._cancel_here)

    def _cancel_here(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class ClientThread:
    """Runs `opener()` (an async context manager yielding a `QueueSystem`) in a trio run on
    a daemon thread, and runs calls on that system for callers on other threads.

    A daemon thread, so that a client nobody closed never keeps the interpreter from
    exiting; `SyncClient` closes itself at exit (atexit) while the thread still runs.
    """

    def __init__(self, opener: Callable[[], AbstractAsyncContextManager[QueueSystem]]) -> None:
        self._opener = opener
        self._ready: concurrent.futures.Future[QueueSystem] = concurrent.futures.Future()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._closing: trio.Event | None = None
        self._closed = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="queueing-client", daemon=True)

    def start(self) -> QueueSystem:
        """Start the thread and connect; blocks until the client is ready.

        Raises:
            whatever connecting raised (`BrokerError`, `InvalidQueue`...).
        """
        self._thread.start()
        try:
            return self._ready.result()
        except BaseException:
            self._thread.join(JOIN_TIMEOUT)
            raise

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)  # start() raises it
            else:
                log.exception("the queueing client's thread ended with an error")

    async def _main(self) -> None:
        self._closing = trio.Event()
        async with self._opener() as system, trio.open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._nursery = nursery
            self._ready.set_result(system)
            await self._closing.wait()
            # Calls still running (a receipt's result() waiting, say) end as SystemStopping.
            nursery.cancel_scope.cancel()
        self._nursery = None

    # -- calls, from any other thread ------------------------------------------------------

    def check(self) -> None:
        """Raise SystemStopping if calls can no longer run: closed, or in a forked child."""
        if self._pid != os.getpid():
            raise SystemStopping(
                f"this queueing client was opened in process {self._pid}, before a fork; "
                "its thread does not exist in this process: open a client in each process "
                "(with gunicorn, in a post_fork hook or lazily on the first request)"
            )
        if self._closed or self._token is None:
            raise SystemStopping("the queueing client is closed; open a new one")

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._token is not None
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise SystemStopping("the queueing client is closed; open a new one") from None

    def start_call(self, fn: Callable[[], Awaitable[Any]], deliver: Deliver) -> Call:
        """Run `await fn()` on the client's thread; its outcome goes to `deliver` there.

        `deliver` is called exactly once (unless the call is cancelled first), on the
        client's thread: it must only hand the outcome over (a future, a loop callback).
        """
        self.check()
        call = Call(self)
        self._soon(self._spawn, fn, deliver, call)
        return call

    def _spawn(self, fn: Callable[[], Awaitable[Any]], deliver: Deliver, call: Call) -> None:
        if self._nursery is None:
            deliver(None, SystemStopping("the queueing client closed before the call started"))
            return
        self._nursery.start_soon(self._one, fn, deliver, call)

    async def _one(self, fn: Callable[[], Awaitable[Any]], deliver: Deliver, call: Call) -> None:
        with trio.CancelScope() as scope:
            call._scope = scope
            if call._cancelled:
                return
            try:
                value = await fn()
            except Exception as exc:
                deliver(None, exc)
                return
            except BaseException:  # trio.Cancelled: closed, or cancelled by the caller
                if not call._cancelled:
                    deliver(None, SystemStopping("the queueing client closed during the call"))
                raise
            deliver(value, None)

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `await fn()` on the client's thread and wait for it (blocking)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def deliver(value: Any, exc: BaseException | None) -> None:
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)

        call = self.start_call(fn, deliver)
        try:
            return future.result()
        except BaseException:
            if not future.done():  # KeyboardInterrupt while waiting: stop the call too
                call.cancel()
            raise

    def close(self) -> None:
        """Close the client (its writes flushed, its calls ended) and end the thread."""
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid() or self._token is None:
            return
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._set_closing)
        if threading.current_thread() is not self._thread:
            self._thread.join(JOIN_TIMEOUT)

    def _set_closing(self) -> None:
        assert self._closing is not None
        self._closing.set()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (or the thread ended)."""
        return self._closed or not self._thread.is_alive()

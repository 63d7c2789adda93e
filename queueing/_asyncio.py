"""Handlers that use asyncio libraries (asyncpg, aiohttp, redis.asyncio...), run on trio.

Workers run on trio; a `Worker` subclass with `asyncio = True` has its `handle`, `on_start`
and `on_stop` run as asyncio coroutines on an asyncio event loop that trio-asyncio runs
inside the system's trio loop (one loop per system, opened by `open_system` when a queue
needs it). Cancellation and timeouts cross over: a task cancelled through its receipt, or
past its queue's `timeout`, cancels the asyncio coroutine.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._exceptions import InvalidQueue

if TYPE_CHECKING:
    from ._queue import Queue

#: The methods of an asyncio worker that run on the asyncio loop.
ASYNCIO_METHODS = ("handle", "on_start", "on_stop")
_INSTALL = "pip install 'trio-queueing[asyncio]' (it brings trio-asyncio)"


def _trio_asyncio() -> Any:
    try:
        import trio_asyncio  # type: ignore[import-untyped]
    except ImportError as exc:
        raise InvalidQueue(f"a Worker with asyncio = True needs trio-asyncio: {_INSTALL}") from exc
    return trio_asyncio


def bridge(cls: type, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` (an asyncio coroutine function of a worker class) as a trio one."""
    import inspect

    if not inspect.iscoroutinefunction(method):
        raise InvalidQueue(
            f"{cls.__name__}.{name} must be an `async def` (asyncio = True runs it on asyncio); "
            "a plain def handle runs in a thread already: drop asyncio = True for it"
        )
    trio_asyncio = _trio_asyncio()

    @functools.wraps(method)
    async def on_asyncio(self: Any, *args: Any) -> Any:
        coroutine: Callable[..., Coroutine[Any, Any, Any]] = method
        return await trio_asyncio.aio_as_trio(coroutine)(self, *args)

    on_asyncio.__queueing_asyncio__ = True  # type: ignore[attr-defined]
    return on_asyncio


def needs_loop(queues: Iterable[Queue[Any]]) -> bool:
    return any(getattr(queue.worker, "asyncio", False) for queue in queues)


@asynccontextmanager
async def asyncio_loop(needed: bool) -> AsyncIterator[None]:
    """Run an asyncio loop inside trio for the system's life, if a queue needs one."""
    if not needed:
        yield
        return
    async with _trio_asyncio().open_loop():
        yield


_NO_LOOP = ("no running event loop", "no current event loop")


def explain(exc: Exception) -> Exception:
    """A handler's error, with the fix named when it used asyncio without `asyncio = True`."""
    if isinstance(exc, RuntimeError) and any(text in str(exc) for text in _NO_LOOP):
        hint = RuntimeError(
            f"{exc} (handle() used an asyncio library, but workers run on trio: set "
            "`asyncio = True` on the Worker class to run its handle, on_start and on_stop on "
            f"asyncio ({_INSTALL}), or use a library that runs on trio, such as httpx or "
            "coredis; see the docs' asyncio libraries page)"
        )
        hint.__cause__ = exc
        hint.__traceback__ = exc.__traceback__
        return hint
    return exc

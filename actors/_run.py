"""Running a system from a program: `run_system()` and the signal handling it shares with
libraries built on the runtime (`run_with_signals`)."""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import trio

from ._exceptions import InvalidConfig

if TYPE_CHECKING:
    from ._system import ActorSystem

log = logging.getLogger("actors")

T = TypeVar("T")
S = TypeVar("S")


def _raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one exception a nursery wrapped, keeping its own cause; else the group."""
    if len(group.exceptions) == 1:
        only = group.exceptions[0]
        raise only from only.__cause__
    raise group


async def _watch_signals(
    signals: Any, main_scope: trio.CancelScope, outer: trio.CancelScope
) -> None:
    count = 0
    async for signum in signals:
        count += 1
        if count == 1:
            log.warning(
                "received %s: no new work; finishing in-flight work (again to stop at once)",
                signal.Signals(signum).name,
            )
            main_scope.cancel()
        else:
            log.warning("received %s again: stopping now", signal.Signals(signum).name)
            outer.cancel()


async def run_with_signals(
    opener: Callable[[], AbstractAsyncContextManager[S]],
    main: Callable[[S], Awaitable[T]] | None,
) -> T | None:
    """Open a system, run `main` in it (or wait forever), and stop on SIGINT/SIGTERM.

    The building block of `run_system`, for libraries that open a system of their own (as
    `queueing.run_system` does): `opener()` returns an async context manager that yields
    the system handed to `main`. The first signal cancels `main` (no new work) and leaves
    the context, which shuts down gracefully; a second one cancels everything. Signals are
    caught only in the main thread.

    Returns:
        What `main` returned (None if a signal stopped it, or without `main`).
    """
    result: T | None = None
    catch = threading.current_thread() is threading.main_thread()
    sigs = (signal.SIGINT, signal.SIGTERM) if catch else ()
    with trio.open_signal_receiver(*sigs) if sigs else _nullsignals() as signals:
        try:
            async with trio.open_nursery() as outer:
                async with opener() as system:
                    with trio.CancelScope() as main_scope:
                        if sigs:
                            outer.start_soon(
                                _watch_signals, signals, main_scope, outer.cancel_scope
                            )
                        if main is None:
                            await trio.sleep_forever()
                        else:
                            result = await main(system)
                outer.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # main's error (or SupervisorGaveUp) comes out as itself, as from open_system.
            _raise_single(group)
    return result


async def _run(main: Callable[[ActorSystem], Awaitable[T]] | None, options: Any) -> T | None:
    from ._system import open_system  # _system imports this module

    return await run_with_signals(partial(open_system, **options), main)


class _nullsignals:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run_system(
    main: Callable[[ActorSystem], Awaitable[T]] | None = None,
    *,
    clock: trio.abc.Clock | None = None,
    **options: Any,
) -> T | None:
    """Run an actor system until `main(system)` returns (or forever if no `main`).

    Blocks: it calls `trio.run`. SIGINT/SIGTERM stop `main` (no new work), then the system
    shuts down gracefully within `shutdown_timeout`; a second signal stops at once.
    Keyword options are those of `open_system()`.

    Returns:
        What `main` returned, or None if it was stopped by a signal.
    """
    if main is not None and not callable(main):
        raise InvalidConfig(f"main must be an async function taking the system, got {main!r}")
    timeout = options.get("shutdown_timeout", 10.0)
    if not isinstance(timeout, int | float) or math.isnan(timeout):
        raise InvalidConfig(f"shutdown_timeout must be a number of seconds, got {timeout!r}")
    return trio.run(partial(_run, main, options), clock=clock)

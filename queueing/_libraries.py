"""Which event loop runs the caller: the trio-only entry points refuse others at once, with
a message that names the client to use instead."""

from __future__ import annotations

import asyncio

import sniffio

from ._exceptions import QueueingError

_CLIENTS = (
    "to submit from asyncio (FastAPI, Starlette, aiohttp, Django async views), run the "
    "workers in their own process (`queueing worker MODULE --broker URL`) and use "
    "`async with queueing.connect(url) as client`; from synchronous code (Flask, Django, "
    "scripts), `with queueing.connect_sync(url) as client`"
)


def current_library() -> str | None:
    """ "trio", "asyncio"... for the async library running this code; None outside one."""
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


def trio_only(what: str) -> None:
    """Refuse `what` (a trio-only entry point) when an event loop other than trio runs it."""
    library = current_library()
    if library is not None and library != "trio":
        raise QueueingError(f"{what} runs on trio, but this code runs under {library}: {_CLIENTS}")


def not_in_asyncio(what: str) -> None:
    """Refuse `what` (a call that blocks its thread) inside a running asyncio event loop,
    whose every other task it would stall."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise QueueingError(
        f"{what} blocks the thread that calls it, and this thread runs an asyncio event "
        f"loop: {_CLIENTS}"
    )

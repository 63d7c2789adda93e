"""Headless Chromium for the browser tests (`-m browser`, `-m docs`), driven by playwright's
sync API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


@contextmanager
def chromium(sync_api: Any, executable: str, args: Sequence[str]) -> Iterator[Any]:
    """A browser launched from `executable`, closed after the block.

    playwright's sync API runs an asyncio loop of its own. trio-asyncio (the `test` extra
    has it, for the asyncio-library tests), once imported anywhere in the run, makes
    asyncio's new loops trio-driven ones, which cannot run that way ("You can't nest calls
    to run_until_complete()"): the browser gets asyncio's default loop policy, and the
    one before is put back after.
    """
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=list(args))
            try:
                yield browser
            finally:
                browser.close()
    finally:
        asyncio.set_event_loop_policy(policy)

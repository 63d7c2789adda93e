"""Tests of the crawler's own queues (examples/crawler.py), as you would write them for yours.

    pip install -e ".[examples]"        # pytest, pytest-trio and httpx among others
    pytest examples/test_crawler.py     # or: python examples/test_crawler.py

`open_queues` (a fixture of the `queueing.testing` pytest plugin, installed with the
package) runs queues in the test's own trio run, in memory. With pytest-trio's
`autojump_clock`, retry backoffs take no time: the outage tests below wait minutes of mock
time in milliseconds. Network calls are faked with httpx's `MockTransport`, handed to the
workers through `worker_kwargs`. Docs: docs/how-to/testing.md.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from crawler import Fetched, Link, crawl, fetch, store
from tenacity import stop_after_attempt, wait_fixed

from queueing import RetryPolicy, TaskFailed, TaskState

pytestmark = pytest.mark.trio


class Outage:
    """A fake web site for httpx that refuses connections until `until` (trio time)."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.calls: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(trio.current_time())
        if trio.current_time() < self.until:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/missing":
            return httpx.Response(404, text="<h1>Not Found</h1>")
        return httpx.Response(200, text=f"<title>{request.url.path}</title><a href='/'>home</a>")


def fetch_from(site: Outage, **changes: Any) -> Any:
    """The crawler's `fetch` queue with a fake transport (and any other change)."""
    return attrs.evolve(fetch, worker_kwargs={"transport": httpx.MockTransport(site)}, **changes)


async def test_two_600_second_backoffs_take_no_time(
    open_queues: Any, autojump_clock: trio.testing.MockClock
) -> None:
    site = Outage(until=1000)  # down for the first two attempts, up for the third
    patient = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(600))
    async with open_queues(fetch_from(site, retry=patient)) as system:
        receipt = await system.submit("fetch", Link("http://site.test/a"))
        page = await receipt
        status = await receipt.status()
    assert page == Fetched("http://site.test/a", 200, page.html)
    assert site.calls == [0, 600, 1200]  # mock seconds: two backoffs of 600 s each
    assert status.attempts == 3


async def test_fetch_rides_out_a_minute_long_outage_with_the_default_policy(
    open_queues: Any, autojump_clock: trio.testing.MockClock
) -> None:
    site = Outage(until=60)
    async with open_queues(fetch_from(site)) as system:
        page = await system.submit("fetch", Link("http://site.test/b"))
        assert (await page).status == 200
    assert site.calls[-1] >= 60  # it kept trying until the site was back
    assert len(site.calls) > 2


async def test_a_missing_page_fails_at_once_and_is_kept_as_a_dead_letter(
    open_queues: Any, autojump_clock: trio.testing.MockClock
) -> None:
    site = Outage(until=0)
    async with open_queues(fetch_from(site)) as system:
        receipt = await system.submit("fetch", Link("http://site.test/missing"))
        with pytest.raises(TaskFailed) as failed:
            await receipt
        (letter,) = await system.dead_letters("fetch")
    assert failed.value.outcome is TaskState.FAILED  # a 404 is not worth retrying
    assert failed.value.error_type == "httpx.HTTPStatusError"
    assert failed.value.attempts == 1
    assert letter.payload == {"url": "http://site.test/missing"}


async def test_the_pipeline_stores_one_row_per_page(open_queues: Any, tmp_path: Path) -> None:
    # No mock clock here: `store` is a sync handler, which runs in a thread.
    database = tmp_path / "pages.sqlite3"
    site = Outage(until=0)
    stages = [fetch_from(site), attrs.evolve(store, worker_args=(str(database),))]
    pipeline = attrs.evolve(crawl, stages=stages)
    async with open_queues(pipeline) as system:
        urls = [f"http://site.test/{n}" for n in range(5)]
        receipts = [await system.submit("crawl", Link(url)) for url in urls]
        titles = [await receipt for receipt in receipts]
        again = await system.submit("crawl", Link(urls[0]))  # stored twice: still one row
        await again
    assert titles == [f"/{n}" for n in range(5)]
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT url, title, links FROM pages ORDER BY url").fetchall()
    db.close()
    assert rows == [(url, f"/{n}", 1) for n, url in enumerate(urls)]


if __name__ == "__main__":  # pytest in a process of its own: it imports the modules itself
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", __file__, "-q", *sys.argv[1:]]))

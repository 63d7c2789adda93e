"""A small crawler: fetch pages with httpx, parse them, keep them in SQLite, over an outage.

    pip install -e ".[examples]"                                    # httpx, among others
    python examples/crawler.py                                      # in this process
    QUEUEING_BROKER=redis://localhost:6379/0 python examples/crawler.py   # over Redis

The program starts a web site of its own on 127.0.0.1 (a free port) and crawls it with a
two-stage pipeline:

    fetch   download a page with httpx (async I/O)               (8 workers)
    store   parse it and write one row into a SQLite table       (1 worker: one writer)

After a few requests the site goes down for a moment: requests already on their way get
`503 Service Unavailable`, then connections are refused (`httpx.ConnectError`), then it is
back. Neither error is handled here: the queue's default `RetryPolicy` knows them as
transient and tries again after a jittered backoff, so every page still ends up in the
database. Storing is idempotent (one row per URL), since a task may run more than once.

Other processes can serve the same queues (with QUEUEING_BROKER set to the same Redis):

    cd examples && queueing worker crawler --concurrency store=1 --concurrency 8

Rows go to examples/out/crawler/pages.sqlite3 (git-ignored), or to the folder named by the
CRAWLER_OUT environment variable. Docs: docs/cli.md, docs/concepts/retries.md.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import sys
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import trio

from queueing import Pipeline, Queue, QueueSystem, Receipt, TaskFailed, Worker, run_system

try:
    import httpx
except ImportError as exc:  # pragma: no cover - the message is the point
    sys.exit(
        f"This example needs httpx ({exc.name} is not installed).\n"
        'Install it with the examples extra:  pip install -e ".[examples]"'
    )

OUT = Path(os.environ.get("CRAWLER_OUT") or Path(__file__).parent / "out" / "crawler")
DATABASE = OUT / "pages.sqlite3"
PAGES = 40
#: The site goes down when it has answered this many requests...
DOWN_AFTER = 12
#: ... for this many seconds: 503s first, then refused connections.
OUTAGE = 1.5
#: Seconds the site's server waits between two looks at whether to stop.
POLL = 0.05


# -- payloads ------------------------------------------------------------------------------


@attrs.frozen
class Link:
    url: str


@attrs.frozen
class Fetched:
    url: str
    status: int
    html: str


# -- the workers ---------------------------------------------------------------------------

#: Why fetch attempts failed, by error (counted in this process).
fetch_errors: collections.Counter[str] = collections.Counter()


class Fetch(Worker):
    """Downloads one page. One httpx client per worker, for the worker's life; a test can
    hand it a transport of its own (`worker_kwargs={"transport": ...}`)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport

    async def on_start(self) -> None:
        self.client = httpx.AsyncClient(timeout=5.0, transport=self.transport)

    async def on_stop(self) -> None:
        await self.client.aclose()

    async def handle(self, link: Link) -> Fetched:
        try:
            response = await self.client.get(link.url)
            response.raise_for_status()  # a 503 raises httpx.HTTPStatusError: retried
        except httpx.HTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", "")
            fetch_errors[f"{type(exc).__name__} {status}".strip()] += 1
            raise
        return Fetched(link.url, response.status_code, response.text)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.links = 0
        self.words = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_title = tag == "title"
        self.links += tag == "a"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.words += len(data.split())


class Store(Worker):
    """Parses a page and keeps one row per URL. A plain `def handle` runs in a thread:
    parsing and SQLite block. One worker: SQLite has one writer."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.db: sqlite3.Connection | None = None

    async def on_start(self) -> None:
        self.db = sqlite3.connect(self.database, check_same_thread=False, timeout=30)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS pages (url TEXT PRIMARY KEY, title TEXT, "
            "links INTEGER, words INTEGER, stored_at REAL)"
        )

    async def on_stop(self) -> None:
        if self.db is not None:
            self.db.close()

    def handle(self, page: Fetched) -> str:
        parsed = _Page()
        parsed.feed(page.html)
        assert self.db is not None
        with self.db:  # a transaction; REPLACE: a task run twice leaves one row
            self.db.execute(
                "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?)",
                (page.url, parsed.title, parsed.links, parsed.words, time.time()),
            )
        return parsed.title


OUT.mkdir(parents=True, exist_ok=True)
# The default RetryPolicy retries the errors of common clients (httpx's among them) for up
# to two minutes, with a jittered exponential backoff: nothing to configure for an outage.
fetch = Queue("fetch", Fetch, workers=8, maxsize=1_000, timeout=10.0)
store = Queue("store", Store, workers=1, worker_args=(str(DATABASE),))
crawl = Pipeline("crawl", [fetch, store])


# -- the web site being crawled ------------------------------------------------------------


class Site:
    """A web site on 127.0.0.1, in threads of its own, that goes down for `OUTAGE` seconds
    once it has answered `DOWN_AFTER` requests."""

    def __init__(self) -> None:
        self.answered = 0
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._server = self._serve(0)
        self.port = self._server.server_address[1]

    def url(self, number: int) -> str:
        return f"http://127.0.0.1:{self.port}/page/{number}"

    def _serve(self, port: int) -> ThreadingHTTPServer:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = site.answer(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True).start()
        return server

    def answer(self, path: str) -> tuple[int, str]:
        with self._lock:
            if self.down_at is not None and self.up_at is None:
                return 503, "<h1>Service Unavailable</h1>"  # going down: no more pages
            self.answered += 1
            if self.answered == DOWN_AFTER:
                self.down_at = time.monotonic() - self.start
                threading.Thread(target=self._outage, daemon=True).start()
        number = int(path.rsplit("/", 1)[-1]) if path.startswith("/page/") else 0
        links = "".join(f'<a href="/page/{(number * 7 + i) % PAGES}">p</a> ' for i in range(3))
        words = " ".join(["lorem"] * (20 + number))
        return 200, (
            f"<html><head><title>Page {number}</title></head>"
            f"<body><p>{words}</p>{links}</body></html>"
        )

    def _outage(self) -> None:
        self._server.shutdown()  # then connections are refused
        self._server.server_close()
        time.sleep(OUTAGE)
        self._server = self._serve(self.port)  # back, on the same port
        self.up_at = time.monotonic() - self.start

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the program ---------------------------------------------------------------------------


async def crawl_site(system: QueueSystem, site: Site) -> int:
    stored: list[str] = []
    failures: list[TaskFailed] = []

    async def wait_for(receipt: Receipt) -> None:
        try:
            stored.append(await receipt.result(timeout=120))
        except TaskFailed as exc:
            failures.append(exc)

    started = site.start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for number in range(PAGES):
            receipt = await system.submit("crawl", Link(site.url(number)))
            nursery.start_soon(wait_for, receipt)
    for failure in failures:
        print(f"failed: {failure}")

    with sqlite3.connect(DATABASE) as db:
        (rows,) = db.execute("SELECT count(*) FROM pages").fetchone()
    db.close()
    retried = system.stats()["fetch"].retried
    why = ", ".join(f"{name} x{n}" for name, n in fetch_errors.most_common())
    print(f"The site went down at {site.down_at:.2f} s and was back at {site.up_at:.2f} s")
    print(f"Pages submitted:   {PAGES}")
    print(f"Pages stored:      {len(stored)}")
    print(f"Failed:            {len(failures)}")
    print(f"Fetch retries:     {retried}  ({why})")
    shown = DATABASE.relative_to(Path.cwd()) if DATABASE.is_relative_to(Path.cwd()) else DATABASE
    print(f"Rows in SQLite:    {rows}  ({shown})")
    print(f"Time:              {time.monotonic() - started:.2f} s")
    return len(stored)


def main() -> int:
    DATABASE.unlink(missing_ok=True)
    site = Site()
    broker = os.environ.get("QUEUEING_BROKER", "memory://")
    print(f"Crawling {PAGES} pages of http://127.0.0.1:{site.port}/ through fetch -> store")
    print(f"(broker {broker.split('@')[-1]}); the site goes down after {DOWN_AFTER} requests")
    try:
        stored = run_system(crawl, main=lambda system: crawl_site(system, site))
    finally:
        site.close()
    return 0 if stored == PAGES else 1


if __name__ == "__main__":
    sys.exit(main())

"""A crawler: a pool of fetchers with per-child backoff, a rate limit, and escalation.

    python examples/crawler_pool.py

The tree this program builds (twice: a normal crawl, then a total outage):

    root
    └── crawler        Supervisor, ONE_FOR_ONE, max_restarts=3 within 30s
        ├── limiter    RateLimiter: a token bucket refilled by a timer (send_every)
        ├── frontier   Frontier: the URLs to visit; retries a URL whose fetch got no answer
        └── fetchers   Pool of 4 Fetchers, LEAST_BUSY, bounded WAIT mailboxes,
                       max_restarts=3 within 1s, exponential backoff per child

The web is simulated (no network): example.org has 14 pages; one of them breaks the
connection the first time it is fetched, and down.example never answers. A fetch that
fails crashes its fetcher ("let it crash"): the pool restarts a fetcher at once after its
first crash and makes only a fetcher that keeps crashing wait (per-child backoff), so the
other fetchers keep crawling. The frontier gives a URL 3 attempts (a keyed timer per
fetch), then gives it up. When fetchers crash faster than the pool allows, the pool gives
up and escalates: the crawler starts a fresh pool, and the crawl goes on.

Part 2 takes every host down, and the frontier keeps trying every page: the pool gives up
again and again, until the crawler itself gives up, and the program prints the chain of
causes from the crawler down to the fetcher's error.
Docs: docs/concepts/supervision.md (backoff, pools) and docs/concepts/patterns.md.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import attrs
import tenacity
import trio

from actors import (
    Actor,
    ActorRef,
    ActorSystem,
    ChildSpec,
    Pool,
    Reply,
    Request,
    Restart,
    Routing,
    Supervisor,
    SupervisorGaveUp,
    run_system,
)

SITE = "https://example.org"
# 14 pages, each linking to a few others; /news also links to a host that is down.
PAGES: dict[str, list[str]] = {"/": ["/about", "/blog", "/docs", "/news"]}
PAGES |= {f"/{s}": [f"/{s}/{n}" for n in range(1, 4)] for s in ("about", "blog", "docs")}
PAGES |= {f"/{s}/{n}": ["/"] for s in ("about", "blog", "docs") for n in range(1, 4)}
PAGES["/news"] = ["/", "/blog/1", "https://down.example/a", "https://down.example/b"]
FLAKY = f"{SITE}/docs/2"  # breaks the connection on its first fetch only

ATTEMPTS = 3  # fetches of one URL before the frontier gives it up (Part 1)
FETCH_TIMEOUT = 0.3  # seconds without an answer before the frontier tries again
IN_FLIGHT = 6  # fetches outstanding at most: the frontier's credit, so no mailbox cycle fills


# -- messages ----------------------------------------------------------------------------------


@attrs.frozen
class Acquire(Request[None]):
    """Ask the rate limiter for a token; answered when one is free."""


@attrs.frozen
class Fetch:
    url: str
    reply_to: ActorRef


@attrs.frozen
class Fetched:
    url: str
    links: list[str]


@attrs.frozen
class NoAnswer:
    """The frontier's own timer: `url`'s fetch got no answer in time."""

    url: str


@attrs.frozen
class Results(Request["CrawlReport"]):
    """Answered once the crawl is over."""


@attrs.frozen
class CrawlReport:
    fetched: list[str]
    given_up: list[str]


# -- actors ------------------------------------------------------------------------------------


class RateLimiter(Actor[Acquire | str]):
    """A token bucket: `burst` tokens, one more every `period` seconds (a timer)."""

    def __init__(self, burst: int, period: float) -> None:
        self.tokens = self.burst = burst
        self.period = period
        self.waiting: deque[Reply[None]] = deque()

    async def on_start(self) -> None:
        self.send_every(self.period, "refill")

    async def receive(self, message: Acquire | str) -> None:
        if message == "refill":
            self.tokens = min(self.burst, self.tokens + 1)
        elif self.tokens:
            self.tokens -= 1
            return  # answered now: a token was free
        else:
            self.waiting.append(self.defer_reply())  # answered by a later refill
        while self.waiting and self.tokens:
            self.tokens -= 1
            self.waiting.popleft().send(None)


class Fetcher(Actor[Fetch]):
    """Fetches one page at a time from the simulated web; a failed fetch crashes it."""

    def __init__(self, down: set[str], flaked: set[str]) -> None:
        self.down = down
        self.flaked = flaked  # shared, so the flaky page fails once, not once per fetcher

    async def receive(self, message: Fetch) -> None:
        await self.system.lookup("limiter").ask(Acquire())
        await trio.sleep(0.01)  # the network
        host = message.url.split("/")[2]
        if host in self.down:
            raise ConnectionError(f"{host} does not answer")
        if message.url == FLAKY and message.url not in self.flaked:
            self.flaked.add(message.url)
            raise ConnectionResetError(f"{message.url}: connection reset")
        path = message.url.removeprefix(SITE) or "/"
        links = [link if "://" in link else SITE + link for link in PAGES.get(path, [])]
        await message.reply_to.tell(Fetched(message.url, links))


class Frontier(Actor[Fetched | NoAnswer | Results]):
    """Hands URLs to the fetchers, at most IN_FLIGHT at a time; retries a URL whose fetch got
    no answer (its fetcher crashed) up to `attempts` times; answers Results when done."""

    def __init__(self, seeds: list[str], attempts: int) -> None:
        self.max_attempts = attempts
        self.todo: deque[str] = deque(seeds)
        self.seen = set(seeds)
        self.attempts: dict[str, int] = {}
        self.in_flight: set[str] = set()
        self.fetched: list[str] = []
        self.given_up: list[str] = []
        self.waiting: list[Reply[CrawlReport]] = []

    async def on_start(self) -> None:
        await self.dispatch()

    async def receive(self, message: Fetched | NoAnswer | Results) -> None:
        match message:
            case Fetched(url, links) if url in self.in_flight:
                self.in_flight.discard(url)
                self.fetched.append(url)
                for link in links:
                    if link not in self.seen:
                        self.seen.add(link)
                        self.todo.append(link)
            case NoAnswer(url) if url in self.in_flight:
                self.in_flight.discard(url)
                if self.attempts[url] < self.max_attempts:
                    self.todo.appendleft(url)
                else:
                    self.given_up.append(url)
            case Results():
                self.waiting.append(self.defer_reply())
        await self.dispatch()
        if not self.todo and not self.in_flight:
            for reply in self.waiting:
                reply.send(CrawlReport(sorted(self.fetched), sorted(self.given_up)))
            self.waiting.clear()

    async def dispatch(self) -> None:
        fetchers = self.system.lookup("fetchers")
        while self.todo and len(self.in_flight) < IN_FLIGHT:
            url = self.todo.popleft()
            self.attempts[url] = self.attempts.get(url, 0) + 1
            self.in_flight.add(url)
            self.send_after(FETCH_TIMEOUT, NoAnswer(url), key=url)
            await fetchers.tell(Fetch(url, self.ref))


def crawler(seeds: list[str], attempts: int, down: set[str], flaked: set[str]) -> ChildSpec[Any]:
    fetchers = Pool.spec(
        Fetcher,
        4,
        args=(down, flaked),
        name="fetchers",
        routing=Routing.LEAST_BUSY,
        mailbox_size=2,  # bounded, WAIT: a busy fetcher pushes back on the pool
        max_restarts=3,
        within=1,
        backoff=tenacity.wait_exponential(multiplier=0.02, max=0.5),
    )
    return Supervisor.spec(
        [
            ChildSpec(RateLimiter, args=(5, 0.005), name="limiter"),
            ChildSpec(Frontier, args=(seeds, attempts), name="frontier"),
            fetchers,
        ],
        name="crawler",
        max_restarts=3,
        within=30,
        restart=Restart.TEMPORARY,  # when the crawler gives up, the program decides
    )


def describe(error: BaseException | None) -> str:
    """The chain of causes, one per line, from the top."""
    lines = []
    while error is not None:
        if isinstance(error, SupervisorGaveUp):
            lines.append(f"{error.supervisor} gave up: {error.child!r} failed too often")
        else:
            lines.append(f"{type(error).__name__}: {error}")
        error = error.__cause__
    return "\n".join(f"  {'  ' * depth}{line}" for depth, line in enumerate(lines))


async def main(system: ActorSystem) -> None:
    print("Part 1: crawling example.org (one flaky page, one host down)")
    flaked: set[str] = set()
    crawl = await system.spawn(crawler([f"{SITE}/"], ATTEMPTS, {"down.example"}, flaked))
    report = await system.lookup("frontier").ask(Results(), timeout=30)
    fetchers = system.lookup("fetchers")
    print(f"  fetched {len(report.fetched)} pages of example.org")
    print(f"  gave up on {len(report.given_up)}: {', '.join(report.given_up)}")
    print(f"  fetcher pool restarted by the crawler (escalations): {fetchers.stats().restarts}")
    print(f"  crawler still up: {crawl.is_alive}")
    await crawl.stop()

    print("Part 2: every host is down")
    every_page = [SITE + path for path in PAGES]
    outage = crawler(every_page, 1_000_000, {"example.org", "down.example"}, set())
    crawl = await system.spawn(outage)
    with trio.fail_after(30):
        terminated = await crawl.join()
    print("  the crawler gave up; the chain of causes:")
    print(describe(terminated.reason))
    print("done")


class _NoTraceback(logging.Formatter):
    """The crashes here are on purpose: log each on one line (the default shows tracebacks)."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    handler = logging.StreamHandler()
    handler.setFormatter(_NoTraceback("  log %(name)s: %(message)s"))
    logging.getLogger("actors").addHandler(handler)
    run_system(main)

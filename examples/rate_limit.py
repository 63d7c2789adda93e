"""Rate limits: a queue that calls remote APIs, at most 5 calls a second per host.

    python examples/rate_limit.py                             # in process
    python examples/rate_limit.py redis://localhost:6379/0    # over Redis (any broker URL)

A `fetch` queue with 8 workers fetches pages from two hosts. Each host allows 5 requests a
second, so the queue has `rate_limit="5/s"` with `rate_key=` the page's host: each host
gets its own budget of 5 starts a second, spread evenly (one every 0.2 s), and the pages
of one host waiting for their turn never hold back those of the other. A `report` queue
with `rate_limit="2/s"` and no key is limited as a whole.

It prints when each start happened and, per host, the achieved rate. Docs:
docs/concepts/rate-limits.md.
"""

import sys
from collections import defaultdict
from urllib.parse import urlsplit

import attrs
import trio

from queueing import Queue, QueueSystem, Worker, run_system

PAGES_PER_HOST = 10
HOSTS = ("api.example.org", "images.example.net")


@attrs.frozen
class Page:
    url: str


starts: dict[str, list[float]] = defaultdict(list)


class Fetch(Worker):
    async def handle(self, page: Page) -> int:
        starts[urlsplit(page.url).hostname or ""].append(trio.current_time())
        await trio.sleep(0.01)  # the request
        return len(page.url)


class Report(Worker):
    async def handle(self, host: str) -> str:
        starts["report"].append(trio.current_time())
        return f"report on {host} sent"


fetch = Queue(
    "fetch",
    Fetch,
    workers=8,
    rate_limit="5/s",  # per host: see rate_key
    rate_key=lambda page: urlsplit(page.url).hostname,
)
report = Queue("report", Report, rate_limit="2/s")  # the queue as a whole


async def main(system: QueueSystem) -> None:
    t0 = trio.current_time()
    pages = [Page(f"https://{host}/item/{n}") for n in range(PAGES_PER_HOST) for host in HOSTS]
    receipts = await system.submit_many("fetch", pages)
    reports = await system.submit_many("report", list(HOSTS) * 2)
    for receipt in receipts + reports:
        await receipt
    for name, times in starts.items():
        offsets = " ".join(f"{t - t0:.1f}" for t in times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        print(f"{name}: {len(times)} starts at {offsets} s: {rate:.1f}/s")
    print(f"Fetched: {len(receipts)}")
    print(f"Reports: {len(reports)}")


if __name__ == "__main__":
    run_system(fetch, report, main=main, broker=sys.argv[1] if len(sys.argv) > 1 else "memory://")

"""Queues for the command-line tests, run by `queueing worker cli_tasks`.

- `nap`: sleeps for the payload's seconds, then returns it (a task to catch running).
- `shaky`: always raises `Transient`; two attempts, then it is dead-lettered.
- `crawl`: a pipeline of two queues, `fetch` then `store` (a single writer in real life).
"""

from __future__ import annotations

import trio
from tenacity import stop_after_attempt, wait_none

from queueing import Pipeline, Queue, RetryPolicy, Transient, Worker


class Nap(Worker):
    async def handle(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


class Shaky(Worker):
    async def handle(self, word: str) -> str:
        raise Transient(f"the service is down for {word!r}")


class Fetch(Worker):
    async def handle(self, url: str) -> str:
        return f"<html>{url}</html>"


class Store(Worker):
    def handle(self, page: str) -> int:
        return len(page)


nap = Queue("nap", Nap, workers=2)
shaky = Queue("shaky", Shaky, retry=RetryPolicy(stop=stop_after_attempt(2), wait=wait_none()))
fetch = Queue("fetch", Fetch, workers=4)
store = Queue("store", Store, workers=2)
crawl = Pipeline("crawl", [fetch, store])

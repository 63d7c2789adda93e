"""dramatiq, two worker set-ups on the same module (RedisBroker; the Results middleware
with its RedisBackend, store_results=True):

- threads: `python -m dramatiq dramatiq_tasks --processes 1 --threads 8`;
- gevent: `dramatiq-gevent dramatiq_tasks --processes 1 --threads 8`, 8 greenlets in one
  process (the script monkey-patches the standard library before it imports this module,
  so the redis-py clients below, the broker's included, yield to other greenlets).

The client side (`drive.py dramatiq` and `drive.py dramatiq-gevent`) is this module's
`run_*` functions, unpatched, for both: the worker set-up is all that differs.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import redis
from _common import (
    COUNTER,
    INCR,
    URL,
    expect_runs,
    expect_sum,
    paced_threads,
    poll_until_sync,
)
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

QUEUE = "bench"
#: Threads that enqueue: the client is blocking (redis-py), so it enqueues from threads.
THREADS = int(os.environ.get("BENCH_THREADS", "8"))


class Announce(Middleware):
    """Startup hook: tells the bench this worker process is up."""

    def after_worker_boot(self, broker: RedisBroker, worker: object) -> None:
        broker.client.sadd("bench:ready", os.getpid())


broker = RedisBroker(url=URL)
backend = RedisBackend(url=URL)
broker.add_middleware(Results(backend=backend))
broker.add_middleware(Announce())
dramatiq.set_broker(broker)
# The task body's own client (a thread-safe pool; cooperative under dramatiq-gevent).
client = redis.Redis.from_url(URL)


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
def job(x: int) -> int:
    if INCR:
        client.incr(COUNTER)
    return x


def run_ready(procs: int) -> bool:
    return int(broker.client.scard("bench:ready")) >= procs


def run_throughput(n: int) -> dict:
    messages: list = [None] * n

    def send_every(first: int) -> None:
        for i in range(first, n, THREADS):
            messages[i] = job.send(i)

    before = client.get(COUNTER)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(send_every, range(THREADS)))
    t_enq = time.perf_counter()
    # dramatiq keeps a message in `<ns>:<queue>.msgs` until it is acked, which it is after
    # the Results middleware has stored the result.
    msgs = f"dramatiq:{QUEUE}.msgs"
    t1 = poll_until_sync(lambda: int(broker.client.hlen(msgs)) == 0, f"{n} dramatiq acks")
    total = sum(backend.get_result(message) for message in messages)
    expect_sum(total, n)
    expect_runs(before, client.get(COUNTER), n)
    return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}


def run_latency(rate: float, seconds: float) -> dict:
    def one(i: int) -> None:
        message = job.send(i)
        assert message.get_result(block=True, timeout=30_000) == i

    return paced_threads(rate, seconds, one)

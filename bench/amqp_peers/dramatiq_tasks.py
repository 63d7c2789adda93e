"""dramatiq: `python -m dramatiq dramatiq_tasks --processes 1 --threads 8` with its
RabbitmqBroker (pika; its defaults: no publisher confirms, prefetch of twice the threads)
and the Results middleware with a RedisBackend (store_results=True). The client enqueues
from 8 threads (pika is blocking) and waits until every result is in Redis."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import redis
from _common import AMQP_URL, QUEUE, REDIS_URL, THREADS, expect_sum, wait_all_stored
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

READY = f"bench:ready:{QUEUE}"


class Announce(Middleware):
    """Startup hook: tells the bench this worker process is up."""

    def after_worker_boot(self, broker: RabbitmqBroker, worker: object) -> None:
        client.sadd(READY, os.getpid())


broker = RabbitmqBroker(url=AMQP_URL)
backend = RedisBackend(url=REDIS_URL)
broker.add_middleware(Results(backend=backend))
broker.add_middleware(Announce())
dramatiq.set_broker(broker)
client = redis.Redis.from_url(REDIS_URL)


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
def job(x: int) -> int:
    return x


def run_ready(procs: int) -> bool:
    return int(client.scard(READY)) >= procs


def run_throughput(n: int) -> dict:
    messages: list = [None] * n

    def send_every(first: int) -> None:
        for i in range(first, n, THREADS):
            messages[i] = job.send(i)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(send_every, range(THREADS)))
    t_enq = time.perf_counter()
    keys = [backend.build_message_key(message) for message in messages]

    def exists(chunk: list[str]) -> list[bool]:
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.exists(key)
            return [bool(found) for found in pipe.execute()]

    t1 = wait_all_stored(keys, exists)
    total = sum(backend.get_result(message) for message in messages)
    expect_sum(total, n)
    return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}

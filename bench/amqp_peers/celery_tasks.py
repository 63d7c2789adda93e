"""Celery: `python -m celery -A celery_tasks worker --pool threads -c 8 -l warning
--without-gossip --without-mingle --without-heartbeat` with RabbitMQ as its broker (py-amqp
through kombu) and Redis as its result backend; task_acks_late=True (acked after the task
ran and its result was stored, at least once like the others). The client sends from 8
threads and waits until every result is in Redis."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from _common import AMQP_URL, QUEUE, REDIS_URL, THREADS, expect_sum, wait_all_stored
from celery import Celery
from celery.signals import worker_ready

READY = f"bench:ready:{QUEUE}"

app = Celery("bench", broker=AMQP_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
client = redis.Redis.from_url(REDIS_URL)


@worker_ready.connect
def announce(sender: object = None, **kwargs: object) -> None:
    # Startup hook: tells the bench this worker process is up.
    client.sadd(READY, os.getpid())


@app.task
def job(x: int) -> int:
    return x


def run_ready(procs: int) -> bool:
    return int(client.scard(READY)) >= procs


def run_throughput(n: int) -> dict:
    results: list = [None] * n

    def send_every(first: int) -> None:
        for i in range(first, n, THREADS):
            results[i] = job.apply_async((i,))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(send_every, range(THREADS)))
    t_enq = time.perf_counter()
    keys = [f"celery-task-meta-{r.id}" for r in results]

    def exists(chunk: list[str]) -> list[bool]:
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.exists(key)
            return [bool(found) for found in pipe.execute()]

    t1 = wait_all_stored(keys, exists)
    total = 0
    for first in range(0, n, 1000):
        for raw in client.mget(keys[first : first + 1000]):
            total += app.backend.decode_result(raw)["result"]
    expect_sum(total, n)
    return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}

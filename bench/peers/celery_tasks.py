"""Celery: `python -m celery -A celery_tasks worker --pool threads -c 8 -l warning
--without-gossip --without-mingle --without-heartbeat` (Redis transport and Redis result
backend; task_acks_late=True: acked after the task ran and its result was stored, like
the other frameworks' at-least-once delivery; the threads pool runs 8 tasks at once in
one process, as the others do). The task body's Redis client is a module-level redis-py
one (a thread-safe connection pool)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from _common import COUNTER, INCR, URL, expect_runs, expect_sum, paced_threads, poll_until_sync
from celery import Celery
from celery.signals import worker_ready

QUEUE = "bench"
#: Threads that enqueue: the client is blocking (kombu, redis-py), so it sends from threads.
THREADS = int(os.environ.get("BENCH_THREADS", "8"))

app = Celery("bench", broker=URL, backend=URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
counter_client = redis.Redis.from_url(URL)


@worker_ready.connect
def announce(sender: object = None, **kwargs: object) -> None:
    # Startup hook: tells the bench this worker process is up.
    with app.connection_for_write() as conn:
        conn.default_channel.client.sadd("bench:ready", os.getpid())


@app.task
def job(x: int) -> int:
    if INCR:
        counter_client.incr(COUNTER)
    return x


def _client():  # a redis-py client on the broker's database
    conn = app.connection_for_write()
    return conn, conn.default_channel.client


def run_ready(procs: int) -> bool:
    conn, client = _client()
    with conn:
        return int(client.scard("bench:ready")) >= procs


def run_throughput(n: int) -> dict:
    results: list = [None] * n

    def send_every(first: int) -> None:
        for i in range(first, n, THREADS):
            results[i] = job.apply_async((i,))

    conn, client = _client()
    with conn:
        before = client.get(COUNTER)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(send_every, range(THREADS)))
        t_enq = time.perf_counter()

        def done() -> bool:
            # The queue (a list) is empty, and nothing fetched is still unacked (with
            # acks_late, a task is acked after it ran and its result was stored).
            with client.pipeline() as pipe:
                pipe.llen(QUEUE)
                pipe.hlen("unacked")
                queued, unacked = pipe.execute()
            return int(queued) == 0 and int(unacked) == 0

        t1 = poll_until_sync(done, f"{n} celery acks")
        total = 0
        for first in range(0, n, 1000):
            keys = [f"celery-task-meta-{r.id}" for r in results[first : first + 1000]]
            for raw in client.mget(keys):
                total += app.backend.decode_result(raw)["result"]
        expect_sum(total, n)
        expect_runs(before, client.get(COUNTER), n)
    return {"n": n, "enqueue_s": t_enq - t0, "total_s": t1 - t0}


def run_latency(rate: float, seconds: float) -> dict:
    def one(i: int) -> None:
        assert job.apply_async((i,)).get(timeout=30) == i

    return paced_threads(rate, seconds, one)

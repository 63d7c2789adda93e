"""Retry tail benchmark: time-to-result of retried tasks under overload, with and without
`Queue(retry_ahead=True)`.

An open-loop load (submits at a fixed rate whatever happens: a full queue refuses with
`QueueFull`, as a web tier answering 503 would) at about 3x the workers' capacity, on a
queue with `maxsize`, so a backlog of about `maxsize` tasks always waits. About 10% of the
tasks fail their first attempt with `Transient` (the default retry policy retries them
after its short backoff). Measured per accepted task: from its submit to the end of its
successful attempt (its time to result). Reported: p50/p99 of every task and of the
retried ones, for each mode, on `memory://` and over Redis (a private redis-server started
here; the workers run in this process either way).

    python bench/retry_tail_bench.py            # 20 s of load per run
    python bench/retry_tail_bench.py --quick    # 6 s per run
    python bench/retry_tail_bench.py --broker memory

Needs redis-server on PATH for the Redis runs (skipped without it).
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import queueing  # noqa: E402
from queueing import Overflow, Queue, QueueFull, Worker  # noqa: E402

#: The pool and each task's (simulated) work: capacity = WORKERS / WORK tasks/s.
WORKERS = 8
WORK = 0.05
#: Outstanding tasks at most (queued, in backoff, running): the backlog under overload.
MAXSIZE = 200
#: The load, as a multiple of the capacity, and the share of first attempts that fail.
LOAD = 3.0
FAILING = 0.10


class Timed(Worker):
    """Sleeps WORK seconds; fails the first attempt of a payload marked `fail`; records
    the time to result of each task (from the `t` its submitter put in the payload)."""

    def __init__(self, log: list[tuple[float, bool]]) -> None:
        self.log = log

    async def handle(self, payload: dict[str, Any]) -> None:
        await trio.sleep(WORK)
        if payload["fail"] and self.attempt == 1:
            raise queueing.Transient("the backend was busy")
        self.log.append((trio.current_time() - payload["t"], self.attempt > 1))


async def run(broker: str, ahead: bool, seconds: float, seed: int) -> dict[str, Any]:
    log: list[tuple[float, bool]] = []
    spec = Queue(
        "tail",
        Timed,
        workers=WORKERS,
        maxsize=MAXSIZE,
        when_full=Overflow.REJECT,
        worker_kwargs={"log": log},
        retry_ahead=ahead,
    )
    rng = random.Random(seed)
    rate = LOAD * WORKERS / WORK
    counts = {"accepted": 0, "refused": 0}
    async with queueing.open_system(spec, broker=broker) as system:

        async def submit(payload: dict[str, Any]) -> None:
            try:
                await system.submit("tail", payload)
                counts["accepted"] += 1
            except QueueFull:
                counts["refused"] += 1

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            n = 0
            while True:
                due = start + n / rate
                if due - start >= seconds:
                    break
                await trio.sleep_until(due)
                payload = {"n": n, "t": trio.current_time(), "fail": rng.random() < FAILING}
                nursery.start_soon(submit, payload)
                n += 1
        await system.drain()
    every = sorted(t for t, _ in log)
    retried = sorted(t for t, again in log if again)
    return {"counts": counts, "every": every, "retried": retried, "done": len(log)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    server = shutil.which("redis-server")
    if server is None:
        return None
    port = _free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("redis-server did not start")


def report(name: str, result: dict[str, Any]) -> None:
    p = _common.percentile
    every, retried, counts = result["every"], result["retried"], result["counts"]
    print(
        f"  {name:<12} accepted {counts['accepted']:>6,}  refused {counts['refused']:>6,}  "
        f"done {result['done']:>6,}  | all p50 {p(every, 50):6.2f} s  p99 {p(every, 99):6.2f} s"
        f"  | retried ({len(retried):,}) p50 {p(retried, 50):6.2f} s  "
        f"p99 {p(retried, 99):6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 s of load per run")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--broker", choices=["memory", "redis", "both"], default="both")
    args = parser.parse_args()
    seconds = 6.0 if args.quick else args.seconds
    print(_common.machine())
    print(
        f"{WORKERS} workers x {WORK * 1000:.0f} ms of work = {WORKERS / WORK:.0f} tasks/s; "
        f"load {LOAD:g}x = {LOAD * WORKERS / WORK:.0f} submits/s for {seconds:g} s; "
        f"maxsize {MAXSIZE} (Full.REJECT); {FAILING:.0%} of first attempts fail "
        "(default RetryPolicy)"
    )
    brokers: list[tuple[str, str]] = []
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.broker in ("memory", "both"):
            brokers.append(("memory", "memory://"))
        if args.broker in ("redis", "both"):
            started = _redis(Path(tmp))
            if started is None:
                print("redis-server not found: the Redis runs are skipped")
            else:
                proc, port = started
                brokers.append(("redis", f"redis://127.0.0.1:{port}"))
        try:
            for label, url in brokers:
                print(f"{label}:")
                for ahead in (False, True):
                    prefix = f"?prefix=tail{int(ahead)}" if label == "redis" else ""
                    result = trio.run(run, url + prefix, ahead, seconds, 7)
                    report("retry_ahead" if ahead else "default", result)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()

"""Web tier benchmark: examples/web/fastapi_app.py (uvicorn, the asyncio client) in front of
Redis-backed queues served by a `queueing worker` process, under an open-loop HTTP load.

Two parts:

1. The clients' own cost per call (no HTTP): a call that does nothing, made from asyncio
   (`connect()` -> `AsyncioClient`) and from plain code (`connect_sync()`), each crossing
   to the client's trio thread and back; and a sequential `submit` over Redis from trio,
   asyncio and plain code (no worker: nothing competes for the CPU).
2. The load run: requests at a fixed rate whatever the answers (open loop: a slow answer
   never slows the load, so latency is measured from when each request was due), at
   about 0.6x and then 3x the workers' capacity (workers / seconds of work per job).
   Reported: the acknowledgment latency (the 202, or the 503 of a full queue) p50/p99,
   answers by status, and the web process's memory (RSS) after each phase.

    python bench/web_bench.py            # 20 s per phase
    python bench/web_bench.py --quick    # 5 s per phase

Needs redis-server on PATH and the `bench` extra (fastapi, uvicorn, httpx, coredis).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common
import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "web"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(EXAMPLES))

import queueing  # noqa: E402

#: The worker process's pool and each job's (simulated) work: capacity = WORKERS / WORK.
WORKERS = 8
WORK = 0.2
MAXSIZE = 200
#: The load phases, as multiples of the capacity.
PHASES = (0.6, 3.0)
OVERHEAD_CALLS = 20_000
SUBMITS = 2_000


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _env(broker: str) -> dict[str, str]:
    env = {**os.environ, "QUEUEING_BROKER": broker, "THUMBNAIL_MAXSIZE": str(MAXSIZE)}
    env["THUMBNAIL_WORKERS"] = str(WORKERS)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# -- part 1: the clients' cost per call --------------------------------------------------


async def _nothing() -> None:
    await trio.lowlevel.checkpoint()


def overhead(broker: str) -> None:
    os.environ["THUMBNAIL_MAXSIZE"] = str(10 * SUBMITS)  # no worker here: room for them all
    from tasks import QUEUES  # examples/web

    print("\n-- the clients' cost per call (no HTTP) --")

    async def in_asyncio() -> tuple[float, float]:
        async with queueing.connect(broker, *QUEUES) as client:
            thread = client._thread  # type: ignore[attr-defined]
            from queueing._asyncio_client import _call

            started = time.perf_counter()
            for _ in range(OVERHEAD_CALLS):
                await _call(thread, _nothing)
            nothing = (time.perf_counter() - started) / OVERHEAD_CALLS
            started = time.perf_counter()
            for n in range(SUBMITS):
                await client.submit("thumbnails", {"image": f"{n}.png", "width": 8})
            return nothing, (time.perf_counter() - started) / SUBMITS

    nothing_asyncio, submit_asyncio = asyncio.run(in_asyncio())
    with queueing.connect_sync(broker, *QUEUES) as client:
        thread = client._thread
        started = time.perf_counter()
        for _ in range(OVERHEAD_CALLS):
            thread.call(_nothing)
        nothing_sync = (time.perf_counter() - started) / OVERHEAD_CALLS
        started = time.perf_counter()
        for n in range(SUBMITS):
            client.submit("thumbnails", {"image": f"{n}.png", "width": 8})
        submit_sync = (time.perf_counter() - started) / SUBMITS

    async def in_trio() -> tuple[float, float]:
        async with queueing.connect(broker, *QUEUES) as client:
            started = time.perf_counter()
            for _ in range(OVERHEAD_CALLS):
                await _nothing()
            nothing = (time.perf_counter() - started) / OVERHEAD_CALLS
            started = time.perf_counter()
            for n in range(SUBMITS):
                await client.submit("thumbnails", {"image": f"{n}.png", "width": 8})
            return nothing, (time.perf_counter() - started) / SUBMITS

    nothing_trio, submit_trio = trio.run(in_trio)
    print(f"{'':28}{'a call doing nothing':>22}{'one submit (Redis)':>22}")
    for name, nothing, submit in (
        ("trio (in the caller's run)", nothing_trio, submit_trio),
        ("asyncio (AsyncioClient)", nothing_asyncio, submit_asyncio),
        ("plain code (SyncClient)", nothing_sync, submit_sync),
    ):
        print(f"{name:28}{nothing * 1e6:>19.1f} us{submit * 1e6:>19.1f} us")


# -- part 2: the load run ---------------------------------------------------------------


async def _phase(base: str, rate: float, seconds: float, web_pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def one(due: float, n: int) -> None:
            body = {"image": f"img/{n}.png", "width": 64, "work": WORK}
            try:
                answer = await http.post("/jobs", json=body)
                codes[str(answer.status_code)] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1
                return
            latencies.append(trio.current_time() - due)

        started = trio.current_time()
        total = int(rate * seconds)
        async with trio.open_nursery() as nursery:
            for n in range(total):
                due = started + n / rate
                await trio.sleep_until(due)
                nursery.start_soon(one, due, n)
    latencies.sort()
    return {
        "rate": rate,
        "sent": total,
        "codes": dict(codes),
        "p50": _common.percentile(latencies, 50),
        "p99": _common.percentile(latencies, 99),
        "rss": _rss_mb(web_pid),
    }


def load(broker: str, seconds: float, logs: Path, server: str) -> None:
    capacity = WORKERS / WORK
    env = _env(broker)
    worker_log = (logs / "worker.log").open("wb")
    web_log = (logs / "web.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "queueing", "worker", "tasks", "--broker", broker],
        cwd=EXAMPLES,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    port = _free_port()
    web = subprocess.Popen(
        [sys.executable, "fastapi_app.py", "--port", str(port), "--server", server, "--quiet"],
        cwd=EXAMPLES,
        env=env,
        stdout=web_log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or web.poll() is not None:
                raise SystemExit(f"the web app did not start; see {logs}")
            time.sleep(0.2)
        idle = _rss_mb(web.pid)
        print(
            f"\n-- load on {server}: open loop, capacity {capacity:.0f} jobs/s "
            f"({WORKERS} workers x {WORK * 1000:.0f} ms), maxsize {MAXSIZE}, "
            f"{seconds:g} s per phase --"
        )
        print(f"web process RSS at rest: {idle:.1f} MB")
        print(f"{'load':>12}{'sent':>8}{'ack p50':>11}{'ack p99':>11}{'RSS':>10}  answers")
        for share in PHASES:
            result = trio.run(_phase, base, share * capacity, seconds, web.pid)
            print(
                f"{share:>4.1f}x {result['rate']:>4.0f}/s{result['sent']:>8}"
                f"{_common.fmt_ms(result['p50']):>11}{_common.fmt_ms(result['p99']):>11}"
                f"{result['rss']:>7.1f} MB  {result['codes']}"
            )
    finally:
        for process in (web, worker):
            process.send_signal(signal.SIGINT)
        for process in (web, worker):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        worker_log.close()
        web_log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s per load phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per load phase")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "hypercorn-trio"],
        default="uvicorn",
        help="uvicorn: the asyncio client; hypercorn-trio: the trio client, no thread",
    )
    parser.add_argument("--skip-overhead", action="store_true", help="only the load run")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("web_bench needs redis-server on PATH")
    print(_common.machine())
    port = _free_port()
    logs = Path(tempfile.mkdtemp(prefix="web-bench-"))
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=logs,
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        prefix = f"bench{secrets.token_hex(3)}"
        if not args.skip_overhead:
            overhead(f"redis://127.0.0.1:{port}/0?prefix={prefix}o")
        load(f"redis://127.0.0.1:{port}/0?prefix={prefix}l", seconds, logs, args.server)
    finally:
        server.terminate()
        server.wait(10)
    print(f"logs: {logs}")


if __name__ == "__main__":
    main()

"""What one kept outcome costs (the memory `max_results` and `result_ttl` bound).

- memory://: the Python heap held by N finished outcomes kept for lookup by id, with
  no receipt held by the caller (tracemalloc, after a garbage collection);
- redis://: Redis's `used_memory` grown by N finished outcomes kept for `result_ttl`
  (the task's record: outcome, result, times), on a private redis-server.

Each for a small result (an int) and for a ~1 KB one.

    python bench/results_memory_bench.py          # N = 20000
    python bench/results_memory_bench.py --quick  # N = 2000
"""

from __future__ import annotations

import argparse
import gc
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import _common
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queueing import Queue, Worker, open_system

#: The size of the large result (characters).
BIG = 1000


class Make(Worker):
    """Returns a small int (size 0), or a string of `size` characters of its own."""

    async def handle(self, size: int) -> Any:
        if not size:
            return 7
        return str(self.task_id).ljust(size, "x")  # one new string per task


def queue() -> Queue[Any]:
    return Queue("echo", Make, workers=8, maxsize=1_000_000)


async def _run_all(system: Any, n: int, value: int) -> None:
    receipts = await system.submit_many("echo", [value] * n)
    for receipt in receipts:
        await receipt


async def in_memory(n: int, value: int) -> float:
    """Bytes of heap per kept outcome."""
    async with open_system(queue(), max_results=10 * n) as system:
        await _run_all(system, 100, value)  # warm up: caches, interned strings
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await _run_all(system, n, value)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return (after - before) / n


def redis_used(port: int) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory in INFO memory")


async def in_redis(port: int, n: int, value: int) -> float:
    """Bytes of Redis memory per kept outcome."""
    url = f"redis://127.0.0.1:{port}/0?prefix=m{secrets.token_hex(3)}"
    async with open_system(queue(), broker=url) as system:
        await _run_all(system, 100, value)
        await system.drain()
        before = redis_used(port)
        await _run_all(system, n, value)
        await system.drain()
        after = redis_used(port)
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    n = 2_000 if parser.parse_args().quick else 20_000
    print(_common.machine())
    print(f"{n} finished outcomes kept; bytes per kept outcome:")
    print(f"{'result':>16}{'memory:// heap':>18}{'redis:// used_memory':>24}")
    binary = shutil.which("redis-server")
    folder = tempfile.mkdtemp(prefix="results-memory-")
    port = 0
    server = None
    if binary is not None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
        server = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
    try:
        for label, value in (("an int", 0), ("a 1 KB string", BIG)):
            heap = trio.run(in_memory, n, value)
            used = trio.run(in_redis, port, n, value) if server else float("nan")
            print(f"{label:>16}{heap:>18,.0f}{used:>24,.0f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()

"""The CPU cost of one Redis round trip on trio: coredis against the broker's lean client
(queueing/brokers/redis/_resp.py) and a raw trio socket (the floor).

Cases (each one round trip per operation):
- `incr`: one INCR;
- `evalsha8`: a pipeline of 8 EVALSHA calls of a tiny script (`return 1`);
- `xreadgroup8`: an XREADGROUP that reads 8 stream entries (2 fields each).
Clients: `coredis` (6.x, decode_responses=True), `lean` (`_resp.LeanRedis`), `raw` (INCR
only: a trio socket that writes the command's bytes and reads the reply's, no parsing).

Measures:
- CPU per operation (default): `time.process_time` over `--n` operations after a warm-up,
  in this process (the server is another process). `--repeat` runs each; best and median.
- `--callgrind`: instructions per operation, (I(N) - I(N/5)) / (4N/5) of whole runs under
  `valgrind --tool=callgrind` (needs valgrind).

It starts a private redis-server (on a free port, no persistence) unless `--url` names one
(its database is flushed: use a private one).

    python bench/resp_cost.py
    python bench/resp_cost.py --callgrind --n 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

CASES = ("incr", "evalsha8", "xreadgroup8")
CLIENTS = ("coredis", "lean", "raw")
WARM = 200
SCRIPT = "return 1"
STREAM, GROUP = "bench:stream", "bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _prepare(url: str, case: str, n: int) -> None:
    """Flush the database; for `xreadgroup8`, a stream with 8 entries per operation."""
    from queueing.brokers.redis._resp import open_lean

    async with open_lean(url, connect_timeout=5) as redis:
        await redis.execute("FLUSHDB")
        await redis.execute("SCRIPT", "LOAD", SCRIPT)
        if case == "xreadgroup8":
            total = 8 * (n + WARM)
            for start in range(0, total, 1000):
                pipe = redis.pipeline()
                for i in range(start, min(start + 1000, total)):
                    pipe.xadd(STREAM, {"a": str(i), "b": "x" * 40})
                await redis.run_pipe(pipe)
            await redis.execute("XGROUP", "CREATE", STREAM, GROUP, "0")


async def _run_coredis(url: str, case: str, n: int) -> float:
    import coredis

    client = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        sha = await client.script_load(SCRIPT)

        async def op() -> None:
            if case == "incr":
                await client.incr("bench:n")
            elif case == "evalsha8":
                async with client.pipeline(transaction=False) as pipe:
                    calls = [pipe.evalsha(sha, keys=["k"], args=[1]) for _ in range(8)]
                for call in calls:
                    await call
            else:
                read = await client.xreadgroup(GROUP, "c", count=8, streams={STREAM: ">"})
                assert read
                assert len(read[STREAM]) == 8

        return await _timed(op, n)


async def _run_lean(url: str, case: str, n: int) -> float:
    from queueing.brokers.redis._resp import open_lean

    async with open_lean(url, connect_timeout=5) as redis:
        sha = await redis.script_load(SCRIPT)

        async def op() -> None:
            if case == "incr":
                await redis.execute("INCR", "bench:n")
            elif case == "evalsha8":
                pipe = redis.pipeline()
                for _ in range(8):
                    pipe.evalsha(sha, keys=["k"], args=[1])
                await redis.run_pipe(pipe)
            else:
                read = await redis.xreadgroup(GROUP, "c", count=8, streams={STREAM: ">"})
                assert read
                assert len(read[STREAM]) == 8

        return await _timed(op, n)


async def _run_raw(url: str, case: str, n: int) -> float:
    if case != "incr":
        raise SystemExit("the raw client does INCR only")
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
    command = b"*2\r\n$4\r\nINCR\r\n$7\r\nbench:n\r\n"

    async def op() -> None:
        await stream.send_all(command)
        data = await stream.receive_some(4096)
        assert data.endswith(b"\r\n")

    try:
        return await _timed(op, n)
    finally:
        await stream.aclose()


async def _timed(op: object, n: int) -> float:
    fn = op  # an async callable
    for _ in range(WARM):
        await fn()  # type: ignore[operator]
    start = time.process_time()
    for _ in range(n):
        await fn()  # type: ignore[operator]
    return (time.process_time() - start) / n


RUNNERS = {"coredis": _run_coredis, "lean": _run_lean, "raw": _run_raw}


def _cpu(url: str, client: str, case: str, n: int) -> float:
    """CPU seconds per operation, measured in a fresh process."""
    trio.run(_prepare, url, case, n)
    out = subprocess.run(
        [sys.executable, __file__, "--run", client, case, str(n), "--url", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[-1])


def _instructions(url: str, client: str, case: str, n: int) -> int:
    trio.run(_prepare, url, case, n)
    command = [sys.executable, __file__, "--run", client, case, str(n), "--url", url]
    return _common.callgrind_totals(command)["Ir"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a private Redis (flushed!); default: start one")
    parser.add_argument("--n", type=int, default=3000, help="operations per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per client and case (CPU)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per operation")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--run", nargs=3, metavar=("CLIENT", "CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        client, case, n = args.run
        per_op = trio.run(RUNNERS[client], args.url, case, int(n))
        print(f"{per_op:.9f}")
        return
    server = None
    url = args.url
    tmp = None
    if url is None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (or pass --url)")
        port = _free_port()
        tmp = tempfile.mkdtemp(prefix="resp-cost-")
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.3)
    try:
        print(f"load average {os.getloadavg()[0]:.2f}")
        for case in args.cases.split(","):
            for client in args.clients.split(","):
                if client == "raw" and case != "incr":
                    continue
                if args.callgrind:
                    small = max(args.n // 5, 1)
                    i_small = _instructions(url, client, case, small)
                    i_large = _instructions(url, client, case, args.n)
                    per_op = (i_large - i_small) / (args.n - small)
                    print(f"{case:12} {client:8} {per_op:12,.0f} instructions per operation")
                else:
                    runs = [_cpu(url, client, case, args.n) for _ in range(args.repeat)]
                    print(
                        f"{case:12} {client:8} CPU per operation: best {min(runs) * 1e6:7.1f} us"
                        f"  median {statistics.median(runs) * 1e6:7.1f} us"
                    )
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

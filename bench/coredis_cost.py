"""CPU per `INCR` of coredis on trio, for each of its set-ups a task body could use.

The Redis bench's `--body incr` makes every task do one coredis `INCR`. This measures that
command alone, out of the worker, for the client options and ways of use coredis offers:
which is cheapest while staying ordinary public API (what we would tell a user to write).

A private redis-server (a free port, `--save "" --appendonly no`, also a unix socket);
each set-up runs in a fresh process (coredis's `Config` is global), as `--tasks` trio
tasks doing `INCR`s at once, like the worker's tasks do:

- `own`: each task opens its own client (the bench's body: one client per worker,
  opened in `on_start`);
- `shared`: the tasks share one client (one per process): coredis queues a command on a
  connection and gives it back to the pool before the answer, so concurrent commands
  share one connection, its writes and its reads.

Per set-up and mode: the process's CPU per INCR (`time.process_time`, the best and median
of `--repeat` runs of `-n` INCRs after a warm-up), the trio task steps per INCR (an
`Instrument`'s `before_task_step`; a separate run) and the Python frames entered per INCR
(`sys.setprofile` "call" events: calls and coroutine resumptions; a separate run).
`--callgrind` adds the instructions per INCR (valgrind, the instrumentation on around the
timed INCRs only).

    python bench/coredis_cost.py                       # every set-up, both modes
    python bench/coredis_cost.py --only default,lean --callgrind
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import _common
import trio

KEY = "cost:incr"

#: name -> (what it is, options for `coredis.Redis.from_url`, how a command is sent).
#: "how": "incr" (`await client.incr(key)`), "pipeline" (a one-command pipeline),
#: "connection" (one connection taken from the pool and kept: `create_request`).
SETUPS: dict[str, tuple[str, dict[str, Any], str]] = {
    "default": ("Redis.from_url(url)", {}, "incr"),
    "decode": ("decode_responses=True", {"decode_responses": True}, "incr"),
    "noverify": ("verify_version=False", {"verify_version": False}, "incr"),
    "noretry": ("retry_policy=NoRetryPolicy()", {"retry_policy": "none"}, "incr"),
    "optimized": ("coredis.Config.optimized = True", {"optimized": True}, "incr"),
    "maxconn1": ("max_connections=1", {"max_connections": 1}, "incr"),
    "lean": (
        "verify_version=False, NoRetryPolicy(), Config.optimized",
        {"verify_version": False, "retry_policy": "none", "optimized": True},
        "incr",
    ),
    "uds": ("unix socket (unix:// url)", {"uds": True}, "incr"),
    "noreply": ("noreply=True (no answer: INCR returns None)", {"noreply": True}, "incr"),
    "pipeline": ("a pipeline of one INCR (transaction=False)", {}, "pipeline"),
    "connection": ("a pooled connection kept, create_request(b'INCR')", {}, "connection"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


# -- the child: one set-up, one mode ------------------------------------------------------


async def open_client(stack: AsyncExitStack, options: dict[str, Any], url: str, sock: str) -> Any:
    import coredis
    from coredis.retry import NoRetryPolicy

    kwargs = dict(options)
    kwargs.pop("optimized", None)
    if kwargs.pop("retry_policy", None) == "none":
        kwargs["retry_policy"] = NoRetryPolicy()
    if kwargs.pop("uds", False):
        url = f"unix://{sock}?db=0"
    return await stack.enter_async_context(coredis.Redis.from_url(url, **kwargs))


async def sender(client: Any, how: str, stack: AsyncExitStack) -> Callable[[], Awaitable[Any]]:
    """An async function sending one INCR with `client`, as `how` says."""
    if how == "incr":
        incr = client.incr
        return lambda: incr(KEY)
    if how == "pipeline":

        async def piped() -> Any:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr(KEY)
            return None

        return piped
    if how == "connection":
        connection = await client.connection_pool.get_connection()
        stack.callback(client.connection_pool.release, connection)
        request = connection.create_request
        key = KEY.encode()
        return lambda: request(b"INCR", key)
    raise ValueError(how)


class Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def child(args: argparse.Namespace) -> None:
    _, options, how = SETUPS[args.child]
    if options.get("optimized"):
        import coredis

        coredis.Config.optimized = True
    n, tasks = args.n, args.tasks
    per_task = n // tasks

    async def go() -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            sends: list[Callable[[], Awaitable[Any]]] = []
            if args.mode == "shared":
                client = await open_client(stack, options, args.url, args.sock)
                one = await sender(client, how, stack)
                sends = [one] * tasks
            else:
                for _ in range(tasks):
                    client = await open_client(stack, options, args.url, args.sock)
                    sends.append(await sender(client, how, stack))

            async def loop(send: Callable[[], Awaitable[Any]], count: int) -> None:
                for _ in range(count):
                    await send()

            async def run(count: int) -> None:
                async with trio.open_nursery() as nursery:
                    for send in sends:
                        nursery.start_soon(loop, send, count)

            await run(200)  # warm-up: connections open, code paths taken
            out: dict[str, Any] = {}
            if args.callgrind:
                print("ready", flush=True)
                await trio.to_thread.run_sync(sys.stdin.readline)
                await run(per_task)
                print("done", flush=True)
                await trio.to_thread.run_sync(sys.stdin.readline)
                return out
            cpu = []
            for _ in range(args.repeat):
                t0 = time.process_time()
                await run(per_task)
                cpu.append((time.process_time() - t0) / (per_task * tasks))
            out["cpu"] = cpu
            steps = Steps()
            trio.lowlevel.add_instrument(steps)
            await run(per_task)
            trio.lowlevel.remove_instrument(steps)
            out["steps"] = steps.steps / (per_task * tasks)
            frames = 0

            def count(frame: Any, event: str, arg: Any) -> None:
                nonlocal frames
                if event == "call":
                    frames += 1

            small = max(per_task // 4, 50)
            sys.setprofile(count)
            await run(small)
            sys.setprofile(None)
            out["frames"] = frames / (small * tasks)
            return out

    print(json.dumps(trio.run(go)), flush=True)


# -- the parent -------------------------------------------------------------------------


def run_child(
    setup: str, mode: str, args: argparse.Namespace, url: str, sock: str
) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--child",
        setup,
        "--mode",
        mode,
        "--url",
        url,
        "--sock",
        sock,
        "-n",
        str(args.n),
        "--tasks",
        str(args.tasks),
        "--repeat",
        str(args.repeat),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"{setup}/{mode} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_callgrind(setup: str, mode: str, args: argparse.Namespace, url: str, sock: str) -> float:
    """Instructions per INCR: the child under callgrind, instrumented only while its timed
    INCRs run (`callgrind_control -i on/off` around them)."""
    out = Path(tempfile.mkdtemp(prefix="coredis-cost-")) / "callgrind.out"
    n = args.cg_n
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        setup,
        "--mode",
        mode,
        "--url",
        url,
        "--sock",
        sock,
        "-n",
        str(n),
        "--tasks",
        str(args.tasks),
        "--callgrind",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None

    def control(flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True, capture_output=True)

    assert proc.stdout.readline().strip() == "ready"
    control("-i=on")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"
    control("-i=off")
    proc.stdin.write("end\n")
    proc.stdin.flush()
    proc.wait(600)
    text = out.read_text()
    totals = re.search(r"^totals: (\d+)", text, re.MULTILINE) or re.search(
        r"^summary: (\d+)", text, re.MULTILINE
    )
    assert totals is not None
    shutil.rmtree(out.parent, ignore_errors=True)
    return int(totals.group(1)) / ((n // args.tasks) * args.tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=4000, help="timed INCRs per run")
    parser.add_argument("--tasks", type=int, default=8, help="trio tasks sending at once")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per set-up")
    parser.add_argument("--only", default="", help="set-ups, comma-separated")
    parser.add_argument("--modes", default="own,shared", help="own, shared or both")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--cg-n", type=int, default=800, help="INCRs under callgrind")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="own", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sock", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    setups = args.only.split(",") if args.only else list(SETUPS)
    for name in setups:
        if name not in SETUPS:
            raise SystemExit(f"--only: unknown set-up {name!r} (one of {', '.join(SETUPS)})")
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="coredis-cost-"))
    sock = str(work / "redis.sock")
    server = _common.start_redis_server(
        port, work, extra=("--unixsocket", sock, "--unixsocketperm", "700")
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_port(port)
        import coredis

        print(
            f"coredis {coredis.__version__}, trio {trio.__version__}, {args.tasks} tasks, "
            f"{args.n} INCRs x {args.repeat} runs; load average "
            + " ".join(f"{x:.1f}" for x in os.getloadavg())
        )
        header = f"{'set-up':<11} {'mode':<7} {'CPU us/INCR best':>16} {'median':>7} "
        header += f"{'steps':>6} {'frames':>7}"
        if args.callgrind:
            header += f" {'instr/INCR':>11}"
        print(header)
        for name in setups:
            for mode in args.modes.split(","):
                got = run_child(name, mode, args, url, sock)
                cpu = sorted(got["cpu"])
                line = f"{name:<11} {mode:<7} {1e6 * cpu[0]:>16.1f} "
                line += f"{1e6 * statistics.median(cpu):>7.1f} {got['steps']:>6.2f} "
                line += f"{got['frames']:>7.0f}"
                if args.callgrind:
                    line += f" {run_callgrind(name, mode, args, url, sock) / 1000:>10.1f}k"
                print(line, flush=True)
        print("set-ups: " + "; ".join(f"{k}: {SETUPS[k][0]}" for k in setups))
        print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "SHUTDOWN", "NOSAVE"], capture_output=True)
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RabbitMQ broker benchmark: tasks/s of ours against dramatiq's and Celery's RabbitMQ
brokers, in one run.

Every framework runs the same no-op task, `job(x) -> x`, with its result stored in Redis,
against the machine's RabbitMQ (`--amqp`, default 127.0.0.1:5672, guest/guest) and one
private redis-server (started here on a free port, `--save "" --appendonly no`, flushed
before each run). One worker process per framework, 8 tasks at once, in each peer's
documented set-up:

- ours: `queueing worker ours_tasks:job --concurrency 8` on `amqp://...?results=redis://...`
  (quorum queues, publisher confirms, an ack after the outcome is stored);
- dramatiq: `dramatiq dramatiq_tasks --processes 1 --threads 8`, RabbitmqBroker (its
  defaults: no publisher confirms, prefetch 2 x threads), Results middleware (RedisBackend);
- Celery: `celery worker --pool threads -c 8`, RabbitMQ broker (py-amqp), Redis result
  backend, `task_acks_late=True`, gossip/mingle/heartbeat off.

A client (`bench/amqp_peers/drive.py`, in the framework's own environment) enqueues N tasks
(ours: 64 concurrent `submit`s; the blocking peers: 8 threads) and waits until all are
done: ours awaits every receipt, the peers poll Redis until every result is stored. Every
run checks the sum of the results. The figure is N / (first enqueue to last completion),
after an untimed warm-up of 500 tasks on the freshly started worker. Each run uses queues
of its own (deleted afterwards).

Throughput is measured `--repeat` times (3; 1 with `--quick`) in rounds: every framework
once per round, so a change of the machine's load reaches all alike. The table shows the
median and the best of the runs, and ours / the faster peer by both. A second table shows
the CPU per task of each process over the timed runs (`/proc`: the worker's process group,
the client, the private Redis, and RabbitMQ's server less its idle rate sampled for 2 s
before the run): figures that depend much less on the machine's load than tasks/s do.

The peers live in their own environment, `.bench-venv/amqp-peers` from
bench/requirements-amqp-peers.txt (never in ours), made on first use.

    python bench/amqp_bench.py                  # N=20k, 3 rounds
    python bench/amqp_bench.py --quick          # N=3k, 1 round
    python bench/amqp_bench.py --only ours,dramatiq

Target: ours >= 2x the faster peer, judged on the medians; PASS/MISS is printed, and a
miss never fails the run (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import trio
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "amqp_peers"
REQUIREMENTS = ROOT / "bench" / "requirements-amqp-peers.txt"
CONCURRENCY = 8
TARGET = 2.0  # ours / the faster peer, on the medians

console = Console(width=130)


@dataclass
class Framework:
    name: str
    label: str
    dists: tuple[str, ...]
    setup: str
    python: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    skipped: str = ""
    runs: list[float] = field(default_factory=list)
    enqueues: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Per run: CPU seconds per task of the client, the worker, RabbitMQ and Redis.
    cpu: list[dict[str, float]] = field(default_factory=list)

    def worker_argv(self, url: str) -> list[str]:
        py = self.python
        if self.name == "ours":
            return [
                py,
                "-m",
                "queueing",
                "worker",
                "ours_tasks:job",
                "--broker",
                url,
                "--concurrency",
                str(CONCURRENCY),
            ]
        if self.name == "dramatiq":
            return [
                py,
                "-m",
                "dramatiq",
                "dramatiq_tasks",
                "--processes",
                "1",
                "--threads",
                str(CONCURRENCY),
            ]
        return [
            py,
            "-m",
            "celery",
            "-A",
            "celery_tasks",
            "worker",
            "--pool",
            "threads",
            "-c",
            str(CONCURRENCY),
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            "w1@bench",
        ]

    def queues(self, queue: str) -> list[str]:
        """The RabbitMQ queues one run of it declares (deleted after the run)."""
        if self.name == "ours":
            return [f"{queue}:job", f"{queue}:job:dead"]
        if self.name == "dramatiq":
            return [queue, f"{queue}.DQ", f"{queue}.XQ"]
        return [queue]


def frameworks() -> list[Framework]:
    c = CONCURRENCY
    return [
        Framework(
            "ours",
            "ours (queueing)",
            ("trio-queueing", "pamqp", "coredis", "trio"),
            f"queueing worker --concurrency {c}",
        ),
        Framework(
            "dramatiq",
            "dramatiq",
            ("dramatiq", "pika", "redis"),
            f"--processes 1 --threads {c}, RabbitmqBroker",
        ),
        Framework(
            "celery",
            "Celery",
            ("celery", "kombu", "amqp", "redis"),
            f"--pool threads -c {c}, acks_late",
        ),
    ]


# -- processes and servers -----------------------------------------------------------------


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A subprocess in its own process group (so its own children go with it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=PEERS,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to its process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


TICK = os.sysconf("SC_CLK_TCK")
#: Seconds RabbitMQ's CPU is sampled before a timed run, to take its idle rate off.
IDLE_SAMPLE = 2.0


def cpu_of(pids: list[int]) -> float:
    """Seconds of CPU (user + system, all threads) used so far by `pids` (gone ones: 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def waited_of(pids: list[int]) -> float:
    """Seconds the threads of `pids` spent runnable but waiting for a core so far
    (`/proc/<pid>/task/<tid>/schedstat`, second field; threads gone meanwhile: lost)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def group_of(pgid: int) -> list[int]:
    """The processes of process group `pgid` (a worker and the children it forked)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def beam_pids() -> list[int]:
    """RabbitMQ's Erlang VM (the whole server's CPU: other users of it count too)."""
    out = subprocess.run(["pgrep", "beam.smp"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_command(port: int, *args: str) -> bytes:
    """One command over RESP (PING, FLUSHALL), no client library needed."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload.encode())
        return s.recv(65536)


@contextmanager
def private_redis(workdir: Path) -> Iterator[tuple[int, int]]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server not found: install Redis (apt-get install redis-server)")
    port = free_port()
    proc = spawn(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        workdir / "redis.log",
        dict(os.environ),
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis_command(port, "PING").startswith(b"+PONG"):
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"redis-server did not start:\n{tail(workdir / 'redis.log')}")
        time.sleep(0.05)
    try:
        yield port, proc.pid
    finally:
        stop(proc)


def delete_queues(amqp: str, names: list[str]) -> None:
    from queueing.brokers import amqp as protocol

    async def go() -> None:
        async with protocol.connect(amqp) as connection:
            for name in names:
                with suppress(protocol.ChannelClosed):
                    async with await connection.open_channel() as channel:
                        await channel.delete_queue(name)

    trio.run(go)


# -- environments --------------------------------------------------------------------------


def ensure_env(root: Path, install: bool) -> tuple[str, str]:
    """The python of the peers' environment (made and filled on first use), or ("", why)."""
    return _common.peer_env(
        root / "amqp-peers", REQUIREMENTS, install, lambda text: console.print(f"[dim]{text}[/]")
    )


def versions_of(python: str, dists: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\nout = {}\nfor d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n    except m.PackageNotFoundError: out[d] = '?'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code, *dists], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {d: "?" for d in dists}


# -- one run -------------------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace, port: int, redis_pid: int, workdir: Path) -> None:
        self.args = args
        self.port = port
        self.redis_pid = redis_pid
        self.redis = f"redis://127.0.0.1:{port}/0"
        self.workdir = workdir

    def env(self, fw: Framework, queue: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        # Ours is this checkout's code, whatever the environment's install points to.
        path = [str(PEERS), str(ROOT)] if fw.name == "ours" else [str(PEERS)]
        env.update(
            BENCH_AMQP_URL=self.args.amqp,
            BENCH_REDIS_URL=self.redis,
            BENCH_QUEUE=queue,
            BENCH_CONCURRENCY=str(CONCURRENCY),
            BENCH_DEADLINE=str(self.args.run_timeout),
            PYTHONPATH=os.pathsep.join(path),
            PYTHONUNBUFFERED="1",
        )
        return env

    def drive(self, fw: Framework, env: dict[str, str], log: Path, *args: str) -> dict[str, Any]:
        argv = [fw.python, str(PEERS / "drive.py"), fw.name, *args]
        try:
            with open(log, "ab") as err:
                done = subprocess.run(
                    argv,
                    cwd=PEERS,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    timeout=self.args.run_timeout + 60,
                    start_new_session=True,
                )
        except subprocess.TimeoutExpired:
            return {"error": "the client timed out"}
        lines = [ln for ln in done.stdout.decode(errors="replace").splitlines() if ln[:1] == "{"]
        try:
            return dict(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return {"error": f"client exited with {done.returncode} and no figures"}

    def run(self, fw: Framework, n: int, round_: int) -> tuple[float, float, dict[str, float], str]:
        """(tasks/s, enqueues/s, CPU seconds per task by process, error) of one run."""
        queue = f"bench-{fw.name}-{round_}-{secrets.token_hex(3)}"
        tag = f"{fw.name}-{round_}"
        log = self.workdir / f"{tag}.log"
        redis_command(self.port, "FLUSHALL")
        env = self.env(fw, queue)
        url = f"{self.args.amqp}?results={self.redis}&prefix={queue}"
        worker = spawn(fw.worker_argv(url), self.workdir / f"{tag}-worker.log", env)
        try:
            steps = [("ready", "1", "60"), ("throughput", str(self.args.warmup))]
            for step in steps:
                answer = self.drive(fw, env, log, *step)
                if "error" in answer:
                    return 0, 0, {}, self._why(f"{step[0]}: {answer['error']}", worker, tag)
            workers, beam = group_of(worker.pid), beam_pids()
            # RabbitMQ's CPU while this run is idle (others using it, its own timers):
            # taken off its figure, for the run's duration.
            idle = cpu_of(beam)
            time.sleep(IDLE_SAMPLE)
            idle_rate = (cpu_of(beam) - idle) / IDLE_SAMPLE
            before = [cpu_of(workers), cpu_of(beam), cpu_of([self.redis_pid])]
            waited = waited_of(workers)
            started = time.perf_counter()
            result = self.drive(fw, env, log, "throughput", str(n))
            after = [cpu_of(workers), cpu_of(beam), cpu_of([self.redis_pid])]
            waited = waited_of(workers) - waited
            if "error" in result:
                return 0, 0, {}, self._why(result["error"], worker, tag)
            names = ("worker", "rabbitmq", "redis")
            cpu = {name: a - b for name, a, b in zip(names, after, before, strict=True)}
            cpu["rabbitmq"] -= idle_rate * (time.perf_counter() - started)
            cpu["client"] = result.get("cpu_s", 0.0)
            per_task = {name: seconds / n for name, seconds in cpu.items()}
            # Not CPU: how long the worker's threads waited for a core, per task.
            per_task["worker_waited"] = waited / n
            return result["rate"], result["n"] / result["enqueue_s"], per_task, ""
        finally:
            stop(worker)
            delete_queues(self.args.amqp, fw.queues(queue))

    def _why(self, error: str, worker: subprocess.Popen[bytes], tag: str) -> str:
        if worker.poll() is not None:
            error += f"; the worker exited: {tail(self.workdir / f'{tag}-worker.log', 3)}"
        return error


# -- report --------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "-"


CPU_COLUMNS = ("client", "worker", "redis", "rabbitmq")
#: Run-queue wait of the worker's threads per task (not part of the total).
WAIT_COLUMN = "worker_waited"


def cpu_table(fws: list[Framework]) -> None:
    """CPU per task of each process (utime + stime over the timed run; the client's from
    its own process_time), median of the runs (lowest in brackets). RabbitMQ's is its
    whole server's less its idle rate sampled just before (others using it meanwhile
    still blur it). Last, not CPU: how long the worker's threads were runnable but
    waited for a core (the machine's other load), per task."""
    table = Table(title="CPU per task (us), median of the runs (lowest)")
    table.add_column("framework")
    for column in (*CPU_COLUMNS, "total", "worker waited for a core"):
        table.add_column(column, justify="right")
    for fw in fws:
        if not fw.cpu:
            continue
        cells = []
        for column in (*CPU_COLUMNS, "total", WAIT_COLUMN):
            values = [
                (sum(run[c] for c in CPU_COLUMNS) if column == "total" else run[column]) * 1e6
                for run in fw.cpu
            ]
            cells.append(f"{statistics.median(values):,.0f} ({min(values):,.0f})")
        table.add_row(fw.label, *cells)
    console.print(table)


def report(fws: list[Framework], args: argparse.Namespace) -> dict[str, Any]:
    ours = next(fw for fw in fws if fw.name == "ours")
    runs = f"median of {args.repeat} runs (best)" if args.repeat > 1 else "one run"
    table = Table(
        title=f"RabbitMQ brokers: {args.n:,} no-op tasks with results stored, {CONCURRENCY} "
        f"at once, one worker process (first enqueue -> last completion), {runs}"
    )
    for column in ("framework", "versions", "set-up", "tasks/s", "ours / it", "enqueue/s"):
        table.add_column(column, justify="right" if "/" in column else "left")
    ours_median = statistics.median(ours.runs) if ours.runs else None
    summary: dict[str, Any] = {}
    for fw in fws:
        vers = ", ".join(f"{k} {v}" for k, v in fw.versions.items())
        if fw.skipped:
            table.add_row(fw.label, vers, fw.setup, f"[yellow]skipped[/]: {fw.skipped}"[:60])
            continue
        median = statistics.median(fw.runs) if fw.runs else None
        best = max(fw.runs) if fw.runs else None
        cell = fmt(median) + (f" ({fmt(best)})" if args.repeat > 1 and best else "")
        if fw.errors:
            cell += f" [red]{len(fw.errors)} failed[/]"
        ratio = f"{ours_median / median:.2f}x" if ours_median and median else "-"
        enqueue = fmt(statistics.median(fw.enqueues)) if fw.enqueues else "-"
        table.add_row(fw.label, vers, fw.setup, cell, ratio if fw is not ours else "1.00", enqueue)
        summary[fw.name] = {
            "runs": fw.runs,
            "median": median,
            "best": best,
            "enqueue": fw.enqueues,
            "errors": fw.errors,
            "cpu_per_task": fw.cpu,
        }
    console.print(table)
    cpu_table(fws)
    peers = [fw for fw in fws if fw is not ours and fw.runs]
    for fw in fws:
        for error in fw.errors:
            console.print(f"[red]{fw.label} failed:[/] {error}")
    if ours.runs and peers:
        by_median = max(peers, key=lambda fw: statistics.median(fw.runs))
        by_best = max(peers, key=lambda fw: max(fw.runs))
        ratio = ours_median / statistics.median(by_median.runs)  # type: ignore[operator]
        best_ratio = max(ours.runs) / max(by_best.runs)
        ok = "[green]PASS[/]" if ratio >= TARGET else "[red]MISS[/]"
        console.print(
            f"faster peer by median: {by_median.label}; ours / it = {ratio:.2f}x (target >= "
            f"{TARGET:g}x: {ok}); by best run: {by_best.label}, ours / it = {best_ratio:.2f}x"
        )
        summary["ratio_median"], summary["ratio_best"] = ratio, best_ratio
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median and best)")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="N=3000, one round")
    parser.add_argument("--only", default="", help="comma-separated: ours,dramatiq,celery")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench-venv")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeat = 3_000, 1
    fws = frameworks()
    if args.only:
        wanted = set(args.only.split(","))
        fws = [fw for fw in fws if fw.name in wanted or fw.name == "ours"]
    peers_python, why = ensure_env(args.venv, not args.no_install)
    for fw in fws:
        fw.python = sys.executable if fw.name == "ours" else peers_python
        fw.skipped = "" if fw.python else why
        if fw.python:
            fw.versions = versions_of(fw.python, fw.dists)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="amqp-bench-") as tmp,
        private_redis(Path(tmp)) as (port, redis_pid),
    ):
        runner = Runner(args, port, redis_pid, Path(tmp))
        for round_ in range(args.repeat):
            for fw in fws:
                if fw.skipped:
                    continue
                console.print(f"[dim]round {round_ + 1}/{args.repeat}: {fw.label} ...[/]")
                rate, enqueue, cpu, error = runner.run(fw, args.n, round_)
                if error:
                    fw.errors.append(error)
                else:
                    fw.runs.append(rate)
                    fw.enqueues.append(enqueue)
                    fw.cpu.append(cpu)
        console.print(f"[dim]{time.monotonic() - started:.0f}s; load average {os.getloadavg()}[/]")
        summary = report(fws, args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

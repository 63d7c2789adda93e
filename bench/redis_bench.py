"""Redis broker benchmark: tasks/s and latency of ours against five peers (six worker
set-ups: dramatiq twice), in one run.

Every framework runs the same job against one private redis-server (started here on a
free port, `--save "" --appendonly no`; flushed before each run): its worker process(es)
start as subprocesses, 8 tasks at once per process, in each peer's fastest documented
set-up for that:

- ours: `queueing worker ours_tasks:job --concurrency 8` (the `queueing` command line);
- streaq: `streaq run streaq_tasks:worker`, `Worker(concurrency=8)`;
- taskiq + taskiq-redis: `taskiq worker ... --workers 1 --max-async-tasks 8`
  (RedisStreamBroker, RedisAsyncResultBackend);
- arq: `run_worker(WorkerSettings)`, `max_jobs=8`, `poll_delay=0.01`;
- dramatiq: `dramatiq dramatiq_tasks --processes 1 --threads 8` (Results middleware);
- dramatiq-gevent: `dramatiq-gevent dramatiq_tasks --processes 1 --threads 8`, dramatiq's
  gevent script (`dramatiq[gevent]`): the same module, broker, Results middleware and
  task, with 8 greenlets in one process instead of 8 threads;
- Celery: `celery worker --pool threads -c 8` (Redis transport and result backend,
  `task_acks_late=True`).

The task is `job(x) -> x`, with results stored. Its body (`--body`) is `noop` (return the
argument) or `incr`: first one `INCR` of a bench key on the same Redis with the
framework's natural client (coredis for ours, one client per worker opened in `on_start`;
redis.asyncio for streaq (from its lifespan), taskiq (module-level) and arq (its own
`ctx["redis"]`); redis-py for dramatiq and Celery, made cooperative by dramatiq-gevent's
monkey-patching), so the per-task broker overhead is set against a tiny real I/O body.

A client (`bench/peers/drive.py`, in the framework's own environment; dramatiq-gevent is
driven by dramatiq's own client code, unchanged) enqueues N tasks as fast as the framework
allows (streaq's `enqueue_many` in chunks of 1000; 64 concurrent enqueuers for the asyncio
clients without a batch API; 8 threads for the blocking ones) and waits until all are
done: ours awaits every receipt; the peers are polled every 2 ms on their own completion
state in Redis (streaq's results set, taskiq's consumer group acks, arq's queue,
dramatiq's unacked messages, Celery's queue and unacked hash). Every run then checks the
sum of the results (each task's own result came back) and, with `incr`, that the key rose
by exactly N (each task ran once). The figure is N / (time from the first enqueue to the
last completion), after an untimed warm-up of 500 tasks on freshly started workers.

Throughput is measured `--repeat` times (3; 1 with `--quick`) in rounds: every framework
and worker count once per round, so a change of the machine's load reaches all alike. The
tables show the median and the best of the runs; the last one names the fastest peer
set-up with one worker process, by best and by median, and ours / it.

Ours also gets, in each round before its throughput runs, one `submit_many` of N tasks
with no worker running (the rate Redis accepts them at, and Redis's CPU per task for it).
For every run of ours the bench reads Redis's own account (`CONFIG RESETSTAT` before,
`INFO commandstats` after): `--commands` prints the commands per task, with their calls and
microseconds (`evalsha`: the scripts, whose time includes the commands they run, which are
counted under their own names too; on a loaded machine the times are wall clock, so they
grow with the load). After the table, ours's Redis CPU per task (`INFO cpu`, user + sys, of
every server, over each timed run) is printed as best and median, with the commands and the
reads of client input (`INFO stats`: about one per round trip) per task. For a figure that
does not move with the machine's load, see bench/redis_replay.py (instructions).

Then latency with one worker process (first round only): 200 tasks/s for 10 s, each one
submit + wait for its result, measured from the moment the submit was due (a client that
falls behind shows it) to the result in hand: p50 and p99. Ours also gets a first-result
run: a client submits without a pause (64 enqueuers), a worker process starts a second
later, and the time from the worker's start (its first worker's `on_start`) to the client's
first result is printed (target <= 50 ms: replies reach a client busy submitting). arq
and taskiq results are polled (every 2 ms here); streaq and Celery use pub/sub, dramatiq a
blocking pop, ours a reply stream.

The peers live in separate environments (never in ours): `.bench-venv/peers` from
bench/requirements-peers.txt and `.bench-venv/arq` from bench/peers/requirements-arq.txt
(arq pins redis<6, taskiq-redis needs redis>=8), made on first use. A peer that cannot be
installed or started is skipped with the reason; a failure of ours is reported as one.

    python bench/redis_bench.py                 # N=20k, 3 rounds; ~20 min on 2 cores
    python bench/redis_bench.py --quick         # N=3k, 1 round, latency 5 s; ~3 min
    python bench/redis_bench.py --body incr     # each task also INCRs a key
    python bench/redis_bench.py --only ours,dramatiq,dramatiq-gevent --procs 1
    python bench/redis_bench.py --only ours,arq --profile
    python bench/redis_bench.py --only ours --procs 1 --commands   # Redis commands per task
    python bench/redis_bench.py --only ours --procs 1 --rate 5000  # latency at 5,000/s
    python bench/redis_bench.py --only ours --procs 1 --rate half  # at half the max rate
    nox -s bench_redis                          # the same, in its own session

Target (from the issues): ours >= 3x the fastest peer set-up with one worker process for
the no-op body, >= 1.5x for the incr body (#15), judged on the medians; PASS/MISS is
printed, and a miss never fails the run (exit status 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
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
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
CONCURRENCY = 8
#: Ours / the fastest peer set-up with one worker process, by body (issue #15).
TARGETS = {"noop": 3.0, "incr": 1.5}
#: First result: the client submits this long before the worker starts; the target (ms
#: from the worker's start to the client's first result) and how long the client tries.
FIRST_LEAD = 1.0
FIRST_TARGET_MS = 50.0
FIRST_WITHIN = 30.0
BODIES = {
    "noop": "no-op tasks",
    "incr": "tasks of one Redis INCR each",
}

console = Console(width=130)


# -- frameworks ----------------------------------------------------------------------------


@dataclass
class Framework:
    name: str  # the module bench/peers/{name}_tasks.py, or a set-up drive.py maps to one
    label: str
    env: str  # "ours", or the name of a bench environment
    dists: tuple[str, ...]  # distributions whose versions are reported
    setup: str  # how its workers run, for the report
    python: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    skipped: str = ""

    def worker_argv(self, index: int) -> list[str]:
        py = self.python
        if self.name == "ours":
            return [
                py,
                "-m",
                "queueing",
                "worker",
                "ours_tasks:job",
                "--broker",
                "{url}",
                "--concurrency",
                str(CONCURRENCY),
            ]
        if self.name == "streaq":
            return [py, "-m", "streaq", "run", "streaq_tasks:worker"]
        if self.name == "taskiq":
            return [
                py,
                "-m",
                "taskiq",
                "worker",
                "taskiq_tasks:broker",
                "--workers",
                "1",
                "--max-async-tasks",
                str(CONCURRENCY),
                "--log-level",
                "WARNING",
            ]
        if self.name == "arq":
            return [py, "arq_tasks.py"]
        if self.name in ("dramatiq", "dramatiq-gevent"):
            # dramatiq-gevent is dramatiq's own script: it monkey-patches with gevent, then
            # runs the same command line, whose --threads are greenlets then.
            command = (
                ["-m", "dramatiq"]
                if self.name == "dramatiq"
                else [str(Path(py).parent / "dramatiq-gevent")]
            )
            return [
                py,
                *command,
                "dramatiq_tasks",
                "--processes",
                "1",
                "--threads",
                str(CONCURRENCY),
            ]
        if self.name == "celery":
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
                f"w{index}@bench",
            ]
        raise ValueError(self.name)


def frameworks() -> list[Framework]:
    c = CONCURRENCY
    return [
        Framework(
            "ours",
            "ours (queueing)",
            "ours",
            ("trio-queueing", "coredis", "trio"),
            f"queueing worker --concurrency {c}",
        ),
        Framework(
            "streaq",
            "streaq",
            "peers",
            ("streaq", "coredis", "anyio"),
            f"Worker(concurrency={c}), asyncio",
        ),
        Framework(
            "taskiq",
            "taskiq",
            "peers",
            ("taskiq", "taskiq-redis", "redis"),
            f"--workers 1 --max-async-tasks {c}, RedisStreamBroker",
        ),
        Framework("arq", "arq", "arq", ("arq", "redis"), f"max_jobs={c}, poll_delay=0.01"),
        Framework(
            "dramatiq",
            "dramatiq",
            "peers",
            ("dramatiq", "redis"),
            f"--processes 1 --threads {c}",
        ),
        Framework(
            "dramatiq-gevent",
            "dramatiq-gevent",
            "peers",
            ("dramatiq", "gevent", "redis"),
            f"--processes 1 --threads {c} (greenlets)",
        ),
        Framework(
            "celery",
            "Celery",
            "peers",
            ("celery", "kombu", "redis"),
            f"--pool threads -c {c}, acks_late",
        ),
    ]


ENVS = {
    "peers": BENCH / "requirements-peers.txt",
    "arq": PEERS / "requirements-arq.txt",
}


# -- processes -----------------------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A subprocess in its own process group (so its own children go with it)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=PEERS,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM to its process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    with suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_children)):
        stop(proc, grace=3.0)


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# -- redis ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_call(port: int, *args: str, timeout: float = 10.0) -> Any:
    """One command over RESP (enough for PING, FLUSHALL, INFO); no client library needed."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload.encode())
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            buf += chunk
        kind, rest = buf[:1], buf[1:]
        line, _, body = rest.partition(b"\r\n")
        if kind == b"+":
            return line.decode()
        if kind == b"-":
            raise RuntimeError(line.decode())
        if kind == b":":
            return int(line)
        if kind == b"$":
            size = int(line)
            while len(body) < size + 2:
                body += s.recv(65536)
            return body[:size].decode()
        raise RuntimeError(f"unexpected reply {buf[:40]!r}")


@contextmanager
def private_redis(workdir: Path) -> Iterator[int]:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(server):
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
            "--logfile",
            str(workdir / "redis.log"),
        ],
        workdir / "redis.out",
        dict(os.environ),
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis_call(port, "PING", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"redis-server did not start:\n{tail(workdir / 'redis.log')}"
                ) from None
            time.sleep(0.05)
    try:
        yield port
    finally:
        stop(proc)


@contextmanager
def private_cluster(workdir: Path, masters: int) -> Iterator[list[int]]:
    """A Redis Cluster of `masters` masters without replicas (none: yields [])."""
    if not masters:
        yield []
        return
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    ports: list[int] = []
    while len(ports) < masters:
        port = free_port()
        if port + 10000 < 65536 and port not in ports:
            ports.append(port)
    procs = []
    for port in ports:
        folder = workdir / f"cluster-{port}"
        folder.mkdir()
        argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--cluster-enabled", "yes", "--dir", str(folder)]
        argv += ["--logfile", str(folder / "redis.log")]
        procs.append(spawn(argv, folder / "redis.out", dict(os.environ)))
    try:
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    redis_call(port, "PING", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("a cluster node did not start") from None
                    time.sleep(0.05)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        while any("cluster_state:ok" not in redis_call(p, "CLUSTER", "INFO") for p in ports):
            time.sleep(0.05)
        yield ports
    finally:
        for proc in procs:
            stop(proc)


# -- environments --------------------------------------------------------------------------


def ensure_env(name: str, root: Path, install: bool) -> tuple[str, str]:
    """The python of bench environment `name` (made and filled on first use), or ("", why)."""
    return _common.peer_env(
        root / name, ENVS[name], install, lambda text: console.print(f"[dim]{text}[/]")
    )


def versions_of(python: str, dists: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: out[d] = '?'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code, *dists], capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {d: "?" for d in dists}


# -- one framework -------------------------------------------------------------------------


@dataclass
class Outcome:
    # worker processes -> tasks/s (enqueues/s) of each run that completed
    runs: dict[int, list[float]] = field(default_factory=dict)
    enqueue: dict[int, list[float]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # a failed run ends its series
    latency: dict[str, Any] = field(default_factory=dict)
    # worker processes -> CPU seconds per task (redis, workers, client) of each run
    costs: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    # worker processes -> Redis command -> (calls, CPU us) per task, of each run (ours)
    commands: dict[int, list[dict[str, tuple[float, float]]]] = field(default_factory=dict)
    # ours: one submit_many with no worker running, tasks/s and Redis CPU s per task
    submit_many: list[float] = field(default_factory=list)
    submit_many_redis: list[float] = field(default_factory=list)
    # ours: first result while the client submits (`Runner.first_result`), per run
    first: list[dict[str, Any]] = field(default_factory=list)

    def best(self, procs: int) -> float | None:
        runs = self.runs.get(procs)
        return max(runs) if runs else None

    def median(self, procs: int) -> float | None:
        runs = self.runs.get(procs)
        return statistics.median(runs) if runs else None


class Runner:
    def __init__(
        self, args: argparse.Namespace, port: int, workdir: Path, cluster: list[int] | None = None
    ) -> None:
        self.args = args
        self.port = port
        #: Every Redis server of the run (the masters of a cluster), for FLUSHALL and costs.
        self.ports = cluster or [port]
        self.url = f"redis://127.0.0.1:{port}/0"
        if cluster:
            self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster)
        self.workdir = workdir
        #: CPU seconds per task of the last run of ours (redis, workers, client).
        self.last_costs: dict[str, float] = {}
        #: Redis commands of the last timed run, per task: name -> (calls, CPU us), every
        #: server's summed; scripts' own commands are counted as well as the script call.
        self.last_commands: dict[str, tuple[float, float]] = {}

    def env(self, fw: Framework) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        # Ours is this checkout's code (the commit the report names), not whatever tree
        # the environment's install of trio-queueing points to.
        path = [str(PEERS), str(ROOT)] if fw.name == "ours" else [str(PEERS)]
        env.update(
            BENCH_REDIS_URL=self.url,
            BENCH_CONCURRENCY=str(CONCURRENCY),
            BENCH_DEADLINE=str(self.args.run_timeout),
            BENCH_BODY=self.args.body,
            BENCH_SHARDS=str(self.args.shards),
            PYTHONPATH=os.pathsep.join(path),
            PYTHONUNBUFFERED="1",
        )
        return env

    def drive(
        self, fw: Framework, log: Path, *args: str, timeout: float, wrap: list[str] | None = None
    ) -> dict[str, Any]:
        argv = [*(wrap or []), fw.python, str(PEERS / "drive.py"), fw.name, *args]
        try:
            with open(log, "ab") as err:
                done = subprocess.run(
                    argv,
                    cwd=PEERS,
                    env=self.env(fw),
                    stdout=subprocess.PIPE,
                    stderr=err,
                    timeout=timeout,
                    start_new_session=True,
                )
        except subprocess.TimeoutExpired:
            return {"error": f"client timed out after {timeout:g}s"}
        lines = [
            ln for ln in done.stdout.decode(errors="replace").splitlines() if ln.startswith("{")
        ]
        try:
            return dict(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return {"error": f"client exited with {done.returncode} and no figures"}

    def run(
        self, fw: Framework, procs: int, n: int, latency: bool, profile: bool = False
    ) -> tuple[float, float, str, dict[str, Any]]:
        """Returns (tasks/s, enqueues/s, error, latency figures) of one configuration."""
        tag = f"{fw.name}-{procs}p"
        log = self.workdir / f"{tag}.log"
        for port in self.ports:
            redis_call(port, "FLUSHALL")
        env = self.env(fw)
        workers = []
        for index in range(1, procs + 1):
            argv = [a.replace("{url}", self.url) for a in fw.worker_argv(index)]
            workers.append(spawn(argv, self.workdir / f"{tag}-worker{index}.log", env))
        lat: dict[str, Any] = {}
        try:
            ready = self.drive(fw, log, "ready", str(procs), "60", timeout=90)
            if "error" in ready:
                return 0, 0, self._why(ready["error"], workers, tag), lat
            warm_before = self._cpu([])["client"]
            warm = self.drive(fw, log, "throughput", str(self.args.warmup), timeout=120)
            warm_client = self._cpu([])["client"] - warm_before
            if "error" in warm:
                return 0, 0, self._why(f"warm-up: {warm['error']}", workers, tag), lat
            profiler = self._profile_worker(fw, workers[0], tag) if profile else None
            wrap = self._profile_client(fw, tag) if profile else None
            for port in self.ports:
                redis_call(port, "CONFIG", "RESETSTAT")  # command stats of this run only
            before = self._cpu(workers)
            result = self.drive(
                fw, log, "throughput", str(n), timeout=self.args.run_timeout + 60, wrap=wrap
            )
            after = self._cpu(workers)
            self.last_costs = {key: (after[key] - before[key]) / n for key in before}
            # A client is a process of its own: its start-up (the same for the warm-up's)
            # is taken out by the difference.
            client = after["client"] - before["client"] - warm_client
            self.last_costs["client"] = client / max(1, n - self.args.warmup)
            self.last_commands = self._commands(n)
            if profiler is not None:
                with suppress(ProcessLookupError):
                    profiler.send_signal(signal.SIGINT)
                with suppress(subprocess.TimeoutExpired):
                    profiler.wait(30)
            if "error" in result:
                return 0, 0, self._why(result["error"], workers, tag), lat
            if latency:
                # `--rate half`: half the rate this set-up just reached.
                rate = result["rate"] / 2 if self.args.rate == "half" else float(self.args.rate)
                lat = self.drive(
                    fw,
                    log,
                    "latency",
                    f"{rate:.0f}",
                    str(self.args.seconds),
                    timeout=self.args.seconds + 120,
                )
                lat["rate"] = rate
            return result["rate"], result["n"] / result["enqueue_s"], "", lat
        finally:
            for proc in workers:
                stop(proc)

    def enqueue(self, fw: Framework, n: int) -> tuple[float, str]:
        """Ours: one `submit_many` of `n` tasks, no worker running; (tasks/s, error). Sets
        `last_costs` (Redis CPU per task) and `last_commands`."""
        for port in self.ports:
            redis_call(port, "FLUSHALL")
            redis_call(port, "CONFIG", "RESETSTAT")
        before = self._cpu([])
        result = self.drive(fw, self.workdir / "ours-enqueue.log", "enqueue", str(n), timeout=120)
        after = self._cpu([])
        if "error" in result:
            return 0.0, str(result["error"])
        self.last_costs = {
            key: (after[key] - before[key]) / n for key in ("redis", "redis_bytes", "redis_reads")
        }
        self.last_commands = self._commands(n)
        for port in self.ports:
            redis_call(port, "FLUSHALL")
        return float(result["rate"]), ""

    def first_result(self, fw: Framework) -> dict[str, Any]:
        """Ours: a client submits without a pause; `FIRST_LEAD` seconds after it started
        submitting, one worker process starts. How long after it started (its first
        worker's `on_start`) did the client get its first result? (Replies must reach a
        client busy submitting.)"""
        for port in self.ports:
            redis_call(port, "FLUSHALL")
        mark = self.workdir / "ours-first.started"
        mark.unlink(missing_ok=True)
        env = self.env(fw)
        argv = [fw.python, str(PEERS / "drive.py"), fw.name, "first", str(FIRST_WITHIN)]
        with open(self.workdir / "ours-first.log", "ab") as err:
            client = subprocess.Popen(argv, cwd=PEERS, env=env, stdout=subprocess.PIPE, stderr=err)
        worker = None
        try:
            assert client.stdout is not None
            line = client.stdout.readline()  # "submitting", or the figures of a failure
            if not line.startswith(b"submitting"):
                out = line + client.communicate(timeout=60)[0]
            else:
                time.sleep(FIRST_LEAD)
                argv = [a.replace("{url}", self.url) for a in fw.worker_argv(1)]
                worker_env = {**env, "BENCH_MARK_START": str(mark)}
                worker = spawn(argv, self.workdir / "ours-first-worker.log", worker_env)
                out = client.communicate(timeout=FIRST_WITHIN + 60)[0]
        except subprocess.TimeoutExpired:
            return {"error": "client timed out"}
        finally:
            if worker is not None:
                stop(worker)
            if client.poll() is None:
                client.kill()
                client.wait()
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
        try:
            figures = dict(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return {"error": f"client exited with {client.returncode} and no figures"}
        if "error" not in figures:
            try:
                started = float(mark.read_text())
            except (OSError, ValueError):
                return {"error": "the worker did not mark its start"}
            figures["first_ms"] = 1000 * (float(figures["first_at"]) - started)
        return figures

    def _cpu(self, workers: list[subprocess.Popen[bytes]]) -> dict[str, float]:
        """CPU seconds so far: every Redis server's (INFO cpu), the worker processes'
        (/proc), and the finished clients' (this process's waited-for children)."""
        redis = net = reads = 0.0
        for port in self.ports:
            for line in str(redis_call(port, "INFO", "cpu")).splitlines():
                if line.startswith(("used_cpu_sys:", "used_cpu_user:")):
                    redis += float(line.split(":", 1)[1])
            for line in str(redis_call(port, "INFO", "stats")).splitlines():
                if line.startswith(("total_net_input_bytes:", "total_net_output_bytes:")):
                    net += float(line.split(":", 1)[1])
                elif line.startswith("total_reads_processed:"):
                    reads += float(line.split(":", 1)[1])
        tick = os.sysconf("SC_CLK_TCK")
        worker = 0.0
        for proc in workers:
            with suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                worker += (int(fields[11]) + int(fields[12])) / tick
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "redis": redis,
            "workers": worker,
            "client": children.ru_utime + children.ru_stime,
            "redis_bytes": net,  # not CPU: bytes in and out of Redis
            # not CPU: reads of client input (each round trip is one, or more when a
            # pipeline is long): each costs Redis system calls besides its commands
            "redis_reads": reads,
        }

    def _commands(self, n: int) -> dict[str, tuple[float, float]]:
        """INFO commandstats of every server since the last RESETSTAT, per task."""
        totals: dict[str, list[float]] = {}
        for port in self.ports:
            for line in str(redis_call(port, "INFO", "commandstats")).splitlines():
                if not line.startswith("cmdstat_"):
                    continue
                name, _, rest = line[len("cmdstat_") :].partition(":")
                figures = dict(part.split("=", 1) for part in rest.split(","))
                total = totals.setdefault(name, [0.0, 0.0])
                total[0] += int(figures["calls"])
                total[1] += float(figures["usec"])
        return {name: (calls / n, usec / n) for name, (calls, usec) in totals.items()}

    def _why(self, error: str, workers: list[subprocess.Popen[bytes]], tag: str) -> str:
        dead = [i + 1 for i, p in enumerate(workers) if p.poll() is not None]
        if dead:
            log = self.workdir / f"{tag}-worker{dead[0]}.log"
            error += f"; worker process {dead[0]} exited: {tail(log, 4)}"
        return error

    # -- profiling (--profile): py-spy on ours' worker and client ----------------------------

    def _py_spy(self) -> str:
        found = shutil.which("py-spy")
        if found:
            return found
        python, _ = ensure_env_tools(self.args.venv, not self.args.no_install)
        return str(Path(python).parent / "py-spy") if python else ""

    def _profile_worker(
        self, fw: Framework, worker: subprocess.Popen[bytes], tag: str
    ) -> subprocess.Popen[bytes] | None:
        spy = self._py_spy() if fw.name == "ours" else ""
        if not spy:
            return None
        out = self.workdir / f"{tag}-worker.raw"
        proc = spawn(
            [
                spy,
                "record",
                "-p",
                str(worker.pid),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(out),
                "--nonblocking",
            ],
            self.workdir / f"{tag}-py-spy.log",
            dict(os.environ),
        )
        time.sleep(1.0)  # let it attach
        return proc

    def _profile_client(self, fw: Framework, tag: str) -> list[str] | None:
        spy = self._py_spy() if fw.name == "ours" else ""
        if not spy:
            return None
        return [
            spy,
            "record",
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(self.workdir / f"{tag}-client.raw"),
            "--",
        ]


def ensure_env_tools(root: Path, install: bool) -> tuple[str, str]:
    target = root / "tools"
    python = target / "bin" / "python"
    if (target / "bin" / "py-spy").exists():
        return str(python), ""
    if not install:
        return "", "no py-spy"
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run(
            [base, "-m", "venv", str(target)], check=True, timeout=120, capture_output=True
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "py-spy"],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return "", f"cannot install py-spy: {exc}"
    return str(python), ""


def summarize_profile(path: Path, what: str, top: int = 18) -> None:
    """Inclusive and self time per function from py-spy's raw (collapsed stacks) output."""
    if not path.exists():
        console.print(f"[yellow]no profile of {what} ({path.name} missing)[/]")
        return
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return
    table = Table(title=f"py-spy: {what} ({total} samples at 250 Hz, active time only)")
    table.add_column("incl", justify="right")
    table.add_column("self", justify="right")
    table.add_column("function (file:line)")
    boring = ("<module>", "_run_module_as_main", "_run_code", "run (trio", "main (click")
    ranked = [(f, c) for f, c in inclusive.most_common(80) if not f.startswith(boring)]
    for frame, count in ranked[:top]:
        table.add_row(f"{count / total:.0%}", f"{own[frame] / total:.0%}", frame[:100])
    console.print(table)
    selfs = Table(title=f"py-spy: {what}, most self time")
    selfs.add_column("self", justify="right")
    selfs.add_column("function (file:line)")
    for frame, count in own.most_common(12):
        selfs.add_row(f"{count / total:.1%}", frame[:110])
    console.print(selfs)


# -- report --------------------------------------------------------------------------------


def print_commands(commands: dict[str, tuple[float, float]], what: str) -> None:
    """Redis's own account of a run (`INFO commandstats`), per task: the script calls
    (evalsha: their time includes their commands') and the commands they ran inside."""
    table = Table(title=f"Redis commands per task: {what}")
    for column in ("command", "calls/task", "us/task", "us/call"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, (calls, usec) in sorted(commands.items(), key=lambda item: -item[1][1]):
        if calls < 0.001:
            continue
        table.add_row(name, f"{calls:.3f}", f"{usec:.2f}", f"{usec / calls:.2f}")
    console.print(table)


def fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "-"


def fmt_first(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"[red]{figures['error']}[/]"
    ms = float(figures["first_ms"])
    verdict = "PASS" if ms <= FIRST_TARGET_MS else "MISS"
    return (
        f"{ms:.1f} ms after the worker started ({figures.get('submitted', 0):,} submitted "
        f"meanwhile; target <= {FIRST_TARGET_MS:g} ms: {verdict})"
    )


def fmt_ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds is not None and seconds == seconds else "-"


def report(
    fws: list[Framework],
    outcomes: dict[str, Outcome],
    args: argparse.Namespace,
    machine: dict[str, Any],
) -> dict[str, Any]:
    ours = outcomes.get("ours", Outcome())
    runs = f"median of {args.repeat} runs (best)" if args.repeat > 1 else "one run"
    table = Table(
        title=f"Redis broker: {args.n:,} {BODIES[args.body]}, {CONCURRENCY} at once per "
        f"worker process (first enqueue -> last completion), {runs}"
    )
    table.add_column("framework")
    table.add_column("versions")
    shown = args.procs_list
    for procs in shown:
        table.add_column(f"{procs} process{'es' if procs > 1 else ''}", justify="right")
    for procs in shown[:2]:
        table.add_column(f"ours/peer ({procs}p)", justify="right")
    table.add_column("enqueue (1p)", justify="right")
    for fw in fws:
        out = outcomes.get(fw.name, Outcome())
        vers = ", ".join(f"{k} {v}" for k, v in fw.versions.items())
        if fw.skipped:
            blanks = [""] * (len(shown) + len(shown[:2]))
            table.add_row(fw.label, vers, f"[yellow]skipped[/]: {fw.skipped}"[:60], *blanks[1:], "")
            continue
        cells = []
        for procs in shown:
            cell = fmt_rate(out.median(procs))
            if args.repeat > 1 and out.runs.get(procs):
                cell += f" ({fmt_rate(out.best(procs))})"
            if procs in out.errors:
                cell = "[red]failed[/]" if cell == "-" else f"{cell} [red]+failed[/]"
            cells.append(cell)
        ratios = []
        for procs in shown[:2]:
            mine, theirs = ours.median(procs), out.median(procs)
            ratios.append(
                "" if fw.name == "ours" or not (mine and theirs) else f"{mine / theirs:.2f}x"
            )
        enqueue = out.enqueue.get(1)
        table.add_row(
            fw.label, vers, *cells, *ratios, fmt_rate(statistics.median(enqueue) if enqueue else 0)
        )
    console.print(table)
    for fw in fws:
        for procs, error in outcomes.get(fw.name, Outcome()).errors.items():
            colour = "red" if fw.name == "ours" else "yellow"
            console.print(f"[{colour}]{fw.label}, {procs} process(es): {error}[/]")

    many = ours.submit_many
    if many:
        cpu = statistics.median(ours.submit_many_redis) * 1e6
        console.print(
            f"ours, one submit_many of {args.n:,} tasks, no worker running: "
            f"{fmt_rate(statistics.median(many))} median, {fmt_rate(max(many))} best "
            f"({len(many)} run(s)); Redis CPU {cpu:.1f} us/task (median)"
        )
    for procs, costs in sorted(ours.costs.items()):
        # Redis's CPU per task (INFO cpu: user + sys) over each timed run of ours.
        cpu = sorted(1e6 * cost["redis"] for cost in costs)
        reads = statistics.median(cost.get("redis_reads", 0.0) for cost in costs)
        calls = [sum(c for c, _ in run.values()) for run in ours.commands.get(procs, [])]
        console.print(
            f"ours, {procs} process(es): Redis CPU {cpu[0]:.1f} us/task best, "
            f"{statistics.median(cpu):.1f} median ({len(cpu)} run(s)); "
            f"{statistics.median(calls) if calls else 0:.2f} commands/task (scripts and the "
            f"commands they run, each counted); {reads:.2f} reads of input/task (median)"
        )
    report_latency(fws, outcomes, args)
    target = report_target(fws, outcomes, args)
    console.print(
        f"[dim]{machine['line']}; load average before/after: "
        f"{machine['load_before']} / {machine['load_after']}[/]"
    )
    return {
        "n": args.n,
        "body": args.body,
        "repeat": args.repeat,
        "concurrency": CONCURRENCY,
        "machine": machine,
        "verdict": target["verdict"],
        "target": target,
        "frameworks": {
            fw.name: {
                "label": fw.label,
                "setup": fw.setup,
                "versions": fw.versions,
                "skipped": fw.skipped,
                "rate": {p: out.median(p) for p in out.runs},
                "best": {p: out.best(p) for p in out.runs},
                "runs": out.runs,
                "enqueue_rate": {p: statistics.median(e) for p, e in out.enqueue.items()},
                "errors": out.errors,
                "latency": out.latency,
                "first_result": out.first,
                "cpu_per_task": out.costs,
                "commands_per_task": out.commands,
                "submit_many": out.submit_many,
                "submit_many_redis_cpu": out.submit_many_redis,
            }
            for fw in fws
            for out in [outcomes.get(fw.name, Outcome())]
        },
    }


def report_latency(
    fws: list[Framework], outcomes: dict[str, Outcome], args: argparse.Namespace
) -> None:
    if not any(out.latency for out in outcomes.values()):
        return
    rate = "half its rate" if args.rate == "half" else f"{args.rate:g} tasks/s"
    lat = Table(
        title=f"Latency, 1 worker process: {rate} for {args.seconds:g} s, "
        "from when a submit was due to its result in hand"
    )
    columns = ("framework", "tasks/s", "p50", "p99", "max", "done", "errors", "how results arrive")
    for column in columns:
        lat.add_column(
            column, justify="left" if column in ("framework", "how results arrive") else "right"
        )
    how = {
        "ours": "reply stream (XREAD)",
        "streaq": "pub/sub per task (a)",
        "taskiq": "polled every 2 ms",
        "arq": "polled every 2 ms",
        "dramatiq": "blocking pop (BRPOPLPUSH)",
        "dramatiq-gevent": "blocking pop (BRPOPLPUSH)",
        "celery": "pub/sub",
    }
    for fw in fws:
        figures = outcomes.get(fw.name, Outcome()).latency
        if not figures:
            continue
        if "error" in figures:
            lat.add_row(fw.label, "", "[red]failed[/]", "", "", "", figures["error"][:40], "")
            continue
        lat.add_row(
            fw.label,
            f"{figures.get('rate', 0):,.0f}",
            fmt_ms(figures.get("p50")),
            fmt_ms(figures.get("p99")),
            fmt_ms(figures.get("max")),
            str(figures.get("count", 0)),
            str(figures.get("error_count", 0)),
            how.get(fw.name, ""),
        )
    console.print(lat)
    for fw in fws:
        for figures in outcomes.get(fw.name, Outcome()).first:
            console.print(
                f"{fw.label}: first result while the client keeps submitting: {fmt_first(figures)}"
            )
    if "streaq" in {fw.name for fw in fws}:
        console.print(
            "[dim](a) streaq stores a result within a few ms, but Task.result() returns ~100 ms "
            "later: its coredis PubSub waits out unsubscription_timeout=0.1 s on exit.[/]"
        )


def report_target(
    fws: list[Framework], outcomes: dict[str, Outcome], args: argparse.Namespace
) -> dict[str, Any]:
    """Ours / the fastest peer set-up with one worker process, by the best run and by the
    median; the verdict is the median's."""
    ours = outcomes.get("ours", Outcome())
    peers = [fw for fw in fws if fw.name != "ours" and fw.name in outcomes]
    table = Table(
        title=f"One worker process: ours / the fastest peer set-up ({args.repeat} run(s) each, "
        f"{BODIES[args.body]})"
    )
    for column in ("", "ours", "fastest peer set-up", "its rate", "ours / it"):
        table.add_column(column, justify="right" if column in ("ours", "its rate") else "left")
    figures: dict[str, Any] = {"verdict": "n/a"}
    for statistic in ("best", "median"):
        mine = getattr(ours, statistic)(1)
        rated = [(getattr(outcomes[fw.name], statistic)(1), fw) for fw in peers]
        rated = [(rate, fw) for rate, fw in rated if rate]
        if not (mine and rated):
            table.add_row(statistic, fmt_rate(mine), "-", "-", "-")
            continue
        rate, fastest = max(rated, key=lambda pair: pair[0])
        ratio = mine / rate
        figures[statistic] = {
            "ours": mine,
            "peer": fastest.name,
            "setup": fastest.setup,
            "peer_rate": rate,
            "ratio": ratio,
        }
        table.add_row(
            statistic,
            fmt_rate(mine),
            f"{fastest.label}: {fastest.setup}",
            fmt_rate(rate),
            f"{ratio:.2f}x",
        )
    console.print(table)
    if "median" in figures:
        ratio = figures["median"]["ratio"]
        target = TARGETS[args.body]
        figures["verdict"] = verdict = "PASS" if ratio >= target else "MISS"
        colour = "green" if verdict == "PASS" else "red"
        console.print(
            f"target: ours >= {target:g}x the fastest peer set-up with one worker process "
            f"(medians): {ratio:.2f}x [{colour}]{verdict}[/]"
        )
    elif not ours.median(1):
        console.print("[red]target: no figure for ours (see the failure above)[/]")
    else:
        console.print("[yellow]target: no peer figure to compare with[/]")
    return figures


# -- main ----------------------------------------------------------------------------------


def machine_info(port: int) -> dict[str, Any]:
    import platform

    info = redis_call(port, "INFO", "server")
    version = next(
        (ln.split(":", 1)[1] for ln in info.splitlines() if ln.startswith("redis_version:")), "?"
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "queueing", "actors"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "?", ""
    commit += " (queueing/ or actors/ modified)" if dirty.strip() else ""
    return {
        "commit": commit,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "redis": version,
        "date": time.strftime("%Y-%m-%d"),
        "line": f"Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), "
        f"{platform.system()} {platform.machine()}, redis-server {version}, ours at {commit}",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "load_after": "",
    }


def run_round(
    runner: Runner, fw: Framework, out: Outcome, procs_list: list[int], round_: int
) -> None:
    """One throughput run of `fw` per worker process count (latency in the first round);
    for ours, first one `submit_many` with no worker running."""
    args = runner.args
    if fw.name == "ours" and args.enqueue:
        rate, error = runner.enqueue(fw, args.n)
        if error:
            console.print(f"[red]{fw.label}, submit_many: {error}[/]")
        else:
            out.submit_many.append(rate)
            out.submit_many_redis.append(runner.last_costs["redis"])
            console.print(
                f"  {fw.label:16} submit_many of {args.n:,}, no worker, run {round_}/"
                f"{args.repeat}: {fmt_rate(rate):>9}; Redis CPU "
                f"{1e6 * runner.last_costs['redis']:.1f} us/task"
            )
            if args.commands:
                print_commands(runner.last_commands, f"{fw.label}, submit_many, run {round_}")
    for procs in procs_list:
        if procs in out.errors:
            continue  # a failed set-up is not tried again
        t0 = time.monotonic()
        first = round_ == 1 and procs == 1
        rate, enq, error, lat = runner.run(
            fw,
            procs,
            args.n,
            latency=first and not args.no_latency,
            profile=first and args.profile,
        )
        if error:
            out.errors[procs] = error
            colour = "red" if fw.name == "ours" else "yellow"
            console.print(f"[{colour}]{fw.label}, {procs} process(es): {error}[/]")
        else:
            out.runs.setdefault(procs, []).append(rate)
            out.enqueue.setdefault(procs, []).append(enq)
            if fw.name == "ours":
                out.costs.setdefault(procs, []).append(dict(runner.last_costs))
                out.commands.setdefault(procs, []).append(dict(runner.last_commands))
        if lat:
            out.latency = lat
        if first and fw.name == "ours" and not args.no_latency and not error:
            figures = runner.first_result(fw)
            out.first.append(figures)
            console.print(f"  {fw.label:16} first result while submitting: {fmt_first(figures)}")
        costs = runner.last_costs if fw.name == "ours" and not error else {}
        console.print(
            f"  {fw.label:16} {procs} process(es), run {round_}/{args.repeat}: "
            f"{fmt_rate(rate):>9} (enqueue {fmt_rate(enq)}; {time.monotonic() - t0:.0f} s)"
            + (
                "; CPU us/task: "
                + ", ".join(
                    f"{key} {1e6 * value:.0f}"
                    for key, value in costs.items()
                    if key not in ("redis_bytes", "redis_reads")
                )
                + f"; {costs.get('redis_bytes', 0):.0f} bytes/task in and out of Redis"
                + f", {costs.get('redis_reads', 0):.2f} reads of input/task"
                if costs
                else ""
            )
            + (
                f"; latency p50 {fmt_ms(lat.get('p50'))} p99 {fmt_ms(lat.get('p99'))}"
                if lat and "p50" in lat
                else ""
            )
        )
        if args.commands and fw.name == "ours" and not error:
            print_commands(runner.last_commands, f"{fw.label}, {procs} process(es), run {round_}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3k tasks, 5 s of latency, one run each"
    )
    parser.add_argument("-n", type=int, default=None, help="tasks per run (default 20000)")
    parser.add_argument(
        "--body",
        choices=list(BODIES),
        default="noop",
        help="the task: return its argument (noop), or first INCR a key on the same Redis "
        "with the framework's own client (incr)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="throughput runs per framework and worker count, in rounds (default 3; 1 with "
        "--quick); the table shows the median and the best",
    )
    parser.add_argument("--warmup", type=int, default=500, help="untimed tasks first")
    parser.add_argument(
        "--rate",
        type=_rate,
        default=200.0,
        help="latency: tasks/s, or 'half': half the rate each set-up reached in that round",
    )
    parser.add_argument("--seconds", type=float, default=None, help="latency: duration")
    parser.add_argument("--only", default="", help="comma-separated frameworks (ours always)")
    parser.add_argument("--procs", default="1,2", help="worker process counts (default 1,2)")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--no-enqueue",
        dest="enqueue",
        action="store_false",
        help="skip ours' submit_many run (one submit_many of N tasks, no worker running)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="MASTERS",
        help="ours alone on a private Redis Cluster of MASTERS masters (no replicas), its "
        "queue in --shards shards",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=None,
        help="Queue(shards=) of ours (default 1; with --cluster, 2 per master)",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=150.0,
        help="seconds one run may take before it is given up",
    )
    parser.add_argument(
        "--venv", type=Path, default=ROOT / ".bench-venv", help="where the peers' environments live"
    )
    parser.add_argument(
        "--no-install", action="store_true", help="do not create or update the peers' environments"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy our worker and client during the first 1-process run",
    )
    parser.add_argument(
        "--commands",
        action="store_true",
        help="print Redis's INFO commandstats per task after each run of ours",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs' directory")
    args = parser.parse_args()
    args.n = args.n or (3_000 if args.quick else 20_000)
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: at least 1 run is needed")
    args.repeat = args.repeat or (1 if args.quick else 3)
    procs_list = [int(p) for p in args.procs.split(",") if p]
    args.procs_list = procs_list
    args.shards = args.shards or (2 * args.cluster if args.cluster else 1)
    if args.cluster and args.body != "noop":
        parser.error("--cluster measures the noop body only (the incr body's client is plain)")
    if args.cluster:
        args.only = "ours"

    missing = [m for m in ("coredis", "click") if not _importable(m)]
    if missing:
        console.print(
            f"[yellow]redis_bench skipped: ours needs the redis and cli extras "
            f"({', '.join(missing)} missing); run `nox -s bench_redis`, or "
            "pip install -e '.[bench,redis,cli]'[/]"
        )
        return 0

    fws = frameworks()
    if args.only:
        wanted = {"ours", *(name for name in args.only.split(",") if name)}
        unknown = wanted - {fw.name for fw in fws}
        if unknown:
            parser.error(
                f"--only: unknown {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(fw.name for fw in fws)}"
            )
        fws = [fw for fw in fws if fw.name in wanted]
    for fw in fws:
        if fw.env == "ours":
            fw.python = sys.executable
        else:
            fw.python, fw.skipped = ensure_env(fw.env, args.venv, not args.no_install)
        if fw.python:
            fw.versions = versions_of(fw.python, fw.dists)

    workdir = Path(tempfile.mkdtemp(prefix="redis-bench-"))
    outcomes: dict[str, Outcome] = {}
    started = time.monotonic()
    try:
        with private_redis(workdir) as port, private_cluster(workdir, args.cluster) as cluster:
            machine = machine_info(port)
            runner = Runner(args, port, workdir, cluster)
            where = f"a private cluster of {args.cluster} masters" if cluster else "private redis"
            machine["topology"] = (
                f"cluster of {args.cluster} masters, {args.shards} shards" if cluster else "one"
            )
            console.print(
                f"[dim]{machine['line']}; {where} (port {runner.ports[0]}); logs in {workdir}[/]"
            )
            for fw in fws:
                if fw.skipped:
                    console.print(f"[yellow]{fw.label}: skipped ({fw.skipped})[/]")
                else:
                    outcomes[fw.name] = Outcome()
            # Rounds of every framework in turn, so that a change of the machine's load
            # during the bench reaches all of them alike.
            for round_ in range(1, args.repeat + 1):
                for fw in fws:
                    if fw.name in outcomes:
                        run_round(runner, fw, outcomes[fw.name], procs_list, round_)
            machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            summary = report(fws, outcomes, args, machine)
            summary["seconds"] = round(time.monotonic() - started)
            if args.profile:
                summarize_profile(workdir / "ours-1p-worker.raw", "ours, worker process")
                summarize_profile(workdir / "ours-1p-client.raw", "ours, client process")
            if args.json:
                args.json.write_text(json.dumps(summary, indent=2))
            console.print(f"[dim]total {summary['seconds']} s[/]")
    finally:
        stop_all()
        if args.keep_logs or args.profile:
            console.print(f"[dim]logs kept in {workdir}[/]")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _rate(text: str) -> float | str:
    if text == "half":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of tasks/s or 'half', got {text!r}") from None


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())

"""SQLite broker benchmark: ours (`sqlite://`) against Huey's SQLite storage, in one run.

Both run the same job on a fresh SQLite file per run, on this machine's disk, with one
worker process of 8 slots:

- ours: `queueing worker ours_tasks:job --broker sqlite:///FILE --concurrency 8` (the
  `queueing` command line), `synchronous=full` unless `--synchronous normal`;
- Huey: `huey_consumer huey_tasks.huey -w 8 -k thread -d 0.001 -m 0.01` (`SqliteHuey`,
  8 worker threads in one process; its defaults otherwise: WAL, SQLite's default
  `synchronous`, FULL). The consumer's polling is the fastest it offers: 1 ms after work,
  backing off to 10 ms when idle (its defaults are 100 ms to 10 s).

The task is `job(x) -> x`, with its result stored. A client process (`bench/sqlite/
drive.py`, in the framework's own environment) does an untimed warm-up of 500 tasks,
then enqueues N tasks as fast as the framework allows (ours: 64 concurrent `submit`s;
Huey: 8 threads calling `job(i)`) and waits for every result (ours: awaits every receipt;
Huey: `result.get(blocking=True)`, polling capped at 5 ms), and checks that the results
add up. The figure is N / (first enqueue to last result).

Then the enqueue rate with no worker running: ours `submit_many` of N tasks in one call;
Huey, N `job(i)` calls in one thread (it has no bulk enqueue).

Each measurement runs `--repeat` times (3; 1 with `--quick`), in rounds (every framework
once per round, so that a change of the machine's load reaches both alike); the table
shows the best and the median, and the ratios ours / Huey. The machine's load average is
printed before and after: the figures are only comparable within one run.

Huey lives in its own environment, `.bench-venv/huey` (from bench/requirements-huey.txt,
made on first use), never in ours.

    python bench/sqlite_bench.py                  # N=20k, 3 rounds; a few minutes
    python bench/sqlite_bench.py --quick          # N=3k, 1 round
    python bench/sqlite_bench.py --synchronous normal
    nox -s bench_sqlite

Targets (from the SQLite broker issue): ours >= 3x Huey end to end, >= 5,000 tasks/s end
to end, and `submit_many` >= 20,000 tasks/s, judged on the medians; PASS/MISS is printed,
and a miss never fails the run (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import _common
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "bench" / "sqlite"
REQUIREMENTS = ROOT / "bench" / "requirements-huey.txt"
CONCURRENCY = 8
TARGET_RATIO = 3.0
TARGET_E2E = 5_000.0
TARGET_SUBMIT_MANY = 20_000.0
#: Seconds a worker process gets to come up (its first heartbeat in the file).
STARTUP = 60.0

console = Console(width=120)


def huey_python(root: Path, install: bool) -> tuple[str, str]:
    """The python of `.bench-venv/huey` (made and filled on first use), or ("", why)."""
    return _common.peer_env(
        root / "huey",
        REQUIREMENTS,
        install,
        lambda text: console.print(f"[dim]{text}[/]"),
        timeout=600,
    )


class Bench:
    def __init__(self, args: argparse.Namespace, huey: str, workdir: Path) -> None:
        self.args = args
        self.huey = huey
        self.workdir = workdir
        self.runs = 0

    def env(self, framework: str, path: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        # Ours is this checkout's code, not whatever tree an installed copy points to.
        pythonpath = [str(HERE), str(ROOT)] if framework == "ours" else [str(HERE)]
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            PYTHONUNBUFFERED="1",
            BENCH_SQLITE_PATH=str(path),
            BENCH_SQLITE_URL=self.url(path),
            BENCH_DEADLINE=str(self.args.run_timeout),
        )
        return env

    def url(self, path: Path) -> str:
        return f"sqlite:///{path}?synchronous={self.args.synchronous}"

    def python(self, framework: str) -> str:
        return sys.executable if framework == "ours" else self.huey

    def worker(self, framework: str, path: Path, log: Path) -> subprocess.Popen[bytes]:
        if framework == "ours":
            argv = [sys.executable, "-m", "queueing", "worker", "ours_tasks:job"]
            argv += ["--broker", self.url(path), "--concurrency", str(CONCURRENCY)]
        else:
            consumer = str(Path(self.huey).parent / "huey_consumer")
            argv = [self.huey, consumer, "huey_tasks.huey", "-w", str(CONCURRENCY)]
            argv += ["-k", "thread", "-d", "0.001", "-m", "0.01", "-q"]
        with open(log, "ab") as out:
            return subprocess.Popen(
                argv,
                cwd=HERE,
                env=self.env(framework, path),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def drive(self, framework: str, path: Path, mode: str, n: int, log: Path) -> dict[str, Any]:
        argv = [self.python(framework), str(HERE / "drive.py"), framework, mode, str(n)]
        try:
            with open(log, "ab") as err:
                done = subprocess.run(
                    argv,
                    cwd=HERE,
                    env=self.env(framework, path),
                    stdout=subprocess.PIPE,
                    stderr=err,
                    timeout=self.args.run_timeout + 60,
                )
        except subprocess.TimeoutExpired:
            return {"error": f"the client timed out after {self.args.run_timeout:g}s"}
        lines = [ln for ln in done.stdout.decode(errors="replace").splitlines() if ln[:1] == "{"]
        try:
            return dict(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return {"error": f"the client exited with {done.returncode} and no figures"}

    def fresh(self, framework: str) -> tuple[Path, Path]:
        self.runs += 1
        run = self.workdir / f"{framework}-{self.runs}"
        run.mkdir()
        return run / "bench.db", run / "log.txt"

    def throughput(self, framework: str) -> dict[str, Any]:
        path, log = self.fresh(framework)
        worker = self.worker(framework, path, log)
        try:
            if framework == "ours" and not self._ours_up(path, worker):
                return {"error": f"the worker did not start; see {log}"}
            return self.drive(framework, path, "throughput", self.args.tasks, log)
        finally:
            stop(worker)

    def enqueue(self, framework: str) -> dict[str, Any]:
        path, log = self.fresh(framework)
        return self.drive(framework, path, "enqueue", self.args.tasks, log)

    @staticmethod
    def _ours_up(path: Path, worker: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline and worker.poll() is None:
            with suppress(sqlite3.Error), sqlite3.connect(path, timeout=5) as conn:
                if conn.execute("SELECT count(*) FROM processes").fetchone()[0]:
                    return True
            time.sleep(0.1)
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (both stop gracefully on it), then SIGKILL after a while."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(15)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def summary(values: list[float]) -> tuple[float | None, float | None]:
    return (max(values), statistics.median(values)) if values else (None, None)


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N=3000, one round")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--only", default="ours,huey", help="comma-separated: ours,huey")
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the files and logs")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeat = 3000, 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    frameworks = [name for name in ("ours", "huey") if name in args.only.split(",")]
    huey, why = huey_python(ROOT / ".bench-venv", install=not args.no_install)
    if "huey" in frameworks and not huey:
        console.print(f"[yellow]Huey skipped: {why}[/]")
        frameworks.remove("huey")
    workdir = Path(tempfile.mkdtemp(prefix="sqlite-bench-", dir=ROOT / ".bench-venv"))
    bench = Bench(args, huey, workdir)
    load_before = os.getloadavg()
    console.print(
        f"SQLite bench: N={args.tasks:,}, {args.repeat} round(s), {CONCURRENCY} slots, "
        f"ours synchronous={args.synchronous}; {os.cpu_count()} CPU(s), load average "
        f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
    )
    e2e: dict[str, list[float]] = {name: [] for name in frameworks}
    enq: dict[str, list[float]] = {name: [] for name in frameworks}
    errors: list[str] = []
    for round_ in range(1, args.repeat + 1):
        for name in frameworks:
            for kind, measure, into in (
                ("end to end", bench.throughput, e2e),
                ("enqueue", bench.enqueue, enq),
            ):
                result = measure(name)
                if "error" in result:
                    errors.append(f"{name} {kind}, round {round_}: {result['error']}")
                    console.print(f"[red]{errors[-1]}[/]")
                    continue
                into[name].append(result["rate"])
                console.print(f"[dim]round {round_}: {name} {kind} {rate(result['rate'])}[/]")
    load_after = os.getloadavg()
    table = Table(title=f"SQLite brokers, one worker process of {CONCURRENCY} slots")
    for column in ("", "end to end: best", "median", "enqueue: best", "median"):
        table.add_column(column, justify="right" if column else "left")
    labels = {
        "ours": f"ours (sqlite://, synchronous={args.synchronous}; enqueue: submit_many)",
        "huey": "Huey SqliteHuey (enqueue: job() calls)",
    }
    for name in frameworks:
        best, med = summary(e2e[name])
        ebest, emed = summary(enq[name])
        table.add_row(labels[name], rate(best), rate(med), rate(ebest), rate(emed))
    console.print(table)
    ours_best, ours_med = summary(e2e.get("ours", []))
    huey_best, huey_med = summary(e2e.get("huey", []))
    if ours_med and huey_med and ours_best and huey_best:
        console.print(
            f"ours / Huey end to end: {ours_med / huey_med:.1f}x on the medians, "
            f"{ours_best / huey_best:.1f}x on the best runs  "
            f"(target >= {TARGET_RATIO:g}x: {verdict(ours_med / huey_med >= TARGET_RATIO)})"
        )
    if ours_med:
        console.print(
            f"ours end to end median {rate(ours_med)} "
            f"(target >= {TARGET_E2E:,.0f}/s: {verdict(ours_med >= TARGET_E2E)})"
        )
    _, many_med = summary(enq.get("ours", []))
    if many_med:
        console.print(
            f"ours submit_many median {rate(many_med)} "
            f"(target >= {TARGET_SUBMIT_MANY:,.0f}/s: {verdict(many_med >= TARGET_SUBMIT_MANY)})"
        )
    console.print(
        f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    for error in errors:
        console.print(f"[red]error: {error}[/]")
    if args.keep:
        console.print(f"files and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Where a task's submit-to-result latency goes: per-stage timestamps of ours on Redis.

One private redis-server, one worker process (`queueing worker ours_tasks:job
--concurrency 8`, as bench/redis_bench.py runs it), and per rate: a warm-up of
`--warmup` tasks, then `drive.py ours latency RATE SECONDS` (the bench's paced client:
open loop, latency from when each submit was due), both processes tracing
(`BENCH_TRACE`, bench/peers/ours_trace.py). The stage table gives p50 and p99 of each
step, and the mean of each step over the slowest 1% of tasks (where their time went);
then each process's GC pauses, trio scheduler batches, claims, notice reads and writes.

    python bench/latency_trace.py                        # 1,000, 2,000, 3,000 tasks/s, 5 s
    python bench/latency_trace.py --rate 3000 --seconds 5 --no-trace   # plain latency
    python bench/latency_trace.py --rate 3000 --pairs 3 --compare /work/main  # A B A B
    python bench/latency_trace.py --rate 1500 --pairs 2 --gc-freeze compare   # client GC

Tracing costs some CPU per task in both processes (a few dict writes per stage): compare
figures with `--no-trace` when the load matters. `--compare TREE` alternates runs of this
checkout and of TREE (another checkout's `queueing` package) without tracing, for paired
latency figures (A B A B ...). `--gc-freeze compare` alternates runs whose client does
not and does `gc.collect(); gc.freeze()` after its warm-up (BENCH_GC_FREEZE), traced
(their GC pauses are the point).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis_bench import PEERS, ROOT, private_redis, redis_call, spawn, stop

#: (name, from, to) of each step in the table, in a task's order.
STEPS = (
    ("schedule lag (due -> call)", "due", "call"),
    ("submit queued (call -> sent)", "call", "sent"),
    ("submit round trip (sent -> accepted)", "sent", "accepted"),
    ("caller resumes (accepted -> submitted)", "accepted", "submitted"),
    ("waits for a claim (accepted -> claimed)", "accepted", "claimed"),
    ("buffer to handler (claimed -> started)", "claimed", "started"),
    ("handler (started -> ended)", "started", "ended"),
    ("outcome recorded (ended -> queued)", "ended", "queued"),
    ("write waits (queued -> taken)", "queued", "taken"),
    ("write round trip (taken -> written)", "taken", "written"),
    ("notice read (written -> notice)", "written", "notice"),
    ("receipt gets it (notice -> delivered)", "notice", "delivered"),
    ("caller resumes (delivered -> resolved)", "delivered", "resolved"),
    ("total (due -> resolved)", "due", "resolved"),
)


#: Tasks at once in the worker process (`--concurrency`; the bench's is 8).
CONCURRENCY = 8


def pct(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def env_for(tree: Path, url: str, trace: str, *, freeze: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.update(
        BENCH_REDIS_URL=url,
        BENCH_CONCURRENCY=str(CONCURRENCY),
        BENCH_DEADLINE="120",
        BENCH_BODY="noop",
        PYTHONPATH=os.pathsep.join([str(PEERS), str(tree)]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("BENCH_TRACE", None)
    env["BENCH_GC_FREEZE"] = "1" if freeze else ""
    if trace:
        env["BENCH_TRACE"] = trace
    return env


def drive(env: dict[str, str], log: Path, *args: str, timeout: float) -> dict[str, Any]:
    with open(log, "ab") as err:
        done = subprocess.run(
            [sys.executable, str(PEERS / "drive.py"), "ours", *args],
            cwd=PEERS,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=timeout,
            check=False,
        )
    lines = [ln for ln in done.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"drive.py {' '.join(args)}: no figures (see {log})")
    return dict(json.loads(lines[-1]))


def one_run(
    port: int,
    workdir: Path,
    tree: Path,
    rate: float,
    seconds: float,
    warmup: int,
    tag: str,
    *,
    trace: bool,
    freeze: bool = False,
) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{port}/0"
    redis_call(port, "FLUSHALL")
    worker_trace = str(workdir / f"{tag}-worker.json") if trace else ""
    client_trace = str(workdir / f"{tag}-client.json") if trace else ""
    argv = [sys.executable, "-m", "queueing", "worker", "ours_tasks:job", "--broker", url]
    worker = spawn(
        [*argv, "--concurrency", str(CONCURRENCY)],
        workdir / f"{tag}-worker.log",
        env_for(tree, url, worker_trace),
    )
    log = workdir / f"{tag}-client.log"
    try:
        plain = env_for(tree, url, "")
        ready = drive(plain, log, "ready", "1", "60", timeout=90)
        if "error" in ready:
            raise SystemExit(f"worker not ready: {ready['error']}")
        warm = drive(plain, log, "throughput", str(warmup), timeout=180)
        load = os.getloadavg()[0]
        cpu0 = proc_cpu(worker.pid)
        lat = drive(
            env_for(tree, url, client_trace, freeze=freeze),
            log,
            "latency",
            f"{rate:.0f}",
            str(seconds),
            timeout=seconds + 120,
        )
        lat["worker_cpu_us"] = (proc_cpu(worker.pid) - cpu0) / max(1, lat["count"]) * 1e6
    finally:
        stop(worker, grace=10)
    lat.update(rate=rate, warm_rate=warm.get("rate"), load=load, tag=tag)
    if trace:
        lat["worker"] = json.loads(Path(worker_trace).read_text())
        lat["client"] = json.loads(Path(client_trace).read_text())
    return lat


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line(run: dict[str, Any]) -> str:
    return (
        f"p50 {ms(run['p50'])} ms, p99 {ms(run['p99'])} ms, max {ms(run['max'])} ms, "
        f"started {run['started_rate']:,.0f}/s, CPU us/task client "
        f"{run.get('client_cpu_us', 0):.0f} worker {run.get('worker_cpu_us', 0):.0f}, "
        f"load {run['load']:.2f}"
    )


def ms(x: float) -> str:
    return f"{x * 1000:8.2f}"


def report_stages(run: dict[str, Any]) -> None:
    client, worker = run["client"], run["worker"]
    tasks: dict[str, dict[str, float]] = {}
    for task_id, marks in client["stages"].items():
        if "due" in marks:
            tasks[task_id] = {**marks, **worker["stages"].get(task_id, {})}
    totals = sorted(t["resolved"] - t["due"] for t in tasks.values() if "resolved" in t)
    cut = pct(totals, 99)
    tail = [t for t in tasks.values() if t.get("resolved", 0) - t["due"] >= cut]
    print(
        f"\n{run['rate']:,.0f} tasks/s for {len(tasks)} tasks (load {run['load']:.2f}); "
        f"p50 {ms(pct(totals, 50))} ms, p99 {ms(cut)} ms; the slowest 1%: {len(tail)} tasks"
    )
    print(f"  {'step (ms)':44} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'tail mean':>9}")
    for name, a, b in STEPS:
        deltas = sorted(t[b] - t[a] for t in tasks.values() if a in t and b in t)
        tail_d = [t[b] - t[a] for t in tail if a in t and b in t]
        mean_tail = statistics.fmean(tail_d) if tail_d else float("nan")
        print(
            f"  {name:44} {ms(pct(deltas, 50))} {ms(pct(deltas, 90))} {ms(pct(deltas, 99))}"
            f" {ms(deltas[-1] if deltas else float('nan'))} {ms(mean_tail)}"
        )
    ways: dict[str, int] = {}
    for how in worker["via"].values():
        ways[how] = ways.get(how, 0) + 1
    print(f"  outcome writes taken by: {ways}")
    print(
        "  outcomes handed to receipts by (deliver_watched: the notices' reader; run: the "
        f"receipts' loop): {client.get('delivered_by', {})}"
    )
    for side in ("client", "worker"):
        data = run[side]
        gcs = data["gcs"]
        pauses = sorted(d for _, d, _ in gcs)
        print(
            f"  {side}: GC {len(gcs)} collections, total {ms(sum(pauses))} ms, "
            f"max {ms(pauses[-1] if pauses else 0)} ms, gen2 {sum(1 for *_, g in gcs if g == 2)}"
        )
        first = min(t["due"] for t in tasks.values())
        last = max(t.get("resolved", t["due"]) for t in tasks.values())
        during = [(d, g) for s, d, g in gcs if first <= s <= last]
        by_gen = [
            f"gen{g} {sum(1 for _, x in during if x == g)}/"
            f"{ms(sum(d for d, x in during if x == g)).strip()} ms"
            for g in (0, 1, 2)
        ]
        print(f"  {side}: GC during the run (count/total): {', '.join(by_gen)}")
        long_gcs = [f"{s - first:+.2f}s:{ms(d).strip()}" for s, d, _ in gcs if d > 0.005]
        if long_gcs:
            print(f"  {side}: GC pauses over 5 ms (time from the first due): {long_gcs[:12]}")
        batches = data["batches"]
        long_b = [f"{s - first:+.2f}s:{ms(d).strip()}/{n}" for s, d, n in batches if d > 0.02]
        if long_b:
            print(f"  {side}: scheduler batches over 20 ms (ms/steps): {long_b[:12]}")
        steps = sorted(s for *_, s in batches)
        spans = sorted(d for _, d, _ in batches)
        if batches:
            print(
                f"  {side}: {len(batches)} scheduler batches: steps p50 {pct(steps, 50):.0f} "
                f"p99 {pct(steps, 99):.0f} max {steps[-1]}; duration p50 {ms(pct(spans, 50))} "
                f"p99 {ms(pct(spans, 99))} max {ms(spans[-1])} ms"
            )
    for side in ("client", "worker"):
        kinds = sorted(run[side].get("steps", {}).items(), key=lambda kv: -kv[1])
        if kinds:
            total = sum(n for _, n in kinds) / len(tasks)
            print(f"  {side}: task steps per task {total:.2f}; by where the task waited:")
            for name, n in kinds[:12]:
                print(f"    {n / len(tasks):5.2f}  {name}")
    claims = run["worker"]["claims"]
    if claims:
        got = sorted(c[3] for c in claims)
        took = sorted(c[1] for c in claims)
        asked = sorted(c[2] for c in claims)
        empty = sum(1 for c in claims if c[3] == 0)
        print(
            f"  worker: {len(claims)} claims: asked p50 {pct(asked, 50)} got p50 {pct(got, 50)} "
            f"mean {statistics.fmean(got):.2f} max {got[-1]}; empty {empty}; round trip p50 "
            f"{ms(pct(took, 50))} p99 {ms(pct(took, 99))} ms"
        )
    flushes = run["worker"]["flushes"]
    if flushes:
        print(
            f"  worker: {len(flushes)} flush-loop writes, mean "
            f"{statistics.fmean(n for _, n in flushes):.2f} outcomes"
        )
    reads = run["client"]["reads"]
    if reads:
        print(
            f"  client: {len(reads)} notice reads, mean "
            f"{statistics.fmean(n for *_, n in reads):.2f} notices"
        )
    sends = run["client"]["sends"]
    if sends:
        print(
            f"  client: {len(sends)} submit round trips, mean "
            f"{statistics.fmean(n for _, n, _ in sends):.2f} tasks"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, action="append", help="tasks/s (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=5000, help="tasks run before each rate")
    parser.add_argument("--no-trace", action="store_true", help="latency figures only")
    parser.add_argument("--compare", type=Path, help="another checkout: paired runs A B A B")
    parser.add_argument("--pairs", type=int, default=1, help="paired runs: pairs per rate")
    parser.add_argument(
        "--trace", action="store_true", help="with --compare: trace the paired runs too"
    )
    parser.add_argument("--json", type=Path, help="write the runs' figures here")
    parser.add_argument(
        "--gc-freeze",
        choices=("off", "on", "compare"),
        default="off",
        help="the client freezes its start-up objects (BENCH_GC_FREEZE); compare: "
        "alternate off and on (with --pairs)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="tasks at once in the worker process (the bench's 8; more: a diagnostic of the "
        "claim loop, whose claims ask for the idle workers only)",
    )
    args = parser.parse_args()
    global CONCURRENCY
    CONCURRENCY = args.concurrency
    rates = args.rate or [1000.0, 2000.0, 3000.0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="latency-trace-") as tmp:
        workdir = Path(tmp)
        with private_redis(workdir) as port:
            # (label, tree, the client freezes): one run each per rate and pair
            variants = [("", ROOT, args.gc_freeze == "on")]
            if args.compare:
                variants = [("A (this)", ROOT, False), ("B", args.compare.resolve(), False)]
            elif args.gc_freeze == "compare":
                variants = [("no freeze", ROOT, False), ("freeze", ROOT, True)]
            paired = len(variants) > 1
            trace = not args.no_trace and not (args.compare and not args.trace)
            for rate in rates:
                for pair in range(args.pairs if paired else 1):
                    for index, (label, tree, freeze) in enumerate(variants):
                        run = one_run(
                            port,
                            workdir,
                            tree,
                            rate,
                            args.seconds,
                            args.warmup,
                            f"v{index}p{pair}-{rate:.0f}",
                            trace=trace,
                            freeze=freeze,
                        )
                        run["tree"] = label
                        runs.append(run)
                        print(f"{label:9} {rate:6,.0f}/s: {line(run)}", flush=True)
                        if trace:
                            report_stages(run)
    if args.json:
        args.json.write_text(json.dumps(runs))


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"({time.monotonic() - t0:.0f} s)")

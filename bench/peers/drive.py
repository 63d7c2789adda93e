"""The client side of bench/redis_bench.py, run in each framework's own environment.

    python drive.py FRAMEWORK ready PROCS TIMEOUT     # until PROCS worker processes are up
    python drive.py FRAMEWORK throughput N            # enqueue N tasks, wait for all
    python drive.py FRAMEWORK latency RATE SECONDS    # paced submit -> result latencies
    python drive.py ours enqueue N                    # one submit_many of N, no worker
    python drive.py ours first SECONDS                # submit until the first result

FRAMEWORK names a module `FRAMEWORK_tasks` next to this file, or is a worker set-up of
one (`MODULES`): such a set-up is driven by the very same client code as its module's own,
so only the workers differ. The last line of stdout is one JSON object with the figures
(or {"error": ...}); the bench reads only that line.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: Worker set-ups that share another framework's task module (and so its client).
MODULES = {"dramatiq-gevent": "dramatiq_tasks"}


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def main(argv: list[str]) -> dict:
    framework, mode, *args = argv
    module = importlib.import_module(MODULES.get(framework, f"{framework}_tasks"))
    if mode == "ready":
        procs, timeout = int(args[0]), float(args[1])
        deadline = time.monotonic() + timeout
        while True:
            try:
                if module.run_ready(procs):
                    return {"ready": True}
                last = "not all worker processes have started"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                return {"error": f"workers not ready after {timeout:g}s ({last})"}
            time.sleep(0.2)
    if mode == "throughput":
        result = module.run_throughput(int(args[0]))
        result["rate"] = result["n"] / result["total_s"]
        return result
    if mode == "enqueue":
        return module.run_enqueue(int(args[0]))
    if mode == "first":
        return module.run_first(float(args[0]))
    if mode == "latency":
        rate, seconds = float(args[0]), float(args[1])
        result = module.run_latency(rate, seconds)
        ordered = sorted(result.pop("latencies"))
        result.update(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p99=percentile(ordered, 99),
            max=ordered[-1] if ordered else float("nan"),
        )
        return result
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    try:
        out = main(sys.argv[1:])
    except BaseException as exc:  # reported to the bench, which prints it
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)
    sys.stderr.flush()
    # No interpreter teardown: some clients (celery's result consumers) spew errors or
    # hang while being garbage-collected at exit; the figures are out already.
    os._exit(0)

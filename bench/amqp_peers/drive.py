"""The client side of bench/amqp_bench.py, run in each framework's own environment.

    python drive.py FRAMEWORK ready PROCS TIMEOUT     # until PROCS worker processes are up
    python drive.py FRAMEWORK throughput N            # enqueue N tasks, wait for all

The last line of stdout is one JSON object with the figures (or {"error": ...}).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str]) -> dict:
    framework, mode, *args = argv
    module = importlib.import_module(f"{framework}_tasks")
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
        cpu = time.process_time()
        result = module.run_throughput(int(args[0]))
        result["cpu_s"] = time.process_time() - cpu  # this client's CPU, all its threads
        result["rate"] = result["n"] / result["total_s"]
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
    # No interpreter teardown: some clients' background threads hang at exit.
    os._exit(0)

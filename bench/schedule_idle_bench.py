"""What schedules cost an idle worker process: CPU seconds per minute of three `queueing
worker` processes side by side (no schedule; 10 cron schedules none of which is due; 10
every minute), read from /proc (utime + stime) over a window after their start-up.

    python bench/schedule_idle_bench.py redis://127.0.0.1:6379/0 [SECONDS]

Linux only (/proc). Each process gets a key prefix of its own on the broker given (use a
private server). The figures in docs/concepts/scheduling.md come from this.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from queueing import Queue, Schedule, Worker


class Job(Worker):
    async def handle(self, payload: str) -> str:
        return payload


jobs = Queue("jobs", Job)
none = [jobs]
daily = [jobs, *(Schedule(f"d{i}", queue="jobs", cron=f"{i} 3 * * *") for i in range(10))]
minutely = [jobs, *(Schedule(f"m{i}", queue="jobs", cron="* * * * *") for i in range(10))]

START_UP = 8.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    url = sys.argv[1]
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    joiner = "&" if "?" in url else "?"
    command = [sys.executable, "-m", "queueing", "worker"]
    procs = {
        name: subprocess.Popen(
            [*command, f"schedule_idle_bench:{name}", "--broker", f"{url}{joiner}prefix={name}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("none", "daily", "minutely")
    }
    try:
        time.sleep(START_UP)
        before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        began = time.time()
        time.sleep(window)
        took = time.time() - began
        for name, p in procs.items():
            used = cpu_seconds(p.pid) - before[name]
            print(f"{name}: {used:.3f} CPU s in {took:.1f} s = {used / took * 60:.3f} per minute")
    finally:
        for p in procs.values():
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()

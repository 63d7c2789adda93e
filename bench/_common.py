"""Small helpers shared by the benchmarks in bench/ (timing, formatting, machine line).

A benchmark imports it as `import _common` (bench/ is on `sys.path` when a bench runs as
`python bench/NAME_bench.py`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

Timing = tuple[int, float]
"""(operations, seconds) of one run."""


def machine() -> str:
    """One line naming the interpreter, trio and the CPU count."""
    return (
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, {os.cpu_count()} CPU(s), {platform.system()} "
        f"{platform.machine()}"
    )


def callgrind_totals(command: Sequence[str], cache: bool = False) -> dict[str, int]:
    """callgrind's totals of one whole run of `command` (a Python command line, run with a
    fixed hash seed so that two runs execute the same code), by event: `Ir` (instructions),
    and with `cache` (`--cache-sim=yes`) the misses too (`D1mr`, `D1mw`, `DLmr`, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        if cache:
            valgrind.append("--cache-sim=yes")
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run([*valgrind, *command], check=True, env=env, capture_output=True)
        text = out.read_text()
    events = re.search(r"^events: (.*)$", text, re.MULTILINE)
    totals = re.search(r"^(?:summary|totals): (.*)$", text, re.MULTILINE)
    if events is None or totals is None:
        raise RuntimeError("no totals in callgrind's output")
    return dict(zip(events.group(1).split(), map(int, totals.group(1).split()), strict=False))


def redis_server_argv(
    port: int,
    directory: str | Path | None = None,
    *,
    callgrind: str | Path | None = None,
    instr_atstart: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of a private `redis-server` on `port` that keeps nothing on disk
    (`--save "" --appendonly no`), its working directory `directory` (if given), `extra`
    options after those; with `callgrind`, run under `valgrind --tool=callgrind` writing
    its counts to that file (`instr_atstart=False`: counting off until
    `callgrind_control -i=on`)."""
    argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    if directory is not None:
        argv += ["--dir", str(directory)]
    argv += extra
    if callgrind is None:
        return argv
    valgrind = ["valgrind", "--tool=callgrind"]
    if not instr_atstart:
        valgrind.append("--instr-atstart=no")
    return [*valgrind, f"--callgrind-out-file={callgrind}", *argv]


def start_redis_server(
    port: int,
    directory: str | Path | None = None,
    *,
    callgrind: str | Path | None = None,
    instr_atstart: bool = True,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start `redis_server_argv(...)`, its output discarded (the caller waits for it to
    answer, and stops it)."""
    argv = redis_server_argv(
        port, directory, callgrind=callgrind, instr_atstart=instr_atstart, extra=extra
    )
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rate_of(timing: Timing) -> float:
    count, seconds = timing
    return count / seconds if seconds > 0 else float("inf")


def best(runs: Sequence[Timing]) -> float:
    """Operations per second of the fastest run (the one least disturbed by the machine)."""
    return max(rate_of(run) for run in runs)


def median(runs: Sequence[Timing]) -> float:
    return statistics.median(rate_of(run) for run in runs)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The `p`-th percentile (nearest rank) of an already sorted sequence."""
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def verdict(ok: bool) -> str:
    """PASS/MISS with rich markup."""
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def peer_env(
    target: Path,
    requirements: Path,
    install: bool,
    say: Callable[[str], None],
    timeout: float = 900,
) -> tuple[str, str]:
    """The python of a peers' environment at `target`, made and filled from `requirements`
    on first use (and again when they change: a stamp keeps their hash), or ("", why)."""
    python = target / "bin" / "python"
    stamp = target / ".requirements.sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return str(python), ""
    if not install:
        return "", f"environment {target} missing or outdated (--no-install)"
    say(f"installing {requirements.name} into {target} ...")
    try:
        if not python.exists():
            # The base interpreter, not this (maybe virtual) environment's.
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run(
                [base, "-m", "venv", str(target)], check=True, timeout=120, capture_output=True
            )
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return "", f"could not make {target}: {exc}"
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if "WARNING: Location" not in ln]
        return "", "pip install failed: " + " | ".join(lines[-3:])
    stamp.write_text(wanted)
    return str(python), ""

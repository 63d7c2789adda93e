"""The actor examples run as a newcomer runs them, and print what their docstrings promise."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str) -> tuple[str, float]:
    """Run examples/NAME in its own interpreter from the repo root; return stdout and seconds."""
    start = time.monotonic()
    proc = subprocess.run(
        # Deprecated calls made by the example itself fail it (not those inside libraries).
        [sys.executable, "-W", "error::DeprecationWarning:__main__", f"examples/{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, (
        f"examples/{name} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout, elapsed


def test_supervision_example_restarts_the_flaky_sensor_and_reports_the_lab_giving_up() -> None:
    output, elapsed = run_example("supervision.py")

    # Part 1: 10 readings, every 4th crashes the sensor, which is restarted each time.
    assert output.count("reading failed: lost the connection") == 2
    assert "[sensor] started again (restart #1)" in output
    assert "[sensor] started again (restart #2)" in output
    assert len(re.findall(r"^  reading: \d+\.\d C$", output, re.MULTILINE)) == 8
    assert re.search(r"^readings recorded: 8$", output, re.MULTILINE)
    assert re.search(r"^sensor restarts:\s+2$", output, re.MULTILINE)
    assert re.search(r"^recorder restarts: 0 ", output, re.MULTILINE)

    # Part 2: the probe starts 3 times (max_restarts=2), then the lab gives up with the cause.
    assert output.count("[probe] cannot start") == 3
    assert "lab gave up: 'probe' failed more than 2 times in 5s" in output
    assert "cause: OSError('device not found')" in output
    assert output.rstrip().endswith("done: the system shuts down, and every actor with it")

    assert elapsed < 60  # it finishes on its own (in about a second), not at a timeout

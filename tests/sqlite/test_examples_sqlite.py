"""The examples run unchanged on a SQLite file: only QUEUEING_BROKER differs (the
tutorial's one-line switch to a durable file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlite_helpers import query

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, broker: str, out: Path | None = None) -> str:
    env = {**os.environ, "QUEUEING_BROKER": broker}
    if out is not None:
        env["QUICKSTART_OUT"] = str(out)
    proc = subprocess.run(
        [sys.executable, f"examples/{name}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{name} over {broker} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in the output:\n{text}"
    return int(found.group(1))


def test_the_quickstart_runs_unchanged_on_a_file(tmp_path: Path) -> None:
    db = tmp_path / "queues.db"
    out = run_example("quickstart.py", f"sqlite:///{db}", tmp_path / "quickstart")
    submitted = _count(r"Pages submitted:\s+(\d+)", out)
    assert submitted == _count(r"Pipeline succeeded:\s+(\d+)", out) > 0
    assert submitted == _count(r"Rows in SQLite:\s+(\d+)", out)
    # Every run's outcome is in the file, for whoever looks it up by id later.
    runs = query(db, "SELECT state, count(*) FROM tasks WHERE queue = 'thumbnails' GROUP BY state")
    assert runs == [("succeeded", submitted)]


def test_the_flaky_service_example_runs_unchanged_on_a_file(tmp_path: Path) -> None:
    out = run_example("flaky_service.py", f"sqlite:///{tmp_path}/queues.db")
    assert "0 dead letters left" in out
    assert re.search(r"requeued: (\d+), succeeded: \1", out)

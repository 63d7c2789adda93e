"""The examples run unchanged on a SQLite file: only QUEUEING_BROKER differs (the
tutorial's one-line switch to a durable file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.slow  # 2,050 + 2,050 jobs through one file: about 30 s on a loaded machine
def test_the_fair_share_example_runs_on_a_file(tmp_path: Path) -> None:
    db = tmp_path / "thumbs.db"
    proc = subprocess.run(
        [sys.executable, "examples/fair_share.py", f"sqlite:///{db}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"fair_share.py failed:\n{out}\n{proc.stderr}"
    assert "megacorp's upload #2001: refused: tenant 'megacorp'" in out
    done = {
        kind: int(found.group(1))
        for kind in ("With tenants", "Without tenants")
        if (found := re.search(rf"^{kind}: +every shop's .* by job #(\d+) of 2050$", out, re.M))
    }
    assert set(done) == {"With tenants", "Without tenants"}, out
    # As in process: the shops' 50 jobs within about 60; without tenants, behind the 2,000.
    assert done["With tenants"] <= 70
    assert done["Without tenants"] >= 2046
    assert query(db, "SELECT fair FROM queues WHERE name = 'thumbs'") == [(1,)]
    assert query(db, "SELECT fair FROM queues WHERE name = 'thumbs_fifo'") == [(0,)]

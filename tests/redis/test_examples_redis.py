"""The examples run unchanged over Redis: only QUEUEING_BROKER differs."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, broker: str, out: Path | None = None, variable: str = "") -> str:
    env = {**os.environ, "QUEUEING_BROKER": broker}
    if out is not None:
        env[variable or "QUICKSTART_OUT"] = str(out)
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


def test_the_quickstart_runs_unchanged_over_redis(redis_url: str, tmp_path: Path) -> None:
    out = run_example("quickstart.py", redis_url, tmp_path / "quickstart")
    submitted = int(re.search(r"Pages submitted:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    succeeded = int(re.search(r"Pipeline succeeded:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    rows = int(re.search(r"Rows in SQLite:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert submitted == succeeded == rows > 0


def test_the_flaky_service_example_runs_unchanged_over_redis(redis_url: str) -> None:
    out = run_example("flaky_service.py", redis_url)
    assert "0 dead letters left" in out
    assert re.search(r"requeued: (\d+), succeeded: \1", out)


def test_the_crawler_runs_unchanged_over_redis(redis_url: str, tmp_path: Path) -> None:
    out = run_example("crawler.py", redis_url, tmp_path, "CRAWLER_OUT")
    assert f"(broker {redis_url.split('@')[-1]})" in out
    pages = int(re.search(r"Pages submitted:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    stored = int(re.search(r"Pages stored:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    retries = int(re.search(r"Fetch retries:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert pages == stored > 0
    assert retries > 0
    with sqlite3.connect(tmp_path / "pages.sqlite3") as db:
        (rows,) = db.execute("SELECT count(DISTINCT url) FROM pages").fetchone()
    db.close()
    assert rows == pages

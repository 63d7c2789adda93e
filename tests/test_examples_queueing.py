"""The queueing examples run as a newcomer runs them, and report numbers that add up."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str) -> str:
    """Run examples/NAME in its own interpreter from the repo root; return its stdout."""
    proc = subprocess.run(
        # Deprecated calls made by the example itself fail it (not those inside libraries).
        [sys.executable, "-W", "error::DeprecationWarning:__main__", f"examples/{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (
        f"examples/{name} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def number(output: str, label: str) -> int:
    match = re.search(rf"^{re.escape(label)}:\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return int(match.group(1))


def test_quickstart_thumbnails_every_page_and_retries_the_injected_faults() -> None:
    out = run_example("quickstart.py")

    pages = number(out, "Pages submitted")
    assert pages > 0
    assert number(out, "Pipeline succeeded") == pages
    assert number(out, "Pipeline failed") == 0
    assert number(out, "Rows in SQLite") == pages
    faults = number(out, "Faults injected")
    assert faults > 0
    assert number(out, "Retries") == faults
    assert "Accepted at once; first receipt id:" in out

    # The stats table: every stage saw every page, and only the thumbnail stage retried.
    for stage, retried in (("render", 0), ("thumbnail", faults), ("record", 0)):
        row = re.search(rf"^\W*{stage}\W+(\d+)\W+(\d+)\W+(\d+)\W+(\d+)\W+(\d+)", out, re.M)
        assert row, f"no stats row for {stage!r} in:\n{out}"
        _workers, submitted, succeeded, stage_retried, failed = map(int, row.groups())
        assert (submitted, succeeded, stage_retried, failed) == (pages, pages, retried, 0)

    database = ROOT / "examples" / "out" / "quickstart" / "thumbnails.sqlite3"
    with sqlite3.connect(database) as db:
        query = "SELECT count(DISTINCT document || '/' || page) FROM thumbnails"
        (rows,) = db.execute(query).fetchone()
    db.close()
    assert rows == pages
    assert len(list((ROOT / "examples" / "out" / "quickstart" / "thumbs").iterdir())) == pages


def test_flaky_service_dead_letters_then_requeues_after_the_fix() -> None:
    out = run_example("flaky_service.py")

    first = re.search(r"succeeded: (\d+), dead-lettered: (\d+), failed: (\d+)", out)
    assert first, out
    succeeded, dead, failed = map(int, first.groups())
    submission = re.search(r"Submitting (\d+) charges", out)
    assert submission, out
    submitted = int(submission.group(1))
    assert succeeded + dead + failed == submitted
    assert dead > 0
    assert failed == 1

    # Retries ran out for the dead-lettered ones, with their cause; the bad order was not
    # retried at all.
    assert out.count("dead-lettered after 4 attempt(s)  ConnectionError") == dead
    assert out.count("failed        after 1 attempt(s)  ValueError") == 1

    assert f"requeued: {dead}, succeeded: {dead}" in out
    assert "Purged 1 dead letter" in out
    totals = re.search(
        r"totals: submitted (\d+), succeeded (\d+), failed (\d+), dead-lettered (\d+)", out
    )
    assert totals, out
    t_submitted, t_succeeded, t_failed, t_dead = map(int, totals.groups())
    assert t_submitted == submitted + dead
    assert t_submitted == t_succeeded + t_failed + t_dead
    assert "0 dead letters left" in out

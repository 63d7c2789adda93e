"""The actor examples run as a newcomer runs them, and print what their docstrings promise."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def run_example_with_logs(name: str) -> tuple[str, str]:
    """Run examples/NAME; return stdout and stderr (where its actor logs go)."""
    proc = subprocess.run(
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
    assert "Traceback" not in proc.stderr  # crashes are logged on one line each, on purpose
    return proc.stdout, proc.stderr


def test_bank_example_restores_an_account_and_finishes_a_crashed_saga_exactly_once() -> None:
    output, logs = run_example_with_logs("bank.py")

    # Part 1: the crashed account comes back with its committed balance.
    assert "  alice deposits 25 -> balance 125" in output
    assert "  [alice] restarted (restart #1): balance 125 restored from SQLite" in output
    assert "  alice's balance after the crash: 125" in output
    assert "actor root/bank/accounts/alice crashed handling a Crash message" in logs

    # Part 2: a refusal is an answer, not a crash; the crashed saga is resumed and finished.
    assert "  transfer #1 alice -> bob 30: done" in output
    assert "  transfer #2 bob -> carol 500: refused (bob has 80, needs 500)" in output
    assert "  [transfers] restarted: resuming transfer #3 (debited)" in output
    assert "  transfer #3 finished: done" in output
    assert "final balances: alice 55, bob 80, carol 40 (total 175, deposited 175)" in output
    # The resumed saga sent its credit twice; the ledger applied every step once.
    assert re.search(r"^applied steps: .* \(5, each once\)$", output, re.MULTILINE)
    assert logs.count("actors.crashes") == 2  # alice, then the coordinator: nothing else


def test_crawler_example_backs_off_escalates_and_finally_gives_up() -> None:
    output, logs = run_example_with_logs("crawler_pool.py")

    # Part 1: every page of the site, despite the flaky page and the host that is down.
    assert "  fetched 14 pages of example.org" in output
    assert "  gave up on 2: https://down.example/a, https://down.example/b" in output
    escalations = re.search(r"escalations\): (\d+)$", output, re.MULTILINE)
    assert escalations is not None
    assert int(escalations.group(1)) >= 1  # the pool gave up at least once, and came back
    assert "  crawler still up: True" in output
    assert "restarts 'fetchers-" in logs
    assert "at once (restart 1 in a row)" in logs  # a first crash waits for nothing

    # Part 2: the failure climbs the tree, and the chain of causes says from where.
    assert re.search(
        r"^  crawler gave up: 'fetchers' failed too often\n"
        r"    fetchers gave up: 'fetchers-\d' failed too often\n"
        r"      ConnectionError: example.org does not answer$",
        output,
        re.MULTILINE,
    )
    assert "(restart 2 in a row)" in logs  # the crawler backs off the pool's restarts
    assert output.rstrip().endswith("done")


# -- the code in the actors docs -------------------------------------------------------------

ACTOR_DOC_PAGES = [
    "docs/concepts/actors.md",
    "docs/concepts/supervision.md",
    "docs/concepts/patterns.md",
]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", ACTOR_DOC_PAGES)
def test_the_code_of_an_actors_docs_page_runs_top_to_bottom(page: str, tmp_path: Path) -> None:
    """A page's blocks build on each other (classes defined once, used below): run them all,
    in order, as one program; each `run_system(main)` in them runs."""
    blocks = FENCE.findall((ROOT / page).read_text())
    assert len(blocks) >= 5
    program = tmp_path / "page.py"
    program.write_text("\n\n".join(blocks))
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:__main__", str(program)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{page}:\n{proc.stdout}\n{proc.stderr}"

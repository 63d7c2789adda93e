"""The queueing examples run as a newcomer runs them, and report numbers that add up."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run examples/NAME in its own interpreter from the repo root (or `cwd`); return its
    stdout."""
    proc = subprocess.run(
        # Deprecated calls made by the example itself fail it (not those inside libraries).
        [sys.executable, "-W", "error::DeprecationWarning:__main__", str(ROOT / "examples" / name)],
        cwd=cwd,
        env=env,
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


def test_quickstart_run_from_elsewhere_prints_where_its_thumbnails_are(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "QUICKSTART_OUT"}
    out = run_example("quickstart.py", environ, cwd=tmp_path)
    match = re.search(r"^Thumbnails are in (\S+)/;", out, re.MULTILINE)
    assert match, out
    assert (tmp_path / match.group(1)).is_dir()  # an absolute path, or one from the cwd


def test_quickstart_thumbnails_every_page_and_retries_the_injected_faults(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "quickstart"
    out = run_example("quickstart.py", {**os.environ, "QUICKSTART_OUT": str(folder)})

    pages = number(out, "Pages submitted")
    assert pages > 0
    assert number(out, "Pipeline succeeded") == pages
    assert number(out, "Pipeline failed") == 0
    assert number(out, "Rows in SQLite") == pages
    faults = number(out, "Faults injected")
    assert faults > 0
    assert number(out, "Retries") == faults
    assert "Accepted at once; first receipt id:" in out
    # The bar followed the handlers' progress reports, not only the outcomes.
    assert number(out, "Progress updates") >= pages

    # The stats table: every stage saw every page, and only the thumbnail stage retried.
    for stage, retried in (("render", 0), ("thumbnail", faults), ("record", 0)):
        row = re.search(rf"^\W*{stage}\W+(\d+)\W+(\d+)\W+(\d+)\W+(\d+)\W+(\d+)", out, re.M)
        assert row, f"no stats row for {stage!r} in:\n{out}"
        _workers, submitted, succeeded, stage_retried, failed = map(int, row.groups())
        assert (submitted, succeeded, stage_retried, failed) == (pages, pages, retried, 0)

    database = folder / "thumbnails.sqlite3"
    with sqlite3.connect(database) as db:
        query = "SELECT count(DISTINCT document || '/' || page) FROM thumbnails"
        (rows,) = db.execute(query).fetchone()
    db.close()
    assert rows == pages
    assert len(list((folder / "thumbs").iterdir())) == pages


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


def check_crawl(out: str, database: Path) -> None:
    """What examples/crawler.py reports adds up, and its SQLite table holds every page."""
    pages = number(out, "Pages submitted")
    assert pages > 0
    assert number(out, "Pages stored") == pages
    assert number(out, "Failed") == 0
    assert number(out, "Rows in SQLite") == pages
    assert number(out, "Fetch retries") > 0  # the outage was ridden out, not missed
    assert re.search(r"The site went down at [\d.]+ s and was back at [\d.]+ s", out), out
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT url, title, links FROM pages ORDER BY url").fetchall()
    db.close()
    assert len(rows) == pages
    assert {title for _, title, _ in rows} == {f"Page {n}" for n in range(pages)}
    assert all(links == 3 for _, _, links in rows)


def test_crawler_rides_out_the_outage_and_stores_every_page(tmp_path: Path) -> None:
    env = {**os.environ, "CRAWLER_OUT": str(tmp_path)}
    env.pop("QUEUEING_BROKER", None)  # in memory: the default
    out = run_example("crawler.py", env)
    assert "(broker memory://)" in out
    check_crawl(out, tmp_path / "pages.sqlite3")


def test_observability_shows_progress_metrics_traces_logs_and_the_dashboard() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:__main__", "examples/observability.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert re.search(r"^Metrics:  http://127\.0\.0\.1:\d+/metrics$", out, re.MULTILINE)
    assert re.search(r"^Dashboard: http://127\.0\.0\.1:\d+/", out, re.MULTILINE)
    watched = re.findall(r"^Watching: \S+ running\s+(\d+)/10 ", out, re.MULTILINE)
    assert len(watched) >= 2, out  # progress seen on the way, not only at the end
    assert re.search(r"^Watching: \S+ succeeded 10/10 pass 10$", out, re.MULTILINE)
    assert 'Scraped:  queueing_tasks_total{outcome="succeeded",queue="resize"} 8.0' in out
    assert "Trace:    send resize (producer)\nTrace:      process resize (consumer)" in out
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["logger"] == "resizer"]
    assert len(mine) == 8
    assert all(line["queue"] == "resize" and line["attempt"] == 1 for line in mine)
    assert len({line["task_id"] for line in mine}) == 8


def test_the_example_tests_of_the_crawlers_queues_pass() -> None:
    # As a user runs them; the plugin comes with the installed package (its entry point),
    # named here only for an install made before the entry point existed.
    plugins = {entry.name for entry in importlib.metadata.entry_points(group="pytest11")}
    extra = [] if "queueing" in plugins else ["-p", "queueing.testing"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "examples/test_crawler.py",
            "-p",
            "no:cacheprovider",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout


def test_the_examples_extra_has_every_plugin_the_pytest_settings_need() -> None:
    # docs/how-to/testing.md: `pip install -e ".[examples]"`, then `pytest
    # examples/test_crawler.py` from the repository, which reads pyproject.toml's pytest
    # settings; with `filterwarnings = error`, an option of a plugin the extra lacks
    # (`timeout`: pytest-timeout) stopped the run before any test ("INTERNALERROR> Unknown
    # config option: timeout"). This venv has every plugin, so the check reads the files.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    settings = project["tool"]["pytest"]["ini_options"]
    extra = {
        re.split(r"[<>=\[ ]", req)[0]
        for req in project["project"]["optional-dependencies"]["examples"]
    }
    needs = {"timeout": "pytest-timeout", "trio_mode": "pytest-trio"}
    assert {needs[option] for option in settings if option in needs} <= extra


# -- the code in the docs this file's examples belong to ------------------------------------

DOC_PAGES = [
    "README.md",
    "docs/index.md",
    "docs/how-to/testing.md",
    "docs/tutorial.md",
    "docs/comparison.md",
    "docs/concepts/queues.md",
    "docs/concepts/receipts.md",
    "docs/concepts/retries.md",
    "docs/concepts/pipelines.md",
    "docs/how-to/dashboards.md",
    "docs/concepts/observability.md",
    "docs/concepts/priorities.md",
    "docs/concepts/fair-share.md",
]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_blocks() -> list[tuple[str, str, str]]:
    """(page:line, fence info, code) of every python block of the pages above."""
    blocks = []
    for page in DOC_PAGES:
        text = (ROOT / page).read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{page}:{line}", match.group(1), match.group(2)))
    return blocks


def excerpt_source(info: str) -> str | None:
    """The file a block quotes, from its `title="examples/..."`, else None."""
    match = re.search(r'title="([^"]+)"', info)
    return match.group(1) if match else None


EXCERPTS = [b for b in doc_blocks() if excerpt_source(b[1])]
PROGRAMS = [b for b in doc_blocks() if not excerpt_source(b[1]) and "\nrun_system(" in b[2]]


def test_the_docs_have_programs_and_excerpts_to_check() -> None:
    assert len(PROGRAMS) >= 8
    assert len(EXCERPTS) >= 6


@pytest.mark.parametrize(("where", "info", "code"), EXCERPTS, ids=[b[0] for b in EXCERPTS])
def test_doc_excerpt_is_verbatim_from_its_example(where: str, info: str, code: str) -> None:
    source = excerpt_source(info)
    assert source is not None
    assert code in (ROOT / source).read_text(), f"{where} no longer matches {source}"


@pytest.mark.parametrize(("where", "info", "code"), PROGRAMS, ids=[b[0] for b in PROGRAMS])
def test_doc_program_runs(where: str, info: str, code: str, tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(code)
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:__main__", str(program)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{where} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"{where}:\n{proc.stderr}"


def test_priorities_start_urgent_then_paying_then_the_routine_backlog() -> None:
    out = run_example("priorities.py")
    assert "An urgent ticket's status: priority 9" in out
    spans = {
        kind: tuple(map(int, found.groups()))
        for kind in ("urgent", "paying")
        if (found := re.search(rf"^{kind}: 20 started, from start #(\d+) to #(\d+)$", out, re.M))
    }
    assert set(spans) == {"urgent", "paying"}, out
    routine = re.search(
        r"^routine: (\d+) started .*; the other (\d+) from start #(\d+) to", out, re.M
    )
    assert routine, out
    early, rest, first_rest = map(int, routine.groups())
    assert early <= 2  # what the two workers took before the urgent tickets came
    assert early + rest == 200
    # Urgent ones back to back, then the paying ones, then the rest of the backlog.
    assert spans["urgent"] == (early + 1, early + 20)
    assert spans["paying"][1] <= early + 40
    assert first_rest > spans["urgent"][1]


def test_fair_share_serves_the_small_customers_within_the_big_ones_burst() -> None:
    out = run_example("fair_share.py")
    assert (
        "megacorp's upload #2001: refused: tenant 'megacorp' of queue 'thumbs' has 2000 "
        "outstanding tasks (Queue(tenant_maxsize=2000))"
    ) in out
    assert "Busiest tenant of 'thumbs': megacorp, 2000 jobs" in out
    done = {
        kind: int(found.group(1))
        for kind in ("With tenants", "Without tenants")
        if (found := re.search(rf"^{kind}: +every shop's .* by job #(\d+) of 2050$", out, re.M))
    }
    assert set(done) == {"With tenants", "Without tenants"}, out
    # Six tenants take turns: the shops' 50 jobs are done within about 60 (4 workers took
    # megacorp's first jobs before the shops came); without tenants, behind all 2,000.
    assert done["With tenants"] <= 70
    assert done["Without tenants"] >= 2046


def test_submit_by_name_checks_payloads_without_the_queue_objects() -> None:
    out = run_example("submit_by_name.py")
    assert "items ordered: 5" in out
    assert (
        "refused: queue 'orders': the payload does not structure as Order: "
        "expected int, got '4' (str) @ $.lines[0].qty; extra fields found (coupon) @ $"
    ) in out
    assert "queueing submit exited 2: Error: Invalid value for PAYLOAD: queue 'orders'" in out
    assert "expected str, got 7 (int) @ $.customer" in out


def test_retry_ahead_starts_the_retry_before_the_backlog_and_the_default_after_it() -> None:
    out = run_example("retry_ahead.py")
    starts = {
        name: int(found.group(1))
        for name in ("behind", "ahead")
        if (found := re.search(rf"^ *{name} .*its retry was start #(\d+) of 101;", out, re.M))
    }
    assert set(starts) == {"behind", "ahead"}, out
    # Two workers: the default's retry waits for the whole backlog; the other starts once
    # its 20 ms backoff is over (a few 5 ms reports later), far ahead of the rest.
    assert starts["behind"] == 101
    assert starts["ahead"] < 50


def test_schedules_tick_show_the_next_night_and_a_key_gives_one_receipt() -> None:
    out = run_example("schedules.py")
    assert re.search(r"^nightly: next run \d{4}-\d\d-\d\d 03:00 CES?T$", out, re.MULTILINE)
    assert number(out, "pulse ticks run in 2.2 s") >= 2  # every 0.5 s, on a loaded machine too
    [first, again] = re.findall(r"receipts (\S+) and (\S+)$", out, re.MULTILINE)[0]
    assert first == again
    assert "invoice-42: invoice-42 sent, 1 time(s) in this run" in out


def test_the_scheduling_page_quotes_its_example_verbatim() -> None:
    # (Its first program runs until a signal, so the page is not among DOC_PAGES.)
    text = (ROOT / "docs/concepts/scheduling.md").read_text()
    quoted = [m.group(2) for m in FENCE.finditer(text) if excerpt_source(m.group(1)) is not None]
    assert quoted
    source = (ROOT / "examples/schedules.py").read_text()
    assert all(code in source for code in quoted)

"""The `queueing` command line on a SQLite file: with no broker given it uses
`queueing.db` in the working directory, and says so on its first line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlite_helpers import env_with, query, stop_processes, wait_until

from queueing.cli import main

DEFAULT_LINE = "queueing: using sqlite:///queueing.db (no --broker given"


def invoke(*args: str, **options: Any) -> Result:
    """The command with no QUEUEING_BROKER set."""
    return CliRunner().invoke(
        main, list(args), env={"QUEUEING_BROKER": None}, catch_exceptions=False, **options
    )


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`queueing worker sq_tasks` (queues `mp` and `picky`) with no --broker, in a
    directory of its own, which is this test's working directory too."""
    monkeypatch.chdir(tmp_path)
    environ = env_with({"QUEUEING_TEST_TASK_SECONDS": "0"})
    environ.pop("QUEUEING_BROKER", None)
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "queueing", "worker", "sq_tasks"],
            cwd=tmp_path,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        db = tmp_path / "queueing.db"
        wait_until(lambda: db.exists() and bool(_served(db)), 30)
        yield log
    finally:
        stop_processes([worker])
    assert worker.returncode == 0, log.read_text()


def _served(db: Path) -> list[Any]:
    try:
        return query(db, "SELECT owner FROM processes")
    except Exception:  # the worker is still making the file
        return []


def test_the_worker_uses_queueing_db_here_and_says_so_first(served: Path) -> None:
    lines = served.read_text().splitlines()
    assert lines[0].startswith(DEFAULT_LINE)
    assert "serving mp (8 workers), picky (1 worker) on sqlite:///queueing.db" in lines[1]


def test_submit_and_wait_on_the_default_file(served: Path) -> None:
    result = invoke("submit", "mp", "21", "--wait")
    assert result.exit_code == 0, result.output
    first, task_id, answer = result.output.splitlines()
    assert first.startswith(DEFAULT_LINE)
    assert task_id.startswith("mp:")
    assert json.loads(answer) == 42


def test_status_json_lists_queues_and_the_worker(served: Path) -> None:
    assert invoke("submit", "mp", "1", "--wait").exit_code == 0
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output.split("\n", 1)[1])
    assert set(info["queues"]) == {"mp", "picky"}
    assert info["queues"]["mp"]["succeeded"] >= 1
    assert info["queues"]["mp"]["outstanding"] == 0
    (process,) = info["workers"].values()
    assert process["workers"] == 8 + 1  # as the Redis broker's heartbeat says it


def test_status_table(served: Path) -> None:
    result = invoke("status")
    assert result.exit_code == 0, result.output
    assert "picky" in result.output
    assert "live workers" in result.output
    (row,) = [line for line in result.output.splitlines() if "mp, picky" in line]
    assert row.split("│")[3].strip() == "9"  # its workers, not "-"


def test_dead_letters_list_requeue_and_purge(served: Path) -> None:
    for word in ("bad", "worse"):
        result = invoke("submit", "picky", json.dumps(word), "--wait")
        assert result.exit_code != 0
        assert "not ok" in result.output
    listed = invoke("dead-letters", "list", "picky", "--json")
    assert listed.exit_code == 0, listed.output
    assert [letter["state"] for letter in json.loads(listed.stdout)] == ["failed"] * 2
    table = invoke("dead-letters", "list", "picky")
    assert table.exit_code == 0, table.output
    assert "dead letters of 'picky': 2, oldest first" in table.output
    requeued = invoke("dead-letters", "requeue", "picky")
    assert requeued.exit_code == 0, requeued.output
    assert len(requeued.output.splitlines()[1:]) == 2  # new ids (they fail again)
    purged = invoke("dead-letters", "purge", "picky", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "purged" in purged.output


def test_a_broker_option_overrides_the_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/other.db"
    result = invoke("status", "--json", "--broker", url)
    assert result.exit_code == 0, result.output
    assert not result.output.startswith("queueing: using")
    assert json.loads(result.output) == {"queues": {}, "workers": {}}
    assert (tmp_path / "other.db").exists()


TICKING = """
from pathlib import Path

from queueing import Queue, Schedule, Worker


class Tick(Worker):
    def handle(self, note: str) -> None:
        with Path("ticks.log").open("a") as log:
            log.write(note + "\\n")


tick = Queue("tick", Tick)
every_fifth = Schedule("every-fifth", queue="tick", every=0.2, payload="tick")
"""


def test_the_worker_fires_the_schedules_its_module_defines(tmp_path: Path) -> None:
    (tmp_path / "ticking.py").write_text(TICKING)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "queueing", "worker", "ticking", "--broker", url],
            cwd=tmp_path,
            env=env_with(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    ticks = tmp_path / "ticks.log"
    try:
        wait_until(lambda: ticks.exists() and len(ticks.read_text().split()) >= 3, 60)
    finally:
        stop_processes([worker])
    assert worker.returncode == 0, log.read_text()
    assert "serving tick (1 worker); schedule every-fifth" in log.read_text()


STAGES = """
from queueing import Pipeline, Queue, Worker


class Double(Worker):
    async def handle(self, n: int) -> int:
        return 2 * n


class Show(Worker):
    async def handle(self, n: int) -> str:
        return f"#{n}"


double = Queue("double", Double)
show = Queue("show", Show)
shown = Pipeline("shown", [double, show])
"""


def test_submit_to_a_pipeline_the_worker_serves_by_name(tmp_path: Path) -> None:
    (tmp_path / "stages.py").write_text(STAGES)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "queueing", "worker", "stages", "--broker", url],
            cwd=tmp_path,
            env=env_with(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    results: list[Result] = []

    def submitted() -> bool:
        # The banner comes before the process has declared its queues and pipelines.
        results.append(invoke("submit", "shown", "21", "--wait", "--broker", url))
        return "no queue or pipeline named" not in results[-1].output

    try:
        wait_until(submitted, 30)
        result = results[-1]
    finally:
        stop_processes([worker])
    assert worker.returncode == 0, log.read_text()
    assert result.exit_code == 0, result.output
    task_id, answer = result.output.splitlines()
    assert task_id.startswith("shown:")
    assert json.loads(answer) == "#42"


def test_submit_checks_the_payload_type_the_worker_published(served: Path) -> None:
    # `mp` takes an int, `picky` a str: a wrong payload is a usage error naming what is
    # wrong, and is not submitted (the worker would dead-letter it).
    for queue, payload, problem in [
        ("mp", '"21"', "expected int, got '21' (str)"),
        ("picky", '{"key": 1}', "expected str, got {'key': 1} (dict)"),
    ]:
        result = invoke("submit", queue, payload)
        assert result.exit_code == 2, result.output
        assert "Invalid value for PAYLOAD" in result.output
        assert f"queue {queue!r}: the payload does not structure as" in result.output
        assert problem in result.output
        assert "Traceback" not in result.output
    info = json.loads(invoke("status", "--json").output.split("\n", 1)[1])
    assert info["queues"]["mp"]["submitted"] == 0
    assert info["queues"]["picky"]["submitted"] == 0
    assert invoke("submit", "mp", "21", "--wait").output.splitlines()[-1] == "42"


def test_a_description_the_client_does_not_understand_checks_nothing(served: Path) -> None:
    # As if a newer worker had published its type in a format of a later version: the
    # client does not refuse what it cannot read (the worker checks the payload itself).
    with sqlite3.connect(served.parent / "queueing.db") as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'payload:mp'",
            ('{"version": 2, "title": "int", "schema": {"kind": "int"}}',),
        )
    assert query(served.parent / "queueing.db", "SELECT value FROM meta WHERE key = 'payload:mp'")
    result = invoke("submit", "mp", '"21"')
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("mp:")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--priority", "10"], "Invalid value for '--priority': priority must be from 0"),
        (["--tenant", ""], "Invalid value for '--tenant': tenant must be 1 to 128"),
        (["--wait", "--timeout", "nan"], "Invalid value for '--timeout': 'nan' is not a number"),
        (["--wait", "--timeout", "-1"], "Invalid value for '--timeout': -1.0 is not in the range"),
    ],
    ids=["priority", "tenant", "nan-timeout", "negative-timeout"],
)
def test_submit_refuses_a_bad_option_as_a_usage_error_before_submitting(
    served: Path, options: list[str], problem: str
) -> None:
    # Before: exit status 1 (the table says 2 for a bad option), and a bad --timeout was
    # found only after the task had been submitted.
    result = invoke("submit", "mp", "21", *options)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert "Traceback" not in result.output
    info = json.loads(invoke("status", "--json").output.split("\n", 1)[1])
    assert info["queues"]["mp"]["submitted"] == 0


@pytest.mark.parametrize(
    "command",
    [
        ["result", "mp:x", "--wait", "--timeout", "nan"],
        ["top", "--once", "--every", "nan"],
        ["worker", "sq_tasks", "--shutdown-timeout", "nan"],
    ],
    ids=["result", "top", "worker"],
)
def test_a_nan_number_of_seconds_is_a_usage_error(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: exit status 1 (result, top) or a traceback (worker), after opening the
    # default queueing.db of the working directory.
    monkeypatch.chdir(tmp_path)
    result = invoke(*command)
    assert result.exit_code == 2, result.output
    assert "'nan' is not a number of seconds" in result.output


@pytest.mark.parametrize(
    "command",
    [["submit", "nosuch", "1"], ["dead-letters", "list", "nosuch"]],
    ids=["submit", "dead-letters"],
)
def test_a_queue_argument_that_names_no_queue_is_a_usage_error(
    served: Path, command: list[str]
) -> None:
    # Before: exit status 1, where the table of docs/cli.md says 2 for a bad argument.
    result = invoke(*command)
    assert result.exit_code == 2, result.output
    assert "no queue or pipeline named 'nosuch'" in result.output
    assert "Traceback" not in result.output


def test_a_payload_that_is_no_json_shows_the_quotes_a_string_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("submit", "mp", "hello world")
    assert result.exit_code == 2
    assert "PAYLOAD must be JSON" in result.output
    assert """'"hello world"'""" in result.output  # the shell quotes around JSON's quotes


@pytest.mark.parametrize("command", [["status"], ["submit", "mp", "1"], ["result", "mp:1"]])
def test_a_command_given_memory_says_it_needs_the_workers_broker(command: list[str]) -> None:
    result = invoke(*command, "--broker", "memory://")
    assert result.exit_code == 2
    assert "'--broker'" in result.output
    assert "sqlite:///path.db" in result.output
    assert "connect()" not in result.output  # the library's words, not the command's

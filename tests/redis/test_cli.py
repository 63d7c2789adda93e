"""The `queueing` command line against a worker process on a private Redis."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis_helpers import start_worker, stop_workers

from queueing.cli import main

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def served(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `queueing worker mp_tasks` process (queues `mp` and `picky`) for the module's
    tests; yields its broker URL."""
    redis_url = redis_server.url_with(prefix=f"cli{secrets.token_hex(4)}")
    tmp_path = tmp_path_factory.mktemp("cli")
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = start_worker(redis_url, "mp_tasks", tmp_path, env={"QUEUEING_TEST_RUNS": str(runs)})
    try:
        deadline = time.monotonic() + 30
        while "picky" not in invoke(redis_url, "status", "--json").output:
            assert worker.poll() is None, "the worker died at start"
            assert time.monotonic() < deadline, "the worker did not declare its queues"
            time.sleep(0.1)
        yield redis_url
    finally:
        stop_workers([worker])
    assert worker.returncode == 0


def invoke(url: str | None, *args: str, **options: Any) -> Result:
    env = {"QUEUEING_BROKER": url} if url is not None else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False, **options)


def test_submit_and_wait_prints_the_id_and_the_result(served: str) -> None:
    result = invoke(served, "submit", "mp", "21", "--wait")
    assert result.exit_code == 0, result.output
    task_id, answer = result.output.split()
    assert task_id
    assert json.loads(answer) == 42


def test_broker_option_overrides_the_environment(served: str) -> None:
    result = invoke("redis://127.0.0.1:1/0", "submit", "mp", "1", "--wait", "--broker", served)
    assert result.exit_code == 0, result.output
    assert result.output.split()[1] == "2"


def test_status_json_lists_queues_and_live_workers(served: str) -> None:
    assert invoke(served, "submit", "mp", "1", "--wait").exit_code == 0
    result = invoke(served, "status", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info["queues"]) == {"mp", "picky"}
    assert info["queues"]["mp"]["succeeded"] >= 1
    assert info["queues"]["mp"]["outstanding"] == 0
    assert len(info["workers"]) == 1


def test_status_table(served: str) -> None:
    result = invoke(served, "status")
    assert result.exit_code == 0, result.output
    assert "picky" in result.output
    assert "live workers" in result.output


def test_dead_letters_list_requeue_purge(served: str) -> None:
    failed = invoke(served, "submit", "picky", '"nope"', "--wait")
    assert failed.exit_code != 0
    assert "not ok: 'nope'" in failed.output
    listed = invoke(served, "dead-letters", "list", "picky")
    assert listed.exit_code == 0, listed.output
    assert "not ok: 'nope'" in listed.output
    assert "ValueError" in listed.output
    requeued = invoke(served, "dead-letters", "requeue", "picky")
    assert requeued.exit_code == 0, requeued.output
    assert len(requeued.output.split()) == 1  # the new task's id
    purged = invoke(served, "dead-letters", "purge", "picky", "--yes")
    assert purged.exit_code == 0, purged.output
    # The requeued task failed again (and was dead-lettered again), unless it is still
    # running: one letter or none.
    assert purged.output.strip() in ("purged 1 dead letter(s)", "purged 0 dead letter(s)")


def test_bad_json_payload_is_a_usage_error(served: str) -> None:
    result = invoke(served, "submit", "mp", "{not json")
    assert result.exit_code == 2
    assert "PAYLOAD must be JSON" in result.output


def test_unknown_queue_is_a_clear_error(served: str) -> None:
    result = invoke(served, "submit", "nosuchqueue", "1")
    assert result.exit_code != 0
    assert "nosuchqueue" in result.output
    assert "Traceback" not in result.output


def test_unreachable_broker_is_a_clear_error() -> None:
    result = invoke("redis://127.0.0.1:1/0", "status")
    assert result.exit_code != 0
    assert "cannot" in result.output
    assert "127.0.0.1:1" in result.output


def test_worker_without_a_broker_exits_with_the_reason() -> None:
    here = Path(__file__).parent
    broker = "redis://127.0.0.1:1/0"
    command = [sys.executable, "-m", "queueing", "worker", "mp_tasks", "--broker", broker]
    done = subprocess.run(command, cwd=here, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Error: cannot use Redis at redis://127.0.0.1:1/0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def broken(:\n", "syntax error"),
        ("raise RuntimeError('no config')\n", "raised RuntimeError: no config"),
    ],
)
def test_a_worker_module_that_fails_to_import_is_a_short_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    module = f"bad_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["worker", module, "--broker", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_submit_checks_the_payload_type_the_worker_published(served: str) -> None:
    result = invoke(served, "submit", "mp", '{"n": 21}')
    assert result.exit_code == 2, result.output
    assert "Invalid value for PAYLOAD" in result.output
    assert "queue 'mp': the payload does not structure as int" in result.output
    assert "expected int, got {'n': 21} (dict)" in result.output
    assert "Traceback" not in result.output
    refused = invoke(served, "submit", "picky", "[1, 2]")
    assert refused.exit_code == 2, refused.output
    assert "expected str, got [1, 2] (list)" in refused.output

"""The `queueing` command line with the RabbitMQ broker: a `queueing worker` process, and
the client commands against it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rabbit_helpers import start_worker, stop_workers

from queueing.cli import main

pytestmark = pytest.mark.amqp


@pytest.fixture(scope="module")
def served(
    make_amqp_url: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A `queueing worker rabbit_tasks` process (queues `mp` and `picky`) for the module's
    tests; yields its broker URL."""
    url = make_amqp_url()
    tmp_path: Path = tmp_path_factory.mktemp("cli")
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = start_worker(url, "rabbit_tasks", tmp_path, env={"QUEUEING_TEST_RUNS": str(runs)})
    try:
        deadline = time.monotonic() + 30
        while '"workers": {}' in (status := invoke(url, "status", "--json").output) or (
            "picky" not in status
        ):
            assert worker.poll() is None, "the worker died at start"
            assert time.monotonic() < deadline, "the worker did not declare its queues"
            time.sleep(0.1)
        yield url
    finally:
        stop_workers([worker])
    assert worker.returncode == 0


def invoke(url: str | None, *args: str, **options: Any) -> Result:
    env = {"QUEUEING_BROKER": url} if url is not None else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False, **options)


def test_submit_and_wait_prints_the_id_and_the_result(served: str) -> None:
    result = invoke(served, "submit", "mp", "21", "--wait", "--broker", served)
    assert result.exit_code == 0, result.output
    task_id, answer = result.output.split()
    assert task_id.startswith("mp:")
    assert json.loads(answer) == 42


def test_status_json_lists_queues_and_the_live_worker(served: str) -> None:
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


def test_dead_letters_list_requeue_and_purge(served: str) -> None:
    submitted = invoke(served, "submit", "picky", '"bad"', "--wait")
    assert submitted.exit_code != 0
    assert "not ok: 'bad'" in submitted.output
    listed = invoke(served, "dead-letters", "list", "picky")
    assert listed.exit_code == 0, listed.output
    assert "failed" in listed.output
    assert "ValueError: not ok: 'bad'" in listed.output
    requeued = invoke(served, "dead-letters", "requeue", "picky")
    assert requeued.exit_code == 0, requeued.output
    new_id = requeued.output.strip()
    assert new_id.startswith("picky:")
    deadline = time.monotonic() + 10
    while new_id not in invoke(served, "dead-letters", "list", "picky").output:
        assert time.monotonic() < deadline, "the requeued task did not fail again"
        time.sleep(0.05)  # it fails again: a dead letter again, under its new id
    purged = invoke(served, "dead-letters", "purge", "picky", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "purged" in purged.output
    assert "no dead letters in 'picky'" in invoke(served, "dead-letters", "list", "picky").output


def test_a_bad_broker_url_is_a_short_error() -> None:
    result = invoke(None, "submit", "mp", "1", "--broker", "amqp://127.0.0.1/")
    assert result.exit_code != 0
    assert "needs a results store" in result.output
    assert "Traceback" not in result.output

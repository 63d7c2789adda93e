"""The `queueing` command line on one task (result, cancel, inspect), on dead letters and
on the status of queues, against a `queueing worker cli_tasks` process on a private Redis.

Most tests call the command through click's CliRunner (in this process); those marked
`real command` run the installed `queueing` script in a process of its own."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from redis_helpers import prefix_of, raw_client, start_worker, stop_workers

from queueing import connect
from queueing.cli import main

pytestmark = pytest.mark.redis

HERE = Path(__file__).parent
#: Seconds a `nap` task sleeps when a test needs one still running while it looks.
LONG_NAP = 30.0


@pytest.fixture(scope="module")
def served(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `queueing worker cli_tasks --concurrency store=1 --concurrency 3` process for the
    module's tests; yields its broker URL."""
    redis_url = redis_server.url_with(prefix=f"cli{secrets.token_hex(4)}")
    logs = tmp_path_factory.mktemp("cli-tasks")
    worker = start_worker(
        redis_url, "cli_tasks", logs, "--concurrency", "store=1", "--concurrency", "3"
    )
    try:
        deadline = time.monotonic() + 30
        while not json.loads(invoke(redis_url, "status", "--json").output)["workers"]:
            assert worker.poll() is None, "the worker died at start"
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        yield redis_url
    finally:
        stop_workers([worker])
        log = "".join(path.read_text() for path in logs.glob("worker-*.log"))
        assert "serving nap (3 workers), shaky (3 workers), fetch (3 workers), " in log, log
        assert "store (1 worker); pipeline crawl" in log, log
    assert worker.returncode == 0


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(
        main, list(args), env={"QUEUEING_BROKER": url}, catch_exceptions=False
    )


def command(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `queueing` command (the script pip installed), in a process of its own."""
    script = Path(sys.executable).with_name("queueing")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "queueing"]
    root = str(HERE.parents[1])
    env = {**os.environ, "QUEUEING_BROKER": url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run(
        [*program, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def submit(url: str, queue: str, payload: Any) -> str:
    done = invoke(url, "submit", queue, json.dumps(payload))
    assert done.exit_code == 0, done.output
    return done.output.strip()


def wait_state(url: str, task_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = json.loads(invoke(url, "inspect", task_id, "--json").output)
        if doc["state"] == state:
            return doc
        assert time.monotonic() < deadline, f"{task_id} is still {doc['state']}, not {state}"
        time.sleep(0.05)


# -- result ---------------------------------------------------------------------------------


def test_result_prints_a_finished_tasks_result_as_json_real_command(served: str) -> None:
    task_id = submit(served, "nap", 0.01)
    waited = command(served, "result", task_id, "--wait", "--timeout", "20")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == 0.01
    again = command(served, "result", task_id, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"id": task_id, "state": "succeeded", "result": 0.01}


def test_result_of_a_task_without_outcome_exits_3_and_says_so(served: str) -> None:
    task_id = submit(served, "nap", LONG_NAP)
    now = invoke(served, "result", task_id)
    assert now.exit_code == 3, now.output
    assert f"task {task_id!r} is " in now.output
    assert "no result yet (`--wait` waits for it)" in now.output
    waited = invoke(served, "result", task_id, "--wait", "--timeout", "0.2", "--json")
    assert waited.exit_code == 3, waited.output
    doc = json.loads(waited.stdout)
    assert doc["id"] == task_id
    assert doc["state"] in ("pending", "running")
    assert "no outcome after 0.2 s" in waited.stderr
    assert invoke(served, "cancel", task_id).exit_code == 0


def test_result_of_a_failed_task_exits_1_with_the_error(served: str) -> None:
    task_id = submit(served, "shaky", "boom")
    done = invoke(served, "result", task_id, "--wait", "--timeout", "20")
    assert done.exit_code == 1, done.output
    assert f"task {task_id!r} dead-lettered after 2 attempt(s)" in done.output
    assert "queueing.Transient: the service is down for 'boom'" in done.output
    as_json = invoke(served, "result", task_id, "--json")
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["state"] == "dead-lettered"
    assert doc["attempts"] == 2
    assert doc["error"]["type"] == "queueing.Transient"


def test_an_unknown_id_is_a_clear_error_real_command(served: str) -> None:
    for verb in ("result", "inspect", "cancel"):
        done = command(served, verb, "nap:no-such-task")
        assert done.returncode == 1, (verb, done.stdout, done.stderr)
        assert "no task 'nap:no-such-task' is known" in done.stderr
        assert "Traceback" not in done.stderr


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_stops_a_running_task_and_refuses_a_finished_one(served: str) -> None:
    task_id = submit(served, "nap", LONG_NAP)
    wait_state(served, task_id, "running")
    cancelled = invoke(served, "cancel", task_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.strip() == f"cancelled {task_id}"
    result = invoke(served, "result", task_id)
    assert result.exit_code == 1
    assert "cancelled" in result.output
    again = invoke(served, "cancel", task_id)
    assert again.exit_code == 1
    assert "had ended already (cancelled): not cancelled" in again.output


# -- inspect --------------------------------------------------------------------------------


def test_inspect_shows_queue_state_attempts_error_and_times(served: str) -> None:
    task_id = submit(served, "shaky", "inspect-me")
    doc = wait_state(served, task_id, "dead-lettered")
    assert doc["queue"] == "shaky"
    assert doc["final"] is True
    assert doc["attempts"] == 2
    assert doc["deliveries"] >= 1
    assert doc["error"]["type"] == "queueing.Transient"
    assert "the service is down for 'inspect-me'" in doc["error"]["message"]
    assert "Traceback" in doc["error"]["traceback"]
    assert doc["submitted_at"] <= doc["finished_at"] <= time.time() + 1
    assert "result" not in doc

    shown = invoke(served, "inspect", task_id)
    assert shown.exit_code == 0, shown.output
    lines = dict(
        line.split(None, 1) for line in shown.output.splitlines() if not line.startswith(" ")
    )
    assert lines["task"] == task_id
    assert lines["queue"] == "shaky"
    assert lines["state"] == "dead-lettered"
    assert lines["attempts"] == "2"
    assert lines["error"] == "queueing.Transient: the service is down for 'inspect-me'"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*\(.* ago\)", lines["submitted"])
    assert "after submit" in lines["finished"]
    assert "raise Transient" in shown.output  # the traceback


def test_inspect_of_a_succeeded_task_has_its_result(served: str) -> None:
    task_id = submit(served, "nap", 0)
    doc = wait_state(served, task_id, "succeeded")
    assert doc["result"] == 0
    assert doc["error"] is None
    assert doc["attempts"] == 1
    assert re.search(r"^result +0\.0$", invoke(served, "inspect", task_id).output, re.M)


def test_submit_with_a_priority_and_inspect_shows_it(served: str) -> None:
    done = invoke(served, "submit", "nap", "0", "--priority", "7")
    assert done.exit_code == 0, done.output
    task_id = done.output.strip()
    doc = wait_state(served, task_id, "succeeded")
    assert doc["priority"] == 7
    assert re.search(r"^priority +7$", invoke(served, "inspect", task_id).output, re.M)
    refused = invoke(served, "submit", "nap", "0", "--priority", "10")
    assert refused.exit_code != 0
    assert "priority must be from 0" in refused.output


# -- dead letters ---------------------------------------------------------------------------


def test_dead_letters_list_is_a_table_with_a_header_and_times(served: str) -> None:
    task_id = submit(served, "shaky", "listed")
    wait_state(served, task_id, "dead-lettered")
    table = invoke(served, "dead-letters", "list", "shaky")
    assert table.exit_code == 0, table.output
    assert "dead letters of 'shaky'" in table.output
    header = next(line for line in table.output.splitlines() if "outcome" in line)
    for column in ("id", "outcome", "attempts", "failed at", "error", "payload"):
        assert column in header
    assert task_id in table.output
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", table.output)
    assert '"listed"' in table.output

    as_json = invoke(served, "dead-letters", "list", "shaky", "--json")
    letters = {letter["id"]: letter for letter in json.loads(as_json.output)}
    letter = letters[task_id]
    assert letter["state"] == "dead-lettered"
    assert letter["payload"] == "listed"
    assert letter["attempts"] == 2
    assert letter["error"]["type"] == "queueing.Transient"
    assert letter["failed_at"] >= letter["submitted_at"]


def test_dead_letters_list_of_an_empty_queue_says_so(served: str) -> None:
    listed = invoke(served, "dead-letters", "list", "fetch")
    assert listed.exit_code == 0
    assert "no dead letters in 'fetch'" in listed.output
    assert json.loads(invoke(served, "dead-letters", "list", "fetch", "--json").output) == []


def test_requeue_of_an_unknown_id_exits_non_zero_and_requeues_nothing(served: str) -> None:
    task_id = submit(served, "shaky", "keep-me")
    wait_state(served, task_id, "dead-lettered")
    done = invoke(served, "dead-letters", "requeue", "shaky", task_id, "shaky:nope")
    assert done.exit_code == 1, done.output
    assert "no dead letter 'shaky:nope' in 'shaky'; nothing was requeued" in done.output
    listed = json.loads(invoke(served, "dead-letters", "list", "shaky", "--json").output)
    assert task_id in {letter["id"] for letter in listed}
    requeued = invoke(served, "dead-letters", "requeue", "shaky", task_id)
    assert requeued.exit_code == 0, requeued.output
    (new_id,) = requeued.output.split()
    assert new_id != task_id


# -- status ---------------------------------------------------------------------------------


def test_status_counts_dead_lettered_apart_and_keeps_zero_counters(served: str) -> None:
    task_id = submit(served, "shaky", "counted")
    wait_state(served, task_id, "dead-lettered")
    info = json.loads(invoke(served, "status", "--json").output)
    counters = ("submitted", "succeeded", "failed", "dead_lettered", "retried", "cancelled")
    for name in ("nap", "shaky", "fetch", "store"):
        for counter in (*counters, "expired", "ready", "scheduled", "in_flight", "dead_letters"):
            assert isinstance(info["queues"][name][counter], int), (name, counter)
    assert info["queues"]["store"]["submitted"] == 0
    shaky = info["queues"]["shaky"]
    assert shaky["dead_lettered"] >= 1
    assert shaky["failed"] == 0
    assert shaky["retried"] >= 1
    (process,) = info["workers"].values()
    assert process["workers"] == 3 + 3 + 3 + 1

    table = invoke(served, "status").output
    assert "dead-lettered" in table
    assert "dead letters kept" in table


def test_status_real_command(served: str) -> None:
    done = command(served, "status")
    assert done.returncode == 0, done.stderr
    assert "queues now" in done.stdout
    assert "live workers" in done.stdout


def test_status_without_queues_says_how_to_get_some(redis_server: Any) -> None:
    url = redis_server.url_with(prefix=f"empty{secrets.token_hex(4)}")
    done = invoke(url, "status")
    assert done.exit_code == 0, done.output
    assert "no queues are declared yet" in done.output
    assert json.loads(invoke(url, "status", "--json").output) == {"queues": {}, "workers": {}}


# -- what a CLI call leaves in Redis --------------------------------------------------------


async def replies_streams(url: str) -> list[str]:
    async with raw_client(url) as client:
        return [key async for key in client.scan_iter(match=f"{{{prefix_of(url)}:*}}:replies:*")]


def test_cli_calls_leave_no_replies_stream_behind(served: str) -> None:
    # A task that ends after its client is gone, one it waits for, and a requeued one.
    later = command(served, "submit", "nap", "0.5")
    assert later.returncode == 0, later.stderr
    waited = command(served, "submit", "nap", "0", "--wait")
    assert waited.returncode == 0, waited.stderr
    dead = submit(served, "shaky", "again")
    wait_state(served, dead, "dead-lettered")
    assert invoke(served, "dead-letters", "requeue", "shaky", dead).exit_code == 0
    wait_state(served, later.stdout.strip(), "succeeded")
    assert trio.run(replies_streams, served) == []


async def test_a_live_client_still_gets_its_notices(served: str) -> None:
    async with connect(served) as client:
        receipt = await client.submit("nap", 0)
        assert await receipt.result(timeout=20) == 0
        assert len(await replies_streams(served)) == 1  # its own, opened before it submitted
    assert await replies_streams(served) == []

"""Serving the dashboard for real (a socket, hypercorn), what a bind refuses, the commands
that serve or read it, and the example that runs a worker with it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner
from dash_helpers import ROOT, base_url, example_serving, naps, refusals

from queueing import open_system
from queueing.cli import main
from queueing.dashboard import DashboardError, serve_dashboard


async def test_a_dashboard_on_a_free_port_answers_until_cancelled() -> None:
    async with open_system(naps(), refusals()) as system:
        await system.submit("refusals", 7)
        async with trio.open_nursery() as nursery:
            dashboard = await nursery.start(partial(serve_dashboard, system, port=0, every=0.2))
            assert dashboard.url.startswith("http://127.0.0.1:")
            assert dashboard.link == f"{dashboard.url}/#token={dashboard.token}"
            async with httpx.AsyncClient(base_url=dashboard.url) as client:
                doc = (await client.get("/api/snapshot")).json()
                refused = await client.post("/api/queues/refusals/dead-letters/purge")
                purged = await client.post(
                    "/api/queues/refusals/dead-letters/purge",
                    headers={"Authorization": f"Bearer {dashboard.token}"},
                )
            nursery.cancel_scope.cancel()
    assert {q["name"] for q in doc["queues"]} == {"naps", "refusals"}
    assert refused.status_code == 401
    assert purged.json() == {"purged": 1}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "queues.example.org"])
async def test_a_bind_beyond_loopback_without_a_token_is_refused(host: str) -> None:
    async with open_system(naps()) as system:
        with pytest.raises(DashboardError, match="without a token") as refused:
            await serve_dashboard(system, host=host, port=0)
    assert "bind to 127.0.0.1" in str(refused.value)


async def test_a_short_token_is_refused() -> None:
    async with open_system(naps()) as system:
        with pytest.raises(DashboardError, match="at least 16"):
            await serve_dashboard(system, port=0, token="secret")


def test_the_dashboard_command_refuses_a_bind_beyond_loopback_without_a_token() -> None:
    result = CliRunner().invoke(
        main, ["dashboard", "--broker", "redis://127.0.0.1:1/0", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2
    assert "without a token" in result.output


def test_the_worker_command_refuses_a_dashboard_beyond_loopback_without_a_token() -> None:
    result = CliRunner().invoke(
        main,
        [
            "worker",
            "dash_helpers:naps",
            "--broker",
            "memory://",
            "--dashboard-port",
            "0",
            "--host",
            "0.0.0.0",
        ],
    )
    assert result.exit_code == 2
    assert "without a token" in result.output


@pytest.mark.parametrize("command", ["top", "dashboard"])
def test_pointing_a_command_at_memory_explains_where_to_look(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--broker", "memory://"])
    assert result.exit_code == 2
    assert "--dashboard-port" in result.output
    assert "queueing top --url" in result.output


def test_top_reads_a_dashboard_that_is_not_there() -> None:
    result = CliRunner().invoke(main, ["top", "--url", "http://127.0.0.1:1", "--json"])
    assert result.exit_code == 1
    assert "cannot read http://127.0.0.1:1/api/snapshot" in result.output


def test_the_example_serves_its_dashboard_and_top_reads_it() -> None:
    with example_serving("--seconds", "30") as (_process, link):
        result = CliRunner().invoke(
            main, ["top", "--url", link, "--json", "--every", "1"], catch_exceptions=False
        )
        with httpx.Client(base_url=base_url(link)) as client:
            anonymous = client.post("/api/queues/payments/dead-letters/purge")
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    queues = {q["name"]: q for q in doc["queues"]}
    assert set(queues) == {"thumbnails", "payments"}
    assert queues["thumbnails"]["rate_in"] > 0
    assert queues["thumbnails"]["workers"] == 4
    assert anonymous.status_code == 401


def test_the_example_runs_unattended_and_reports_its_numbers() -> None:
    with example_serving("--seconds", "3") as (process, _):
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    made = int(re.search(r"^Thumbnails made: (\d+)", out, re.MULTILINE)[1])  # type: ignore[index]
    declined = re.search(r"^Payments declined \(dead letters\): (\d+)", out, re.MULTILINE)
    assert made > 0
    assert declined is not None
    assert int(declined[1]) >= 1


def test_a_worker_process_serves_its_dashboard() -> None:
    env = {**os.environ}
    here = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "queueing", "worker", "dash_helpers:naps"]
    command += ["--broker", "memory://", "--dashboard-port", "0"]
    process = subprocess.Popen(
        command, cwd=here, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(2)]
        link = next(line.split(": ", 1)[1].strip() for line in lines if "dashboard:" in line)
        with httpx.Client(base_url=base_url(link)) as client:
            doc = client.get("/api/snapshot").json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        if process.stderr is not None:
            process.stderr.close()
    assert [q["name"] for q in doc["queues"]] == ["naps"]
    assert doc["source"] == "memory:// (this process)"
    assert process.returncode == 0

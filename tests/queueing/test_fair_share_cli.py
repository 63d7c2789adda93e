"""The command line and fair share: `queueing submit --tenant`, and `queueing status`'s
busiest tenants (what `Broker.tenant_figures` counts; a SQLite file here: no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from queueing import Queue, TenantFigures, Worker, open_system
from queueing.brokers.sqlite import SqliteBroker
from queueing.cli import main


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


def declare(url: str) -> None:
    """A process that served queue `q` once (so the file declares it)."""

    async def work() -> None:
        async with open_system(Queue("q", Echo), Queue("plain", Echo), broker=url) as system:
            await (await system.submit("q", 1, tenant="acme"))

    trio.run(work)


def test_submit_refuses_a_bad_tenant_with_the_rule(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/queueing.db"
    declare(url)
    refused = CliRunner().invoke(main, ["submit", "q", "1", "--tenant", "", "--broker", url])
    assert refused.exit_code != 0
    assert "tenant must be 1 to 128 printable characters" in refused.output


def test_status_lists_the_busiest_tenants_of_queues_that_have_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/queueing.db"
    declare(url)
    asked: list[tuple[str, int]] = []

    async def figures(self: Any, queue: str, limit: int) -> list[TenantFigures] | None:
        # The broker's own counts are the contract's business: here, what status shows.
        asked.append((queue, limit))
        if queue != "q":
            return []
        return [TenantFigures("acme", 120, 4), TenantFigures("", 3, 1)]

    monkeypatch.setattr(SqliteBroker, "tenant_figures", figures)
    shown = CliRunner().invoke(main, ["status", "--broker", url], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "busiest tenants" in shown.output
    rows = [
        [cell.strip() for cell in line.split("│") if cell.strip()]
        for line in shown.output.splitlines()
        if "acme" in line or "(default)" in line
    ]
    assert rows == [["q", "acme", "120", "4"], ["q", "(default)", "3", "1"]]
    as_json = CliRunner().invoke(main, ["status", "--broker", url, "--json"])
    info = json.loads(as_json.output)
    assert info["tenants"] == {
        "q": [
            {"tenant": "acme", "waiting": 120, "running": 4},
            {"tenant": "", "waiting": 3, "running": 1},
        ]
    }
    assert sorted(asked) == [("plain", 10), ("plain", 10), ("q", 10), ("q", 10)]

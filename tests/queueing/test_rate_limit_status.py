"""`queueing status` lists rate-limited queues: their limit and their starts (over every
process), read from the broker (a SQLite file here: no server needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner

from queueing import Queue, Worker, open_system
from queueing.cli import main


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


def test_status_shows_the_limit_and_the_starts_of_a_rate_limited_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/queueing.db"

    async def work() -> None:
        queues = (Queue("rated", Echo, rate_limit="50/s"), Queue("free", Echo))
        async with open_system(*queues, broker=url) as system:
            for receipt in await system.submit_many("rated", list(range(5))):
                await receipt
            await (await system.submit("free", 1))

    trio.run(work)
    shown = CliRunner().invoke(main, ["status", "--broker", url], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "rate-limited queues" in shown.output
    assert "50/s" in shown.output
    as_json = CliRunner().invoke(main, ["status", "--broker", url, "--json"])
    info = json.loads(as_json.output)
    assert info["rates"]["rated"]["limit"] == "50/s"
    assert info["rates"]["rated"]["started"] == 5
    assert "free" not in info["rates"]


def test_a_worker_banner_names_a_queues_rate_limit() -> None:
    from queueing._cli_targets import describe

    queues: list[Any] = [
        Queue("fetch", Echo, workers=8, rate_limit="5/s", rate_key=str),
        Queue("report", Echo, rate_limit="30/m"),
        Queue("free", Echo),
    ]
    assert describe(queues) == (
        "fetch (8 workers, at most 5/s per key), report (1 worker, at most 30/m), free (1 worker)"
    )

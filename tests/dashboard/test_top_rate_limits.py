"""`queueing top` and the dashboards show a rate-limited queue's limit beside its name (its
out/s is then its rate of starts)."""

from __future__ import annotations

from typing import Any

from queueing import Queue, Worker, open_system
from queueing._top import render
from queueing.dashboard import Sampler


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


async def test_the_snapshot_and_top_show_the_limit(autojump_clock: Any) -> None:
    from rich.console import Console

    queues = (Queue("rated", Echo, rate_limit="5/s"), Queue("free", Echo))
    async with open_system(*queues) as system:
        for receipt in await system.submit_many("rated", list(range(3))):
            await receipt
        snapshot = await Sampler(system).sample()
    rated, free = snapshot.queue("rated"), snapshot.queue("free")
    assert rated is not None
    assert free is not None
    assert (rated.rate_limit, free.rate_limit) == ("5/s", None)
    console = Console(width=130, record=True, color_system=None)
    console.print(render(snapshot))
    lines = console.export_text().splitlines()
    assert any(line.split()[:2] == ["rated", "≤5/s"] for line in lines if line.strip())

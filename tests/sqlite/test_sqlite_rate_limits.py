"""Rate limits on a SQLite file: a task whose worker was waiting for its start when its
process stopped goes back to the file unstarted, for the next process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from queueing import Queue, TaskState, Worker, open_system


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


async def test_a_task_waiting_for_its_start_goes_back_unstarted_at_shutdown(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/queueing.db"
    slow = Queue("rated", Echo, rate_limit="1/h")
    async with open_system(slow, broker=url, shutdown_timeout=1.0) as system:
        first, second = await system.submit_many("rated", [1, 2])
        assert await first.result(timeout=5) == 1
        await trio.sleep(0.3)  # its worker holds the second, waiting an hour for its start
        task_id = second.id
    async with open_system(Queue("rated", Echo), broker=url) as system:  # no limit now
        receipt = system.receipt(task_id)
        assert await receipt.result(timeout=5) == 2
        status = await receipt.status()
        assert status.state is TaskState.SUCCEEDED
        assert status.attempts == 1

"""What a refused or failed submit says about each payload: accepted, unknown, rejected; and
keys that make submitting the unknown ones again safe."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from queueing import (
    BrokerError,
    Overflow,
    PayloadError,
    Queue,
    QueueFull,
    TaskState,
    UnknownTask,
    Worker,
    open_system,
)
from queueing.brokers import Admission, QueueInfo, Task
from queueing.brokers.sqlite import SqliteBroker

RUNS: collections.Counter[int] = collections.Counter()


class Count(Worker):
    async def handle(self, x: int) -> int:
        RUNS[x] += 1
        return x


class Hold(Worker):
    async def handle(self, x: int) -> int:
        await trio.sleep_forever()
        return x


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    RUNS.clear()


class LostAnswers(SqliteBroker):
    """A SQLite broker whose answers get lost while `lose` is set: `after` says whether the
    broker took the tasks first (their answer lost on the way back) or never got them."""

    lose = False
    after = True

    async def _drop_answer(self) -> None:
        await trio.lowlevel.checkpoint()
        raise BrokerError("no answer within 0.1s (injected)")

    async def accept(self, queue: QueueInfo, task: Task, *, due: float | None = None) -> Admission:
        if self.lose and not self.after:
            await self._drop_answer()
        admission = await super().accept(queue, task, due=due)
        if self.lose:
            await self._drop_answer()
        return admission

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        if self.lose and not self.after:
            await self._drop_answer()
        taken = await super().accept_many(queue, tasks)
        if self.lose:
            await self._drop_answer()
        return taken


def _ids(receipts: Sequence[Any]) -> list[str]:
    return [receipt.id for receipt in receipts]


async def test_a_refused_submit_many_accounts_for_every_payload() -> None:
    queue = Queue("hold", Hold, workers=1, maxsize=3, when_full=Overflow.REJECT)
    async with open_system(queue, shutdown_timeout=0.1) as system:
        with pytest.raises(QueueFull) as info:
            await system.submit_many("hold", range(10))
    error = info.value
    assert len(error.accepted) == 3
    assert error.unknown == []
    assert error.rejected == list(range(3, 10))


async def test_a_bad_payload_in_submit_many_rejects_it_and_the_rest() -> None:
    async with open_system(Queue("count", Count)) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit_many("count", [1, 2, "three", 4])
        assert [await receipt for receipt in info.value.accepted] == [1, 2]
        assert info.value.rejected == ["three", 4]


async def test_submit_many_with_keys_twice_runs_each_task_once() -> None:
    async with open_system(Queue("count", Count, workers=4)) as system:
        first = await system.submit_many("count", range(50), key=lambda x: f"n-{x}")
        again = await system.submit_many("count", range(50), key=lambda x: f"n-{x}")
        assert _ids(first) == _ids(again)
        assert [await receipt for receipt in again] == list(range(50))
        await system.drain()
    assert collections.Counter(range(50)) == RUNS


@pytest.mark.parametrize("after", [True, False], ids=["answer-lost", "never-arrived"])
async def test_submit_many_whose_answer_is_lost_reports_those_tasks_unknown(
    tmp_path: Path, after: bool
) -> None:
    broker = LostAnswers(f"sqlite:///{tmp_path / 'q.db'}")
    broker.after = after
    async with open_system(Queue("count", Count, workers=2), broker=broker) as system:
        await system.submit_many("count", range(5), key=lambda x: f"n-{x}")
        broker.lose = True
        with pytest.raises(BrokerError, match="injected") as info:
            await system.submit_many("count", range(5, 3000), key=lambda x: f"n-{x}")
        error = info.value
        assert error.accepted == []
        assert error.rejected == []
        assert len(error.unknown) == 2995
        assert "2995 unknown" in str(error.__notes__)
        # Whether each got in, the broker can tell once it answers again.
        broker.lose = False
        sample = error.unknown[0]
        if after:
            assert await sample == 5
        else:
            with pytest.raises(UnknownTask):
                await sample.status()
        # Submitting everything again with the same keys is safe: nothing runs twice.
        receipts = await system.submit_many("count", range(3000), key=lambda x: f"n-{x}")
        assert [await receipt for receipt in receipts] == list(range(3000))
        await system.drain()
    assert collections.Counter(range(3000)) == RUNS


async def test_submit_many_without_keys_reports_the_unknown_chunk_and_the_unsent_rest(
    tmp_path: Path,
) -> None:
    broker = LostAnswers(f"sqlite:///{tmp_path / 'q.db'}")
    broker.after = False
    async with open_system(Queue("count", Count, workers=2), broker=broker) as system:
        broker.lose = True
        with pytest.raises(BrokerError) as info:
            await system.submit_many("count", range(3000))
        error = info.value
        # The first chunk was sent and got no answer; the rest were never sent.
        assert error.accepted == []
        assert 0 < len(error.unknown) < 3000
        assert len(error.unknown) + len(error.rejected) == 3000
        assert error.rejected == list(range(len(error.unknown), 3000))
        broker.lose = False
        with pytest.raises(UnknownTask):
            await error.unknown[-1].status()


async def test_a_submit_whose_answer_is_lost_hands_back_the_receipt_to_check(
    tmp_path: Path,
) -> None:
    broker = LostAnswers(f"sqlite:///{tmp_path / 'q.db'}")
    async with open_system(Queue("count", Count), broker=broker) as system:
        broker.lose = True
        with pytest.raises(BrokerError) as info:
            await system.submit("count", 7, key="seven")
        (unknown,) = info.value.unknown
        broker.lose = False
        again = await system.submit("count", 7, key="seven")
        assert again.id == unknown.id
        assert await unknown == 7
        assert (await again.status()).state is TaskState.SUCCEEDED
        await system.drain()
    assert collections.Counter([7]) == RUNS

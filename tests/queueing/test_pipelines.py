"""Pipelines: each stage's result feeds the next; fan-out; failures name their stage;
backpressure crosses stages back to `submit`."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
from queueing_helpers import outcome_of

from queueing import (
    FanOut,
    InvalidQueue,
    Pipeline,
    Queue,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskState,
    Worker,
    open_system,
)


@attrs.frozen
class Page:
    url: str


@attrs.frozen
class Body:
    url: str
    text: str


class Fetch(Worker):
    async def handle(self, page: Page) -> Body:
        return Body(page.url, f"<html>{page.url}</html>")


class Measure(Worker):
    async def handle(self, body: Body) -> int:
        assert isinstance(body, Body)
        return len(body.text)


class Double(Worker):
    async def handle(self, n: int) -> int:
        return 2 * n


class Split(Worker):
    """Fans a string out into its words."""

    async def handle(self, text: str) -> FanOut:
        return FanOut(text.split())


class SlowUpper(Worker):
    """Upper-cases a word, taking longer for shorter words (so they finish out of order)."""

    async def handle(self, word: str) -> str:
        await trio.sleep(10 - len(word))
        return word.upper()


class Letters(Worker):
    async def handle(self, word: str) -> list[str]:
        return list(word)


class Boom(Worker):
    async def handle(self, payload: Any) -> Any:
        raise ValueError(f"cannot handle {payload!r}")


class Log(Worker):
    """Sleeps `seconds`, logging (queue, payload, start time)."""

    def __init__(self, log: list[tuple[str, Any, float]], seconds: float = 0.0) -> None:
        self.log = log
        self.seconds = seconds

    async def handle(self, payload: int) -> int:
        self.log.append((self.name.split(".")[0], payload, trio.current_time()))
        await trio.sleep(self.seconds)
        return payload


async def test_the_result_of_each_stage_is_the_payload_of_the_next() -> None:
    fetch, measure, double = Queue("fetch", Fetch), Queue("measure", Measure), Queue("x2", Double)
    async with open_system(Pipeline("ingest", [fetch, measure, double])) as system:
        receipt = await system.submit("ingest", Page("abc"))
        assert receipt.queue == "ingest"
        assert await receipt == 2 * len("<html>abc</html>")


async def test_a_pipeline_brings_its_stages_as_queues() -> None:
    fetch, measure = Queue("fetch", Fetch), Queue("measure", Measure)
    async with open_system(Pipeline("ingest", [fetch, measure])) as system:
        assert sorted(system.names) == ["fetch", "ingest", "measure"]
        assert await (await system.submit("measure", Body("u", "12345"))) == 5


async def test_a_fan_out_resolves_to_the_list_of_final_results_in_order(
    autojump_clock: Any,
) -> None:
    split, upper = Queue("split", Split), Queue("upper", SlowUpper, workers=4)
    async with open_system(Pipeline("shout", [split, upper])) as system:
        receipt = await system.submit("shout", "a quick brown fox")
        assert await receipt == ["A", "QUICK", "BROWN", "FOX"]


async def test_a_fan_out_continues_through_the_later_stages(autojump_clock: Any) -> None:
    split, upper = Queue("split", Split), Queue("upper", SlowUpper, workers=4)
    letters = Queue("letters", Letters)
    async with open_system(Pipeline("p", [split, upper, letters])) as system:
        assert await (await system.submit("p", "ab c")) == [["A", "B"], ["C"]]


async def test_an_empty_fan_out_resolves_to_an_empty_list(autojump_clock: Any) -> None:
    split, upper = Queue("split", Split), Queue("upper", SlowUpper)
    async with open_system(Pipeline("shout", [split, upper])) as system:
        assert await (await system.submit("shout", "   ")) == []


async def test_an_empty_branch_of_a_nested_fan_out_does_not_end_the_run_early(
    autojump_clock: Any,
) -> None:
    # Stage 1 fans out two lines; stage 2 fans each into words (none for the blank line).
    class Lines(Worker):
        async def handle(self, text: str) -> FanOut:
            return FanOut(text.split("\n"))

    lines, split = Queue("lines", Lines), Queue("split", Split)
    upper = Queue("upper", SlowUpper, workers=2)
    async with open_system(Pipeline("p", [lines, split, upper])) as system:
        assert await (await system.submit("p", " \nhello world")) == ["HELLO", "WORLD"]


async def test_a_last_stage_returning_a_list_resolves_to_that_list() -> None:
    double, letters = Queue("x2", Double), Queue("letters", Letters)

    class Text(Worker):
        async def handle(self, n: int) -> str:
            return "ab" * n

    text = Queue("text", Text)
    async with open_system(Pipeline("p", [double, text, letters])) as system:
        assert await (await system.submit("p", 1)) == ["a", "b", "a", "b"]


async def test_a_failure_names_its_stage() -> None:
    fetch, double = Queue("fetch", Fetch), Queue("x2", Double)
    boom = Queue("boom", Boom, retry=RetryPolicy.never())
    async with open_system(Pipeline("ingest", [fetch, boom, double])) as system:
        receipt = await system.submit("ingest", Page("u"))
        with pytest.raises(TaskFailed) as info:
            await receipt
        status = await receipt.status()
    error = info.value
    assert (error.queue, error.stage, error.outcome) == ("ingest", "boom", TaskState.FAILED)
    assert error.error_type == "ValueError"
    assert "at stage 'boom'" in str(error)
    assert status.stage == "boom"
    assert status.state is TaskState.FAILED


async def test_one_failed_branch_fails_the_whole_fan_out(autojump_clock: Any) -> None:
    class Picky(Worker):
        async def handle(self, word: str) -> str:
            if word == "bad":
                raise ValueError("bad word")
            await trio.sleep(5)
            return word

    split, picky = Queue("split", Split), Queue("picky", Picky, workers=3)
    async with open_system(Pipeline("p", [split, picky])) as system:
        error = await outcome_of(await system.submit("p", "good bad fine"))
        assert trio.current_time() == 0.0  # the first failure ends the run
        await system.drain()
    assert isinstance(error, TaskFailed)
    assert error.stage == "picky"


async def test_a_result_that_cannot_feed_the_next_stage_fails_at_its_stage() -> None:
    double, fetch = Queue("x2", Double), Queue("fetch", Fetch)  # an int is not a Page
    async with open_system(Pipeline("p", [double, fetch])) as system:
        error = await outcome_of(await system.submit("p", 1))
    assert isinstance(error, TaskFailed)
    assert error.stage == "x2"
    assert "cannot feed 'fetch'" in error.error


async def test_a_pipeline_payload_is_validated_by_its_first_stage() -> None:
    fetch, measure = Queue("fetch", Fetch), Queue("measure", Measure)
    async with open_system(Pipeline("ingest", [fetch, measure])) as system:
        with pytest.raises(TypeError, match="url"):
            await system.submit("ingest", {"link": "u"})


async def test_a_pipeline_receipt_is_found_again_by_its_id(autojump_clock: Any) -> None:
    split, upper = Queue("split", Split), Queue("upper", SlowUpper, workers=4)
    async with open_system(Pipeline("shout", [split, upper])) as system:
        receipt = await system.submit("shout", "hi there")
        assert await system.receipt(receipt.id) == ["HI", "THERE"]


async def test_a_cancelled_pipeline_runs_no_later_stage(autojump_clock: Any) -> None:
    log: list[tuple[str, Any, float]] = []
    first = Queue("first", Log, worker_kwargs={"log": log, "seconds": 10})
    second = Queue("second", Log, worker_kwargs={"log": log})
    async with open_system(Pipeline("p", [first, second])) as system:
        receipt = await system.submit("p", 1)
        await trio.sleep(1)
        assert await receipt.cancel() is True
        with pytest.raises(TaskCancelled):
            await receipt
        await trio.sleep(20)
    assert [queue for queue, _, _ in log] == ["first"]


async def test_backpressure_crosses_stages_back_to_submit(autojump_clock: Any) -> None:
    log: list[tuple[str, Any, float]] = []
    first = Queue("first", Log, workers=2, maxsize=2, worker_kwargs={"log": log})
    second = Queue("second", Log, maxsize=1, worker_kwargs={"log": log, "seconds": 10})
    accepted: list[float] = []
    receipts = []
    async with open_system(Pipeline("p", [first, second])) as system:

        async def submit_all() -> None:
            for i in range(5):
                receipts.append(await system.submit("p", i))
                accepted.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit_all)
            await trio.sleep(5)
            # The second stage is full, both first-stage workers hold a finished task they
            # cannot hand on, the first stage is full, and submit waits.
            stats = system.stats()
            assert (stats["second"].outstanding, stats["first"].outstanding) == (1, 2)
            assert len(accepted) == 3
        assert [await r for r in receipts] == [0, 1, 2, 3, 4]
    assert accepted == [0.0, 0.0, 0.0, 10.0, 20.0]
    assert [t for q, _, t in log if q == "first"] == [0.0, 0.0, 0.0, 10.0, 20.0]
    assert sorted(t for q, _, t in log if q == "second") == [0.0, 10.0, 20.0, 30.0, 40.0]


async def test_pipeline_stages_must_be_distinct_queues() -> None:
    double = Queue("x2", Double)
    with pytest.raises(InvalidQueue, match="twice"):
        Pipeline("p", [double, double])


async def test_cancelling_a_pipeline_cancels_the_running_stage_handler(
    autojump_clock: Any,
) -> None:
    cancelled: list[float] = []

    class Long(Worker):
        async def handle(self, n: int) -> int:
            try:
                await trio.sleep(100)
            except trio.Cancelled:
                cancelled.append(trio.current_time())
                raise
            return n

    first, second = Queue("first", Long), Queue("second", Double)
    async with open_system(Pipeline("p", [first, second])) as system:
        receipt = await system.submit("p", 1)
        await trio.sleep(3)
        assert await receipt.cancel() is True
        await system.drain()
        assert trio.current_time() == pytest.approx(3.0)  # the worker was freed at once
    assert cancelled == [3.0]


class Recording(Worker):
    """Records the id of each task it runs (a stage task's own id), then sleeps."""

    def __init__(self, ids: list[str], seconds: float = 0) -> None:
        self.ids = ids
        self.seconds = seconds

    async def handle(self, n: int) -> int:
        assert self.task_id is not None
        self.ids.append(self.task_id)
        await trio.sleep(self.seconds)
        return n + 1


async def test_a_stage_task_found_by_id_resolves_to_none(autojump_clock: Any) -> None:
    ids: list[str] = []
    first = Queue("first", Recording, worker_kwargs={"ids": ids})
    async with open_system(Pipeline("p", [first, Queue("double", Double)])) as system:
        assert await (await system.submit("p", 1)) == 4
        stage = system.receipt(ids[0])
        assert stage.id != (await system.submit("p", 2)).id
        # Its result went on to the next stage: its own receipt has none to give.
        assert await stage is None
        assert (await stage.status()).state is TaskState.SUCCEEDED


async def test_cancelling_a_stage_task_found_by_id_ends_its_run(autojump_clock: Any) -> None:
    ids: list[str] = []
    first = Queue("first", Recording, worker_kwargs={"ids": ids, "seconds": 10})
    async with open_system(Pipeline("p", [first, Queue("double", Double)])) as system:
        run = await system.submit("p", 1)
        await trio.sleep(1)  # the first stage is running
        assert await system.receipt(ids[0]).cancel() is True
        with trio.fail_after(5), pytest.raises(TaskCancelled):
            await run


class FailX(Worker):
    async def handle(self, word: str) -> str:
        if word == "x":
            raise ValueError("x fails")
        return word


async def test_a_run_that_ended_while_its_stage_waited_for_room_gets_no_more_tasks(
    autojump_clock: Any,
) -> None:
    # The first stage fans out two tasks into a queue with room for one; the first of them
    # fails the run while the second still waits for room: that one is never accepted.
    split = Queue("split", Split)
    second = Queue("second", FailX, maxsize=1, retry=RetryPolicy.never())
    async with open_system(Pipeline("p", [split, second])) as system:
        with pytest.raises(TaskFailed, match="x fails"):
            await (await system.submit("p", "x y z"))
        await system.drain()
        stats = system.stats()["second"]
        assert (stats.submitted, stats.failed, stats.outstanding) == (1, 1, 0)


class Held(Worker):
    """Holds every task until the gate opens."""

    def __init__(self, gate: trio.Event) -> None:
        self.gate = gate

    async def handle(self, word: str) -> str:
        await self.gate.wait()
        return word


async def test_room_a_dropped_stage_task_was_woken_for_goes_to_the_next_waiter(
    autojump_clock: Any,
) -> None:
    gate = trio.Event()
    second = Queue("second", Held, worker_kwargs={"gate": gate}, maxsize=1)
    async with open_system(Pipeline("p", [Queue("split", Split), second])) as system:
        held = await system.submit("second", "held")  # the queue is full now
        run = await system.submit("p", "x")  # its stage task waits for room...
        await trio.testing.wait_all_tasks_blocked()
        accepted = trio.Event()

        async def submit_one() -> None:
            await system.submit("second", "next")  # ...and so does this, behind it
            accepted.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit_one)
            await trio.testing.wait_all_tasks_blocked()
            assert await run.cancel() is True  # the waiting stage task is not needed now
            gate.set()  # room: the stage task is woken first, and must pass the room on
            with trio.fail_after(5):
                await accepted.wait()
        assert await held == "held"

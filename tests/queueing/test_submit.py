"""Submitting tasks: receipts, payload and result conversion, and how workers take tasks."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import attrs
import pytest
import trio

from queueing import InvalidQueue, Pipeline, Queue, TaskFailed, TaskState, Worker, open_system


@attrs.frozen
class Page:
    url: str
    depth: int = 0


@attrs.frozen
class Thumb:
    url: str
    size: int


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Double(Worker):
    async def handle(self, x: int) -> int:
        return 2 * x


class Crawl(Worker):
    """Checks that the payload arrives structured as the annotated attrs class."""

    async def handle(self, page: Page) -> Thumb:
        assert isinstance(page, Page)
        return Thumb(page.url, len(page.url) + page.depth)


class Bytes(Worker):
    async def handle(self, text: str) -> bytes:
        return text.encode()


class When(Worker):
    async def handle(self, days: int) -> datetime.date:
        return datetime.date(2024, 1, 1) + datetime.timedelta(days=days)


class Swap(Worker):
    async def handle(self, point: Point) -> Point:
        return Point(point.y, point.x)


class Log(Worker):
    """Sleeps for the payload's seconds; logs (payload, worker, start time)."""

    def __init__(self, log: list[tuple[Any, str, float]]) -> None:
        self.log = log

    async def handle(self, seconds: float) -> str:
        self.log.append((seconds, self.name, trio.current_time()))
        await trio.sleep(seconds)
        return self.name


async def test_submit_returns_a_receipt_with_the_task_id() -> None:
    async with open_system(Queue("double", Double)) as system:
        receipt = await system.submit("double", 21)
        assert isinstance(receipt.id, str)
        assert receipt.id
        assert receipt.queue == "double"
        assert await receipt == 42


async def test_task_ids_are_unique() -> None:
    async with open_system(Queue("double", Double)) as system:
        receipts = [await system.submit("double", i) for i in range(200)]
        assert len({r.id for r in receipts}) == 200
        assert [await r for r in receipts] == [2 * i for i in range(200)]


async def test_attrs_payload_reaches_the_handler_as_its_class() -> None:
    async with open_system(Queue("crawl", Crawl)) as system:
        receipt = await system.submit("crawl", Page("https://example.org", 3))
        assert await receipt == Thumb("https://example.org", 22)


async def test_dict_payload_is_structured_as_the_annotated_class() -> None:
    async with open_system(Queue("crawl", Crawl)) as system:
        receipt = await system.submit("crawl", {"url": "a", "depth": 1})
        assert await receipt == Thumb("a", 2)


async def test_dataclass_payload_and_result_round_trip() -> None:
    async with open_system(Queue("swap", Swap)) as system:
        assert await (await system.submit("swap", Point(1, 2))) == Point(2, 1)


async def test_bytes_result_comes_back_as_bytes() -> None:
    async with open_system(Queue("bytes", Bytes)) as system:
        assert await (await system.submit("bytes", "héllo")) == "héllo".encode()


async def test_date_result_comes_back_as_a_date() -> None:
    async with open_system(Queue("when", When)) as system:
        assert await (await system.submit("when", 31)) == datetime.date(2024, 2, 1)


async def test_each_worker_is_a_registered_actor_of_the_system(autojump_clock: Any) -> None:
    log: list[tuple[Any, str, float]] = []
    queue = Queue("log", Log, workers=3, worker_kwargs={"log": log})
    async with open_system(queue) as system:
        receipts = [await system.submit("log", 1.0) for _ in range(3)]
        names = {await r for r in receipts}
        assert len(names) == 3  # three tasks at once: one per worker
        for name in names:
            assert system.actors.lookup(name).is_alive


async def test_single_worker_runs_tasks_in_arrival_order(autojump_clock: Any) -> None:
    log: list[tuple[Any, str, float]] = []
    queue = Queue("log", Log, worker_kwargs={"log": log})
    async with open_system(queue) as system:
        receipts = [await system.submit("log", s) for s in (3.0, 1.0, 2.0)]
        for r in receipts:
            await r
    assert [(s, t) for s, _, t in log] == [(3.0, 0.0), (1.0, 3.0), (2.0, 4.0)]


async def test_a_task_submitted_later_starts_at_once_on_an_idle_worker(autojump_clock: Any) -> None:
    log: list[tuple[Any, str, float]] = []
    queue = Queue("log", Log, workers=2, worker_kwargs={"log": log})
    async with open_system(queue) as system:
        long = await system.submit("log", 100.0)
        await trio.sleep(5)
        short = await system.submit("log", 1.0)
        assert await short != await long
    # The short task never queued behind the busy worker.
    assert log[1] == (1.0, log[1][1], 5.0)
    assert log[1][1] != log[0][1]


async def test_queued_tasks_go_to_the_first_worker_to_become_free(autojump_clock: Any) -> None:
    # No prefetch: the worker busy for 100 s never holds tasks that the other one, free
    # after 10 s, can run.
    log: list[tuple[Any, str, float]] = []
    queue = Queue("log", Log, workers=2, worker_kwargs={"log": log})
    async with open_system(queue) as system:
        receipts = [await system.submit("log", s) for s in (100.0, 10.0, 1.0, 1.0, 1.0)]
        for r in receipts:
            await r
        assert trio.current_time() == pytest.approx(100.0)
    started = {(s, t) for s, _, t in log}
    assert started == {(100.0, 0.0), (10.0, 0.0), (1.0, 10.0), (1.0, 11.0), (1.0, 12.0)}
    slow_worker = log[0][1]
    assert all(name != slow_worker for _, name, _ in log[1:])


async def test_an_idle_worker_holds_no_task(autojump_clock: Any) -> None:
    # The task submitted while worker A is busy is not reserved for A: it waits in the
    # queue (depth 1) and not in any worker.
    log: list[tuple[Any, str, float]] = []
    queue = Queue("log", Log, workers=1, worker_kwargs={"log": log})
    async with open_system(queue) as system:
        await system.submit("log", 10.0)
        await system.submit("log", 10.0)
        await trio.sleep(1)
        stats = system.stats()["log"]
        assert (stats.in_flight, stats.depth) == (1, 1)


async def test_names_lists_the_queues_and_pipelines() -> None:
    async with open_system(Queue("double", Double), Queue("crawl", Crawl)) as system:
        assert sorted(system.names) == ["crawl", "double"]


class WhoAmI(Worker):
    async def handle(self, payload: int) -> list[Any]:
        return [self.task_id, self.attempt]


async def test_a_handler_knows_its_task_id_and_attempt() -> None:
    async with open_system(Queue("who", WhoAmI)) as system:
        receipt = await system.submit("who", 0)
        assert await receipt == [receipt.id, 1]


class Unserializable(Worker):
    async def handle(self, payload: int) -> Any:
        return object()


async def test_a_result_the_converter_cannot_serialize_fails_the_task() -> None:
    async with open_system(Queue("bad", Unserializable)) as system:
        receipt = await system.submit("bad", 1)
        with pytest.raises(TaskFailed) as info:
            await receipt
    assert info.value.error_type == "queueing.PayloadError"
    assert "does not serialize" in info.value.error
    assert info.value.outcome is TaskState.FAILED


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


async def test_tuples_arrive_as_lists_as_they_would_over_json() -> None:
    async with open_system(Queue("any", Echo)) as system:
        assert await (await system.submit("any", {"pair": (1, 2)})) == {"pair": [1, 2]}


async def test_submit_many_returns_receipts_in_order() -> None:
    async with open_system(Queue("double", Double, workers=4)) as system:
        receipts = await system.submit_many("double", range(100))
        assert [await receipt for receipt in receipts] == [2 * i for i in range(100)]
        assert len({receipt.id for receipt in receipts}) == 100


async def test_submit_many_refused_midway_keeps_the_receipts_it_accepted() -> None:
    from queueing import Full, QueueFull

    class Wait(Worker):
        async def handle(self, x: int) -> int:
            await trio.sleep_forever()
            return x

    queue = Queue("wait", Wait, maxsize=3, when_full=Full.REJECT)
    async with open_system(queue, shutdown_timeout=0.1) as system:
        with pytest.raises(QueueFull) as info:
            await system.submit_many("wait", range(10))
        accepted = info.value.accepted  # type: ignore[attr-defined]
        assert len(accepted) == 3
        assert system.stats()["wait"].outstanding == 3


async def test_submit_many_accepts_the_tasks_before_a_bad_payload() -> None:
    from queueing import PayloadError

    async with open_system(Queue("double", Double, workers=2)) as system:
        with pytest.raises(PayloadError, match="double") as info:
            await system.submit_many("double", [1, 2, "three", 4])
        accepted = info.value.accepted  # type: ignore[attr-defined]
        assert [await receipt for receipt in accepted] == [2, 4]
        await system.drain()
        stats = system.stats()["double"]
        assert (stats.submitted, stats.succeeded) == (2, 2)


async def test_submit_many_larger_than_maxsize_waits_for_room_in_order() -> None:
    # More tasks than one chunk and than the queue holds: the rest wait for room.
    async with open_system(Queue("double", Double, workers=3, maxsize=100)) as system:
        receipts = await system.submit_many("double", range(3000))
        assert [await receipt for receipt in receipts] == [2 * i for i in range(3000)]
        assert system.stats()["double"].outstanding == 0


async def test_submit_many_checks_its_options() -> None:
    from queueing import InvalidQueue

    async with open_system(Queue("double", Double)) as system:
        with pytest.raises(InvalidQueue, match="expires must be a number of seconds"):
            await system.submit_many("double", [1], expires=-1)
        assert system.stats()["double"].submitted == 0


async def test_submit_many_is_a_cancellation_point_that_accepts_nothing() -> None:
    async with open_system(Queue("double", Double)) as system:
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.submit_many("double", range(10))
        assert scope.cancelled_caught
        assert system.stats()["double"].submitted == 0


async def test_a_receipt_found_by_id_is_the_same_receipt() -> None:
    async with open_system(Queue("double", Double)) as system:
        receipt = await system.submit("double", 21)
        found = system.receipt(receipt.id)
        assert found == receipt
        assert await found == 42
        assert hash(found) == hash(receipt)
        assert receipt.queue == "double"


async def test_a_worker_stopped_just_after_being_woken_hands_the_task_on(
    autojump_clock: Any,
) -> None:
    # Workers wake one at a time: the worker woken for a task is stopped before it runs,
    # and the next idle worker must take the task instead of leaving it waiting. (Trio
    # shuffles the order in which woken tasks run, so the scenario is played many times.)
    for _ in range(20):
        async with open_system(Queue("double", Double, workers=2)) as system:
            await trio.testing.wait_all_tasks_blocked()  # both workers idle
            receipt = await system.submit("double", 21)  # wakes one worker, not yet run
            first = system.actors.lookup("double.worker-0")
            await first.stop(timeout=1)
            with trio.fail_after(5):
                assert await receipt == 42


async def test_a_cancelled_caller_gets_cancelled_before_its_task_is_accepted() -> None:
    from queueing import Pipeline

    double = Queue("double", Double)
    async with open_system(double, Pipeline("twice", [double])) as system:
        for name in ("double", "twice"):
            with trio.CancelScope() as scope:
                scope.cancel()
                await system.submit(name, 1)
            assert scope.cancelled_caught
        # Nothing was accepted: a receipt the caller never got would be a lost task.
        assert system.stats()["double"].submitted == 0


@pytest.mark.parametrize("name", [5, None, Double, b"double"], ids=repr)
async def test_a_queue_given_as_neither_name_nor_spec_is_refused_naming_what_it_takes(
    name: Any,
) -> None:
    # Before: AttributeError: 'int' object has no attribute 'name'.
    double = Queue("double", Double)
    async with open_system(double, Pipeline("twice", [double])) as system:
        with pytest.raises(InvalidQueue, match=r"name \(a str\) or the Queue or Pipeline"):
            await system.submit(name, 1)
        with pytest.raises(InvalidQueue, match=r"name \(a str\) or the Queue or Pipeline"):
            await system.submit_many(name, [1])
        assert system.stats()["double"].submitted == 0
        assert await (await system.submit(double, 1)) == 2


@pytest.mark.parametrize("task_id", [5, None, b"double:x-1"], ids=repr)
async def test_a_task_id_that_is_not_a_str_is_refused_at_once(task_id: Any) -> None:
    # Before: AttributeError: 'int' object has no attribute 'partition'.
    async with open_system(Queue("double", Double)) as system:
        with pytest.raises(InvalidQueue, match="a task id is a str"):
            system.receipt(task_id)


@pytest.mark.parametrize(
    "payloads",
    ["abc", b"abc", {"a": 1}, None, 5],
    ids=["str", "bytes", "dict", "none", "int"],
)
async def test_submit_many_refuses_what_is_not_a_collection_of_payloads(payloads: Any) -> None:
    # Before: a str was submitted as one task per character ("a", "b", "c"), a dict as one
    # per key; None and 5 raised a bare TypeError.
    async with open_system(Queue("double", Double)) as system:
        with pytest.raises(InvalidQueue, match="submit_many takes an iterable of payloads"):
            await system.submit_many("double", payloads)
        assert system.stats()["double"].submitted == 0

"""Structured logs: the package's lines about a task carry `queue`, `task_id` and
`attempt`; `TaskFields` gives the same fields to what a handler logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from queueing_helpers import outcome_of
from tenacity import stop_after_attempt, wait_fixed

from queueing import Queue, RetryPolicy, TaskFields, Transient, Worker, open_system

app_log = logging.getLogger("tests.app")


class Flaky(Worker):
    """Logs a line at each attempt, and fails the first two with Transient."""

    async def handle(self, word: str) -> str:
        app_log.warning("handling %s", word)
        if self.attempt < 3:
            raise Transient("not yet")
        return word


class Blocking(Worker):
    def handle(self, word: str) -> str:
        app_log.warning("in a thread: %s", word)
        return word


class Collect(logging.Handler):
    """Keeps the records that pass its filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    handler = Collect()
    handler.addFilter(TaskFields())
    loggers = [logging.getLogger("queueing"), app_log]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def fields(record: logging.LogRecord) -> tuple[Any, Any, Any]:
    return (getattr(record, "queue", "-"), getattr(record, "task_id", "-"), record.attempt)


def flaky(stop: int = 3) -> Queue:
    return Queue(
        "flaky", Flaky, retry=RetryPolicy(stop=stop_after_attempt(stop), wait=wait_fixed(1))
    )


async def test_retries_and_dead_letters_are_logged_with_the_tasks_fields(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="queueing")
    async with open_system(flaky(stop=2)) as system:
        receipt = await system.submit("flaky", "word")
        await outcome_of(receipt)
    lines = [r for r in caplog.records if r.name == "queueing" and "task" in r.getMessage()]
    assert [(r.levelname, fields(r)) for r in lines] == [
        ("INFO", ("flaky", receipt.id, 1)),
        ("WARNING", ("flaky", receipt.id, 2)),
    ]
    assert "retrying in 1s" in lines[0].getMessage()
    assert "ended dead-lettered after 2 attempt(s): queueing.Transient: not yet" in (
        lines[1].getMessage()
    )


async def test_a_handlers_own_lines_get_the_tasks_fields(
    autojump_clock: Any, collected: Collect
) -> None:
    async with open_system(flaky()) as system:
        receipt = await system.submit("flaky", "word")
        assert await receipt == "word"
    mine = [r for r in collected.records if r.name == "tests.app"]
    assert [fields(r) for r in mine] == [("flaky", receipt.id, n) for n in (1, 2, 3)]


async def test_a_sync_handlers_lines_get_the_fields_in_its_thread(collected: Collect) -> None:
    async with open_system(Queue("blocking", Blocking)) as system:
        receipt = await system.submit("blocking", "word")
        assert await receipt == "word"
    (line,) = [r for r in collected.records if r.name == "tests.app"]
    assert fields(line) == ("blocking", receipt.id, 1)
    assert line.threadName != "MainThread"


def test_lines_outside_any_task_get_empty_fields(collected: Collect) -> None:
    app_log.warning("no task here")
    (line,) = collected.records
    assert fields(line) == (None, None, None)


async def test_lines_between_tasks_get_empty_fields(
    autojump_clock: Any, collected: Collect
) -> None:
    async with open_system(flaky()) as system:
        await (await system.submit("flaky", "word"))
        app_log.warning("after the task")
    assert fields(collected.records[-1]) == (None, None, None)

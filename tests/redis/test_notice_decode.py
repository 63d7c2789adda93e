"""A notice's outcome is read the same by the reader's quick form as by the general
decode (`task_from_outcome`), whatever the result and the outcome's shape."""

from __future__ import annotations

from typing import Any

import pytest

from queueing._task import ErrorInfo, Task, TaskState
from queueing.brokers.redis._receipts import notice_task
from queueing.brokers.redis._wire import encode_outcome, task_from_outcome

FIELDS = ("id", "queue", "state", "result", "error", "attempts", "deliveries", "finished_at")


def _outcome(result: Any, state: TaskState = TaskState.SUCCEEDED, **extra: Any) -> str:
    task = Task("job:abc-1", "job", None, 1.0)
    task.state = state
    task.result = result
    task.attempts = extra.get("attempts", 1)
    task.deliveries = extra.get("deliveries", 1)
    task.finished_at = extra.get("finished_at", 1764625000.123456)
    task.error = extra.get("error")
    return encode_outcome(task)


RESULTS = [
    0,
    5,
    -7,
    10**30,
    1.5,
    1e300,
    None,
    True,
    "",
    "text",
    "ünïcode ²",
    "12",
    '","error":null,"attempts":9,"deliveries":9,"finished_at":1.0,"stage":0,"fanned":false}',
    [1, "two", {"three": 3}],
    {"error": None, "attempts": 2, "stage": 0, "fanned": False},
]


@pytest.mark.parametrize("result", RESULTS, ids=repr)
def test_plain_success_reads_as_the_general_decode(result: Any) -> None:
    raw = _outcome(result)
    quick, general = notice_task("job:abc-1", raw), task_from_outcome("job:abc-1", raw)
    for name in FIELDS:
        assert getattr(quick, name) == getattr(general, name), name
    assert type(quick.result) is type(general.result)


@pytest.mark.parametrize(
    "raw",
    [
        _outcome(5, attempts=3, deliveries=4, finished_at=2.0),
        _outcome(None, TaskState.FAILED, error=ErrorInfo("ValueError", "bad", "tb")),
        _outcome("x", TaskState.CANCELLED),
        _outcome(5).replace('"stage":0', '"stage":2'),
        _outcome(5).replace(":", ": "),  # another writer's spacing
    ],
)
def test_other_outcomes_read_as_the_general_decode(raw: str) -> None:
    quick, general = notice_task("job:abc-1", raw), task_from_outcome("job:abc-1", raw)
    for name in FIELDS:
        assert getattr(quick, name) == getattr(general, name), name


@pytest.mark.parametrize("raw", ['{"state":"succeeded","result":,"error":null}', "[]", "{"])
def test_unreadable_outcomes_raise_as_the_general_decode(raw: str) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        notice_task("job:abc-1", raw)

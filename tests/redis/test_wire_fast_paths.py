"""The worker's per-task encodings have a fast path for the common case (a plain task's
envelope, a plain success's outcome): each must give exactly what the general path gives,
and leave every other input (a bad one included) to it."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing._task import ErrorInfo, PipelineTask, Task, TaskState
from queueing.brokers.redis import _wire
from queueing.brokers.redis._wire import (
    BadEntry,
    decode_envelope,
    dumps,
    encode_envelope,
    encode_outcome,
    encode_plain,
)

PAYLOADS = [0, -7, 2**62, "", 'héllo "quoted"\n\t\u2028', 1.5, None, True, [1, {"a": None}]]
LIMIT = 100_000


def fields_of(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name, None) for name in Task.__slots__ if name != "__weakref__"}


def general_decode(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], queue: str = "jobs"
) -> Task:
    with monkeypatch.context() as patched:
        patched.setattr(_wire, "_PLAIN_ENVELOPE", lambda raw: None)
        patched.setattr(_wire, "_plain_task", lambda doc, queue: None)
        return decode_envelope(fields, queue, LIMIT)


def scanned_decode(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], queue: str = "jobs"
) -> Task:
    """The plain form read by the JSON scanner (`_plain_task`), not the expression."""
    with monkeypatch.context() as patched:
        patched.setattr(_wire, "_PLAIN_ENVELOPE", lambda raw: None)
        return decode_envelope(fields, queue, LIMIT)


ids = st.text(min_size=1, max_size=30).map(lambda rest: "jobs:" + rest)
plain_payloads = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.text(max_size=30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)
times = st.one_of(
    st.floats(min_value=0.0, max_value=4e9),
    st.sampled_from([0.0, 1e-7, 1.5e16, 1e22, 1_800_000_000.123456]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(ids, plain_payloads, times, st.integers(min_value=0, max_value=10**20))
def test_a_plain_envelope_decodes_alike_by_every_path(
    task_id: str, payload: Any, submitted: float, attempts: int
) -> None:
    task = Task(task_id, "jobs", payload, submitted)
    task.attempts = attempts
    plain = encode_plain(task)
    assert plain is not None
    envelope = plain[0]
    with pytest.MonkeyPatch.context() as monkeypatch:
        want = fields_of(general_decode(monkeypatch, {"env": envelope}))
        assert fields_of(scanned_decode(monkeypatch, {"env": envelope})) == want
    got = decode_envelope({"env": envelope}, "jobs", LIMIT)
    assert type(got) is Task
    assert fields_of(got) == want
    assert type(got.payload) is type(payload) or payload is None


def test_the_plain_form_is_read_without_the_json_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    task = Task("jobs:ab12", "jobs", "a plain t\u00e9xt", time.time())
    envelope = (encode_plain(task) or ("", ""))[0]
    monkeypatch.setattr(_wire, "_plain_task", lambda doc, queue: None)
    monkeypatch.setattr(_wire, "_scan", None)  # not called
    got = decode_envelope({"env": envelope}, "jobs", LIMIT)
    assert fields_of(got) == fields_of(task)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("attempts", [0, 3])
def test_a_plain_envelope_decodes_as_the_general_path_does(
    monkeypatch: pytest.MonkeyPatch, payload: object, attempts: int
) -> None:
    task = Task("jobs:ab12", "jobs", payload, time.time())
    task.attempts = attempts
    envelope, _ = encode_plain(task) or ("", "")
    assert _wire._plain_task(json.loads(envelope), "jobs") is not None  # the fast path
    fast = decode_envelope({"env": envelope}, "jobs", LIMIT)
    assert type(fast) is Task
    assert fields_of(fast) == fields_of(general_decode(monkeypatch, {"env": envelope}))
    assert fast.payload == payload
    assert fast.attempts == attempts


def test_envelopes_in_another_form_take_the_general_path() -> None:
    deadline = Task("jobs:a", "jobs", 1, time.time(), time.time() + 60)
    started = Task("jobs:b", "jobs", 1, time.time())
    started.first_started = 5.0
    tenanted = Task("jobs:c", "jobs", 1, time.time())
    tenanted.tenant = "acme"
    stage = PipelineTask("jobs:d", "jobs", 1, time.time(), run="flow:r", route="flow", stage=1)
    for task in (deadline, started, tenanted, stage):
        doc = json.loads(encode_envelope(task))
        assert _wire._plain_task(doc, "jobs") is None
        decoded = decode_envelope({"env": encode_envelope(task)}, "jobs", LIMIT)
        assert type(decoded) is type(task)
        assert decoded.expires_at == task.expires_at
        assert decoded.first_started == task.first_started
        assert getattr(decoded, "tenant", None) == getattr(task, "tenant", None)


def plain_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "id": "jobs:ab12",
        "queue": "jobs",
        "payload": 1,
        "submitted_at": 1_800_000_000.5,
        "expires_at": None,
        "attempts": 0,
        "first_started": None,
    }
    doc.update(changes)
    return doc


BAD = {
    "id a number": plain_doc(id=12),
    "id empty": plain_doc(id=""),
    "id too long": plain_doc(id="jobs:" + "x" * 500),
    "id of another queue": plain_doc(id="other:ab12"),
    "wrong queue": plain_doc(queue="other"),
    "attempts negative": plain_doc(attempts=-1),
    "attempts a bool": plain_doc(attempts=True),
    "attempts a float": plain_doc(attempts=1.0),
    "submitted_at text": plain_doc(submitted_at="now"),
    "submitted_at infinite": plain_doc(submitted_at=math.inf),
    "submitted_at a bool": plain_doc(submitted_at=True),
    "expires_at a bool": plain_doc(expires_at=True),
    "first_started text": plain_doc(first_started="soon"),
}


@pytest.mark.parametrize("doc", BAD.values(), ids=BAD.keys())
def test_a_bad_envelope_is_refused_with_the_general_paths_reason(
    monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any]
) -> None:
    for raw in (json.dumps(doc), json.dumps(doc, separators=(",", ":"), ensure_ascii=False)):
        with pytest.raises(BadEntry) as general:
            general_decode(monkeypatch, {"env": raw})
        with pytest.raises(BadEntry) as fast:
            decode_envelope({"env": raw}, "jobs", LIMIT)
        assert str(fast.value) == str(general.value)


def test_an_envelope_with_a_field_swapped_for_another_is_not_taken_as_plain() -> None:
    doc = plain_doc()
    del doc["first_started"]
    doc["tenant"] = "acme"  # still eight fields
    assert _wire._plain_task(doc, "jobs") is None
    assert decode_envelope({"env": json.dumps(doc)}, "jobs", LIMIT).tenant == "acme"


def outcome_doc(task: Task) -> str:
    """The outcome as the general path writes it (the document, JSON-encoded)."""
    return dumps(
        {
            "state": task.state.value,
            "result": task.result,
            "error": _wire.error_doc(task.error),
            "attempts": task.attempts,
            "deliveries": task.deliveries,
            "finished_at": task.finished_at,
            "stage": task.stage,
            "fanned": task.fanned,
        }
    )


RESULTS = [0, -5, 2**70, "", 'héllo "quoted"\\\n\u2028', None, True, False, 1.5, [1], {"a": 2}]


@pytest.mark.parametrize("result", RESULTS)
def test_an_outcome_is_written_as_the_general_path_writes_it(result: object) -> None:
    task = Task("jobs:ab12", "jobs", 1, time.time())
    task.attempts, task.deliveries = 2, 1
    task.settle(TaskState.SUCCEEDED, result, None, time.time())
    assert encode_outcome(task) == outcome_doc(task)
    assert json.loads(encode_outcome(task))["result"] == result


def test_outcomes_other_than_a_plain_success_are_written_in_full() -> None:
    failed = Task("jobs:a", "jobs", 1, time.time())
    failed.settle(TaskState.FAILED, None, ErrorInfo("ValueError", "no"), time.time())
    stage = PipelineTask("jobs:b", "jobs", 1, time.time(), run="flow:r", route="flow", stage=2)
    stage.settle(TaskState.SUCCEEDED, 5, None, time.time())
    for task in (failed, stage):
        assert encode_outcome(task) == outcome_doc(task)
    assert json.loads(encode_outcome(stage))["stage"] == 2


@pytest.mark.parametrize("around", [(" ", ""), ("", "\n"), ("\t", " \r\n")])
def test_an_envelope_with_whitespace_around_it_decodes_as_without(around: tuple[str, str]) -> None:
    task = Task("jobs:ab12", "jobs", 7, time.time())
    envelope, _ = encode_plain(task) or ("", "")
    before, after = around
    padded = decode_envelope({"env": before + envelope + after}, "jobs", LIMIT)
    assert fields_of(padded) == fields_of(decode_envelope({"env": envelope}, "jobs", LIMIT))


@pytest.mark.parametrize("tail", ["x", "{}", " 1", "]"])
def test_an_envelope_with_more_after_its_document_is_bad(tail: str) -> None:
    envelope, _ = encode_plain(Task("jobs:ab12", "jobs", 7, time.time())) or ("", "")
    with pytest.raises(BadEntry, match="field 'env' is not valid JSON: Extra data"):
        decode_envelope({"env": envelope + tail}, "jobs", LIMIT)

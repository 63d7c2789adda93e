"""The web examples (examples/web/), each started on loopback with a real worker process on
a private Redis, driven by real HTTP requests: FastAPI on uvicorn (the asyncio client),
the same app on hypercorn's trio worker (the trio client), Flask on waitress (the blocking
client)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_helpers import APPS, EXAMPLES, Service

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

#: Long enough for a worker on a loaded machine; a long-poll returns as soon as it can.
WAIT = 20
MAXSIZE = 12


@pytest.fixture(scope="module", params=list(APPS))
def service(
    request: pytest.FixtureRequest, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp(request.param)
    running = Service(
        request.param,
        redis_server.url,
        logs,
        THUMBNAIL_MAXSIZE=str(MAXSIZE),
        THUMBNAIL_WORKERS="2",
    )
    try:
        yield running
    finally:
        codes = running.close()
    assert codes == (0, 0), running.log()


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base, timeout=WAIT + 10) as client:
        yield client


def job(width: int = 64, work: float = 0.01, image: str = "cats/tom.png") -> dict[str, Any]:
    return {"image": image, "width": width, "work": work}


def test_a_job_is_accepted_at_once_and_its_result_read_by_id(http: httpx.Client) -> None:
    accepted = http.post("/jobs", json=job(width=128))
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]
    assert location == f"/jobs/{accepted.json()['id']}"
    done = http.get(location, params={"wait": WAIT})
    assert done.status_code == 200, done.text
    assert done.json() == {
        "id": accepted.json()["id"],
        "state": "succeeded",
        "result": {"image": "cats/tom.png", "width": 128, "path": "thumbs/128/tom.png"},
    }
    again = http.get(location)  # no wait: the outcome is kept (result_ttl)
    assert again.status_code == 200
    assert again.json()["result"]["width"] == 128


def test_a_pending_job_answers_202_until_it_is_done(http: httpx.Client) -> None:
    location = http.post("/jobs", json=job(work=1.0)).headers["Location"]
    pending = http.get(location, params={"wait": 0.05})
    assert pending.status_code == 202
    assert pending.json()["state"] in {"pending", "running"}
    assert http.get(location, params={"wait": WAIT}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        job(width="wide"),  # type: ignore[arg-type]
        {"image": "x.png"},
        {**job(), "colour": "red"},
        job(image="x" * 5000),  # over max_payload
    ],
    ids=["wrong-type", "missing-field", "extra-field", "too-large"],
)
def test_a_payload_the_queue_refuses_is_422(http: httpx.Client, body: dict[str, Any]) -> None:
    refused = http.post("/jobs", json=body)
    assert refused.status_code == 422
    assert "thumbnails" in refused.json()["error"]


def test_a_body_that_is_not_json_is_422(http: httpx.Client) -> None:
    assert http.post("/jobs", content=b"{not json").status_code == 422


def test_a_failed_job_reports_its_error(http: httpx.Client) -> None:
    location = http.post("/jobs", json=job(width=0)).headers["Location"]
    failed = http.get(location, params={"wait": WAIT})
    assert failed.status_code == 200
    assert failed.json()["state"] == "failed"
    assert "ValueError: width must be positive" in failed.json()["error"]


def test_an_id_no_task_had_is_404(http: httpx.Client) -> None:
    assert http.get("/jobs/thumbnails:no-such-task").status_code == 404
    assert http.delete("/jobs/thumbnails:no-such-task").status_code == 404


def test_a_full_queue_is_503_with_retry_after_and_jobs_can_be_cancelled(
    http: httpx.Client,
) -> None:
    locations = []
    for _ in range(MAXSIZE + 5):
        answer = http.post("/jobs", json=job(work=60.0))  # long: the queue fills up
        if answer.status_code == 503:
            break
        assert answer.status_code == 202
        locations.append(answer.headers["Location"])
    assert answer.status_code == 503, "the queue never filled up"
    assert len(locations) <= MAXSIZE
    assert int(answer.headers["Retry-After"]) >= 1
    assert "is full" in answer.json()["error"]
    for location in locations:  # make room again for the other tests
        cancelled = http.delete(location)
        assert cancelled.status_code == 200
        assert cancelled.json()["cancelled"] is True
    for location in locations:
        assert http.get(location, params={"wait": WAIT}).json()["state"] == "cancelled"


@pytest.mark.parametrize("app", list(APPS))
def test_a_stopped_web_app_loses_no_accepted_job(
    app: str, redis_server: Any, tmp_path: Path
) -> None:
    """SIGTERM right after the submits: every accepted id still reaches its outcome."""
    running = Service(app, redis_server.url, tmp_path, THUMBNAIL_WORKERS="4")
    try:
        with httpx.Client(base_url=running.base, timeout=WAIT) as http:
            ids = [http.post("/jobs", json=job(work=0.2)).json()["id"] for _ in range(20)]
        assert running.stop_web() == 0, running.log()  # the web app stopped cleanly
        sys.path.insert(0, str(EXAMPLES))
        try:
            from tasks import QUEUES
        finally:
            sys.path.remove(str(EXAMPLES))
        import queueing

        with queueing.connect_sync(running.broker, *QUEUES) as client:
            results = [client.receipt(task_id).result(timeout=WAIT) for task_id in ids]
        assert [made.width for made in results] == [64] * 20
    finally:
        running.close()

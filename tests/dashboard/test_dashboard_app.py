"""The web dashboard's HTTP side, without a browser or a socket (httpx's ASGI transport):
the JSON it serves, the token its actions need, what it refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from dash_helpers import naps, refusals

from queueing import open_system
from queueing.dashboard import Sampler, dashboard_app

TOKEN = "a-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def dashboard(*, loopback: bool = True) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A system with `naps` and `refusals` (two refused orders, dead letters), its app, and
    an HTTP client of the app; yields (client, system)."""
    async with open_system(naps(), refusals()) as system:
        for order in (1, 2):
            await system.submit("refusals", order)
        await system.drain()
        sampler = Sampler(system)
        await sampler.sample()
        app = dashboard_app(system, sampler, token=TOKEN, loopback=loopback)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            yield c, system


async def test_the_page_is_served_with_its_script_inline() -> None:
    async with dashboard() as (client, _):
        page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>queueing dashboard</title>" in page.text
    assert "async function refresh()" in page.text  # the script is in the page
    assert "{{" not in page.text  # every asset was put in


async def test_the_snapshot_lists_the_queues_and_the_failures() -> None:
    async with dashboard() as (client, _):
        answer = await client.get("/api/snapshot")
    assert answer.status_code == 200
    doc = answer.json()
    queues = {q["name"]: q for q in doc["queues"]}
    assert set(queues) == {"naps", "refusals"}
    assert queues["refusals"]["dead_letters"] == 2
    assert {f["message"] for f in doc["failures"]} == {
        "order 1 is refused",
        "order 2 is refused",
    }


async def test_history_has_a_point_per_reading() -> None:
    async with dashboard() as (client, _):
        points = (await client.get("/api/history")).json()
    assert len(points) == 1
    assert set(points[0]["queues"]) == {"naps", "refusals"}


async def test_a_task_is_found_by_id() -> None:
    async with dashboard() as (client, system):
        receipt = await system.submit("naps", 0.01)
        await receipt
        found = await client.get(f"/api/tasks/{receipt.id}")
        (letter,) = await system.dead_letters("refusals", 1)
        failed = await client.get(f"/api/tasks/{letter.id}")
        unknown = await client.get("/api/tasks/naps:nope")
    assert found.status_code == 200
    assert found.json()["state"] == "succeeded"
    assert found.json()["result"] == 0.01
    assert failed.json()["state"] == "failed"
    assert failed.json()["error"]["type"] == "ValueError"
    assert "raise ValueError" in failed.json()["error"]["traceback"]
    assert unknown.status_code == 404
    assert "naps:nope" in unknown.json()["error"]


async def test_dead_letters_of_a_queue_and_an_unknown_queue() -> None:
    async with dashboard() as (client, _):
        letters = await client.get("/api/queues/refusals/dead-letters", params={"limit": 1})
        unknown = await client.get("/api/queues/nope/dead-letters")
        too_many = await client.get("/api/queues/refusals/dead-letters", params={"limit": 10**6})
    assert letters.status_code == 200
    (letter,) = letters.json()
    assert letter["payload"] == 2  # the newest
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]
    assert too_many.status_code == 400


@pytest.mark.parametrize("action", ["requeue", "purge"])
async def test_an_action_without_the_token_is_refused_and_changes_nothing(action: str) -> None:
    async with dashboard() as (client, system):
        url = f"/api/queues/refusals/dead-letters/{action}"
        missing = await client.post(url, json={})
        wrong = await client.post(url, json={}, headers={"Authorization": "Bearer " + "x" * 32})
        kept = len(await system.dead_letters("refusals", 10))
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["error"]
    assert wrong.status_code == 403
    assert kept == 2


async def test_requeue_with_the_token_submits_the_letters_again() -> None:
    async with dashboard() as (client, system):
        (first, second) = await system.dead_letters("refusals", 10)
        answer = await client.post(
            "/api/queues/refusals/dead-letters/requeue", json={"ids": [first.id]}, headers=AUTH
        )
        await system.drain()
        letters = (await client.get("/api/queues/refusals/dead-letters")).json()
    assert answer.status_code == 200, answer.text
    (new_id,) = answer.json()["requeued"]
    assert new_id not in (first.id, second.id)
    # It ran again, and was refused again: a new dead letter, the old one gone.
    assert [(x["id"], x["payload"]) for x in letters] == [(second.id, 2), (new_id, 1)]


async def test_purge_with_the_token_empties_the_queues_dead_letters() -> None:
    async with dashboard() as (client, system):
        answer = await client.post("/api/queues/refusals/dead-letters/purge", headers=AUTH)
        left = await system.dead_letters("refusals", 10)
        snapshot = (await client.get("/api/snapshot")).json()
    assert answer.json() == {"purged": 2}
    assert left == []
    assert {q["name"]: q["dead_letters"] for q in snapshot["queues"]}["refusals"] == 0


async def test_a_malformed_requeue_body_is_refused() -> None:
    async with dashboard() as (client, system):
        answer = await client.post(
            "/api/queues/refusals/dead-letters/requeue", json={"ids": "all"}, headers=AUTH
        )
        kept = len(await system.dead_letters("refusals", 10))
    assert answer.status_code == 400
    assert "ids" in answer.json()["error"]
    assert kept == 2


async def test_a_requeue_of_an_id_that_is_no_dead_letter_is_not_found() -> None:
    async with dashboard() as (client, system):
        (first, _) = await system.dead_letters("refusals", 10)
        answer = await client.post(
            "/api/queues/refusals/dead-letters/requeue",
            json={"ids": [first.id, "no-such-id"]},
            headers=AUTH,
        )
        kept = len(await system.dead_letters("refusals", 10))
    assert answer.status_code == 404
    assert "'no-such-id'" in answer.json()["error"]
    assert "nothing was requeued" in answer.json()["error"]
    assert kept == 2


async def test_on_loopback_a_request_for_another_host_name_is_refused() -> None:
    async with dashboard() as (client, _):
        rebound = await client.get("/api/snapshot", headers={"Host": "evil.example:8000"})
        page = await client.get("/", headers={"Host": "evil.example"})
        ipv6 = await client.get("/api/snapshot", headers={"Host": "[::1]:8000"})
        named = await client.get("/api/snapshot", headers={"Host": "localhost:8000"})
    assert (rebound.status_code, page.status_code) == (421, 421)
    assert (ipv6.status_code, named.status_code) == (200, 200)


async def test_beyond_loopback_every_read_needs_the_token() -> None:
    async with dashboard(loopback=False) as (client, _):
        headers = {"Host": "queues.example.org"}
        anonymous = await client.get("/api/snapshot", headers=headers)
        allowed = await client.get("/api/snapshot", headers={**headers, **AUTH})
        page = await client.get("/", headers=headers)
    assert anonymous.status_code == 401
    assert allowed.status_code == 200
    assert page.status_code == 200  # the page itself holds no data

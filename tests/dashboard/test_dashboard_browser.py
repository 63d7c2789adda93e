"""The web dashboard in a real browser (headless Chromium, driven by playwright): the page
loads, shows the queues and a failed task, and a requeue from the page works.

Marked `browser`: not in the default run (`nox -s dashboard_browser`, or `pytest -m
browser` with playwright and Chromium installed). Screenshots go to pytest's temporary
folder, or to the folder in QUEUEING_SCREENSHOTS (`docs/images` refreshes the docs' ones).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browsers import chromium
from dash_helpers import base_url, example_serving

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("QUEUEING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 900}
#: Milliseconds the page gets to show what a test waits for (it polls every second).
SHOWS = 30_000
#: Milliseconds of traffic on the charts before the screenshot (longer for the docs').
CHARTED = 20_000 if os.environ.get("QUEUEING_SCREENSHOTS") else 3_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with chromium(sync_api, CHROMIUM, CHROMIUM_ARGS) as browser:
        yield browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert not errors, f"the page's script failed: {errors}"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = os.environ.get("QUEUEING_SCREENSHOTS")
    return Path(folder) if folder else tmp_path


def test_the_page_shows_the_queues_and_a_failure_and_requeues_it(page: Any, shots: Path) -> None:
    with example_serving("--seconds", "180") as (_, link):
        page.goto(link)
        assert "#token=" not in page.url  # taken off the address bar once read
        page.wait_for_selector('#queues tr[data-queue="thumbnails"]', timeout=SHOWS)
        page.wait_for_selector('#queues tr[data-queue="payments"]')
        page.wait_for_function(
            "() => parseFloat(document.querySelector("
            "'#queues tr[data-queue=\"thumbnails\"] .rate-out').textContent) > 0",
            timeout=SHOWS,
        )
        page.wait_for_selector(".failure", timeout=SHOWS)
        page.wait_for_timeout(CHARTED)  # some points on the charts, for the screenshot
        failure = page.locator(".failure").first
        assert "PaymentDeclined" in failure.inner_text()
        failure.locator("summary").click()
        traceback = page.inner_text(".failure details[open] pre.traceback")
        assert "raise PaymentDeclined" in traceback
        page.wait_for_timeout(1500)  # a refresh: what the user opened stays open
        assert page.inner_text(".failure details[open] pre.traceback") == traceback
        page.screenshot(path=shots / "dashboard.png", full_page=True)

        assert page.input_value("#dl-queue") == "payments"  # the queue with dead letters
        page.wait_for_selector("#dead-letters tr[data-letter-id]", timeout=SHOWS)
        old_id = page.locator("#dead-letters tr[data-letter-id]").first.get_attribute(
            "data-letter-id"
        )
        page.locator(f'#dead-letters tr[data-letter-id="{old_id}"] button.requeue').click()
        page.wait_for_selector("#dl-message.ok", timeout=SHOWS)
        message = page.inner_text("#dl-message")
        match = re.search(r"requeued 1 task\(s\): (\S+)", message)
        assert match, message
        new_id = match[1]
        assert new_id != old_id
        page.wait_for_selector(f'#dead-letters tr[data-letter-id="{old_id}"]', state="detached")

        # The second try goes through: look the new task up until it has its outcome.
        deadline = time.monotonic() + SHOWS / 1000
        page.fill("#task-id", new_id)
        while "succeeded" not in page.inner_text("#task") and time.monotonic() < deadline:
            page.click("#lookup button")
            page.wait_for_timeout(300)
        assert "succeeded" in page.inner_text("#task")
        assert re.search(r"order \d+ charged", page.inner_text("#task"))
        page.locator("#task").scroll_into_view_if_needed()
        page.screenshot(path=shots / "dashboard-task.png")


def test_without_the_token_the_page_reads_but_its_actions_are_refused(page: Any) -> None:
    with example_serving("--seconds", "120") as (_, link):
        page.goto(base_url(link) + "/")
        page.wait_for_selector('#queues tr[data-queue="payments"]', timeout=SHOWS)
        page.wait_for_selector("#dead-letters tr[data-letter-id]", timeout=SHOWS)
        row = page.locator("#dead-letters tr[data-letter-id]").first
        letter_id = row.get_attribute("data-letter-id")
        page.locator(f'#dead-letters tr[data-letter-id="{letter_id}"] button.requeue').click()
        page.wait_for_selector("#dl-message.bad", timeout=SHOWS)
        assert "needs the dashboard's token" in page.inner_text("#dl-message")
        assert page.is_visible("#token-form")
        assert page.query_selector(f'#dead-letters tr[data-letter-id="{letter_id}"]')

"""The built documentation site, as a reader sees it in a real browser (headless Chromium).

Marked `docs`: not in the default run (it builds the site and needs Chromium and
playwright): `nox -s docs_browser`, or `pytest -m docs` with both installed. Screenshots of
the pages at 1280 px go to pytest's temporary folder, for a look."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browsers import chromium

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
#: The width readers trip over most (a laptop), and a height for the first screen.
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM = os.environ.get("QUEUEING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site, built with `mkdocs build --strict`, served on 127.0.0.1; yields its URL."""
    built = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(built)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    handler = functools.partial(_Quiet, directory=str(built))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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
    yield page
    page.close()


def pages_of(site_dir_url: str, page: Any) -> list[str]:
    """Every page of the site, from its navigation."""
    page.goto(site_dir_url + "/")
    links = page.eval_on_selector_all(
        "nav.md-nav--primary a.md-nav__link[href]", "els => els.map(e => e.href)"
    )
    return sorted({link.split("#")[0] for link in links if link.startswith(site_dir_url)})


CUT_OFF = """() => [...document.querySelectorAll('pre > code')]
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.split('\\n').reduce((a, b) => a.length >= b.length ? a : b))"""


def test_the_home_page_opens_on_the_queues(site: str, page: Any, tmp_path: Path) -> None:
    page.goto(site + "/")
    page.screenshot(path=tmp_path / "home.png", full_page=True)
    assert "processing queues" in page.inner_text("h1")
    first_code = page.inner_text(".md-content pre >> nth=1")  # after the install commands
    assert "Queue(" in first_code
    assert "run_system(ingest, main=main)" in first_code
    headings = page.eval_on_selector_all(".md-content h2", "els => els.map(e => e.textContent)")
    assert not any("actor" in h.lower() for h in headings[:2]), headings


def test_no_code_block_is_cut_off_at_1280_px(site: str, page: Any, tmp_path: Path) -> None:
    urls = pages_of(site, page)
    assert len(urls) > 15
    cut: dict[str, list[str]] = {}
    for url in urls:
        page.goto(url)
        if lines := page.evaluate(CUT_OFF):
            cut[url.removeprefix(site)] = lines
    page.goto(site + "/concepts/receipts/")
    page.screenshot(path=tmp_path / "receipts.png", full_page=True)
    assert cut == {}, "code wider than the page (the longest line of each block):\n" + "\n".join(
        f"{url}: {line!r}" for url, lines in cut.items() for line in lines
    )


def test_the_lifecycle_diagram_is_whole(site: str, page: Any) -> None:
    page.goto(site + "/concepts/receipts/")
    diagram = page.locator("pre >> text=SCHEDULED").first
    box = diagram.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= VIEWPORT["width"]
    assert "DEAD_LETTERED" in diagram.inner_text()


def test_the_api_reference_has_every_task_state(site: str, page: Any) -> None:
    page.goto(site + "/reference/queueing/")
    for state in ("PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"):
        assert page.locator(f"[id='queueing.TaskState.{state}']").count() == 1, state
    # Signatures are formatted (by ruff or black): a long one spans several lines.
    signature = page.inner_text("[id='queueing.open_system'] + .doc-signature")
    assert signature.count("\n") >= 3, signature
    # An attrs class shows its fields with their types and defaults (griffe-fieldz).
    row = page.locator("[id='queueing.Queue'] + div tr", has_text="how many workers run")
    cells = " ".join(row.inner_text().split())
    assert cells == (
        "workers int how many workers run (each handles one task at a time); at most 10,000. 1"
    )

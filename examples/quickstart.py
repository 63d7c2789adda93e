"""Quickstart: a document-thumbnail pipeline.

    pip install -e ".[examples]"      # Pillow and rich
    python examples/quickstart.py

Three queues chained into one pipeline, each with its own pool of supervised workers:

    render     draw a page of a document with Pillow and save it       (4 workers, threads)
    thumbnail  shrink the page to a thumbnail (fails now and then)     (4 workers, threads)
    record     write one row per thumbnail into a SQLite table         (1 worker: one writer)

The program submits every page to the pipeline, gets a receipt back at once for each one,
shows a progress bar that follows the pages through the stages (each handler reports its
progress with `self.progress(...)`; each receipt is followed with `receipt.watch()`), and
ends with what the queues report.
One thumbnail attempt in ten fails with `Transient` (a storage hiccup we inject); the
thumbnail queue's `RetryPolicy` tries it again after a short jittered backoff, so every
page still ends up in the database. Files go to examples/out/quickstart/ (git-ignored), or
to the folder named by the QUICKSTART_OUT environment variable.
Docs: docs/tutorial.md walks through this file.
"""

import os
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import attrs
import trio
from tenacity import stop_after_attempt, wait_exponential, wait_random

from queueing import (
    Pipeline,
    Queue,
    QueueSystem,
    Receipt,
    RetryPolicy,
    TaskFailed,
    Transient,
    Worker,
    run_system,
)

try:
    from PIL import Image, ImageDraw, ImageFont
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - the message is the point
    sys.exit(
        f"This example needs Pillow and rich ({exc.name} is not installed).\n"
        'Install them with the examples extra:  pip install -e ".[examples]"'
    )

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("QUICKSTART_OUT") or ROOT / "examples" / "out" / "quickstart")
DATABASE = OUT / "thumbnails.sqlite3"
DOCUMENTS = {"annual-report": 16, "field-notes": 12, "invoice-batch": 10, "user-guide": 10}
FAULT_RATE = 0.10  # the share of first thumbnail attempts that fail on purpose


def _load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1
    except TypeError:
        return ImageFont.load_default()


FONT = _load_font(40)


# -- payloads: plain attrs classes, checked and serialized by the system's converter -------


@attrs.frozen
class Page:
    document: str
    number: int


@attrs.frozen
class RenderedPage:
    document: str
    number: int
    path: str


@attrs.frozen
class Thumb:
    document: str
    number: int
    path: str
    width: int
    height: int
    size: int  # bytes on disk


def shown(path: Path) -> Path:
    """A path as the summary prints it: relative to the working directory when inside it
    (run from the repository: examples/out/...), else in full."""
    here = Path.cwd().resolve()
    path = path.resolve()
    return path.relative_to(here) if path.is_relative_to(here) else path


def injects_fault(document: str, number: int) -> bool:
    """Whether this page's first thumbnail attempt fails (seeded, so runs are repeatable)."""
    return random.Random(f"flaky {document}/{number}").random() < FAULT_RATE


# -- workers: one class per stage; `handle` takes one payload and returns the next --------


class Render(Worker):
    """Draws a page. A plain `def handle` runs in a thread: Pillow work blocks."""

    def handle(self, page: Page) -> RenderedPage:
        hue = sum(map(ord, page.document)) % 360
        image = Image.new("RGB", (850, 1100), "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, 850, 130), fill=f"hsl({hue}, 60%, 40%)")
        draw.text((50, 40), page.document.replace("-", " ").title(), fill="white", font=FONT)
        rng = random.Random(f"{page.document}/{page.number}")
        y = 180
        while y < 1000:
            draw.rectangle((50, y, 50 + rng.randrange(300, 750), y + 14), fill="#bbbbbb")
            y += 32 if rng.random() > 0.15 else 72
            self.progress(min(y, 1000) - 180, 1000 - 180, note="drawing")  # cheap: coalesced
        draw.text((400, 1040), str(page.number), fill="#444444", font=FONT)
        path = OUT / "pages" / f"{page.document}-{page.number:02d}.png"
        image.save(path, compress_level=1)
        return RenderedPage(page.document, page.number, str(path))


class Thumbnail(Worker):
    """Shrinks a page; the first attempt of about one page in ten fails on purpose."""

    def handle(self, page: RenderedPage) -> Thumb:
        if self.attempt == 1 and injects_fault(page.document, page.number):
            raise Transient(f"thumbnail store busy for {page.document} p{page.number}")
        with Image.open(page.path) as image:
            image.thumbnail((160, 160))
            self.progress(1, 2, note="resized")
            path = OUT / "thumbs" / Path(page.path).with_suffix(".jpg").name
            image.save(path, quality=85)
            width, height = image.size
        return Thumb(page.document, page.number, str(path), width, height, path.stat().st_size)


class Record(Worker):
    """Writes one row per thumbnail. `on_start` opens the connection: a crash there is
    supervised (the worker is restarted) like any other worker crash."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.db: sqlite3.Connection | None = None

    async def on_start(self) -> None:
        # One worker, so one thread at a time uses the connection.
        self.db = sqlite3.connect(self.database, check_same_thread=False)

    async def on_stop(self) -> None:
        if self.db is not None:
            self.db.close()

    def handle(self, thumb: Thumb) -> int:
        assert self.db is not None  # on_start ran
        with self.db:  # a transaction per row
            cursor = self.db.execute(
                "INSERT INTO thumbnails (document, page, path, width, height, bytes)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (thumb.document, thumb.number, thumb.path, thumb.width, thumb.height, thumb.size),
            )
        return cursor.lastrowid or 0


# -- queues and the pipeline that chains them ---------------------------------------------

render = Queue("render", Render, workers=4, maxsize=16)
thumbnail = Queue(
    "thumbnail",
    Thumbnail,
    workers=4,
    maxsize=16,
    retry=RetryPolicy(
        stop=stop_after_attempt(3),
        # 0.05 s, then 0.1 s..., plus up to 0.05 s of random jitter so retries spread out
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
    ),
    timeout=10.0,
)
record = Queue("record", Record, workers=1, worker_args=(str(DATABASE),))
thumbnails = Pipeline("thumbnails", [render, thumbnail, record])


# -- the program ------------------------------------------------------------------------


async def main(system: QueueSystem) -> bool:
    console = Console(highlight=False)
    pages = [Page(doc, n) for doc, count in DOCUMENTS.items() for n in range(1, count + 1)]
    console.print(
        f"Submitting {len(pages)} pages of {len(DOCUMENTS)} documents to the pipeline "
        "render -> thumbnail -> record"
    )
    started = time.perf_counter()
    failures: list[TaskFailed] = []

    stages = [stage.name for stage in thumbnails.stages]
    done: dict[str, float] = {}  # per page: how far through the pipeline (0 to 1)
    updates = 0  # statuses with progress that the receipts saw on the way

    async def wait_for(receipt: Receipt) -> None:
        # Each status says where the page is: the stage that reported last, and how far
        # that stage got. The last status carries the outcome.
        nonlocal updates
        async for status in receipt.watch():
            report = status.progress
            if report is not None and report.stage is not None and report.fraction is not None:
                done[receipt.id] = (stages.index(report.stage) + report.fraction) / len(stages)
                updates += 1
            if status.state.final:
                done[receipt.id] = 1.0
            progress.update(bar, completed=sum(done.values()))
        try:
            await receipt.result(timeout=30)  # the record stage's result: the row id
        except TaskFailed as exc:
            failures.append(exc)

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("thumbnails", total=len(pages))
        async with trio.open_nursery() as nursery:
            for page in pages:
                # Returns as soon as the task is accepted (it waits only while the first
                # stage holds `maxsize` tasks: backpressure). The receipt is the reference.
                receipt = await system.submit("thumbnails", page)
                if page == pages[0]:
                    progress.console.print(f"Accepted at once; first receipt id: {receipt.id}")
                nursery.start_soon(wait_for, receipt)
    elapsed = time.perf_counter() - started

    stats = system.stats()
    table = Table(title="What the queues report (system.stats())")
    for column in ("queue", "workers", "submitted", "succeeded", "retried", "failed", "p50 ms"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in stats.values():
        p50 = f"{s.p50 * 1000:.1f}" if s.p50 is not None else "-"
        table.add_row(
            s.name,
            *map(str, (s.workers, s.submitted, s.succeeded, s.retried, s.failed + s.dead_lettered)),
            p50,
        )
    console.print(table)

    with sqlite3.connect(DATABASE) as db:
        rows, thumb_bytes = db.execute("SELECT count(*), sum(bytes) FROM thumbnails").fetchone()
    db.close()
    page_bytes = sum(p.stat().st_size for p in (OUT / "pages").iterdir())
    injected = sum(injects_fault(p.document, p.number) for p in pages)
    succeeded = len(pages) - len(failures)

    console.print(f"Pages submitted:     {len(pages)}")
    console.print(f"Pipeline succeeded:  {succeeded}")
    console.print(f"Pipeline failed:     {len(failures)}")
    console.print(f"Rows in SQLite:      {rows}  ({shown(DATABASE)})")
    console.print(
        f"Faults injected:     {injected}  (Transient errors on first thumbnail attempts)"
    )
    console.print(
        f"Retries:             {stats['thumbnail'].retried}  (each after a jittered backoff)"
    )
    console.print(
        f"Thumbnails:          {(thumb_bytes or 0) / 1024:.0f} KiB, "
        f"from {page_bytes / 1024:.0f} KiB of pages"
    )
    console.print(f"Progress updates:    {updates}  (from the handlers' self.progress())")
    console.print(f"Time:                {elapsed:.2f} s")
    for failure in failures:
        console.print("[red]failed:[/red]", escape(str(failure)), soft_wrap=True)
    console.print(f"Thumbnails are in {shown(OUT / 'thumbs')}/; docs/tutorial.md walks")
    console.print("through this program step by step.")
    return not failures and rows == len(pages)


def prepare() -> None:
    """A fresh output directory and an empty table, so the counts are this run's."""
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "pages").mkdir(parents=True)
    (OUT / "thumbs").mkdir()
    with sqlite3.connect(DATABASE) as db:
        db.execute(
            "CREATE TABLE thumbnails (id INTEGER PRIMARY KEY, document TEXT, page INTEGER,"
            " path TEXT, width INTEGER, height INTEGER, bytes INTEGER)"
        )
    db.close()


if __name__ == "__main__":
    prepare()
    ok = run_system(thumbnails, main=main)  # a pipeline brings its stages
    sys.exit(0 if ok else 1)

"""The queue the web examples submit to, and its worker: shared by the web apps (which
only submit, through `queueing.connect()` or `queueing.connect_sync()`) and the worker
processes (`queueing worker tasks --broker redis://...`, run from this folder).

A web app passes these `Queue` objects to `connect()`: payloads are then checked against
the handler's type in the web process (a bad one is a 422 there, never a dead letter),
and a full queue is refused at once (`Overflow.REJECT`: a 503, never a request held open).

Sizes come from the environment so the tests and bench/web_bench.py can shrink or grow
them: the web app and the workers must agree, so set them for both.
"""

from __future__ import annotations

import os

import attrs
import trio

from queueing import Overflow, Queue, Worker


@attrs.frozen
class Thumbnail:
    """A job: make a thumbnail of the image at `image` (a URL or a storage key: a
    reference, never the image's bytes, which `max_payload` would refuse)."""

    image: str
    width: int
    work: float = 0.05  # seconds the (simulated) work takes: the tests and bench set it


@attrs.frozen
class Made:
    image: str
    width: int
    path: str


class MakeThumbnail(Worker[Thumbnail, Made]):
    async def handle(self, job: Thumbnail) -> Made:
        if job.width <= 0:
            raise ValueError(f"width must be positive, got {job.width}")
        await trio.sleep(job.work)  # the real work: fetch, resize, store
        return Made(job.image, job.width, f"thumbs/{job.width}/{job.image.rsplit('/', 1)[-1]}")


thumbnails = Queue(
    "thumbnails",
    MakeThumbnail,
    workers=int(os.environ.get("THUMBNAIL_WORKERS", "8")),
    maxsize=int(os.environ.get("THUMBNAIL_MAXSIZE", "1000")),
    when_full=Overflow.REJECT,  # request handlers answer 503 at once, never wait
    max_payload=4096,
    timeout=30.0,
    result_ttl=600.0,
)

#: What `queueing worker tasks` serves, and what the web apps pass to connect().
QUEUES = [thumbnails]

"""Huey's SQLite storage: a `job` task on the bench's file (`$BENCH_SQLITE_PATH`), run by
`huey_consumer huey_tasks.huey -w 8 -k thread`. Huey's defaults otherwise: WAL journal,
SQLite's default `synchronous` (FULL)."""

from __future__ import annotations

import os

from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.environ["BENCH_SQLITE_PATH"])


@huey.task()
def job(x: int) -> int:
    return x

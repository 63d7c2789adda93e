"""Helpers for the SQLite tests (import as `sqlite_helpers`): worker and client processes
on a file, and plain reads of the file (the way another program would look at it)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def env_with(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with this directory importable (and `extra`)."""
    environ = {**os.environ, **(extra or {})}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), environ.get("PYTHONPATH")]))
    return environ


def start_worker(
    url: str, target: str, logs: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`queueing worker TARGET --broker URL ARGS` in a process of its own; its output goes
    to a file in `logs`."""
    output = (logs / f"worker-{secrets.token_hex(3)}.log").open("wb")
    with output:
        return subprocess.Popen(
            [sys.executable, "-m", "queueing", "worker", target, "--broker", url, *args],
            cwd=HERE,
            env=env_with(env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def start_client(
    url: str, log: Path, count: int, chunk: int, logs: Path
) -> subprocess.Popen[bytes]:
    """`sq_client.py` (see there) in a process of its own."""
    output = (logs / f"client-{secrets.token_hex(3)}.log").open("wb")
    with output:
        return subprocess.Popen(
            [sys.executable, str(HERE / "sq_client.py"), url, str(log), str(count), str(chunk)],
            cwd=HERE,
            env=env_with(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL whatever still runs after `timeout`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain read-only connection to the file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with reading(path) as conn:
        return conn.execute(sql, args).fetchall()


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    """Poll `predicate` until it is true (a file another process writes has no event)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {predicate}")
        time.sleep(every)


def logged(path: Path) -> dict[str, int]:
    """What `sq_client.py` logged: task id -> number (whole lines only: the client may be
    writing the last one as we read, or have been killed mid-line)."""
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")[:-1]  # the part after the last newline: not whole
    pairs = (line.split() for line in lines if line.strip())
    return {task_id: int(number) for task_id, number in pairs}


def runs_by_process(directory: Path) -> dict[int, list[str]]:
    """Task ids each worker process ran (see `sq_tasks._record`)."""
    return {
        int(path.stem): path.read_text().split()
        for path in directory.glob("*.log")
        if path.stat().st_size
    }


def downgrade_to_v3(conn: sqlite3.Connection) -> None:
    """Make a file of this version what version 3 made (before tenants): its tasks stay."""
    conn.execute("DROP INDEX tasks_flow")
    conn.execute("DROP INDEX flows_next")
    for table in ("flows", "levels", "tenants"):
        conn.execute(f"DROP TABLE {table}")
    for table, column in (
        ("tasks", "tenant"),
        ("tasks", "fseq"),
        ("tasks", "counted"),
        ("queues", "fair"),
        ("queues", "seq"),
    ):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("PRAGMA user_version=3")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a file or a directory) that this process cannot write, even as root
    (`chattr +i` there; `chmod` otherwise), for the block."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"as root only `chattr +i` makes a file read-only; it failed: {made.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)

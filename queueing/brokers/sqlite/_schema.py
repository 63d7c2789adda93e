"""The database file: opened in WAL mode, its schema versioned and migrated on open.

The schema version is SQLite's `PRAGMA user_version`. Opening a file runs, in one write
transaction, every migration from its version to `SCHEMA_VERSION`; a file whose version is
newer than this code knows is refused (an older queueing must not write to it).

Tables:

- `queues`: one row per queue: its limits, its outstanding count (what `maxsize` is checked
  against, in the same transaction as every accept and outcome), outcome counters, and
  whether a serving process declared it;
- `tasks`: every task (and every pipeline run's own record) until its outcome's TTL runs
  out. `avail_at` is when a waiting task may be claimed: its acceptance time (ready) or
  its due time (scheduled); `lease_until` is when a running task's lease ends; both NULL
  once it has an outcome. A claim takes expired leases first (a dead process's tasks are
  older than the queue behind them), then the oldest available tasks;
- `dead_letters`: each queue's dead letters, oldest first, bounded;
- `runs` and `run_steps`: pipeline runs in flight, and the steps already counted (so that
  a stage task run twice repeats them harmlessly);
- `processes`: the processes using the file, with a heartbeat (for `status`);
- `meta`: counters: `settled` orders outcomes for `wait_settled`; and one row per pipeline
  a serving process declared (`pipeline:NAME`, its stage queues as JSON text), for
  clients that know no pipeline (`queueing submit PIPELINE`); and one row per queue's
  payload type (`payload:NAME`, its description as JSON text, `queueing/_describe.py`),
  the latest a serving process published.

A task's row also keeps its latest progress (JSON, replaced at each publish) and the trace
context it carries (JSON, written once at accept), since version 2; and its priority
(`submit(priority=)`), since version 3: a claim takes available tasks of higher priority
first (the partial index `tasks_ranked` holds only rows of a priority above the default, so
a queue that uses none writes no more index entries than before).

Since version 4, fair share between tenants (`submit(tenant=)`, see `_fair.py`): a task's
row keeps its `tenant` ('' for the queue's default one), and a queue switches to fair
mode (`queues.fair`) at its first task with a tenant; a queue that never had one is read
and written as before (its rows only have the new columns' defaults). In fair mode a
ready task waits in its flow (`fseq`, its place there; `avail_at` NULL), and:

- `flows`: one row per flow with ready tasks (queue, tenant, priority): its start tag `s`,
  `seq` (the order tags were set, for ties), its number of ready tasks, and whether it is
  set aside (its tenant at `tenant_concurrency`); the index `flows_next` gives the next
  flow to take from at once, whatever the number of tenants;
- `levels`: the virtual time `v` of each (queue, priority);
- `tenants`: per tenant of a queue, its outstanding tasks (`tenant_maxsize`), its
  running ones (`tenant_concurrency`) and whether its flows are set aside; a task's
  `counted` says in which of the two it counts;
- the index `tasks_flow` holds only tasks waiting in a flow, by (queue, tenant, priority,
  fseq): the head of a flow is one probe away.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from ..._exceptions import BrokerError
from ._settings import Settings

#: The schema this code reads and writes.
SCHEMA_VERSION = 4

_V1 = """
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    maxsize INTEGER NOT NULL,
    max_payload INTEGER NOT NULL,
    result_ttl REAL NOT NULL,
    served_at REAL,
    outstanding INTEGER NOT NULL DEFAULT 0,
    submitted INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    avail_at REAL,
    lease_until REAL,
    owner TEXT,
    payload TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    first_started REAL,
    result TEXT,
    error TEXT,
    finished_at REAL,
    keep_until REAL,
    settled INTEGER,
    run TEXT,
    route TEXT,
    stage INTEGER NOT NULL DEFAULT 0,
    path TEXT,
    fanned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_available ON tasks (queue, avail_at) WHERE avail_at IS NOT NULL;
CREATE INDEX tasks_leased ON tasks (queue, lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX tasks_settled ON tasks (settled) WHERE settled IS NOT NULL;
CREATE INDEX tasks_kept ON tasks (keep_until) WHERE keep_until IS NOT NULL;
CREATE TABLE dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    letter TEXT NOT NULL
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, seq);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    pending INTEGER NOT NULL,
    fanned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE run_steps (
    run TEXT NOT NULL,
    step TEXT NOT NULL,
    result TEXT,
    PRIMARY KEY (run, step)
) WITHOUT ROWID;
CREATE TABLE processes (
    owner TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    queues TEXT NOT NULL,
    workers INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('settled', 0);
"""

# Version 2: a task's latest progress (`Worker.progress`) and the trace context it carries.
_V2 = """
ALTER TABLE tasks ADD COLUMN progress TEXT;
ALTER TABLE tasks ADD COLUMN trace TEXT;
"""

# Version 3: task priorities; the index a claim reads tasks of a priority above 0 from.
_V3 = """
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_ranked ON tasks (queue, priority DESC, avail_at)
    WHERE avail_at IS NOT NULL AND priority > 0;
"""

# Version 4: tenants and fair share (see the module doc).
_V4 = """
ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN fseq INTEGER;
ALTER TABLE tasks ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN fair INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_flow ON tasks (queue, tenant, priority, fseq) WHERE fseq IS NOT NULL;
CREATE TABLE flows (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    priority INTEGER NOT NULL,
    s REAL NOT NULL,
    seq INTEGER NOT NULL,
    ready INTEGER NOT NULL,
    aside INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, tenant, priority)
) WITHOUT ROWID;
CREATE INDEX flows_next ON flows (queue, priority DESC, s, seq) WHERE aside = 0;
CREATE TABLE levels (
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY (queue, priority)
) WITHOUT ROWID;
CREATE TABLE tenants (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    outstanding INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    aside INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, tenant)
) WITHOUT ROWID;
"""

#: MIGRATIONS[n] takes a file from version n to n + 1 (0: a new, empty file).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    lambda conn: _script(conn, _V1),
    lambda conn: _script(conn, _V2),
    lambda conn: _script(conn, _V3),
    lambda conn: _script(conn, _V4),
]


def _script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT first: run the statements in our transaction instead.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def open_database(settings: Settings) -> sqlite3.Connection:
    """A connection to the file, in WAL mode, its schema up to date (in this thread)."""
    path = settings.path
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BrokerError(
            f"{settings.url!r}: the directory {directory!r} does not exist; create it, or "
            "point the URL at a file in an existing directory"
        )
    try:
        conn = sqlite3.connect(
            path, timeout=settings.busy_timeout, isolation_level=None, check_same_thread=True
        )
    except sqlite3.Error as exc:
        if cannot_write(exc):
            raise not_writable(settings, exc) from exc
        raise BrokerError(f"{settings.url!r}: cannot open {path!r}: {exc}") from exc
    try:
        _configure(conn, settings)
        migrate(conn, settings.url)
        # From now on the writer waits for the lock itself, in finer steps than SQLite's
        # busy handler (see _writer.py).
        conn.execute("PRAGMA busy_timeout=0")
    except BaseException:
        conn.close()
        raise
    return conn


#: SQLite's error names (and their extended forms) for a file or directory this process
#: may not write.
CANNOT_WRITE = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")


def cannot_write(exc: sqlite3.Error) -> bool:
    """Whether `exc` says the file, or its directory, is not writable here."""
    return (getattr(exc, "sqlite_errorname", None) or "").startswith(CANNOT_WRITE)


def not_writable(settings: Settings, exc: sqlite3.Error) -> BrokerError:
    """The error of a file, or of its directory, that this process may not write."""
    path = os.path.abspath(settings.path)
    return BrokerError(
        f"{settings.url!r}: cannot write {path!r} ({exc}): make the file and its directory "
        f"{os.path.dirname(path)!r} writable by this user (SQLite keeps two more files next "
        "to it, -wal and -shm), or point the URL at a file in a directory it can write"
    )


def _configure(conn: sqlite3.Connection, settings: Settings) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if cannot_write(exc):
            raise not_writable(settings, exc) from exc
        raise BrokerError(
            f"{settings.url!r}: {settings.path!r} is not a SQLite database ({exc}); point the "
            "URL at a new file or at one this broker made"
        ) from exc
    if str(mode).lower() != "wal":
        raise BrokerError(
            f"{settings.url!r}: SQLite could not switch {settings.path!r} to WAL mode (it "
            f"stays in {mode!r} mode); the file must be on a local disk, not a network share"
        )
    conn.execute(f"PRAGMA synchronous={settings.synchronous.upper()}")
    # Temporary b-trees (ORDER BY, IN lists) in memory: they are small.
    conn.execute("PRAGMA temp_store=MEMORY")


def migrate(conn: sqlite3.Connection, url: str) -> None:
    """Bring the file's schema to `SCHEMA_VERSION`, or refuse a newer one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise BrokerError(
                f"{url!r}: the file has schema version {version}, newer than this version of "
                f"queueing knows ({SCHEMA_VERSION}): upgrade trio-queueing in this "
                "environment, or use another file"
            )
        if version == 0 and _has_tables(conn):
            raise BrokerError(
                f"{url!r}: the file holds tables this broker did not make; point the URL at "
                "a new file"
            )
        for step in MIGRATIONS[version:SCHEMA_VERSION]:
            step(conn)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _has_tables(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return bool(row[0])

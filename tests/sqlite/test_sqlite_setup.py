"""Opening a `sqlite://` broker: URLs, the file, its schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_helpers import downgrade_to_v3, query, read_only

from queueing import BrokerError, InvalidQueue, Queue, Worker, connect, open_system
from queueing.brokers import SqliteBroker
from queueing.brokers.sqlite import SCHEMA_VERSION


class Echo(Worker):
    async def handle(self, payload: int) -> int:
        return payload


echo = Queue("echo", Echo)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///queues.db", "queues.db"),
        ("sqlite:///data/queues.db", "data/queues.db"),
        ("sqlite:////var/lib/app/queues.db", "/var/lib/app/queues.db"),
        ("sqlite:///my%20queues.db", "my queues.db"),
    ],
)
def test_a_url_names_a_relative_or_an_absolute_file(url: str, path: str) -> None:
    assert SqliteBroker(url).settings.path == path


def test_url_options_set_durability_lease_and_waits() -> None:
    broker = SqliteBroker("sqlite:///q.db?synchronous=NORMAL&lease=2.5&busy_timeout=9&poll=0.2")
    settings = broker.settings
    assert (settings.synchronous, settings.lease, settings.busy_timeout, settings.poll) == (
        "normal",
        2.5,
        9.0,
        0.2,
    )
    assert broker.lease == 2.5
    assert SqliteBroker("sqlite:///q.db").settings.synchronous == "full"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite://host/q.db", "names a host"),
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///q.db?synchronous=off", "synchronous must be one of full, normal"),
        ("sqlite:///q.db?lease=0", "lease must be a number of seconds > 0"),
        ("sqlite:///q.db?lease=soon", "lease must be a number of seconds > 0"),
        ("sqlite:///q.db?prefix=x", "unknown option 'prefix'"),
        ("sqlite:///q.db?synchronous=normal&synchronous=full", "'synchronous' is given twice"),
    ],
)
def test_a_bad_url_is_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(BrokerError, match=says):
        SqliteBroker(url)


async def test_a_relative_url_makes_the_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_system(echo, broker="sqlite:///queues.db") as system:
        assert await (await system.submit("echo", 7)) == 7
    assert (tmp_path / "queues.db").exists()


async def test_a_missing_directory_is_refused_with_its_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/q.db"
    with pytest.raises(BrokerError, match=r"missing.*does not exist"):
        async with open_system(echo, broker=url):
            pass


async def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with open_system(echo, broker=f"sqlite:///{path}"):
        pass
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"queues", "tasks", "dead_letters", "runs", "run_steps", "processes"} <= tables


async def test_a_newer_schema_is_refused_and_the_file_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with open_system(echo, broker=f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(BrokerError, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        async with open_system(echo, broker=f"sqlite:///{path}"):
            pass
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]


async def test_a_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(BrokerError, match="tables this broker did not make"):
        async with open_system(echo, broker=f"sqlite:///{path}"):
            pass
    assert query(path, "SELECT name FROM sqlite_master") == [("customers",)]


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(BrokerError, match="not a SQLite database"):
        async with open_system(echo, broker=f"sqlite:///{path}"):
            pass


async def test_connect_takes_a_sqlite_url_and_knows_the_served_queues(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    async with open_system(echo, broker=url), connect(url) as client:
        assert "echo" in client.names
        assert await (await client.submit("echo", 5)) == 5


async def test_connect_refuses_the_memory_broker_and_names_sqlite() -> None:
    with pytest.raises(InvalidQueue, match=r"sqlite:///path\.db"):
        async with connect("memory://"):
            pass


async def test_an_unknown_scheme_lists_sqlite_among_the_brokers() -> None:
    with pytest.raises(InvalidQueue, match="sqlite:///"):
        async with open_system(echo, broker="mysql://x"):
            pass


async def test_a_version_1_file_is_migrated_and_its_tasks_still_run(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    async with connect(f"sqlite:///{path}", echo) as client:
        waiting = (await client.submit("echo", 41)).id
    # Back to what version 1 made: no progress, trace nor priority columns.
    with sqlite3.connect(path) as conn:
        downgrade_to_v3(conn)
        conn.execute("DROP INDEX tasks_ranked")
        conn.execute("ALTER TABLE tasks DROP COLUMN priority")
        conn.execute("ALTER TABLE tasks DROP COLUMN progress")
        conn.execute("ALTER TABLE tasks DROP COLUMN trace")
        conn.execute("PRAGMA user_version=1")
    conn.close()
    async with open_system(echo, broker=f"sqlite:///{path}") as system:
        assert await system.receipt(waiting).result(timeout=10) == 41
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    columns = {row[1] for row in query(path, "PRAGMA table_info(tasks)")}
    assert {"progress", "trace", "priority"} <= columns


async def test_a_version_2_file_is_migrated_and_its_tasks_keep_their_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    async with connect(f"sqlite:///{path}", echo) as client:
        waiting = [(await client.submit("echo", n)).id for n in (1, 2)]
    # Back to what version 2 made: no priority column, no index of priorities.
    with sqlite3.connect(path) as conn:
        downgrade_to_v3(conn)
        conn.execute("DROP INDEX tasks_ranked")
        conn.execute("ALTER TABLE tasks DROP COLUMN priority")
        conn.execute("PRAGMA user_version=2")
    conn.close()
    async with open_system(echo, broker=f"sqlite:///{path}") as system:
        assert [await system.receipt(i).result(timeout=10) for i in waiting] == [1, 2]
        urgent = await system.submit("echo", 3, priority=9)
        assert (await urgent.status()).priority == 9
        assert await urgent.result(timeout=10) == 3
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    indexes = {row[1] for row in query(path, "PRAGMA index_list(tasks)")}
    assert "tasks_ranked" in indexes


async def test_a_directory_it_cannot_write_is_named_not_called_a_bad_file(
    tmp_path: Path,
) -> None:
    # WAL mode keeps two files next to the database (-wal, -shm): the directory must be
    # writable too, even for a file that is.
    directory = tmp_path / "locked"
    directory.mkdir()
    url = f"sqlite:///{directory / 'q.db'}"
    async with open_system(echo, broker=url):
        pass
    with read_only(directory), pytest.raises(BrokerError) as caught:
        async with open_system(echo, broker=url):
            pass
    message = str(caught.value)
    assert "not a SQLite database" not in message
    assert f"{directory}" in message
    assert "writable" in message


async def test_a_file_it_cannot_write_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}"
    async with open_system(echo, broker=url):
        pass
    with read_only(path), pytest.raises(BrokerError) as caught:
        async with connect(url) as client:
            await client.submit("echo", 1)
    message = str(caught.value)
    assert f"{path}" in message
    assert "writable" in message


async def test_a_file_locked_past_busy_timeout_at_open_says_so(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite:///{path}"
    async with open_system(echo, broker=url):
        pass
    other = sqlite3.connect(path, isolation_level=None)  # another program's transaction
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(BrokerError, match=r"stayed locked by another process for 0\.2s"):
            async with open_system(echo, broker=f"{url}?busy_timeout=0.2"):
                pass
    finally:
        other.close()

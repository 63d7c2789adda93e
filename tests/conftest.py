"""Shared fixtures: private `redis-server` processes for the Redis tests (tests/redis), and
the machine's RabbitMQ for the RabbitMQ broker's tests.

A test never uses a Redis it did not start: the session's server listens on a free port,
keeps nothing on disk, and each test gets its own key prefix in `redis_url`.
Without a `redis-server` binary the Redis tests are skipped, unless
`QUEUEING_REQUIRE_REDIS=1` (CI), which turns that into a failure.

The RabbitMQ broker's tests use the RabbitMQ at 127.0.0.1:5672 (guest/guest, vhost /) and
the session's private Redis as their results store: `amqp_url` gives each test a prefix
of its own (its queues `PREFIX:...`), and deletes the queues it declared afterwards.
Without a reachable RabbitMQ they are skipped, unless `QUEUEING_REQUIRE_AMQP=1` (CI).

Redis Cluster and Sentinel (tests/redis_topologies.py): `redis_cluster` is a session's
private cluster (3 masters, 3 replicas) and `redis_cluster_url` a URL with a prefix of the
test's own; `make_redis_cluster` starts one of the test's own (for tests that move slots
or fail nodes over); `redis_sentinels` a master, a replica and 3 sentinels for one test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio


def pytest_configure(config: pytest.Config) -> None:
    # coredis (6.x) creates a connection's anyio memory streams before it connects and
    # closes them only if the connection was made: every refused connection (a Redis that
    # is down, or restarting) leaks six streams, reported as ResourceWarning when they are
    # garbage-collected, at a random later point (filterwarnings=error would fail that test).
    leak = r"Unclosed <MemoryObject(Send|Receive)Stream"
    config.addinivalue_line("filterwarnings", f"ignore:{leak}:ResourceWarning")  # in tests
    warnings.filterwarnings("ignore", leak, ResourceWarning)  # between them, and at the end


#: Seconds one claim of a shared broker waits for ready tasks in the tests (the default,
#: `queueing._dispatcher.CLAIM_WAIT`, is 0.5): a system's stop waits for the claim in
#: flight (a blocking read on Redis), which cost each test over Redis half a second.
TEST_CLAIM_WAIT = 0.05


@pytest.fixture(autouse=True)
def _short_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims in this process wait `TEST_CLAIM_WAIT` (processes a test starts keep the
    default): the same claims, asked again more often; a stop ends sooner."""
    from queueing import _dispatcher

    monkeypatch.setattr(_dispatcher, "CLAIM_WAIT", TEST_CLAIM_WAIT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serves(port: int, password: str | None, pid: int) -> bool:
    """Whether the Redis answering on `port` is the process `pid`: a port picked free may
    be taken by another process (another pytest-xdist worker's server, another run's)
    before our server binds it, and then a PING would get that server's answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if password is not None:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"INFO server\r\n")
            answer = b""
            while b"process_id:" not in answer or not answer.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                answer += chunk
                if not chunk or answer.startswith(b"-"):
                    return False
    except OSError:
        return False
    line = answer.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
    return line.strip() == str(pid).encode()


class RedisServer:
    """A private `redis-server` on 127.0.0.1: `.url`, `.port`, `.dir`; `start()`, `stop()`."""

    def __init__(self, *args: str, port: int | None = None, password: str | None = None):
        self.password = password
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="queueing-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        # A port of our choosing may move to another free one until the server has started
        # once (another process took it first); after that it stays (restart tests).
        self._movable = port is None
        self._use_port(port or _free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        auth = f":{self.password}@" if self.password is not None else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (needed by the Redis tests)"
            if os.environ.get("QUEUEING_REQUIRE_REDIS") == "1":
                pytest.fail(f"{message}; QUEUEING_REQUIRE_REDIS=1 requires it", pytrace=False)
            pytest.skip(message)
        for _attempt in range(5):
            if self._launch(binary, timeout):
                self._movable = False
                return
            if not self._movable:
                break
            self._use_port(_free_port())
        pytest.fail(f"redis-server did not start (last port tried: {self.port})")

    def _launch(self, binary: str, timeout: float) -> bool:
        """Start the server; whether it answers as itself (False: it exited, e.g. its port
        was taken, or it did not answer in `timeout`)."""
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", *self.args]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not _serves(self.port, self.password, self.process.pid):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def url_with(self, **options: object) -> str:
        """The URL with query options, e.g. `prefix=...`, `lease=0.5`."""
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"{self.url}?{query}" if query else self.url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private Redis for the session (no persistence)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis with a key prefix of this test's own."""
    return redis_server.url_with(prefix=f"t{secrets.token_hex(4)}")


@pytest.fixture
def make_redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Start more private servers (`make_redis_server(*args, password=...)`), stopped at
    the end of the test; the caller may stop and start them again (restart tests)."""
    servers: list[RedisServer] = []

    def make(*args: str, password: str | None = None) -> RedisServer:
        server = RedisServer(*args, password=password)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


class Terminal:
    """A real terminal: one command in a tmux pane of a fixed size, on a tmux server of
    this test's own (`-L`), so that it shares nothing with anyone's tmux."""

    def __init__(self, socket_name: str) -> None:
        self.socket = socket_name
        self.started = False

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False
        )

    def run(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        width: int = 120,
        height: int = 40,
    ) -> None:
        """Start `command` in the pane; once it exits the pane says `exited N`."""
        import shlex

        assignments = [f"{k}={v}" for k, v in (env or {}).items()]
        # The pane's size, not the one a test runner may have exported, is the screen's.
        line = shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", *assignments, *command])
        script = f"cd {shlex.quote(str(cwd or os.getcwd()))} && {line}; echo exited $?; sleep 600"
        done = self._tmux(
            "new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height), script
        )
        assert done.returncode == 0, done.stderr
        self.started = True

    def screen(self) -> str:
        """What the pane shows now, as text."""
        return self._tmux("capture-pane", "-p", "-t", "main").stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "main", *keys)

    def wait_for(self, check: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The screen, once `check(screen)` is true; fails with the screen after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the terminal never showed what was expected:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.started:
            self._tmux("kill-server")


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    """A private tmux server for one test (skipped without tmux)."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (the terminal tests drive a real terminal)")
    term = Terminal(f"queueing-test-{secrets.token_hex(4)}")
    yield term
    term.close()


AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672


def _amqp_reachable() -> bool:
    try:
        with socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=1.0) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # Connection.Start is a method frame
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_server() -> str:
    """The machine's RabbitMQ (its URL); skipped (failed with QUEUEING_REQUIRE_AMQP=1)
    when it does not answer."""
    if not _amqp_reachable():
        message = f"no RabbitMQ answering at {AMQP_HOST}:{AMQP_PORT} (needed by this test)"
        if os.environ.get("QUEUEING_REQUIRE_AMQP") == "1":
            pytest.fail(f"{message}; QUEUEING_REQUIRE_AMQP=1 requires it", pytrace=False)
        pytest.skip(message)
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/"


async def delete_rabbitmq_queues(amqp: str, results: str, prefix: str) -> None:
    """Delete the RabbitMQ queues the broker declared under `prefix` (it records their
    names in its results store), and that record."""
    import coredis

    from queueing.brokers.amqp import connect

    client: coredis.Redis[str] = coredis.Redis.from_url(results, decode_responses=True)
    async with client:
        key = f"{{{prefix}}}:rabbitmq"
        names = sorted(await client.smembers(key))
        await client.delete([key])
    if names:
        async with connect(amqp) as connection, await connection.open_channel() as channel:
            for name in names:
                await channel.delete_queue(name)


@pytest.fixture
def amqp_url(rabbitmq_server: str, redis_server: RedisServer) -> Iterator[str]:
    """A RabbitMQ broker URL with a prefix of this test's own, its results in the
    session's Redis; the queues it declared are deleted afterwards."""
    prefix = f"t{secrets.token_hex(4)}"
    yield f"{rabbitmq_server}?results={redis_server.url}&prefix={prefix}"
    trio.run(delete_rabbitmq_queues, rabbitmq_server, redis_server.url, prefix)


@pytest.fixture(scope="session")
def make_amqp_url(rabbitmq_server: str, redis_server: RedisServer) -> Iterator[Callable[[], str]]:
    """Make RabbitMQ broker URLs (each with a prefix of its own) for fixtures wider than a
    test; their queues are deleted at the end of the session."""
    prefixes: list[str] = []

    def make() -> str:
        prefixes.append(f"s{secrets.token_hex(4)}")
        return f"{rabbitmq_server}?results={redis_server.url}&prefix={prefixes[-1]}"

    yield make
    for prefix in prefixes:
        trio.run(delete_rabbitmq_queues, rabbitmq_server, redis_server.url, prefix)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """One private Redis Cluster for the session (3 masters, 3 replicas, no persistence);
    tests that move slots or fail nodes over make their own (`make_redis_cluster`)."""
    from redis_topologies import Cluster

    cluster = Cluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_cluster_url(redis_cluster: Any) -> str:
    """The session's Redis Cluster (`redis+cluster://…`) with a key prefix of this test's."""
    return str(redis_cluster.url(prefix=f"t{secrets.token_hex(4)}"))


@pytest.fixture
def make_redis_cluster() -> Iterator[Callable[[], Any]]:
    """Start a Redis Cluster of this test's own (`make_redis_cluster()`), closed after it."""
    from redis_topologies import Cluster

    made: list[Any] = []

    def make() -> Any:
        cluster = Cluster()
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def redis_sentinels() -> Iterator[Any]:
    """A master, a replica and 3 sentinels of this test's own (`.url(prefix=...)`)."""
    from redis_topologies import Sentinels

    sentinels = Sentinels()
    sentinels.start()
    yield sentinels
    sentinels.close()

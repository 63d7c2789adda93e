"""Fixtures for the AMQP tests: the machine's RabbitMQ, unique names, and fault injection.

The tests marked `amqp` use the RabbitMQ at 127.0.0.1:5672 (guest/guest, vhost /). Each
test makes its own queue and exchange names and deletes what it declared. Without a
reachable broker those tests are skipped, unless `QUEUEING_REQUIRE_AMQP=1` (CI), which
turns that into a failure (`.ci/amqp-up` installs and starts one).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator

import pytest
from amqp_helpers import Names

from queueing.brokers import amqp

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"


def _reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # Connection.Start is a method frame
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """The broker's URL; skips (or fails, with QUEUEING_REQUIRE_AMQP=1) without one."""
    if not _reachable():
        message = f"no RabbitMQ answering at {HOST}:{PORT} (needed by the AMQP tests)"
        if os.environ.get("QUEUEING_REQUIRE_AMQP") == "1":
            pytest.fail(f"{message}; QUEUEING_REQUIRE_AMQP=1 requires it", pytrace=False)
        pytest.skip(message)
    return URL


@pytest.fixture
async def names(rabbitmq: str) -> AsyncIterator[Names]:
    """Names for this test; its queues and exchanges are deleted afterwards."""
    made = Names()
    yield made
    if made.queues or made.exchanges:
        async with amqp.connect(rabbitmq) as connection:
            for name in made.queues:
                async with await connection.open_channel() as channel:
                    await channel.delete_queue(name)
            for name in made.exchanges:
                async with await connection.open_channel() as channel:
                    await channel.delete_exchange(name)


@pytest.fixture
async def connection(rabbitmq: str, names: Names) -> AsyncIterator[amqp.Connection]:
    """A connection named after the test (so fault tests can find it on the broker)."""
    async with amqp.connect(rabbitmq, connection_name=names.prefix) as conn:
        yield conn


@pytest.fixture
def rabbitmqctl(rabbitmq: str) -> list[str]:
    """The command to run rabbitmqctl (as root: directly, else through `sudo -n`), for
    fault injection; skips (fails with QUEUEING_REQUIRE_AMQP=1) if it cannot run."""
    binary = shutil.which("rabbitmqctl")
    command = [binary] if binary and os.geteuid() == 0 else ["sudo", "-n", str(binary)]
    if binary is not None:
        try:
            status = subprocess.run(
                [*command, "status", "-q"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
        else:
            if status.returncode == 0:
                return command
    message = "rabbitmqctl is not usable here (not installed, or not root and no sudo -n)"
    if os.environ.get("QUEUEING_REQUIRE_AMQP") == "1":
        pytest.fail(f"{message}; QUEUEING_REQUIRE_AMQP=1 requires it", pytrace=False)
    pytest.skip(message)

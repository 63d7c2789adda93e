"""Fixtures of the RabbitMQ broker's tests (tests/rabbitmq): `amqp_url` (in tests/conftest.py)
gives each test the machine's RabbitMQ with a queue prefix of its own and the session's
private Redis; `rabbitmqctl` runs the broker's control tool for fault injection."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture
def rabbitmqctl(rabbitmq_server: str) -> list[str]:
    """The command to run rabbitmqctl (as root: directly, else through `sudo -n`); skips
    (fails with QUEUEING_REQUIRE_AMQP=1) if it cannot run."""
    binary = shutil.which("rabbitmqctl")
    if binary is not None:
        command = [binary] if os.geteuid() == 0 else ["sudo", "-n", binary]
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

"""AUTH with an ACL user, and TLS (`rediss://`), taken from the broker URL."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queueing import BrokerError, Queue, Worker, open_system

pytestmark = pytest.mark.redis


class Double(Worker):
    async def handle(self, number: int) -> int:
        return 2 * number


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def round_trip(url: str) -> int:
    async with open_system(Queue("double", Double), broker=url) as system:
        receipt = await system.submit("double", 21)
        result: int = await receipt.result(timeout=10)
        return result


async def test_an_acl_user_and_password_in_the_url_authenticate(
    make_redis_server: Callable[..., Any],
) -> None:
    server = make_redis_server("--user", "worker", "on", ">s3cret", "~*", "&*", "+@all")
    url = f"redis://worker:s3cret@127.0.0.1:{server.port}/0"
    assert await round_trip(url) == 42


async def test_a_wrong_acl_password_is_a_clear_broker_error(
    make_redis_server: Callable[..., Any],
) -> None:
    server = make_redis_server("--user", "worker", "on", ">s3cret", "~*", "&*", "+@all")
    url = f"redis://worker:wrong@127.0.0.1:{server.port}/0"
    with pytest.raises(BrokerError) as info:
        await round_trip(url)
    assert "wrong" not in str(info.value)  # the password is never echoed
    assert "password" in str(info.value)


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate for the TLS tests")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
            "-subj", "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return tmp_path


async def test_rediss_urls_speak_tls_with_the_given_ca(
    make_redis_server: Callable[..., Any], certificate: Path
) -> None:
    port = free_port()
    make_redis_server(
        "--tls-port", str(port),
        "--tls-cert-file", str(certificate / "cert.pem"),
        "--tls-key-file", str(certificate / "key.pem"),
        "--tls-ca-cert-file", str(certificate / "cert.pem"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={certificate / 'cert.pem'}"
    assert await round_trip(url) == 42


async def test_tls_with_an_untrusted_certificate_is_a_clear_broker_error(
    make_redis_server: Callable[..., Any], certificate: Path
) -> None:
    port = free_port()
    make_redis_server(
        "--tls-port", str(port),
        "--tls-cert-file", str(certificate / "cert.pem"),
        "--tls-key-file", str(certificate / "key.pem"),
        "--tls-ca-cert-file", str(certificate / "cert.pem"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    with pytest.raises(BrokerError) as info:
        await round_trip(f"rediss://localhost:{port}/0")
    assert "TLS" in str(info.value)

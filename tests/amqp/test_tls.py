"""`amqps://`: the handshake over TLS, against the fake broker behind a TLS listener."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trio
from anyio.streams.tls import TLSListener
from fake_broker import FakeBroker

from queueing.brokers import amqp


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate for the TLS tests")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return tmp_path


async def _serve_tls(certificate: Path, task_status: anyio.abc.TaskStatus[int]) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            await FakeBroker(stream).serve()

    async with TLSListener(tcp, server_context, standard_compatible=False) as listener:
        task_status.started(port)
        await listener.serve(handle)


async def test_amqps_connects_with_the_given_ca(certificate: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_tls, certificate)
        context = ssl.create_default_context(cafile=certificate / "cert.pem")
        url = f"amqps://guest:guest@localhost:{port}/"
        async with amqp.connect(url, ssl_context=context, heartbeat=0) as connection:
            channel = await connection.open_channel(publisher_confirms=True)
            await channel.publish(b"over tls", routing_key="q")
        nursery.cancel_scope.cancel()


async def test_amqps_refuses_a_broker_it_cannot_verify(certificate: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_tls, certificate)
        with pytest.raises(ssl.SSLCertVerificationError):
            async with amqp.connect(f"amqps://guest:guest@localhost:{port}/"):
                pass
        nursery.cancel_scope.cancel()

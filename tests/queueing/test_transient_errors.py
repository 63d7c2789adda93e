"""Which errors the default retry policy retries: ours, the standard library's, and those
of common client libraries (looked up only if the program imported them)."""

from __future__ import annotations

import errno
import socket
import sys
import types
from typing import Any

import httpx
import pytest
import trio

from queueing import Transient, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        Transient("later"),
        TimeoutError("slow"),
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset"),
        OSError(errno.EHOSTUNREACH, "no route to host"),
        OSError(errno.ETIMEDOUT, "timed out"),
        socket.gaierror(socket.EAI_AGAIN, "temporary failure in name resolution"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed the connection"),
        trio.BrokenResourceError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad input"),
        KeyError("missing"),
        OSError(errno.ENOENT, "no such file"),
        PermissionError("denied"),
        httpx.UnsupportedProtocol("ftp://"),
        httpx.InvalidURL("bad"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_permanent_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://example.test/")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (503, True), (502, True), (404, False), (400, False)]
)
def test_http_statuses_that_say_try_later_are_retried(status: int, retried: bool) -> None:
    assert is_transient(_status_error(status)) is retried


def test_a_library_the_program_did_not_import_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "aiohttp", raising=False)
    assert not is_transient(ValueError("x"))
    assert "aiohttp" not in sys.modules


def test_an_imported_librarys_errors_are_found_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake: Any = types.ModuleType("aiohttp")

    class ClientConnectionError(Exception):
        pass

    fake.ClientConnectionError = ClientConnectionError
    monkeypatch.setitem(sys.modules, "aiohttp", fake)
    assert is_transient(ClientConnectionError("server disconnected"))


async def _refused(connect: Any) -> BaseException:
    """What `connect` raises for a port nobody listens on."""
    with trio.socket.socket() as sock:  # a free port, closed again: connections are refused
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        await connect("127.0.0.1", port)
    except BaseException as exc:
        return exc
    raise AssertionError("the connection was accepted")


async def test_a_refused_trio_or_anyio_connection_is_transient() -> None:
    # Both raise a plain OSError (no errno) "from" the connection errors of each address.
    import anyio

    for connect in (trio.open_tcp_stream, anyio.connect_tcp):
        exc = await _refused(connect)
        assert type(exc) is OSError, repr(exc)
        assert exc.errno is None, repr(exc)
        assert is_transient(exc), repr(exc)


def test_an_errno_less_os_error_from_a_permanent_one_is_not() -> None:
    exc = OSError("all attempts failed")
    exc.__cause__ = PermissionError("denied")
    assert not is_transient(exc)
    exc.__cause__ = ConnectionRefusedError("refused")
    assert is_transient(exc)


@pytest.mark.parametrize(
    ("members", "retried"),
    [
        ([httpx.ConnectError("refused")], True),
        ([ConnectionResetError("reset"), TimeoutError("slow")], True),
        ([httpx.ConnectError("refused"), ValueError("bad input")], False),
        ([ValueError("bad input")], False),
    ],
)
def test_an_exception_group_is_transient_if_all_it_holds_is(
    members: list[Exception], retried: bool
) -> None:
    # A nursery in a trio handler wraps what its tasks raised in an ExceptionGroup.
    assert is_transient(ExceptionGroup("a nursery", members)) is retried
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", members)])
    assert is_transient(nested) is retried

"""The lean Redis client (`_resp.LeanRedis`) against private redis-servers: many callers
on one connection, pipelines, blocking commands on their own connections, cancellation,
a server stopped and started mid-call, AUTH, SELECT and TLS; and `Calls` choosing it."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coredis.exceptions as ce
import pytest
import trio
import trio.testing
from redis_helpers import wait_for

from queueing import BrokerError
from queueing.brokers.redis._calls import Calls
from queueing.brokers.redis._resp import HAND_BACK, LeanRedis, NoReply, encode, open_lean

pytestmark = pytest.mark.redis


def base(url: str) -> str:
    return url.split("?", 1)[0]


async def test_many_callers_on_one_connection_get_their_own_replies(redis_url: str) -> None:
    got: dict[int, Any] = {}
    async with open_lean(base(redis_url), connect_timeout=5) as redis:

        async def one(i: int) -> None:
            got[i] = await redis.execute("ECHO", f"n{i}")

        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(one, i)
    assert got == {i: f"n{i}" for i in range(300)}


async def test_a_pipeline_answers_each_command_and_keeps_error_replies(redis_url: str) -> None:
    key = f"lean:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        pipe = redis.pipeline()
        added = pipe.xadd(key, {"a": "1"})
        pipe.expire(key, 60)
        pipe.evalsha("0" * 40, keys=[key], args=[1])
        pipe.xrevrange(key, count=1)
        pipe.exists([key, key + ":none"])
        replies = await redis.run_pipe(pipe)
        assert replies[1] is True
        assert isinstance(replies[2], ce.NoScriptError)
        (entry,) = replies[3]
        assert (entry.identifier, entry.field_values) == (replies[0], {"a": "1"})
        assert replies[4] == 1
        assert await added == replies[0]
        with pytest.raises(ce.WrongTypeError):
            await redis.execute("LPUSH", key, "x")


async def test_blocking_commands_wait_on_their_own_connections(redis_url: str) -> None:
    key = f"lean:list:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        popped: list[Any] = []

        async def pop() -> None:
            popped.append(await redis.blpop([key], timeout=5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop)
            nursery.start_soon(pop)
            # Both wait in Redis, each on its connection; the shared one still answers.
            await wait_for(lambda: blocked(redis, 2))
            await redis.execute("RPUSH", key, "a", "b")
        assert sorted(p[1] for p in popped) == ["a", "b"]
        assert await redis.blpop([key], timeout=0.01) is None


async def blocked(redis: LeanRedis, n: int) -> bool:
    """Whether `n` clients wait in a BLPOP."""
    listing: str = await redis.execute("CLIENT", "LIST")
    return sum("cmd=blpop" in line for line in listing.splitlines()) >= n


async def test_a_blocking_read_cancelled_midway_ends_in_redis_and_hands_back_its_reply(
    redis_url: str,
) -> None:
    # A stop does not wait out a claim's blocking read (up to the dispatcher's claim wait):
    # CLIENT UNBLOCK ends it in Redis, its reply is read (the connection stays in step and
    # is used again) and returned, and the cancellation comes at the next checkpoint.
    key = f"lean:list:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        got: list[Any] = []
        cancelled_after: list[bool] = []

        async def pop() -> None:
            HAND_BACK.set(True)  # as Calls does around a claim's read
            try:
                got.append(await redis.blpop([key], timeout=3600))  # an hour
                await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                cancelled_after.append(bool(got))
                raise

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop)
            await wait_for(lambda: blocked(redis, 1))
            nursery.cancel_scope.cancel()
        assert got == [None]  # unblocked: as if its time ran out
        assert cancelled_after == [True]
        listing: str = await redis.execute("CLIENT", "LIST")
        assert " flags=b " not in listing  # no client waits in Redis any more
        await redis.execute("RPUSH", key, "a")
        assert await redis.blpop([key], timeout=5) == [key, "a"]


async def test_a_caller_cancelled_after_sending_leaves_the_others_in_step(redis_url: str) -> None:
    key = f"lean:n:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        await redis.ping()
        with trio.CancelScope() as scope:
            scope.cancel()
            await redis.execute("INCR", key)  # written, then cancelled waiting
        assert scope.cancelled_caught
        # Its reply (1) is read and dropped: the next callers get their own.
        assert await redis.execute("ECHO", "mine") == "mine"
        assert await redis.execute("INCR", key) == 2


async def test_a_guarded_call_is_not_cancelled_midway(redis_url: str) -> None:
    key = f"lean:guarded:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        redis.guard = 30.0
        assert redis.guardable() is False  # not connected yet: a call would connect first
        await redis.ping()
        assert redis.guardable() is True
        got: list[Any] = []
        with trio.CancelScope() as scope:
            scope.cancel()  # before the call: it is written, and waits for its reply
            got = await redis.run([encode(("INCR", key))], guarded=True)
            await trio.lowlevel.checkpoint()  # the cancellation comes here
        assert scope.cancelled_caught
        assert got == [1]
        # Unguarded, the same call is cancelled waiting (its reply is read and dropped).
        got = []
        with trio.CancelScope() as scope:
            scope.cancel()
            got = await redis.run([encode(("INCR", key))])
        assert scope.cancelled_caught
        assert got == []
        assert await redis.execute("INCR", key) == 3


async def test_a_guarded_call_without_a_reply_in_its_limit_gives_up(redis_url: str) -> None:
    key = f"lean:never:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        redis.guard = 0.3
        await redis.ping()
        started = trio.current_time()
        with pytest.raises(NoReply, match=r"no reply within 0\.3s"):
            # A blocking command on the shared connection: no reply for a second.
            await redis.run([encode(("BLPOP", key, 1))], guarded=True)
        assert trio.current_time() - started >= 0.3
        # Its reply (a nil, when the BLPOP times out) is read and dropped: the next caller
        # gets its own.
        assert await redis.execute("ECHO", "mine") == "mine"


async def test_a_guarded_call_gives_up_at_its_limit_not_later(
    redis_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Under the mock clock, time jumps to the next deadline while the BLPOP's reply is on
    # its way: the call must give up exactly at its limit (a watchdog that looked every
    # half limit gave up somewhere in the half limit after it).
    key = f"lean:exact:{trio.current_time()}"
    async with open_lean(base(redis_url), connect_timeout=5) as redis:
        redis.guard = 12.0
        await redis.ping()
        await trio.sleep(6.5)  # the watchdog's own rhythm out of step with the call
        started = trio.current_time()
        with pytest.raises(NoReply):
            await redis.run([encode(("BLPOP", key, 1))], guarded=True)
        assert trio.current_time() == started + 12.0
        assert await redis.execute("ECHO", "mine") == "mine"


async def test_a_stopped_server_fails_the_waiting_callers_and_the_next_call_reconnects(
    make_redis_server: Callable[..., Any],
) -> None:
    server = make_redis_server()
    async with (
        open_lean(server.url, connect_timeout=5) as redis,
        open_lean(server.url, connect_timeout=5) as watcher,
    ):
        assert await redis.ping() == "PONG"
        failures: list[BaseException] = []

        async def wait(blocking: bool) -> None:
            try:
                if blocking:
                    await redis.blpop(["lean:never"], timeout=30)
                else:  # a blocking command on the shared connection: a call in flight
                    await redis.execute("BLPOP", "lean:never", 30)
            except ce.ConnectionError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, True)
            nursery.start_soon(wait, False)
            await wait_for(lambda: blocked(watcher, 2))
            await trio.to_thread.run_sync(server.stop)
        assert len(failures) == 2
        with pytest.raises(ce.ConnectionError):
            await redis.ping()  # nothing listens
        await trio.to_thread.run_sync(server.start)
        assert await redis.ping() == "PONG"
        assert await redis.blpop(["lean:never"], timeout=0.01) is None


async def test_auth_with_a_password_and_an_acl_user_and_select(
    make_redis_server: Callable[..., Any],
) -> None:
    server = make_redis_server(
        "--user", "worker", "on", ">s3cret", "~*", "&*", "+@all", password="top"
    )  # fmt: skip
    port = server.port
    async with open_lean(f"redis://:top@127.0.0.1:{port}/3", connect_timeout=5) as redis:
        await redis.execute("SET", "lean:k", "v")
        assert await redis.execute("CLIENT", "INFO") != ""
    url = f"redis://worker:s3cret@127.0.0.1:{port}/3"
    async with open_lean(url, connect_timeout=5) as redis:
        assert await redis.execute("GET", "lean:k") == "v"  # database 3
        assert await redis.execute("ACL", "WHOAMI") == "worker"
        assert await redis.blpop(["lean:none"], timeout=0.01) is None
    async with open_lean(f"redis://:top@127.0.0.1:{port}/0", connect_timeout=5) as redis:
        assert await redis.execute("GET", "lean:k") is None
    async with open_lean(f"redis://worker:wrong@127.0.0.1:{port}/0", connect_timeout=5) as redis:
        with pytest.raises(ce.AuthenticationFailureError):
            await redis.ping()


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_tls_with_the_urls_ca(
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
    async with open_lean(url, connect_timeout=5) as redis:
        got = {}

        async def one(i: int) -> None:
            got[i] = await redis.execute("ECHO", str(i))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        assert got == {i: str(i) for i in range(50)}
        read = await redis.xread({"lean:s": "0"}, count=1, block=5)
        assert read is None
    async with open_lean(f"rediss://localhost:{port}/0", connect_timeout=5) as redis:
        with pytest.raises(ce.ConnectionError, match="TLS"):
            await redis.ping()


async def test_calls_uses_the_lean_client_unless_told(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def ready() -> None:
        pass

    calls = Calls(base(redis_url), connect_timeout=5, block=1)
    async with calls.connected(ready):
        assert isinstance(calls.fast, LeanRedis)
    monkeypatch.setenv("QUEUEING_REDIS_CLIENT", "coredis")
    calls = Calls(base(redis_url), connect_timeout=5, block=1)
    async with calls.connected(ready):
        assert calls.fast is calls.client
    monkeypatch.setenv("QUEUEING_REDIS_CLIENT", "hiredis")
    with pytest.raises(BrokerError, match="QUEUEING_REDIS_CLIENT must be one of lean, coredis"):
        Calls(base(redis_url), connect_timeout=5, block=1)


async def test_a_pipeline_the_lean_client_lacks_a_command_of_runs_on_coredis(
    redis_url: str,
) -> None:
    async def ready() -> None:
        pass

    key = f"lean:fallback:{trio.current_time()}"
    calls = Calls(base(redis_url), connect_timeout=5, block=1)
    async with calls.connected(ready):
        assert isinstance(calls.fast, LeanRedis)
        for _ in range(2):  # the lean client's Unsupported is caught each time

            def fill(pipe: Any) -> list[Any]:
                return [pipe.set(key, "v"), pipe.getdel(key)]  # GETDEL: not in the lean pipe

            assert await calls.pipelined("fallback", fill) == [True, "v"]

"""A Redis at its memory limit: past `maxmemory` (noeviction) a submit fails with
`BrokerOutOfMemory`, its payloads rejected, while the tasks accepted before finish; an
evicting `maxmemory-policy` is warned about at connect. Each test has a private
redis-server (it changes its configuration). The same faults with real processes:
tests/chaos/test_chaos_redis_memory.py."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
from redis_helpers import raw_client

from queueing import BrokerError, BrokerOutOfMemory, Queue, Worker, connect, open_system
from queueing.brokers.redis import _admin
from queueing.brokers.redis._maxmemory import eviction_warning

if TYPE_CHECKING:
    from conftest import RedisServer

pytestmark = pytest.mark.redis

HELD = 4


class Held(Worker):
    """Waits for `release`, then returns its payload x 2."""

    def __init__(self, release: trio.Event, started: list[int]) -> None:
        self.release = release
        self.started = started

    async def handle(self, number: int) -> int:
        self.started.append(number)
        await self.release.wait()
        return 2 * number


async def test_past_maxmemory_submits_are_refused_and_accepted_tasks_finish(
    make_redis_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_admin, "HEARTBEAT_EVERY", 0.05)
    caplog.set_level(logging.WARNING, "queueing.redis")
    server: RedisServer = make_redis_server("--maxmemory-policy", "noeviction")
    url = server.url_with(prefix="oom")
    release, started = trio.Event(), []
    queue = Queue(
        "held", Held, workers=HELD, worker_kwargs={"release": release, "started": started}
    )
    async with open_system(queue, broker=url) as system, raw_client(url) as raw:
        accepted = await system.submit_many("held", range(HELD))
        with trio.fail_after(10):
            while len(started) < HELD:  # noqa: ASYNC110 - the handlers have no event
                await trio.sleep(0.01)
        await raw.config_set({"maxmemory": "1"})  # every write that may grow memory refused

        with pytest.raises(BrokerOutOfMemory, match="maxmemory") as many:
            await system.submit_many("held", [10, 11, 12])
        assert (list(many.value.accepted), list(many.value.unknown)) == ([], [])
        assert list(many.value.rejected) == [10, 11, 12]
        assert "CONFIG SET maxmemory" in str(many.value)
        with pytest.raises(BrokerOutOfMemory) as one:
            await system.submit("held", 13)
        assert (list(one.value.rejected), list(one.value.unknown)) == ([13], [])
        assert isinstance(one.value, BrokerError)  # what callers catch already

        # A refused heartbeat is skipped (it crashed the broker, and the process with it).
        with trio.fail_after(10):
            while not any("heartbeat refused" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110 - a log has no event
                await trio.sleep(0.01)

        release.set()  # finishing is not refused: the accepted tasks end
        assert [await r.result(timeout=10) for r in accepted] == [0, 2, 4, 6]
        assert int((await raw.info("memory"))["used_memory"]) > 1  # still past the limit

        await raw.config_set({"maxmemory": "0"})
        receipt = await system.submit("held", 20)
        assert await receipt.result(timeout=10) == 40


async def test_a_worker_that_cannot_declare_its_queue_past_maxmemory_says_why(
    make_redis_server: Any,
) -> None:
    server: RedisServer = make_redis_server("--maxmemory-policy", "noeviction")
    url = server.url_with(prefix="oom")
    async with raw_client(url) as raw:
        await raw.config_set({"maxmemory": "1"})
    queue = Queue("new", Held, worker_kwargs={"release": trio.Event(), "started": []})
    with pytest.raises(BrokerOutOfMemory, match=r"declaring queue 'new' refused.*maxmemory"):
        async with open_system(queue, broker=url):
            pass


async def test_an_evicting_policy_is_warned_about_at_connect(
    make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "queueing.redis")
    evicting: RedisServer = make_redis_server("--maxmemory-policy", "allkeys-lru")
    async with connect(evicting.url_with(prefix="lru")):
        pass
    warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1
    assert "'allkeys-lru'" in warnings[0]
    assert "CONFIG SET maxmemory-policy noeviction" in warnings[0]
    caplog.clear()
    safe: RedisServer = make_redis_server("--maxmemory-policy", "noeviction")
    async with connect(safe.url_with(prefix="lru")):
        pass
    assert [r for r in caplog.records if "maxmemory-policy" in r.getMessage()] == []


@pytest.mark.parametrize(
    "policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl"]
)
def test_every_evicting_policy_gets_the_warning(policy: str) -> None:
    warning = eviction_warning(policy)
    assert warning is not None
    assert policy in warning
    assert "TaskLost" in warning


def test_noeviction_gets_no_warning() -> None:
    assert eviction_warning("noeviction") is None

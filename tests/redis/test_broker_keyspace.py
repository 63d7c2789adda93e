"""The Redis broker's key space and scripts: every script call touches the keys of one
hash tag (one Redis Cluster slot), every key a script touches comes in `KEYS[]`, and the
scripts ship inside the package. Also: what a malformed URL says."""

from __future__ import annotations

import importlib.resources
import re
from typing import Any

import attrs
import pytest
import trio
from broker_helpers import JOBS, claim_until, new_run, new_task, opened
from redis_helpers import envelope, key, raw_client

from queueing import RateLimit
from queueing._exceptions import BrokerError
from queueing._task import ErrorInfo, TaskState
from queueing.brokers._contract import QueueInfo
from queueing.brokers.redis import RedisBroker, _calls, _keys

ERROR = ErrorInfo("Boom", "it broke")
LUA = importlib.resources.files("queueing.brokers.redis").joinpath("lua")


def lua_files() -> dict[str, str]:
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in LUA.iterdir()
        if path.name.endswith(".lua")
    }


def test_the_scripts_ship_inside_the_package() -> None:
    shared = {part for parts in _calls.PRELUDES.values() for part in parts}
    assert sorted(lua_files()) == sorted(f"{name}.lua" for name in [*_calls.SCRIPTS, *shared])


def test_no_script_builds_a_key() -> None:
    for name, source in lua_files().items():
        code = re.sub(r"--[^\n]*", "", source)  # comments say what KEYS hold
        calls = re.findall(r"redis\.p?call\(\s*'(\w+)'\s*,\s*([^)]+)", code)
        assert calls, name
        for command, rest in calls:
            if command == "XREADGROUP":  # its key follows STREAMS
                key = re.search(r"'STREAMS'\s*,\s*([^,)]+)", rest)
                assert key is not None, (name, command, rest)
                first = key.group(1)
            elif command == "XINFO":  # its key follows the subcommand
                first = rest.split(",")[1]
            else:
                first = rest.split(",")[0]
            # (`unpack(KEYS, i)`: keys passed, from the i-th on)
            assert re.fullmatch(r"KEYS\[[^\]]+\]|unpack\(KEYS", first.strip()), (
                name,
                command,
                first,
            )
        for literal in re.findall(r"'([^']*)'", code):  # no `'{' .. prefix .. '}:...'`
            assert literal != "{", name
            assert "}:" not in literal, (name, literal)
        for group in re.findall(r"local GROUP = '(\w+)'", code):
            assert group == _keys.GROUP, name


@pytest.mark.redis
async def test_every_script_call_touches_one_hash_tag(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []
    script = _calls.Calls.script

    def recording(self: _calls.Calls, target: Any, name: str, keys: list[str], args: Any) -> Any:
        calls.append((name, list(keys)))
        return script(self, target, name, keys, args)

    monkeypatch.setattr(_calls.Calls, "script", recording)
    other = QueueInfo("other", maxsize=100, max_payload=1024, result_ttl=60.0)
    async with (
        opened(redis_url, JOBS, other, lease=0.5) as worker,
        opened(redis_url, JOBS, other, lease=0.5) as rescuer,
        opened(redis_url, serve=False) as client,
        raw_client(redis_url) as raw,
    ):
        # Submits of two queues in one round trip, a delayed one, a batch.
        tasks = [new_task(payload=n) for n in range(4)]
        async with trio.open_nursery() as nursery:
            for task in tasks[:2]:
                nursery.start_soon(client.accept, JOBS, task)
            nursery.start_soon(client.accept, other, new_task("other"))
        await client.accept(JOBS, tasks[2], due=client.clock() + 0.2)
        await client.accept_many(JOBS, tasks[3:])
        await raw.xadd(
            key(redis_url, "jobs", "ready"),
            {"id": tasks[0].id, "env": envelope("jobs", tasks[0].id, "forged")},
        )
        ids = [t.id for t in tasks]
        assert await client.wait_settled(ids, 0) == []
        claimed = await claim_until(worker, n=10)
        claimed += await claim_until(worker, n=10)  # the delayed one
        running = await client.lookup(claimed[0].id)
        assert running is not None
        assert running.state is TaskState.RUNNING
        await worker.renew(JOBS, claimed)
        first, second, third, fourth = sorted(claimed, key=lambda t: t.payload)
        await worker.settle(JOBS, first, TaskState.SUCCEEDED, 1)
        await worker.retry_at(JOBS, second, worker.clock())
        await worker.dead_letter(JOBS, third, TaskState.FAILED, ERROR)
        await worker.release(JOBS, [fourth])
        await worker.flush()
        assert await client.cancel(fourth.id, ERROR) is not None
        (again,) = await claim_until(worker)  # the retried one, promoted
        assert await client.cancel(again.id, ERROR) is not None  # running
        await worker.claim(other, 1, wait=0)  # held, never renewed: reclaimed
        (stolen,) = await claim_until(rescuer, other)
        await rescuer.settle(other, stolen, TaskState.SUCCEEDED, None)
        await rescuer.flush()
        await worker.take_dead_letters("jobs", [third.id])
        await worker.take_dead_letters("jobs", None)
        # A task with a priority: its queue ranks its waiting tasks from then on.
        urgent = new_task("other")
        urgent.priority = 5
        await client.accept(other, urgent)
        (taken,) = await claim_until(worker, other)
        assert taken.id == urgent.id
        await worker.settle(other, taken, TaskState.SUCCEEDED, None)
        await worker.flush()
        # A task with a tenant: its queue shares its waiting tasks out between tenants.
        tenanted = new_task("other")
        tenanted.tenant = "acme"
        await client.accept(other, tenanted)
        (taken,) = await claim_until(worker, other)
        assert taken.id == tenanted.id
        await worker.settle(other, taken, TaskState.SUCCEEDED, None)
        await worker.flush()
        await worker.take_start(attrs.evolve(JOBS, rate_limit=RateLimit(10)), "a key", 1.0)
        # A pipeline run: its own keys, then its stage tasks' queue.
        run, stage = new_run("ingest", "jobs")
        await client.runs.start(run, JOBS, stage, due=None)
        await client.runs.advance(run.id, stage.id, 2, True)
        await client.runs.branch_done(run.id, (0,), "a")
        await client.runs.branch_done(run.id, (1,), "b")
        ended, ended_stage = new_run("ingest", "jobs")
        await client.runs.start(ended, JOBS, ended_stage, due=None)
        await client.runs.end(ended.id, ended_stage, TaskState.FAILED, ERROR)
        cancelled, cancelled_stage = new_run("ingest", "jobs")
        await client.runs.start(cancelled, JOBS, cancelled_stage, due=None)
        await client.cancel(cancelled.id, ERROR)
        found = await client.wait_settled([*ids, run.id, ended.id, cancelled.id], 5.0)
        assert found
        # A sharded queue: the shard whose turn it is, then the others at once (probes).
        hot = attrs.evolve(JOBS, name="hot", shards=3)
        assert await worker.claim(hot, 1, wait=0) == []
    assert {name for name, _ in calls} == set(_calls.SCRIPTS)
    keys_ = _keys.Keys("p")
    for name, keys in calls:
        tags = {keys_.tag(k) for k in keys}
        assert len(tags) == 1, (name, keys)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis:/host", "no host"),
        ("redis://", "no host"),
        ("http://host:6379", "scheme must be one of"),
        ("redis://host:port", "Port could not be cast"),
        ("redis://host:70000", "out of range"),
        ("unix://", "socket's path"),
        ("redis://host?lease=soon", "lease must be a number"),
        ("redis://host?lease=0", "lease must be a number"),
        # Before: accepted, and the dispatcher crashed on every renewal (OverflowError).
        ("redis://host?lease=1e308", "lease must be at most 315360000 seconds"),
        ("redis://host?prefix=a:b", "prefix must be"),
        ("redis://host:6379/abc", "the database must be a number"),
        ("redis://host:6379/-1", "the database must be a number"),
        ("redis://host:6379/0/1", "the database must be a number"),
        # Before: accepted, the last one used.
        ("redis://host/0?prefix=a&prefix=b", "option 'prefix' is given twice"),
        ("redis://host/0?timeout=1&timeout=2", "option 'timeout' is given twice"),
    ],
)
def test_a_malformed_url_is_refused_with_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(BrokerError, match=re.escape(words)):
        RedisBroker(url)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://host/0?prefx=app", "unknown option 'prefx'"),
        ("redis://host/0?prefix=app&Lease=5", "unknown option 'Lease'"),
        ("redis://host/0?ssl_ca_certs=/ca.pem", "'ssl_ca_certs' is a TLS option"),
        ("redis+cluster://h1:7000,h2:7001?max_connections=9", "unknown option 'max_connections'"),
        ("redis+sentinel://h1:26379/mymaster?db=2", "unknown option 'db'"),
    ],
)
def test_an_unknown_url_option_is_refused_listing_the_known_ones(url: str, words: str) -> None:
    # Before: passed on to coredis, which ignores names it does not know: a typo ('prefx')
    # silently used the default prefix, that is another system's keys.
    with pytest.raises(BrokerError, match=re.escape(words)) as refused:
        RedisBroker(url)
    assert "prefix" in str(refused.value)
    assert "lease" in str(refused.value)


@pytest.mark.parametrize(
    "query",
    [
        "client_name=billing",
        "max_connections=50&timeout=3",
        "stream_timeout=2.5&connect_timeout=1.5",
        "max_idle_time=60&db=3",
        "noevict=true&notouch=false",
    ],
)
def test_the_coredis_url_options_are_passed_on(query: str) -> None:
    broker = RedisBroker(f"redis://host:6380/0?prefix=app&{query}")
    assert broker.prefix == "app"
    assert broker.url.endswith(f"?{query}")


def test_the_tls_url_options_are_passed_on_with_rediss() -> None:
    query = "ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_check_hostname=false"
    broker = RedisBroker(f"rediss://host:6380/0?{query}")
    assert broker.url.endswith("?" + query.replace("/", "%2F"))


def test_the_url_options_and_the_password_stay_out_of_sight() -> None:
    broker = RedisBroker("rediss://user:secret@host:6380/2?prefix=app&lease=7&ssl_cert_reqs=none")
    assert (broker.prefix, broker.lease) == ("app", 7.0)
    assert "secret" not in repr(broker)
    assert "prefix" not in broker.url
    assert "ssl_cert_reqs=none" in broker.url
    assert RedisBroker("unix:///run/redis.sock?prefix=u").prefix == "u"


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("ssl_cert_reqs=bogus", "ssl_cert_reqs must be one of none, optional, required"),
        ("ssl_check_hostname=maybe", "ssl_check_hostname must be true or false"),
        ("ssl_check_hostname=off", "ssl_check_hostname must be true or false"),
    ],
)
def test_a_bad_tls_option_value_names_the_option_and_its_values(query: str, said: str) -> None:
    with pytest.raises(BrokerError) as refused:
        RedisBroker(f"rediss://user:secret@host:6380/0?{query}")
    assert said in str(refused.value)
    assert "secret" not in str(refused.value)


def test_tls_option_values_are_spelt_the_one_way_both_clients_read() -> None:
    broker = RedisBroker("rediss://host:6380/0?ssl_cert_reqs=REQUIRED&ssl_check_hostname=Yes")
    assert broker.url.endswith("?ssl_cert_reqs=required&ssl_check_hostname=true")

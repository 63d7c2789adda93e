"""`connect_sync()`: the blocking client, over a real Redis with workers running elsewhere
(a trio run on another thread): the trio client's semantics and errors, from plain code
and from many threads at once."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import pytest
from client_helpers import SPECS, Resize, serving

from queueing import (
    AsyncioClient,
    InvalidQueue,
    PayloadError,
    QueueFull,
    QueueSystem,
    ResultTimeout,
    SyncClient,
    SyncReceipt,
    SystemStopping,
    TaskCancelled,
    TaskFailed,
    TaskState,
    UnknownQueue,
    UnknownTask,
    connect_sync,
)

pytestmark = pytest.mark.redis


def test_submit_then_result(redis_url: str) -> None:
    with serving(redis_url), connect_sync(redis_url, *SPECS) as client:
        assert isinstance(client, SyncClient)
        receipt = client.submit("area", Resize(6, 7))
        assert isinstance(receipt, SyncReceipt)
        assert receipt.queue == "area"
        assert receipt.result(timeout=10) == 42
        assert receipt.done()
        assert receipt.status().state is TaskState.SUCCEEDED
        assert client.receipt(receipt.id) == receipt


def test_one_client_serves_many_threads(redis_url: str) -> None:
    with serving(redis_url), connect_sync(redis_url, *SPECS) as client:

        def submit_and_wait(number: int) -> int:
            return int(client.submit("double", number).result(timeout=30))

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(submit_and_wait, range(200)))
    assert results == [2 * n for n in range(200)]


def test_submit_and_submit_many_take_a_priority(redis_url: str) -> None:
    with serving(redis_url), connect_sync(redis_url, *SPECS) as client:
        one = client.submit("double", 1, priority=9)
        many = client.submit_many("double", [2, 3], priority=4)
        assert [r.status().priority for r in (one, *many)] == [9, 4, 4]
        assert [r.result(timeout=10) for r in (one, *many)] == [2, 4, 6]


def test_submit_and_submit_many_take_a_tenant(redis_url: str) -> None:
    with serving(redis_url), connect_sync(redis_url, *SPECS) as client:
        one = client.submit("double", 1, tenant="acme")
        many = client.submit_many("double", [2, 3], tenant="globex")
        assert [r.status().tenant for r in (one, *many)] == ["acme", "globex", "globex"]
        assert [r.result(timeout=10) for r in (one, *many)] == [2, 4, 6]
        assert client.tenants("double") == []  # every task of theirs is done
        with pytest.raises(InvalidQueue, match="tenant must be"):
            client.submit("double", 4, tenant="a\nb")


def test_submit_many_and_requeue_give_sync_receipts(redis_url: str) -> None:
    with serving(redis_url), connect_sync(redis_url, *SPECS) as client:
        receipts = client.submit_many("double", range(20))
        assert [r.result(timeout=10) for r in receipts] == [2 * n for n in range(20)]
        failed = client.submit("fail", "x")
        with pytest.raises(TaskFailed):
            failed.result(timeout=10)
        letters = client.dead_letters("fail")
        assert [letter.id for letter in letters] == [failed.id]
        again = client.requeue("fail")
        assert all(isinstance(r, SyncReceipt) for r in again)
        with pytest.raises(TaskFailed):
            again[0].result(timeout=10)
        assert client.purge_dead_letters("fail") == 1


def test_refusals_are_the_trio_clients_errors(redis_url: str) -> None:
    with connect_sync(redis_url, *SPECS) as client:
        with pytest.raises(UnknownQueue):
            client.submit("nope", 1)
        with pytest.raises(PayloadError, match="expected int"):
            client.submit("double", "three")
        client.submit("held", 1)
        client.submit("held", 2)
        with pytest.raises(QueueFull) as caught:
            client.submit_many("held", [3, 4])
        assert caught.value.accepted == []  # type: ignore[attr-defined]
        with pytest.raises(UnknownTask):
            client.receipt("held:no-such-task").status()


def test_result_timeout_and_cancel(redis_url: str) -> None:
    with connect_sync(redis_url, *SPECS) as client:
        receipt = client.submit("held", 1)  # nobody serves it
        with pytest.raises(ResultTimeout):
            receipt.result(timeout=0.05)
        assert receipt.cancel() is True
        with pytest.raises(TaskCancelled):
            receipt.result()


def test_drain_waits_for_the_workers(redis_url: str) -> None:
    with serving(redis_url), connect_sync(redis_url, *SPECS) as client:
        receipts = [client.submit("sleep", 0.05) for _ in range(6)]
        client.drain(timeout=30)
        assert all(r.done() for r in receipts)


def test_calls_after_close_raise_system_stopping(redis_url: str) -> None:
    client = connect_sync(redis_url, *SPECS)
    receipt = client.submit("held", 1)
    client.close()
    client.close()  # harmless
    assert client.closed
    with pytest.raises(SystemStopping, match="closed"):
        client.submit("held", 2)
    with pytest.raises(SystemStopping, match="closed"):
        receipt.status()
    # Before: stats() and receipt() read the closed client's counters unsaid.
    with pytest.raises(SystemStopping, match="closed"):
        client.stats()
    with pytest.raises(SystemStopping, match="closed"):
        client.receipt(receipt.id)


# Members of the trio client that are its own run's (not calls a client makes).
TRIO_ONLY = {"actors", "shutdown_timeout", "unfinished"}


@pytest.mark.parametrize("facade", [AsyncioClient, SyncClient])
def test_the_facades_have_every_client_method_of_the_trio_client(facade: type) -> None:
    public = {name for name in dir(QueueSystem) if not name.startswith("_")}
    public |= {"converter"}  # an instance attribute of QueueSystem
    theirs = {name for name in dir(facade) if not name.startswith("_")}
    assert public - TRIO_ONLY <= theirs
    for name in public - TRIO_ONLY - {"names", "converter"}:
        ours = inspect.signature(getattr(QueueSystem, name)).parameters
        assert list(inspect.signature(getattr(facade, name)).parameters) == list(ours), name

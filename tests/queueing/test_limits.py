"""Explicit limits: outstanding tasks per queue, payload size, known queues, payload types."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
import trio

from queueing import (
    BrokerError,
    Full,
    InvalidQueue,
    PayloadError,
    PayloadTooLarge,
    Queue,
    QueueFull,
    QueueingError,
    UnknownQueue,
    Worker,
    connect,
    open_system,
)


@attrs.frozen
class Page:
    url: str
    depth: int


class Sleep(Worker):
    async def handle(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


class Gate(Worker):
    """Waits for the event it was given; returns the payload."""

    def __init__(self, gate: trio.Event) -> None:
        self.gate = gate

    async def handle(self, payload: Any) -> Any:
        await self.gate.wait()
        return payload


class Crawl(Worker):
    async def handle(self, page: Page) -> str:
        return page.url


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload


async def test_reject_policy_raises_queue_full_at_once(autojump_clock: Any) -> None:
    queue = Queue("q", Sleep, maxsize=2, when_full=Full.REJECT)
    async with open_system(queue) as system:
        await system.submit("q", 10.0)
        await system.submit("q", 10.0)
        with pytest.raises(QueueFull) as info:
            await system.submit("q", 10.0)
        assert trio.current_time() == 0.0
        assert info.value.queue == "q"
        assert info.value.maxsize == 2


async def test_queue_full_message_names_the_limit_and_how_to_fix_it(autojump_clock: Any) -> None:
    queue = Queue("thumbs", Sleep, maxsize=1, when_full=Full.REJECT)
    async with open_system(queue) as system:
        await system.submit("thumbs", 10.0)
        with pytest.raises(QueueFull) as info:
            await system.submit("thumbs", 10.0)
    message = str(info.value)
    assert "'thumbs'" in message
    assert "1 outstanding" in message
    assert "maxsize" in message
    assert "Overflow.WAIT" in message


async def test_queue_full_is_a_queueing_error() -> None:
    assert issubclass(QueueFull, QueueingError)


async def test_maxsize_counts_running_tasks_too(autojump_clock: Any) -> None:
    # One worker runs the first task, the second waits: two outstanding, the third refused.
    queue = Queue("q", Sleep, workers=1, maxsize=2, when_full=Full.REJECT)
    async with open_system(queue) as system:
        await system.submit("q", 10.0)
        await system.submit("q", 10.0)
        await trio.sleep(1)
        assert system.stats()["q"].in_flight == 1
        with pytest.raises(QueueFull):
            await system.submit("q", 10.0)


async def test_wait_policy_makes_submit_wait_until_a_task_finishes(autojump_clock: Any) -> None:
    queue = Queue("q", Sleep, workers=1, maxsize=2, when_full=Full.WAIT)
    async with open_system(queue) as system:
        first = await system.submit("q", 5.0)
        await system.submit("q", 5.0)
        assert trio.current_time() == 0.0
        third = await system.submit("q", 5.0)  # backpressure: waits for room
        assert trio.current_time() == pytest.approx(5.0)
        assert first.done()
        assert await third == 5.0


async def test_waiting_submitters_resume_one_per_finished_task(autojump_clock: Any) -> None:
    accepted: list[float] = []
    queue = Queue("q", Sleep, workers=1, maxsize=1)
    async with open_system(queue) as system:
        await system.submit("q", 2.0)

        async def submit() -> None:
            await system.submit("q", 2.0)
            accepted.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(submit)
    assert accepted == pytest.approx([2.0, 4.0, 6.0])


async def test_wait_with_full_timeout_raises_queue_full_at_the_deadline(
    autojump_clock: Any,
) -> None:
    queue = Queue("q", Sleep, workers=1, maxsize=1, full_timeout=3.0)
    async with open_system(queue) as system:
        await system.submit("q", 100.0)
        with pytest.raises(QueueFull) as info:
            await system.submit("q", 1.0)
        assert trio.current_time() == pytest.approx(3.0)
        assert "after waiting 3s" in str(info.value)


async def test_wait_with_full_timeout_succeeds_if_room_comes_in_time(autojump_clock: Any) -> None:
    queue = Queue("q", Sleep, workers=1, maxsize=1, full_timeout=3.0)
    async with open_system(queue) as system:
        await system.submit("q", 2.0)
        receipt = await system.submit("q", 1.0)
        assert trio.current_time() == pytest.approx(2.0)
        assert await receipt == 1.0


async def test_submit_timeout_overrides_the_queue_full_timeout(autojump_clock: Any) -> None:
    queue = Queue("q", Sleep, workers=1, maxsize=1, full_timeout=100.0)
    async with open_system(queue) as system:
        await system.submit("q", 1000.0)
        with pytest.raises(QueueFull):
            await system.submit("q", 1.0, timeout=0.5)
        assert trio.current_time() == pytest.approx(0.5)


async def test_submit_timeout_bounds_the_wait_without_a_queue_full_timeout(
    autojump_clock: Any,
) -> None:
    queue = Queue("q", Sleep, workers=1, maxsize=1)
    async with open_system(queue) as system:
        await system.submit("q", 1000.0)
        with pytest.raises(QueueFull):
            await system.submit("q", 1.0, timeout=7.0)
        assert trio.current_time() == pytest.approx(7.0)


async def test_payload_over_max_payload_is_refused_with_size_and_limit() -> None:
    queue = Queue("q", Echo, max_payload=100)
    async with open_system(queue) as system:
        with pytest.raises(PayloadTooLarge) as info:
            await system.submit("q", "x" * 200)
    error = info.value
    assert (error.queue, error.size, error.limit) == ("q", 202, 100)
    assert "202 bytes" in str(error)
    assert "max_payload of 100 bytes" in str(error)
    assert "Queue(max_payload=...)" in str(error)


async def test_payload_at_max_payload_is_accepted() -> None:
    queue = Queue("q", Echo, max_payload=100)
    async with open_system(queue) as system:
        receipt = await system.submit("q", "x" * 98)  # 100 bytes as JSON, quotes included
        assert await receipt == "x" * 98


async def test_payload_size_counts_utf8_bytes_not_characters() -> None:
    queue = Queue("q", Echo, max_payload=100)
    async with open_system(queue) as system:
        with pytest.raises(PayloadTooLarge) as info:
            await system.submit("q", "é" * 60)  # 60 characters, 122 bytes
        assert info.value.size == 122


async def test_structured_payload_size_is_its_serialized_size() -> None:
    queue = Queue("q", Echo, max_payload=64)
    async with open_system(queue) as system:
        with pytest.raises(PayloadTooLarge):
            await system.submit("q", {"items": list(range(40))})
        assert await (await system.submit("q", {"items": [1, 2]})) == {"items": [1, 2]}


async def test_unknown_queue_is_refused_listing_the_known_ones() -> None:
    async with open_system(Queue("fetch", Echo), Queue("thumbs", Echo)) as system:
        with pytest.raises(UnknownQueue) as info:
            await system.submit("fecth", 1)
    assert info.value.name == "fecth"
    assert "'fecth'" in str(info.value)
    assert "fetch, thumbs" in str(info.value)
    assert isinstance(info.value, LookupError)


async def test_dict_missing_a_field_is_a_payload_error_naming_the_field() -> None:
    async with open_system(Queue("crawl", Crawl)) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit("crawl", {"url": "https://example.org"})
    assert "depth" in str(info.value)
    assert "Page" in str(info.value)
    assert info.value.queue == "crawl"


async def test_field_of_the_wrong_type_is_a_payload_error_naming_field_and_type() -> None:
    async with open_system(Queue("crawl", Crawl)) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit("crawl", {"url": "u", "depth": "deep"})
    assert "depth" in str(info.value)
    assert "int" in str(info.value)


async def test_extra_field_is_a_payload_error() -> None:
    async with open_system(Queue("crawl", Crawl)) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit("crawl", {"url": "u", "depth": 1, "colour": "red"})
    assert "colour" in str(info.value)


async def test_object_the_converter_cannot_serialize_is_a_payload_error() -> None:
    class Opaque:
        pass

    async with open_system(Queue("q", Echo)) as system:
        with pytest.raises(PayloadError) as info:
            await system.submit("q", {"thing": Opaque()})
    assert "Opaque" in str(info.value)
    assert "hook" in str(info.value)
    assert isinstance(info.value, TypeError)


async def test_payload_of_the_wrong_class_is_a_payload_error() -> None:
    async with open_system(Queue("crawl", Crawl)) as system:
        with pytest.raises(PayloadError):
            await system.submit("crawl", 42)


async def test_refused_submissions_lose_nothing_accepted(autojump_clock: Any) -> None:
    # The accepted tasks wait at a gate, so the queue stays full whatever the scheduler
    # runs first (trio shuffles the order of runnable tasks: a worker that ran one of them
    # between two submits would make room).
    gate = trio.Event()
    queue = Queue(
        "q", Gate, maxsize=3, when_full=Full.REJECT, max_payload=32, worker_kwargs={"gate": gate}
    )
    async with open_system(queue) as system:
        accepted = [await system.submit("q", i) for i in range(3)]
        with pytest.raises(QueueFull):
            await system.submit("q", 3)
        with pytest.raises(PayloadTooLarge):
            await system.submit("q", "x" * 100)
        with pytest.raises(UnknownQueue):
            await system.submit("nope", 1)
        gate.set()
        assert [await r for r in accepted] == [0, 1, 2]
        stats = system.stats()["q"]
        assert (stats.submitted, stats.succeeded, stats.outstanding) == (3, 3, 0)


async def test_refused_payload_takes_no_room_in_the_queue() -> None:
    gate = trio.Event()
    queue = Queue("crawl", Crawl, maxsize=1, when_full=Full.REJECT)
    async with open_system(queue) as system:
        with pytest.raises(PayloadError):
            await system.submit("crawl", {"url": "u"})
        assert system.stats()["crawl"].outstanding == 0
        receipt = await system.submit("crawl", Page("u", 1))
        gate.set()
        assert await receipt == "u"


async def test_a_timed_out_submit_takes_no_room(autojump_clock: Any) -> None:
    gate = trio.Event()
    queue = Queue("q", Gate, maxsize=1, worker_kwargs={"gate": gate})
    async with open_system(queue) as system:
        first = await system.submit("q", 1)
        with pytest.raises(QueueFull):
            await system.submit("q", 2, timeout=1.0)
        assert system.stats()["q"].outstanding == 1
        gate.set()
        assert await first == 1
        assert system.stats()["q"].submitted == 1


async def test_a_submit_that_may_not_wait_says_it_waited_no_time(autojump_clock: Any) -> None:
    # With Full.WAIT and timeout=0 the message must not claim the policy is to reject.
    queue = Queue("q", Sleep, maxsize=1)
    async with open_system(queue) as system:
        await system.submit("q", 10.0)
        with pytest.raises(QueueFull) as info:
            await system.submit("q", 1.0, timeout=0)
    assert "after waiting 0s" in str(info.value)
    assert "policy is to reject" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["memory:/", "memory:", "memory:///", "memory://localhost:6379", "memory://?max_results=9"],
)
async def test_a_memory_url_with_a_typo_or_options_is_refused(url: str) -> None:
    # Before: every URL of scheme "memory" opened the memory broker, options ignored.
    with pytest.raises(InvalidQueue, match=r"exactly 'memory://'.*max_results=") as caught:
        async with open_system(Queue("echo", Echo), broker=url):
            pass
    assert repr(url) in str(caught.value)


@pytest.mark.parametrize("field", ["max_payload", "max_result"])
def test_a_size_limit_past_what_a_broker_holds_is_refused_naming_it(field: str) -> None:
    # Before: Queue(max_payload=10**12) was accepted; a payload of a few hundred MiB then
    # passed submit's check and failed at the broker (RabbitMQ closed the connection, and
    # the submit retried 20 times before a BrokerError that did not say why).
    Queue("echo", Echo, **{field: 512 * 1024 * 1024})  # the most: accepted
    with pytest.raises(InvalidQueue, match=rf"{field} must be at most 536870912 bytes") as caught:
        Queue("echo", Echo, **{field: 512 * 1024 * 1024 + 1})
    assert "reference" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_results": -1}, "max_results must be an int >= 0, got -1"),
        ({"max_dead_letters": 0}, "max_dead_letters must be an int >= 1, got 0"),
        ({"max_dead_letters": -3}, "max_dead_letters must be an int >= 1, got -3"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must be a number of seconds >= 0"),
        ({"converter": "json"}, "converter must be a cattrs converter, got 'json'"),
    ],
    ids=["results", "letters-0", "letters-negative", "shutdown", "converter"],
)
async def test_bad_options_of_open_system_are_refused_naming_them(
    options: dict[str, Any], says: str
) -> None:
    # Before: the counts were accepted (and ignored, or dead letters dropped at once), the
    # converter failed later with an AttributeError, shutdown_timeout named "shutdown".
    with pytest.raises(InvalidQueue, match=re.escape(says)):
        async with open_system(Queue("echo", Echo), **options):
            pass


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"connect_timeout": -1}, "connect_timeout must be a number of seconds > 0, got -1"),
        ({"connect_timeout": 0}, "connect_timeout must be a number of seconds > 0, got 0"),
        ({"converter": object}, "converter must be a cattrs converter"),
    ],
    ids=["timeout-negative", "timeout-0", "converter"],
)
async def test_bad_options_of_connect_are_refused_naming_them(
    options: dict[str, Any], says: str, tmp_path: Any
) -> None:
    # Before: connect_timeout=-1 raised trio's "`seconds` must be non-negative".
    with pytest.raises(InvalidQueue, match=re.escape(says)):
        async with connect(f"sqlite:///{tmp_path}/q.db", **options):
            pass


async def test_a_key_for_submit_many_that_is_no_function_is_refused() -> None:
    async with open_system(Queue("echo", Echo)) as system:
        with pytest.raises(InvalidQueue, match="key is a function of each payload"):
            await system.submit_many("echo", [1], key="order-1")  # type: ignore[arg-type]
        assert system.stats()["echo"].submitted == 0


async def test_a_list_of_queues_is_refused_with_how_to_pass_them() -> None:
    queues = [Queue("echo", Echo), Queue("sleep", Sleep)]
    with pytest.raises(InvalidQueue, match=r"got a list of 2: unpack it \(open_system\(\*specs\)"):
        async with open_system(queues):  # type: ignore[arg-type]
            pass


async def test_a_worker_class_is_refused_with_how_to_wrap_it() -> None:
    with pytest.raises(
        InvalidQueue, match=r"is a Worker class, not a Queue.*Queue\('name', Echo\)"
    ):
        async with open_system(Echo):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize("setting", ["workers", "threads"])
def test_workers_past_the_limit_are_refused_naming_it(setting: str) -> None:
    # Before: Queue(workers=10**6) was accepted, and open_system started a million actors.
    with pytest.raises(InvalidQueue, match=rf"{setting} must be at most 10000 per queue"):
        Queue("echo", Echo, **{setting: 10_001})
    assert getattr(Queue("echo", Echo, **{setting: 10_000}), setting) == 10_000


class NoHandle(Worker):
    """Forgot to implement handle()."""


def test_a_worker_class_without_handle_is_refused_saying_so() -> None:
    # Before: accepted; every submit then failed with "the payload does not structure as
    # ~P: StructureHandlerNotFoundError".
    with pytest.raises(InvalidQueue, match=r"NoHandle does not implement handle\(\)"):
        Queue("nohandle", NoHandle)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/q.db?lease=1e-9",
        "redis://localhost:6399/0?lease=0.01",
        "amqp://localhost:5699/?results=redis://localhost:6399/0&lease=0.05",
    ],
)
async def test_a_lease_below_the_minimum_is_refused_naming_it(url: str, tmp_path: Any) -> None:
    with pytest.raises(BrokerError, match=r"lease must be at least 0\.1 seconds .*\?lease=30"):
        async with open_system(Queue("sleep", Sleep), broker=url.format(tmp=tmp_path)):
            pass  # pragma: no cover - refused before it opens


@attrs.frozen
class Counts:
    by_page: dict[int, int]


class IntKeys(Worker):
    async def handle(self, scores: dict[int, str]) -> int:
        return len(scores)  # pragma: no cover - never defined


class IntKeysInAField(Worker):
    async def handle(self, counts: Counts) -> int:
        return len(counts.by_page)  # pragma: no cover - never defined


class IntKeysInTheResult(Worker):
    async def handle(self, n: int) -> dict[str, dict[float, str]]:
        return {}  # pragma: no cover - never defined


class StrKeys(Worker):
    async def handle(self, scores: dict[str, list[Page]]) -> dict[str, int]:
        return {key: len(pages) for key, pages in scores.items()}


class Unresolvable(Worker):
    async def handle(self, page: Pagee) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 1  # pragma: no cover - never defined


@pytest.mark.parametrize(
    ("worker", "said"),
    [
        (IntKeys, "its payload 'scores' is declared as dict[int, str]"),
        (IntKeysInAField, "Counts.by_page: its dict keys are int"),
        (IntKeysInTheResult, "its result is declared as dict[str, dict[float, str]]"),
    ],
)
def test_a_type_json_cannot_carry_back_is_refused_at_definition(
    worker: type[Worker], said: str
) -> None:
    with pytest.raises(InvalidQueue) as refused:
        Queue("scores", worker)
    assert said in str(refused.value)
    assert "JSON object keys are strings" in str(refused.value)
    assert "use str keys" in str(refused.value)


async def test_str_keyed_dicts_of_classes_are_accepted_and_round_trip() -> None:
    async with open_system(Queue("scores", StrKeys)) as system:
        receipt = await system.submit("scores", {"a": [Page("u", 1)], "b": []})
        assert await receipt.result(timeout=5) == {"a": 1, "b": 0}


def test_annotations_that_do_not_resolve_are_refused_at_definition() -> None:
    with pytest.raises(InvalidQueue) as refused:
        Queue("pages", Unresolvable)
    assert "Unresolvable.handle has annotations that do not resolve" in str(refused.value)
    assert "name 'Pagee' is not defined" in str(refused.value)
    assert "at module level" in str(refused.value)


class NoPayload(Worker):
    async def handle(self) -> int:  # type: ignore[override]
        return 1  # pragma: no cover - never defined


class TwoPayloads(Worker):
    async def handle(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + b  # pragma: no cover - never defined


class Yields(Worker):
    async def handle(self, n: int) -> Any:  # an async generator
        yield n  # pragma: no cover - never defined


class WithOptions(Worker):
    async def handle(self, n: int, scale: int = 2) -> int:  # type: ignore[override]
        return n * scale


@pytest.mark.parametrize("worker", [NoPayload, TwoPayloads])
def test_a_handle_that_cannot_take_one_payload_is_refused_at_definition(
    worker: type[Worker],
) -> None:
    with pytest.raises(InvalidQueue) as refused:
        Queue("odd", worker)
    assert f"{worker.__name__}.handle(self" in str(refused.value)
    assert "cannot be called with one payload" in str(refused.value)
    assert "async def handle(self, payload)" in str(refused.value)


def test_a_handle_that_yields_is_refused_at_definition() -> None:
    with pytest.raises(InvalidQueue, match=r"Yields\.handle is an async generator"):
        Queue("odd", Yields)


async def test_a_handle_with_defaulted_options_takes_one_payload() -> None:
    async with open_system(Queue("scaled", WithOptions)) as system:
        assert await (await system.submit("scaled", 21)) == 42

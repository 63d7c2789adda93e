"""A payload over RabbitMQ's `max_message_size` (a server setting: 128 MiB by default on
3.x, 16 MiB on 4.x) is refused at once with `MessageTooLarge` (a `PayloadTooLarge`), its
reservation taken back, and the other tasks keep flowing.

RabbitMQ 3.10 has no per-vhost or per-queue message-size limit (only the global
`max_message_size`), so these tests send a real 130 MiB message to the machine's RabbitMQ
(5 to 13 s each under load, mostly Python encoding 130 MiB of JSON). The text of
RabbitMQ's refusal is checked against what 3.10 sent."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from amqp_helpers import wait_for

from queueing import PayloadTooLarge, Queue, Worker, open_system
from queueing.brokers import Admission
from queueing.brokers.amqp import PreconditionFailed, PublishOutcomeUnknown, _upkeep
from queueing.brokers.amqp._errors import MessageTooLarge, max_message_size
from queueing.brokers.redis._wire import encode_envelope

pytestmark = pytest.mark.amqp

#: RabbitMQ's default max_message_size on 3.x (the machine's), and a payload over it.
LIMIT_3X = 128 * 1024 * 1024
HUGE = LIMIT_3X + 2 * 1024 * 1024
#: What RabbitMQ 3.10.8 answered to a 130 MiB publish (Channel.Close, 406).
REFUSAL = (
    "PRECONDITION_FAILED - message size 136314880 is larger than configured max size 134217728"
)


class Echo(Worker):
    async def handle(self, payload: Any) -> Any:
        return payload if len(payload) < 100 else len(payload)


def served(url: str) -> Any:
    # max_payload above RabbitMQ's limit: the misconfiguration this is about.
    queue = Queue("big", Echo, max_payload=2 * LIMIT_3X)
    return open_system(queue, broker=url, shutdown_timeout=1.0)


async def left_behind(system: Any) -> list[Any]:
    """What the janitor would publish (reservations never confirmed), looking past its
    grace: nothing once every task has an outcome and refused ones were taken back."""
    broker = system._broker
    await broker.flush()
    return list(await broker._store.adopt("big", time.time() + 3600, "probe."))


def test_rabbitmqs_refusal_of_a_message_too_large_gives_its_limit() -> None:
    closed = PreconditionFailed("closed", reply_code=406, reply_text=REFUSAL)
    unknown = PublishOutcomeUnknown("the channel closed")
    unknown.__cause__ = closed
    assert max_message_size(unknown) == max_message_size(closed) == 134217728
    # Without "configured" (RabbitMQ's words at its hard limit, 512 MiB).
    hard = PreconditionFailed("closed", reply_text="message size 9 is larger than max size 8")
    assert max_message_size(hard) == 8
    other = PreconditionFailed("closed", reply_text="PRECONDITION_FAILED - invalid expiration")
    assert max_message_size(other) is None
    assert max_message_size(PublishOutcomeUnknown("lost")) is None


async def test_a_payload_over_max_message_size_is_refused_at_once_and_the_rest_flows(
    amqp_url: str,
) -> None:
    huge = "x" * HUGE
    async with served(amqp_url) as system:
        assert await (await system.submit("big", "before")) == "before"
        with pytest.raises(MessageTooLarge) as info:
            await system.submit("big", huge)
        error = info.value
        assert isinstance(error, PayloadTooLarge)  # what every broker raises over a limit
        assert error.queue == "big"
        assert error.size > HUGE > error.limit  # the message: the payload and its envelope
        assert error.max_payload == 2 * LIMIT_3X
        text = str(error)
        assert f"max_message_size of {error.limit} bytes" in text
        assert f"is {error.size} bytes" in text
        assert "Queue(max_payload=...)" in text
        assert "reference" in text
        # The channel RabbitMQ closed is opened again: the next tasks run.
        assert await (await system.submit("big", "after")) == "after"
        assert await left_behind(system) == []  # nothing for the janitor to publish
        assert await system._broker.outstanding("big") == 0
        # Learned from the refusal: the next one is refused before anything is sent
        # (the publisher's channel stays open).
        channel = system._broker._rabbit._publisher
        with pytest.raises(MessageTooLarge):
            await system.submit("big", huge)
        assert system._broker._rabbit._publisher is channel
        assert not channel.is_closed
        assert await (await system.submit("big", "last")) == "last"
        assert await left_behind(system) == []


async def test_submit_many_accounts_for_a_refused_payload_and_those_after_it(
    amqp_url: str,
) -> None:
    huge = "x" * HUGE
    async with served(amqp_url) as system:
        # One write, one channel: RabbitMQ closes it at the huge one. Its limit is not
        # known yet, so the three are reserved and sent.
        with pytest.raises(MessageTooLarge) as info:
            await system.submit_many("big", ["first", huge, "third"])
        error: Any = info.value
        assert error.unknown == []
        assert [len(p) for p in error.rejected] == [HUGE, len("third")]
        [accepted] = error.accepted
        assert await accepted == "first"
        assert await left_behind(system) == []  # "third" was taken back, never published
        assert await system._broker.outstanding("big") == 0
        # Known now: refused before anything is reserved, the ones before it accepted.
        with pytest.raises(MessageTooLarge) as info:
            await system.submit_many("big", ["one", "two", huge, "four"])
        error = info.value
        assert [len(p) for p in error.rejected] == [HUGE, len("four")]
        assert [await r for r in error.accepted] == ["one", "two"]
        assert error.unknown == []
        assert await left_behind(system) == []
        assert await system._broker.outstanding("big") == 0


async def test_the_janitor_takes_back_a_reservation_over_max_message_size(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_upkeep, "UNCONFIRMED_GRACE", 0.0)
    monkeypatch.setattr(_upkeep, "JANITOR_EVERY", 0.05)
    # The janitor reads the 130 MiB envelope back from Redis: the lean client's parser
    # (redis/_resp.py) takes time quadratic in a reply's size (25 s for 32 MiB), so this
    # reads it with coredis's.
    monkeypatch.setenv("QUEUEING_REDIS_CLIENT", "coredis")
    async with served(amqp_url) as system:
        # A client that reserved a huge task and died before publishing it.
        broker = system._broker
        rt = system._runtimes["big"]
        task = system._engine.task(rt, "x" * HUGE, None)
        entry = (task, "lost-nonce", encode_envelope(task), "", "")
        with caplog.at_level(logging.ERROR, logger="queueing.rabbitmq"):
            [answers] = await broker._store.reserve_batch([(rt.info, [entry])])
            assert answers == [Admission.ACCEPTED]

            async def taken_back() -> bool:  # (a lookup would read its 130 MiB each time)
                return await broker.outstanding("big") == 0

            await wait_for(taken_back, timeout=60.0)
        assert await broker.lookup(task.id) is None
        assert await left_behind(system) == []
        assert f"task {task.id}: dropped, never published" in caplog.text
        assert "max_message_size" in caplog.text
        # The channel RabbitMQ closed is opened again: the next tasks run.
        assert await (await system.submit("big", "after")) == "after"

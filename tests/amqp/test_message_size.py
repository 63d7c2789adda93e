"""A payload over RabbitMQ's `max_message_size` (a server setting: 128 MiB by default on
3.x, 16 MiB on 4.x) is refused at once with `MessageTooLarge` (a `PayloadTooLarge`), its
reservation taken back, and the other tasks keep flowing.

RabbitMQ 3.10 has no per-vhost or per-queue message-size limit (only the global
`max_message_size`), so these tests send a real 130 MiB message to the machine's RabbitMQ:
about a second each. The text of RabbitMQ's refusal is checked against what 3.10 sent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from queueing import PayloadTooLarge, Queue, Worker, open_system
from queueing.brokers.amqp import PreconditionFailed, PublishOutcomeUnknown
from queueing.brokers.amqp._errors import MessageTooLarge, max_message_size

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

"""Answering an ask: error replies that do not crash, and replies deferred past `receive`."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorError,
    ActorSystem,
    AskTimeout,
    ErrorReply,
    Reply,
    Request,
    Restart,
)


class InsufficientFunds(Exception):
    pass


@attrs.frozen
class Withdraw(Request[int]):
    amount: int


class Account(Actor):
    def __init__(self) -> None:
        self.balance = 100

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Withdraw):
            if message.amount > self.balance:
                return ErrorReply(InsufficientFunds(f"balance is {self.balance}"))
            self.balance -= message.amount
            return self.balance
        return None


async def test_an_error_reply_raises_in_the_asker_and_the_actor_keeps_its_state(
    actor_system: ActorSystem,
) -> None:
    ref = await actor_system.spawn(Account)
    assert await ref.ask(Withdraw(30)) == 70
    with pytest.raises(InsufficientFunds, match="balance is 70"):
        await ref.ask(Withdraw(500))
    assert await ref.ask(Withdraw(20)) == 50  # same instance: no crash, no restart
    stats = ref.stats()
    assert (stats.restarts, stats.failed, stats.processed) == (0, 0, 3)


def test_an_error_reply_wants_an_exception() -> None:
    with pytest.raises(TypeError):
        ErrorReply("not an exception")  # type: ignore[arg-type]


class Batcher(Actor):
    """Answers asks in batches of two: the first ask of a batch is deferred."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Reply[Any], Any]] = []

    async def receive(self, message: Any) -> Any:
        if message == "tell me later":
            self.defer_reply()  # outside an ask: an error
        self.waiting.append((self.defer_reply(), message))
        if len(self.waiting) == 2:
            batch = [m for _, m in self.waiting]
            for reply, _ in self.waiting:
                reply.send(batch)
            self.waiting.clear()
        return "ignored: the reply was deferred"


async def test_a_deferred_reply_is_sent_later_and_the_actor_goes_on_meanwhile(
    actor_system: ActorSystem,
) -> None:
    ref = await actor_system.spawn(Batcher)
    answers: dict[str, Any] = {}

    async def ask(message: str) -> None:
        answers[message] = await ref.ask(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert answers == {}  # "a" is handled, its answer deferred
        nursery.start_soon(ask, "b")
    assert answers == {"a": ["a", "b"], "b": ["a", "b"]}


async def test_defer_reply_outside_an_ask_is_an_error(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Batcher, restart=Restart.TEMPORARY)
    await ref.tell("tell me later")
    error = (await ref.join()).reason
    assert isinstance(error, ActorError)
    assert "defer_reply() outside the handling of an ask" in str(error)


async def test_a_deferred_reply_can_fail_or_answer_with_an_error_reply(
    actor_system: ActorSystem,
) -> None:
    class Deferring(Actor):
        async def receive(self, message: Any) -> None:
            reply = self.defer_reply()
            if message == "fail":
                reply.fail(KeyError("gone"))
            else:
                reply.send(ErrorReply(ValueError("refused")))

    ref = await actor_system.spawn(Deferring)
    with pytest.raises(KeyError, match="gone"):
        await ref.ask("fail")
    with pytest.raises(ValueError, match="refused"):
        await ref.ask("error reply")
    assert ref.stats().restarts == 0


async def test_a_reply_after_the_askers_timeout_is_discarded(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    kept: list[Reply[Any]] = []

    class Slow(Actor):
        async def receive(self, message: Any) -> None:
            kept.append(self.defer_reply())

    ref = await actor_system.spawn(Slow)
    with pytest.raises(AskTimeout):
        await ref.ask("late", timeout=1)
    assert kept[0].done  # the timeout answered it
    kept[0].send("too late")  # ignored, no error
    assert "done" in repr(kept[0])


async def test_a_deferred_reply_can_be_answered_by_another_actor(
    actor_system: ActorSystem,
) -> None:
    class Worker(Actor):
        async def receive(self, job: tuple[Reply[int], int]) -> None:
            reply, n = job
            reply.send(n * n)

    class Front(Actor):
        async def receive(self, n: int) -> None:
            await self.system.lookup("worker").tell((self.defer_reply(), n))

    await actor_system.spawn(Worker, name="worker")
    front = await actor_system.spawn(Front)
    assert [await front.ask(n) for n in range(4)] == [0, 1, 4, 9]

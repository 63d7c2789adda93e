"""Stash: an actor sets messages aside until it is ready, and loses none of them."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorSystem, Restart, StashFull


class Gatekeeper(Actor):
    """Stashes everything until "open"; then handles messages in order."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen
        self.open = False

    async def receive(self, message: Any) -> Any:
        if message == "open":
            self.open = True
            return self.unstash_all()
        if message == "crash":
            raise RuntimeError("crash")
        if not self.open:
            self.stash(message)
            return None
        self.seen.append(message)
        return f"handled {message}"


async def test_stashed_messages_are_handled_in_order_after_unstash_all(
    actor_system: ActorSystem,
) -> None:
    seen: list[Any] = []
    ref = await actor_system.spawn(Gatekeeper, seen)
    for n in range(3):
        await ref.tell(n)
    assert await ref.ask("open") == 3
    await ref.tell("after")
    assert await ref.ask("sync") == "handled sync"
    assert seen == [0, 1, 2, "after", "sync"]


async def test_unstashed_messages_go_ahead_of_those_queued_meanwhile(
    actor_system: ActorSystem,
) -> None:
    seen: list[Any] = []
    gate = trio.Event()

    class Slow(Gatekeeper):
        async def receive(self, message: Any) -> Any:
            if message == "open":
                await gate.wait()
            return await super().receive(message)

    ref = await actor_system.spawn(Slow, seen)
    await ref.tell("a")
    await ref.tell("open")
    await trio.testing.wait_all_tasks_blocked()
    await ref.tell("b")  # queued while "open" is being handled
    gate.set()
    assert await ref.ask("sync") == "handled sync"
    assert seen == ["a", "b", "sync"]


async def test_a_stashed_ask_is_answered_when_it_is_handled(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Gatekeeper, [])
    answers: list[Any] = []

    async def ask() -> None:
        answers.append(await ref.ask("question"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # stashed, not answered with receive's None
        await ref.tell("open")
    assert answers == ["handled question"]


async def test_a_restart_puts_the_stash_back_in_the_mailbox(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Any] = []
    ref = await actor_system.spawn(Gatekeeper, seen)
    await ref.tell(1)
    await ref.tell(2)
    await ref.tell("crash")
    await trio.sleep(1)  # restarted: the new instance stashes them again
    assert await ref.ask("open") == 2
    assert await ref.ask("sync") == "handled sync"
    assert seen == [1, 2, "sync"]


async def test_a_final_stop_fails_stashed_asks_and_counts_stashed_tells(
    actor_system: ActorSystem,
) -> None:
    ref = await actor_system.spawn(Gatekeeper, [], restart=Restart.TEMPORARY)
    errors: list[BaseException] = []

    async def ask() -> None:
        try:
            await ref.ask("question")
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await ref.tell("told")
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()
    assert len(errors) == 1
    assert "stopped before answering" in str(errors[0])
    assert ref.stats().undelivered == 1


async def test_the_stash_holds_at_most_the_mailbox_size(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Gatekeeper, [], mailbox_size=2, restart=Restart.TEMPORARY)
    for n in range(3):
        await ref.tell(n)
    error = (await ref.join()).reason
    assert isinstance(error, StashFull)
    assert (error.actor, error.capacity) == (ref.name, 2)
    assert "unstash_all()" in str(error)


async def test_unstash_all_with_nothing_stashed_returns_zero(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Gatekeeper, [])
    assert await ref.ask("open") == 0
    with pytest.raises(RuntimeError):
        await ref.ask("crash")

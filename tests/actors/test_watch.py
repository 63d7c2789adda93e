"""Death watch: `Terminated` notices to watching actors, and `ref.join()` for callers."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import Actor, ActorRef, ActorSystem, Restart, Terminated


class Target(Actor):
    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise ValueError("target crashed")
        if message == "stop":
            self.stop()
        return message


class Watcher(Actor):
    """Watches `target` from on_start; records every Terminated it receives."""

    def __init__(self, target: ActorRef, notices: list[Terminated]) -> None:
        self.target = target
        self.notices = notices

    async def on_start(self) -> None:
        self.watch(self.target)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            self.notices.append(message)
        elif message == "unwatch":
            self.unwatch(self.target)
        return None


async def test_a_watcher_receives_terminated_when_the_actor_stops(
    actor_system: ActorSystem,
) -> None:
    notices: list[Terminated] = []
    target = await actor_system.spawn(Target)
    await actor_system.spawn(Watcher, target, notices)
    await trio.testing.wait_all_tasks_blocked()
    await target.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert notices == [Terminated(target, None)]


async def test_terminated_carries_the_error_that_ended_the_actor(
    actor_system: ActorSystem,
) -> None:
    notices: list[Terminated] = []
    target = await actor_system.spawn(Target, restart=Restart.TEMPORARY)
    await actor_system.spawn(Watcher, target, notices)
    await trio.testing.wait_all_tasks_blocked()
    await target.tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert len(notices) == 1
    assert notices[0].actor is target
    assert isinstance(notices[0].reason, ValueError)
    assert str(notices[0].reason) == "target crashed"


async def test_no_terminated_is_sent_when_the_actor_is_only_restarted(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    notices: list[Terminated] = []
    target = await actor_system.spawn(Target, restart=Restart.PERMANENT)
    await actor_system.spawn(Watcher, target, notices)
    await trio.testing.wait_all_tasks_blocked()
    await target.tell("crash")
    await target.tell("stop")  # a normal exit: PERMANENT restarts it again
    assert await target.ask("still here") == "still here"
    assert target.stats().restarts == 2
    assert notices == []


async def test_watching_an_actor_that_already_stopped_sends_terminated_at_once(
    actor_system: ActorSystem,
) -> None:
    notices: list[Terminated] = []
    target = await actor_system.spawn(Target)
    await target.stop()
    await actor_system.spawn(Watcher, target, notices)
    await trio.testing.wait_all_tasks_blocked()
    assert notices == [Terminated(target, None)]


async def test_an_unwatched_actor_sends_no_terminated(actor_system: ActorSystem) -> None:
    notices: list[Terminated] = []
    target = await actor_system.spawn(Target)
    watcher = await actor_system.spawn(Watcher, target, notices)
    await watcher.ask("unwatch")
    await target.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert notices == []


async def test_every_watcher_is_told(actor_system: ActorSystem) -> None:
    first: list[Terminated] = []
    second: list[Terminated] = []
    target = await actor_system.spawn(Target)
    await actor_system.spawn(Watcher, target, first)
    await actor_system.spawn(Watcher, target, second)
    await trio.testing.wait_all_tasks_blocked()
    await target.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert len(first) == len(second) == 1


async def test_terminated_reaches_a_watcher_with_a_full_mailbox(
    actor_system: ActorSystem,
) -> None:
    # Runtime notices bypass the mailbox bound, so death watch works under load.
    notices: list[Terminated] = []
    gate = trio.Event()

    class BusyWatcher(Watcher):
        async def receive(self, message: Any) -> Any:
            if not isinstance(message, Terminated):
                await gate.wait()
            return await super().receive(message)

    target = await actor_system.spawn(Target)
    watcher = await actor_system.spawn(BusyWatcher, target, notices, mailbox_size=1)
    await watcher.tell("busy")
    await trio.testing.wait_all_tasks_blocked()
    await watcher.tell("queued")  # the mailbox is full now
    await target.stop()
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert notices == [Terminated(target, None)]


async def test_join_waits_until_the_actor_stops_and_returns_why(
    actor_system: ActorSystem,
) -> None:
    target = await actor_system.spawn(Target, restart=Restart.TRANSIENT)
    results: list[Terminated] = []

    async def join() -> None:
        results.append(await target.join())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        await target.tell("stop")
    assert results == [Terminated(target, None)]


async def test_join_on_a_stopped_actor_returns_at_once(actor_system: ActorSystem) -> None:
    target = await actor_system.spawn(Target)
    first = await target.stop()
    assert await target.join() is first
    assert await target.stop() is first  # stopping twice is harmless

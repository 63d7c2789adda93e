"""Actors: receive one message at a time, lifecycle hooks, restarts, and stopping."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorState, ActorStopped, ActorSystem, Restart


class Log(Actor):
    """Appends lifecycle events and messages to a shared list; crashes on "crash"."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.count = 0

    async def on_start(self) -> None:
        self.events.append("start")

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("asked to crash")
        if message == "stop":
            self.stop()
            return None
        self.count += 1
        self.events.append(message)
        return self.count

    async def on_stop(self) -> None:
        self.events.append("stop")


async def test_receive_handles_one_message_at_a_time(actor_system: ActorSystem) -> None:
    busy = 0
    most = 0

    class Slow(Actor):
        async def receive(self, message: Any) -> None:
            nonlocal busy, most
            busy += 1
            most = max(most, busy)
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            busy -= 1

    ref = await actor_system.spawn(Slow)
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(ref.tell, i)
    await trio.testing.wait_all_tasks_blocked()
    assert ref.stats().processed == 10
    assert most == 1


async def test_on_start_runs_before_the_first_message(actor_system: ActorSystem) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events)
    await ref.tell("hello")
    await trio.testing.wait_all_tasks_blocked()
    assert events == ["start", "hello"]


async def test_on_stop_runs_when_the_actor_is_stopped(actor_system: ActorSystem) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events)
    await ref.ask("hello")
    await ref.stop()
    assert events == ["start", "hello", "stop"]


async def test_on_stop_runs_after_a_crash(actor_system: ActorSystem) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events, restart=Restart.TEMPORARY)
    await ref.tell("crash")
    terminated = await ref.join()
    assert isinstance(terminated.reason, RuntimeError)
    assert events == ["start", "stop"]


async def test_an_exception_in_receive_restarts_the_actor(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events)
    await ref.tell("crash")
    await ref.ask("after")
    assert events == ["start", "stop", "start", "after"]
    stats = ref.stats()
    assert (stats.restarts, stats.failed, stats.state) == (1, 1, ActorState.RUNNING)


async def test_an_exception_in_on_start_is_a_crash(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    starts = 0

    class BadStart(Actor):
        async def on_start(self) -> None:
            nonlocal starts
            starts += 1
            if starts == 1:
                raise OSError("resource unavailable")

        async def receive(self, message: Any) -> Any:
            return message

    ref = await actor_system.spawn(BadStart)
    assert await ref.ask("ping") == "ping"
    assert starts == 2
    assert ref.stats().restarts == 1


async def test_a_restart_builds_a_fresh_instance(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Log, [])
    assert await ref.ask("a") == 1
    assert await ref.ask("b") == 2
    await ref.tell("crash")
    assert await ref.ask("c") == 1  # the counter on the instance started over


async def test_queued_messages_survive_a_restart(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[Any] = []
    gate = trio.Event()

    class Gated(Log):
        async def receive(self, message: Any) -> Any:
            await gate.wait()
            return await super().receive(message)

    ref = await actor_system.spawn(Gated, events)
    await ref.tell("crash")
    await ref.tell("kept-1")
    await ref.tell("kept-2")
    gate.set()
    await trio.sleep(5)  # past the restart backoff
    assert events == ["start", "stop", "start", "kept-1", "kept-2"]


async def test_the_ref_stays_the_same_across_restarts(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    seen_refs = []

    class Me(Actor):
        async def on_start(self) -> None:
            seen_refs.append(self.ref)

        async def receive(self, message: Any) -> None:
            raise RuntimeError("crash")

    ref = await actor_system.spawn(Me, name="me")
    await ref.tell("crash")
    await trio.sleep(5)  # past the restart backoff
    assert seen_refs == [ref, ref]
    assert actor_system.lookup("me") is ref
    assert ref.is_alive


async def test_self_stop_is_a_normal_exit_that_restarts_a_permanent_actor(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events, restart=Restart.PERMANENT)
    await ref.tell("stop")
    await ref.ask("next")
    assert events == ["start", "stop", "start", "next"]
    assert ref.stats().restarts == 1
    assert ref.stats().failed == 0


async def test_self_stop_ends_a_transient_actor_for_good(actor_system: ActorSystem) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events, restart=Restart.TRANSIENT)
    await ref.tell("stop")
    terminated = await ref.join()
    assert terminated.reason is None
    assert events == ["start", "stop"]
    assert not ref.is_alive


async def test_ref_stop_ends_the_actor_for_good_whatever_its_restart_type(
    actor_system: ActorSystem,
) -> None:
    events: list[Any] = []
    ref = await actor_system.spawn(Log, events, restart=Restart.PERMANENT, name="perm")
    terminated = await ref.stop()
    assert terminated.actor is ref
    assert terminated.reason is None
    assert not ref.is_alive
    assert ref.stats().state is ActorState.STOPPED
    assert "perm" not in actor_system.names
    await trio.testing.wait_all_tasks_blocked()
    assert events == ["start", "stop"]


async def test_ref_stop_lets_the_current_message_finish(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    finished = []

    class Work(Actor):
        async def receive(self, message: Any) -> None:
            await trio.sleep(0.5)
            finished.append(message)

    ref = await actor_system.spawn(Work)
    await ref.tell("job")
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    terminated = await ref.stop()
    assert finished == ["job"]
    assert terminated.reason is None
    assert trio.current_time() - start == pytest.approx(0.5)


async def test_messages_still_queued_at_a_final_stop_are_counted_as_undelivered(
    actor_system: ActorSystem,
) -> None:
    gate = trio.Event()

    class Gated(Actor):
        async def receive(self, message: Any) -> None:
            await gate.wait()

    ref = await actor_system.spawn(Gated)
    for i in range(4):
        await ref.tell(i)
    await trio.testing.wait_all_tasks_blocked()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ref.stop)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    stats = ref.stats()
    assert (stats.processed, stats.undelivered) == (1, 3)


async def test_telling_a_stopped_actor_raises_actor_stopped(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Log, [], name="gone")
    await ref.stop()
    with pytest.raises(ActorStopped, match="'gone' has stopped") as info:
        await ref.tell("hello")
    assert info.value.actor == "gone"
    with pytest.raises(ActorStopped):
        ref.tell_nowait("hello")


async def test_an_actor_knows_its_name_ref_and_system(actor_system: ActorSystem) -> None:
    class Introspect(Actor):
        async def receive(self, message: Any) -> Any:
            return (self.name, self.ref, self.system)

    ref = await actor_system.spawn(Introspect, name="intro")
    assert await ref.ask("who") == ("intro", ref, actor_system)


async def test_an_actor_without_receive_crashes_with_a_clear_error(
    actor_system: ActorSystem,
) -> None:
    class Forgot(Actor):
        pass

    ref = await actor_system.spawn(Forgot, restart=Restart.TEMPORARY)
    with pytest.raises(NotImplementedError, match="Forgot must implement receive"):
        await ref.ask("hello")


async def test_ref_repr_shows_name_and_state(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Log, [], name="shown")
    await trio.testing.wait_all_tasks_blocked()
    assert repr(ref) == "<ActorRef shown running>"
    await ref.stop()
    assert repr(ref) == "<ActorRef shown stopped>"

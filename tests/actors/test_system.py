"""The actor system: registry, open_system/run_system, graceful shutdown and signals."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import tenacity
import trio
import trio.testing

from actors import (
    Actor,
    ActorNotFound,
    ActorStopped,
    ActorSystem,
    InvalidConfig,
    NameTaken,
    Restart,
    Supervisor,
    SupervisorGaveUp,
    open_system,
    run_system,
)


class Echo(Actor):
    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("echo crashed")
        return message


class Work(Actor):
    """Takes `seconds` per message; logs when each one finishes and when it stops."""

    def __init__(self, seconds: float, log: list[str]) -> None:
        self.seconds = seconds
        self.log = log

    async def receive(self, message: Any) -> None:
        self.log.append(f"began {message}")
        await trio.sleep(self.seconds)
        self.log.append(f"finished {message}")

    async def on_stop(self) -> None:
        self.log.append(f"{self.name} stopped")


# -- the fixture and the registry --------------------------------------------------------------


async def test_the_actor_system_fixture_is_a_running_system(actor_system: ActorSystem) -> None:
    assert isinstance(actor_system, ActorSystem)
    assert actor_system.name == "test"
    assert actor_system.root.is_alive
    ref = await actor_system.spawn(Echo)
    assert await ref.ask("hello") == "hello"


async def test_lookup_finds_an_actor_by_name(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Echo, name="echo")
    assert actor_system.lookup("echo") is ref


async def test_lookup_of_an_unknown_name_lists_the_registered_names(
    actor_system: ActorSystem,
) -> None:
    await actor_system.spawn(Echo, name="alpha")
    await actor_system.spawn(Echo, name="beta")
    with pytest.raises(ActorNotFound) as info:
        actor_system.lookup("gamma")
    assert info.value.name == "gamma"
    assert "'gamma'" in str(info.value)
    assert "alpha, beta, root" in str(info.value)
    assert isinstance(info.value, LookupError)


async def test_a_name_can_be_registered_only_once(actor_system: ActorSystem) -> None:
    await actor_system.spawn(Echo, name="unique")
    with pytest.raises(NameTaken, match="'unique' is running already") as info:
        await actor_system.spawn(Echo, name="unique")
    assert info.value.name == "unique"
    assert "choose another name" in str(info.value)
    assert actor_system.names.count("unique") == 1


async def test_a_name_is_free_again_once_its_actor_stopped(actor_system: ActorSystem) -> None:
    first = await actor_system.spawn(Echo, name="reused")
    await first.stop()
    with pytest.raises(ActorNotFound):
        actor_system.lookup("reused")
    second = await actor_system.spawn(Echo, name="reused")
    assert actor_system.lookup("reused") is second
    assert second is not first


async def test_unnamed_actors_get_unique_generated_names(actor_system: ActorSystem) -> None:
    refs = [await actor_system.spawn(Echo) for _ in range(3)]
    names = [ref.name for ref in refs]
    assert len(set(names)) == 3
    assert all(name.startswith("Echo-") for name in names)
    assert all(actor_system.lookup(name) is ref for name, ref in zip(names, refs, strict=True))


async def test_a_crashed_and_restarted_actor_keeps_its_name(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Echo, name="phoenix")
    await ref.tell("crash")
    await trio.sleep(1)
    assert actor_system.lookup("phoenix") is ref
    assert await ref.ask("back") == "back"


async def test_spawning_under_a_stopped_supervisor_raises_actor_stopped(
    actor_system: ActorSystem,
) -> None:
    sup = await actor_system.spawn(Supervisor.spec([], name="gone"))
    await trio.testing.wait_all_tasks_blocked()
    await sup.stop()
    with pytest.raises(ActorStopped, match="'gone'"):
        await actor_system.spawn(Echo, supervisor=sup)


# -- open_system and run_system ----------------------------------------------------------------


def test_run_system_returns_what_main_returned() -> None:
    async def main(system: ActorSystem) -> int:
        ref = await system.spawn(Echo)
        return int(await ref.ask(41)) + 1

    assert run_system(main) == 42


def test_run_system_raises_what_main_raised() -> None:
    async def main(system: ActorSystem) -> None:
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        run_system(main)


def test_run_system_passes_options_to_the_system() -> None:
    async def main(system: ActorSystem) -> tuple[str, float]:
        return system.name, system.shutdown_timeout

    assert run_system(main, name="custom", shutdown_timeout=1.5) == ("custom", 1.5)


async def test_leaving_open_system_lets_the_message_in_flight_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with open_system() as system:
        ref = await system.spawn(Work, 3.0, log)
        await ref.tell("job")
        await ref.tell("queued")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(3.0)
    assert log == ["began job", "finished job", f"{ref.name} stopped"]
    assert ref.stats().undelivered == 1
    assert not ref.is_alive


async def test_shutdown_stops_actors_in_reverse_start_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with open_system() as system:
        for name in ("first", "second", "third"):
            await system.spawn(Work, 1.0, log, name=name)
        await trio.testing.wait_all_tasks_blocked()
    assert log == ["third stopped", "second stopped", "first stopped"]


async def test_shutdown_timeout_cancels_whatever_is_still_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with open_system(shutdown_timeout=2) as system:
        ref = await system.spawn(Work, 3600, log, shutdown=1000)
        await ref.tell("endless")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(2)
    assert log == ["began endless"]
    assert not ref.is_alive
    assert not system.root.is_alive


async def test_open_system_raises_supervisor_gave_up_when_the_root_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def crash_twice() -> None:
        async with open_system(max_restarts=1, within=60, backoff=tenacity.wait_none()) as system:
            ref = await system.spawn(Echo, name="fragile")
            await ref.tell("crash")
            await trio.sleep(1)
            await ref.tell("crash")
            await trio.sleep_forever()  # cancelled when the root gives up

    with pytest.raises(SupervisorGaveUp) as info:
        await crash_twice()
    assert info.value.supervisor == "root"
    assert info.value.child == "fragile"
    assert isinstance(info.value.__cause__, RuntimeError)


def test_run_system_raises_supervisor_gave_up_with_its_cause() -> None:
    async def main(system: ActorSystem) -> None:
        ref = await system.spawn(Echo, restart=Restart.PERMANENT)
        await ref.tell("crash")
        await trio.sleep_forever()

    with pytest.raises(SupervisorGaveUp) as info:
        run_system(main, max_restarts=0, clock=trio.testing.MockClock(autojump_threshold=0))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "echo crashed"


# -- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_main_and_the_system_finishes_in_flight_work(signum: int) -> None:
    log: list[str] = []

    async def main(system: ActorSystem) -> str:
        ref = await system.spawn(Work, 3.0, log, name="worker")  # within its 5s deadline
        await ref.tell("job")
        await trio.testing.wait_all_tasks_blocked()
        log.append("signal sent")
        os.kill(os.getpid(), signum)
        await trio.sleep_forever()
        return "unreachable"

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert run_system(main, clock=clock) is None
    assert log == ["began job", "signal sent", "finished job", "worker stopped"]
    assert clock.current_time() == pytest.approx(3.0)


def test_a_second_signal_stops_at_once(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []

    class SignalsAgain(Actor):
        async def receive(self, message: Any) -> None:
            await trio.sleep(1)  # by now the first signal started the shutdown
            os.kill(os.getpid(), signal.SIGINT)
            await trio.sleep(3600)
            log.append("finished")

    async def main(system: ActorSystem) -> None:
        ref = await system.spawn(SignalsAgain, shutdown=7200)
        await ref.tell("job")
        await trio.testing.wait_all_tasks_blocked()
        os.kill(os.getpid(), signal.SIGINT)
        await trio.sleep_forever()

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert run_system(main, clock=clock) is None
    assert log == []
    assert clock.current_time() == pytest.approx(1.0)
    messages = [record.getMessage() for record in caplog.records]
    assert any("received SIGINT: no new work" in m for m in messages)
    assert any("received SIGINT again: stopping now" in m for m in messages)


async def test_stopping_the_root_ref_stops_every_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with open_system() as system:
        ref = await system.spawn(Work, 1.0, log, name="worker")
        with trio.fail_after(60):
            terminated = await system.root.stop()
        assert terminated.reason is None
        assert not ref.is_alive
        await system.wait_stopped()
        with pytest.raises(ActorStopped):
            await system.spawn(Echo)
    assert log == ["worker stopped"]


class Counter(Actor):
    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Any) -> int:
        if message != "count":
            self.count += 1
        return self.count


async def test_actors_spawned_with_the_same_options_get_separate_instances_and_mailboxes(
    actor_system: ActorSystem,
) -> None:
    first = await actor_system.spawn(Counter)
    second = await actor_system.spawn(Counter)
    await first.tell("x")
    assert await first.ask("count") == 1
    assert await second.ask("count") == 0
    assert first.name != second.name
    await first.stop()
    assert await second.ask("count") == 0


async def test_spawn_refuses_bad_options_every_time(actor_system: ActorSystem) -> None:
    for _ in range(2):
        with pytest.raises(InvalidConfig, match="mailbox capacity"):
            await actor_system.spawn(Echo, mailbox_size=True)
        with pytest.raises(InvalidConfig, match="shutdown"):
            await actor_system.spawn(Echo, shutdown=float("nan"))
    assert await (await actor_system.spawn(Echo, mailbox_size=1)).ask("ok") == "ok"

"""Edges of an actor's life: spawning under a restarting supervisor, stopping a sibling from
`on_stop`, cycles of full mailboxes, and what the runtime says when something ends."""

from __future__ import annotations

from typing import Any

import pytest
import tenacity
import trio
import trio.testing

from actors import (
    Actor,
    ActorError,
    ActorRef,
    ActorStopped,
    ActorSystem,
    ChildSpec,
    MailboxDeadlock,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    SupervisorRestarting,
)


class Echo(Actor):
    async def receive(self, message: Any) -> Any:
        return message


class FlakySupervisor(Supervisor):
    """A supervisor whose on_start fails on the launches listed in `fail_on` (1-based)."""

    def __init__(self, children: Any, launches: list[float], fail_on: set[int], **kw: Any):
        super().__init__(children, **kw)
        self.launches = launches
        self.fail_on = fail_on

    async def on_start(self) -> None:
        self.launches.append(trio.current_time())
        if len(self.launches) in self.fail_on:
            raise OSError("the accounts database is not reachable")


async def spawn_flaky(
    system: ActorSystem, fail_on: set[int], parent_backoff: float
) -> tuple[ActorRef, ActorRef, list[float]]:
    """parent (backoff `parent_backoff`) -> accounts (FlakySupervisor) -> crasher."""
    launches: list[float] = []
    accounts = ChildSpec(
        FlakySupervisor,
        args=([ChildSpec(Crasher, name="crasher")], launches, fail_on),
        kwargs={"max_restarts": 0},
        name="accounts",
        shutdown=60,
    )
    parent = await system.spawn(
        Supervisor.spec(
            [accounts],
            name="parent",
            backoff=tenacity.wait_fixed(parent_backoff),
            max_restarts=10,
            within=100,
            restart=Restart.TEMPORARY,
        )
    )
    return parent, system.lookup("accounts"), launches


class Crasher(Actor):
    async def receive(self, message: Any) -> Any:
        raise RuntimeError("crasher crashed")


async def test_spawn_under_a_restarting_supervisor_waits_until_it_is_back(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    _, accounts, launches = await spawn_flaky(actor_system, {2}, parent_backoff=2)
    t0 = trio.current_time()
    await actor_system.lookup("crasher").tell("crash")  # accounts gives up (max_restarts=0)
    await trio.testing.wait_all_tasks_blocked()
    # Restarted at once, failed to start, and now waits 2s before its third launch.
    assert [t - t0 for t in launches[1:]] == [0]
    ref = await actor_system.spawn(Echo, name="alice", supervisor=accounts)
    assert trio.current_time() - t0 == pytest.approx(2)
    assert await ref.ask("hi") == "hi"
    assert [r.name for r in accounts.which_children()] == ["crasher", "alice"]


async def test_spawn_under_a_supervisor_that_stays_down_fails_with_a_clear_error(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    _, accounts, _ = await spawn_flaky(actor_system, {2}, parent_backoff=60)
    await actor_system.lookup("crasher").tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    t0 = trio.current_time()
    with pytest.raises(SupervisorRestarting) as info:
        await actor_system.spawn(Echo, supervisor=accounts)
    assert trio.current_time() - t0 == pytest.approx(5)
    assert (info.value.supervisor, info.value.waited) == ("accounts", 5)
    assert "'accounts' is restarting" in str(info.value)


async def test_spawn_under_a_supervisor_that_stops_for_good_while_waited_for_raises_stopped(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    parent, accounts, _ = await spawn_flaky(actor_system, {2}, parent_backoff=3)
    await actor_system.lookup("crasher").tell("crash")
    await trio.testing.wait_all_tasks_blocked()

    async def stop_parent_soon() -> None:
        await trio.sleep(1)
        await parent.stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_parent_soon)
        with pytest.raises(ActorStopped, match="'accounts'"):
            await actor_system.spawn(Echo, supervisor=accounts)


# -- stopping a sibling from on_stop --------------------------------------------------------


class StopsSiblingOnStop(Actor):
    def __init__(self, sibling: str, log: list[str]) -> None:
        self.sibling = sibling
        self.log = log

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash")
        return message

    async def on_stop(self) -> None:
        sibling = self.system.lookup(self.sibling) if self.sibling in self.system.names else None
        if sibling is not None:
            terminated = await sibling.stop()
            self.log.append(f"{self.name} stopped {self.sibling}: {terminated.reason!r}")


class Logged(Actor):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def receive(self, message: Any) -> Any:
        return message

    async def on_stop(self) -> None:
        self.log.append(f"{self.name} on_stop")


async def test_stopping_a_sibling_from_on_stop_during_shutdown_does_not_wait_for_a_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from actors import open_system

    log: list[str] = []
    async with open_system(shutdown_timeout=100) as system:
        await system.spawn(Logged, log, name="first", shutdown=50)
        await system.spawn(StopsSiblingOnStop, "first", log, name="second", shutdown=50)
        t0 = trio.current_time()
    # "second" stops first (reverse start order) and stops "first" from its on_stop.
    assert log == ["first on_stop", "second stopped first: None"]
    assert trio.current_time() == t0


async def test_stopping_a_sibling_from_on_stop_during_a_group_restart(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[str] = []
    await actor_system.spawn(
        Supervisor.spec(
            [
                ChildSpec(Logged, (log,), name="helper", shutdown=50),
                ChildSpec(StopsSiblingOnStop, ("helper", log), name="user", shutdown=50),
                ChildSpec(Crasher, name="trigger"),
            ],
            name="group",
            strategy=Strategy.ONE_FOR_ALL,
            restart=Restart.TEMPORARY,
        )
    )
    user = actor_system.lookup("user")
    t0 = trio.current_time()
    await actor_system.lookup("trigger").tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    # The supervisor stopped "user", whose on_stop stopped "helper" for good: at once, where
    # it used to wait for user's 50s deadline (the supervisor was busy stopping "user").
    assert trio.current_time() == t0
    assert log == ["helper on_stop", "user stopped helper: None"]
    assert "helper" not in actor_system.names  # stopped for good: not restarted
    assert user.stats().restarts == 1
    assert await user.ask("back") == "back"


async def test_a_stop_goes_through_even_if_its_caller_is_cancelled(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[str] = []

    class SlowStop(Logged):
        async def on_stop(self) -> None:
            await trio.sleep(2)
            await super().on_stop()

    ref = await actor_system.spawn(SlowStop, log, name="slow", shutdown=10)
    with trio.move_on_after(0.5):
        await ref.stop()
    assert ref.is_alive  # still running its on_stop
    terminated = await ref.join()
    assert terminated.reason is None
    assert log == ["slow on_stop"]


async def test_stopping_yourself_through_your_ref_is_refused_at_once(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    class Quitter(Actor):
        async def receive(self, message: Any) -> None:
            await self.ref.stop()

    ref = await actor_system.spawn(Quitter, name="quitter", shutdown=30, restart=Restart.TEMPORARY)
    t0 = trio.current_time()
    await ref.tell("quit")
    error = (await ref.join()).reason
    assert trio.current_time() == t0  # refused, not stuck until its 30s deadline
    assert isinstance(error, ActorError)
    assert "'quitter' cannot be stopped with ref.stop() from itself" in str(error)
    assert "call self.stop()" in str(error)


async def test_stopping_an_ancestor_from_a_child_is_refused_at_once(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    errors: list[BaseException] = []

    class StopsAncestor(Actor):
        async def receive(self, target: str) -> None:
            ref = self.system.root if target == "root" else self.system.lookup(target)
            try:
                await ref.stop()
            except ActorError as exc:
                errors.append(exc)

    await actor_system.spawn(
        Supervisor.spec([ChildSpec(StopsAncestor, name="kid")], name="parent", shutdown=30)
    )
    kid = actor_system.lookup("kid")
    await kid.ask("parent")
    await kid.ask("root")
    assert len(errors) == 2
    assert "'parent' cannot be stopped with ref.stop() from one of its descendants" in str(
        errors[0]
    )
    assert "'root' cannot be stopped" in str(errors[1])
    assert kid.is_alive
    assert actor_system.lookup("parent").is_alive


# -- cycles of full mailboxes ---------------------------------------------------------------


async def test_a_cycle_of_full_wait_mailboxes_is_refused_instead_of_hanging(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    class Producer(Actor):
        async def receive(self, message: Any) -> None:
            if message == "go":
                consumer = self.system.lookup("consumer")
                for n in range(3):
                    await consumer.tell(n)

    class Consumer(Actor):
        async def receive(self, message: Any) -> None:
            await self.system.lookup("producer").tell(f"ack {message}")

    producer = await actor_system.spawn(
        Producer, name="producer", mailbox_size=1, restart=Restart.TEMPORARY
    )
    consumer = await actor_system.spawn(
        Consumer, name="consumer", mailbox_size=1, restart=Restart.TEMPORARY
    )
    await producer.tell("go")
    with trio.fail_after(10):
        terminated = await consumer.join()
    error = terminated.reason
    assert isinstance(error, MailboxDeadlock)
    assert error.cycle == ["consumer", "producer", "consumer"]
    assert "'consumer' -> 'producer' -> 'consumer'" in str(error)
    assert "Break the cycle" in str(error)


async def test_telling_yourself_with_a_full_mailbox_is_refused(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    class Loop(Actor):
        async def receive(self, message: Any) -> None:
            await self.ref.tell("again")
            await self.ref.tell("and again")

    ref = await actor_system.spawn(Loop, name="loop", mailbox_size=1, restart=Restart.TEMPORARY)
    await ref.tell("start")
    error = (await ref.join()).reason
    assert isinstance(error, MailboxDeadlock)
    assert error.cycle == ["loop", "loop"]


async def test_a_sender_that_is_not_in_a_cycle_just_waits(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    gate = trio.Event()

    class Slow(Actor):
        async def receive(self, message: Any) -> Any:
            await gate.wait()
            return message

    slow = await actor_system.spawn(Slow, mailbox_size=1)
    await slow.tell(1)
    await trio.testing.wait_all_tasks_blocked()
    await slow.tell(2)  # the mailbox is full now
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow.tell, 3)  # waits: backpressure, not a deadlock
        await trio.sleep(5)
        gate.set()
    assert await slow.ask(4) == 4


# -- what the runtime says ------------------------------------------------------------------


async def test_giving_up_with_max_restarts_zero_says_no_restart_is_allowed(
    actor_system: ActorSystem,
) -> None:
    sup = await actor_system.spawn(
        Supervisor.spec(
            [ChildSpec(Crasher, name="c")], name="s", max_restarts=0, restart=Restart.TEMPORARY
        )
    )
    await actor_system.lookup("c").tell("x")
    error = (await sup.join()).reason
    assert isinstance(error, SupervisorGaveUp)
    assert "child 'c' failed, and max_restarts=0 allows no restart" in str(error)
    assert "more than 0" not in str(error)


async def test_giving_up_says_how_many_restarts_the_window_allowed(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    sup = await actor_system.spawn(
        Supervisor.spec(
            [ChildSpec(Crasher, name="c")],
            name="s",
            max_restarts=2,
            within=10,
            restart=Restart.TEMPORARY,
        )
    )
    for _ in range(3):
        await actor_system.lookup("c").tell("x")
        await trio.sleep(1)
    error = (await sup.join()).reason
    assert isinstance(error, SupervisorGaveUp)
    assert "would make 3 within 10s, more than max_restarts=2 allows" in str(error)


async def test_a_zero_shutdown_deadline_says_the_actor_was_cancelled_at_once(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    class Busy(Actor):
        async def receive(self, message: Any) -> None:
            await trio.sleep_forever()

    ref = await actor_system.spawn(Busy, name="busy", shutdown=0)
    await ref.tell("work")
    await trio.testing.wait_all_tasks_blocked()
    reason = (await ref.stop()).reason
    assert isinstance(reason, trio.TooSlowError)
    assert "'busy' was cancelled at once, as its shutdown deadline of 0 asks" in str(reason)
    assert "(0s)" not in str(reason)


async def test_a_stop_timeout_is_the_deadline_the_error_names(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    class Busy(Actor):
        async def receive(self, message: Any) -> None:
            await trio.sleep_forever()

    ref = await actor_system.spawn(Busy, name="busy", shutdown=100)
    await ref.tell("work")
    await trio.testing.wait_all_tasks_blocked()
    reason = (await ref.stop(timeout=0.25)).reason
    assert "shutdown deadline (0.25s)" in str(reason)


async def test_spawn_passes_keyword_arguments_to_the_actor(actor_system: ActorSystem) -> None:
    class Greeter(Actor):
        def __init__(self, greeting: str, *, punctuation: str = ".") -> None:
            self.greeting = greeting
            self.punctuation = punctuation

        async def receive(self, message: Any) -> str:
            return f"{self.greeting} {message}{self.punctuation}"

    ref = await actor_system.spawn(Greeter, "hello", punctuation="!", name="greeter")
    assert await ref.ask("ada") == "hello ada!"


async def test_generated_names_are_numbered_per_class(actor_system: ActorSystem) -> None:
    class Other(Actor):
        async def receive(self, message: Any) -> None:
            return None

    refs = [await actor_system.spawn(cls) for cls in (Echo, Other, Echo, Other, Echo)]
    assert [ref.name for ref in refs] == ["Echo-1", "Other-1", "Echo-2", "Other-2", "Echo-3"]


async def test_a_generated_name_skips_one_taken_by_hand(actor_system: ActorSystem) -> None:
    await actor_system.spawn(Echo, name="Echo-1")
    assert (await actor_system.spawn(Echo)).name == "Echo-2"


async def test_asking_a_supervisor_answers_with_an_error_not_none(
    actor_system: ActorSystem,
) -> None:
    sup = await actor_system.spawn(Supervisor.spec([ChildSpec(Echo, name="kid")], name="boss"))
    with pytest.raises(ActorError, match="supervisor 'boss' takes no messages") as info:
        await sup.ask("status?")
    assert "which_children" in str(info.value)
    assert sup.is_alive  # an error reply, not a crash
    assert sup.stats().restarts == 0


async def test_a_ref_knows_its_path_in_the_tree(actor_system: ActorSystem) -> None:
    await actor_system.spawn(
        Supervisor.spec([Supervisor.spec([ChildSpec(Echo, name="leaf")], name="mid")], name="top")
    )
    assert actor_system.lookup("leaf").path == "root/top/mid/leaf"
    assert actor_system.root.path == "root"

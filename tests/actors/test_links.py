"""Links crash linked actors together (OTP's link/1), and restart hooks get the reason."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import (
    Actor,
    ActorRef,
    ActorSystem,
    InvalidConfig,
    LinkedActorFailed,
    Restart,
    Supervisor,
)


class Node(Actor):
    """Links to the actors named in `peers` when it starts; crashes on "crash"."""

    def __init__(self, peers: tuple[str, ...] = ()) -> None:
        self.peers = peers

    async def on_start(self) -> None:
        for name in self.peers:
            self.link(self.system.lookup(name))

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if message == "stop":
            self.stop()
        if isinstance(message, tuple) and message[0] == "unlink":
            self.unlink(self.system.lookup(message[1]))
        return message


async def spawn(system: ActorSystem, name: str, *peers: str) -> ActorRef:
    """Spawn a TEMPORARY Node and let it run its on_start (where it links)."""
    ref = await system.spawn(Node, peers, name=name, restart=Restart.TEMPORARY)
    await trio.testing.wait_all_tasks_blocked()
    return ref


async def test_a_linked_actors_crash_crashes_the_other_with_the_cause(
    actor_system: ActorSystem,
) -> None:
    a = await spawn(actor_system, "a")
    b = await spawn(actor_system, "b", "a")
    await a.tell("crash")
    error = (await b.join()).reason
    assert isinstance(error, LinkedActorFailed)
    assert error.actor == "a"
    assert isinstance(error.__cause__, RuntimeError)
    assert "linked actor 'a' crashed" in str(error)


async def test_a_link_works_both_ways(actor_system: ActorSystem) -> None:
    a = await spawn(actor_system, "a")
    b = await spawn(actor_system, "b", "a")  # b made the link; a's crash is b's, and back
    await b.tell("crash")
    error = (await a.join()).reason
    assert isinstance(error, LinkedActorFailed)
    assert error.actor == "b"


async def test_a_crash_travels_along_a_chain_of_links(actor_system: ActorSystem) -> None:
    a = await spawn(actor_system, "a")
    await spawn(actor_system, "b", "a")
    c = await spawn(actor_system, "c", "b")
    await a.tell("crash")
    error = (await c.join()).reason
    assert isinstance(error, LinkedActorFailed)
    assert error.actor == "b"
    assert isinstance(error.__cause__, LinkedActorFailed)


async def test_a_normal_stop_does_not_crash_linked_actors(actor_system: ActorSystem) -> None:
    a = await spawn(actor_system, "a")
    b = await spawn(actor_system, "b", "a")
    await a.tell("stop")
    await a.join()
    await trio.testing.wait_all_tasks_blocked()
    assert b.is_alive
    assert await b.ask("fine") == "fine"


async def test_unlink_breaks_the_link(actor_system: ActorSystem) -> None:
    a = await spawn(actor_system, "a")
    b = await spawn(actor_system, "b", "a")
    await b.ask(("unlink", "a"))
    await a.tell("crash")
    await a.join()
    await trio.testing.wait_all_tasks_blocked()
    assert b.is_alive


async def test_linking_to_an_actor_that_has_stopped_crashes_at_once(
    actor_system: ActorSystem,
) -> None:
    gone = await spawn(actor_system, "gone")

    class LateLinker(Actor):
        async def receive(self, message: Any) -> Any:
            self.link(message)
            return None

    await gone.stop()
    linker = await actor_system.spawn(LateLinker, restart=Restart.TEMPORARY)
    await linker.tell(gone)
    error = (await linker.join()).reason
    assert isinstance(error, LinkedActorFailed)
    assert "had stopped already" in str(error)


async def test_links_last_one_incarnation(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    class Once(Actor):
        """Links to "a" in its first incarnation only."""

        linked = False

        async def on_start(self) -> None:
            if not Once.linked:
                Once.linked = True
                self.link(self.system.lookup("a"))

        async def receive(self, message: Any) -> Any:
            if message == "crash":
                raise RuntimeError("crash")
            return message

    a = await actor_system.spawn(Node, name="a")  # PERMANENT: restarted after a crash
    b = await actor_system.spawn(Once, name="b")
    await trio.testing.wait_all_tasks_blocked()
    await b.tell("crash")  # a crashes too, via the link; both are restarted
    await trio.sleep(1)
    assert (a.stats().restarts, b.stats().restarts) == (1, 1)
    await a.tell("crash")  # the new incarnations are not linked
    await trio.sleep(1)
    assert (a.stats().restarts, b.stats().restarts) == (2, 1)


async def test_an_actor_cannot_link_to_itself_or_to_the_root(actor_system: ActorSystem) -> None:
    errors: list[BaseException] = []

    class Selfish(Actor):
        async def receive(self, message: Any) -> None:
            for target in (self.ref, self.system.root):
                try:
                    self.link(target)
                except InvalidConfig as exc:
                    errors.append(exc)

    ref = await actor_system.spawn(Selfish)
    await ref.ask("go")
    assert [type(e) for e in errors] == [InvalidConfig, InvalidConfig]


async def test_a_link_through_a_supervisor_restart(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    """A linked PERMANENT child that crashes is restarted; the actor linked to it crashes
    once (and is restarted by its own supervisor), as OTP processes linked to a worker do."""
    crashes: list[str] = []

    class Dependent(Node):
        async def on_stop(self) -> None:
            crashes.append(self.name)

    await actor_system.spawn(
        Supervisor.spec([Supervisor.spec([], name="workers")], name="app", max_restarts=10)
    )
    worker = await actor_system.spawn(Node, name="w", supervisor=actor_system.lookup("workers"))
    await actor_system.spawn(Dependent, ("w",), name="dep")
    await trio.testing.wait_all_tasks_blocked()  # dep has linked, in its on_start
    await worker.tell("crash")
    await trio.sleep(1)
    assert crashes == ["dep"]
    assert actor_system.lookup("dep").stats().restarts == 1


async def test_on_restart_gets_the_exception_that_ended_the_previous_incarnation(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    reasons: list[BaseException | None] = []

    class Remembers(Actor):
        async def on_restart(self, reason: BaseException | None) -> None:
            reasons.append(reason)

        async def receive(self, message: Any) -> Any:
            if message == "crash":
                raise KeyError("lost")
            if message == "stop":
                self.stop()
            return message

    ref = await actor_system.spawn(Remembers)
    await ref.tell("crash")
    await ref.tell("stop")  # a normal exit: PERMANENT restarts it, with no reason
    assert await ref.ask("back") == "back"
    assert len(reasons) == 2
    assert isinstance(reasons[0], KeyError)
    assert reasons[1] is None

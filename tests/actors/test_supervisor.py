"""Supervisors: strategies, restart types, intensity, backoff, deadlines and dynamic children."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import tenacity
import trio
import trio.testing

from actors import (
    Actor,
    ActorState,
    ActorSystem,
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
)

Events = list[tuple[str, str]]


class Child(Actor):
    """Logs ("start"/"stop", name); crashes on "crash", stops itself on "stop"."""

    def __init__(self, events: Events) -> None:
        self.events = events

    async def on_start(self) -> None:
        self.events.append(("start", self.name))

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if message == "stop":
            self.stop()
        return self.name

    async def on_stop(self) -> None:
        self.events.append(("stop", self.name))


def child(events: Events, name: str, restart: Restart = Restart.PERMANENT) -> ChildSpec:
    return ChildSpec(Child, args=(events,), name=name, restart=restart)


def starts(events: Events, name: str) -> int:
    return events.count(("start", name))


async def spawn_tree(
    system: ActorSystem, children: list[ChildSpec], **options: Any
) -> tuple[Any, ...]:
    """Spawn a supervisor (TEMPORARY under the root) and return its ref and its children's."""
    options.setdefault("backoff", tenacity.wait_none())
    sup = await system.spawn(
        Supervisor.spec(children, name="sup", restart=Restart.TEMPORARY, **options)
    )
    await trio.testing.wait_all_tasks_blocked()
    return (sup, *(system.lookup(spec.name or "") for spec in children))


# -- strategies ------------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_failed_child(actor_system: ActorSystem) -> None:
    events: Events = []
    specs = [child(events, n) for n in "abc"]
    _, a, b, c = await spawn_tree(actor_system, specs, strategy=Strategy.ONE_FOR_ONE)
    await b.tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert [starts(events, n) for n in "abc"] == [1, 2, 1]
    assert [r.stats().restarts for r in (a, b, c)] == [0, 1, 0]


async def test_one_for_all_restarts_every_child(actor_system: ActorSystem) -> None:
    events: Events = []
    specs = [child(events, n) for n in "abc"]
    _, a, b, c = await spawn_tree(actor_system, specs, strategy=Strategy.ONE_FOR_ALL)
    await b.tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert [starts(events, n) for n in "abc"] == [2, 2, 2]
    assert [r.stats().restarts for r in (a, b, c)] == [1, 1, 1]
    assert all(r.stats().state is ActorState.RUNNING for r in (a, b, c))


async def test_one_for_all_stops_the_others_in_reverse_start_order(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    specs = [child(events, n) for n in "abcd"]
    _, _, b, _, _ = await spawn_tree(actor_system, specs, strategy=Strategy.ONE_FOR_ALL)
    events.clear()
    await b.tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert events[:4] == [("stop", "b"), ("stop", "d"), ("stop", "c"), ("stop", "a")]
    # The new incarnations start after every old one stopped (their on_start run concurrently).
    assert sorted(events[4:]) == [("start", n) for n in "abcd"]


async def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    specs = [child(events, n) for n in "abcd"]
    await spawn_tree(actor_system, specs, strategy=Strategy.REST_FOR_ONE)
    await actor_system.lookup("b").tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert [starts(events, n) for n in "abcd"] == [1, 2, 2, 2]


async def test_one_for_all_does_not_restart_a_temporary_sibling(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    specs = [child(events, "a"), child(events, "temp", Restart.TEMPORARY)]
    _, a, temp = await spawn_tree(actor_system, specs, strategy=Strategy.ONE_FOR_ALL)
    await a.tell("crash")
    terminated = await temp.join()
    await trio.testing.wait_all_tasks_blocked()
    assert terminated.reason is None
    assert (starts(events, "a"), starts(events, "temp")) == (2, 1)
    assert a.is_alive
    assert "temp" not in actor_system.names


# -- restart types ---------------------------------------------------------------------------


async def test_permanent_child_is_restarted_after_a_normal_exit(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    _, a = await spawn_tree(actor_system, [child(events, "a", Restart.PERMANENT)])
    await a.tell("stop")
    await trio.testing.wait_all_tasks_blocked()
    assert starts(events, "a") == 2
    assert a.is_alive


async def test_transient_child_is_restarted_after_a_crash(actor_system: ActorSystem) -> None:
    events: Events = []
    _, a = await spawn_tree(actor_system, [child(events, "a", Restart.TRANSIENT)])
    await a.tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert starts(events, "a") == 2
    assert a.is_alive


async def test_transient_child_is_not_restarted_after_a_normal_exit(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    _, a = await spawn_tree(actor_system, [child(events, "a", Restart.TRANSIENT)])
    await a.tell("stop")
    terminated = await a.join()
    assert terminated.reason is None
    assert starts(events, "a") == 1


async def test_temporary_child_is_not_restarted_after_a_crash(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    _, a = await spawn_tree(actor_system, [child(events, "a", Restart.TEMPORARY)])
    await a.tell("crash")
    terminated = await a.join()
    assert isinstance(terminated.reason, RuntimeError)
    assert str(terminated.reason) == "a crashed"
    assert starts(events, "a") == 1


# -- intensity and escalation ------------------------------------------------------------------


async def test_too_many_restarts_within_the_window_make_the_supervisor_give_up(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    sup, a = await spawn_tree(actor_system, [child(events, "a")], max_restarts=2, within=10)
    for _ in range(3):
        await a.tell("crash")
        await trio.sleep(1)
    terminated = await sup.join()
    error = terminated.reason
    assert isinstance(error, SupervisorGaveUp)
    assert (error.supervisor, error.child, error.max_restarts, error.within) == ("sup", "a", 2, 10)
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == "a crashed"
    assert "max_restarts=" in str(error)
    assert starts(events, "a") == 3  # the first start and two restarts
    assert not a.is_alive


async def test_the_child_that_tripped_the_limit_terminates_with_its_own_error(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    _, a, b = await spawn_tree(
        actor_system, [child(events, "a"), child(events, "b")], max_restarts=0
    )
    await a.tell("crash")
    assert isinstance((await a.join()).reason, RuntimeError)
    assert (await b.join()).reason is None


async def test_restarts_spread_wider_than_the_window_never_add_up(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    sup, a = await spawn_tree(actor_system, [child(events, "a")], max_restarts=1, within=5)
    for _ in range(5):
        await a.tell("crash")
        await trio.sleep(6)
    assert sup.is_alive
    assert starts(events, "a") == 6
    assert a.stats().restarts == 5


async def test_max_restarts_zero_gives_up_at_the_first_failure(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    sup, a = await spawn_tree(actor_system, [child(events, "a")], max_restarts=0)
    await a.tell("crash")
    assert isinstance((await sup.join()).reason, SupervisorGaveUp)
    assert starts(events, "a") == 1


async def test_a_supervisor_that_gives_up_is_restarted_by_its_parent(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    inner = Supervisor.spec(
        [child(events, "a")], name="inner", max_restarts=0, backoff=tenacity.wait_none()
    )
    outer, inner_ref = await spawn_tree(actor_system, [inner], max_restarts=3)
    first_a = actor_system.lookup("a")
    await first_a.tell("crash")
    await trio.sleep(1)
    assert inner_ref.is_alive
    assert inner_ref.stats().restarts == 1
    assert not first_a.is_alive  # the inner supervisor's children died with it...
    second_a = actor_system.lookup("a")  # ...and its new incarnation started new ones
    assert second_a is not first_a
    assert await second_a.ask("hi") == "a"
    assert starts(events, "a") == 2
    assert outer.is_alive


# -- backoff -----------------------------------------------------------------------------------


async def test_a_child_that_keeps_failing_waits_longer_after_a_free_first_restart(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    started_at: list[float] = []

    class FailsToStart(Actor):
        async def on_start(self) -> None:
            started_at.append(trio.current_time())
            raise OSError("cannot connect")

    await spawn_tree(
        actor_system,
        [ChildSpec(FailsToStart, name="f")],
        max_restarts=4,
        within=1000,
        backoff=tenacity.wait_exponential(multiplier=1, max=100),
    )
    await trio.sleep(100)
    delays = [b - a for a, b in itertools.pairwise(started_at)]
    # The first restart is immediate; restart n in a row waits backoff(attempt n - 1).
    assert delays == pytest.approx([0, 1, 2, 4])


async def test_a_child_that_ran_reset_after_seconds_is_restarted_at_once_again(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    started_at: list[float] = []

    class Crashy(Actor):
        async def on_start(self) -> None:
            started_at.append(trio.current_time())

        async def receive(self, message: Any) -> None:
            raise RuntimeError("crash")

    _, ref = await spawn_tree(
        actor_system,
        [ChildSpec(Crashy, name="c")],
        max_restarts=10,
        within=100,
        reset_after=1.0,
        backoff=tenacity.wait_exponential(multiplier=1, max=100),
    )
    base = trio.current_time()
    await ref.tell("crash")  # t=0: first in a row, at once
    await trio.sleep(0.5)
    await ref.tell("crash")  # t=0.5: ran 0.5s < reset_after: 2nd in a row, after 1s
    await trio.sleep(1.7)
    await ref.tell("crash")  # t=2.2: ran 0.7s since 1.5: 3rd in a row, after 2s
    await trio.sleep(10)
    await ref.tell("crash")  # t=12.2: ran 8s: a first crash again, at once
    await trio.sleep(1)
    assert [t - base for t in started_at[1:]] == pytest.approx([0, 1.5, 4.2, 12.2])


async def test_the_default_backoff_restarts_at_once_then_waits_briefly(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    started_at: list[float] = []

    class Crashy(Actor):
        async def on_start(self) -> None:
            started_at.append(trio.current_time())

        async def receive(self, message: Any) -> None:
            raise RuntimeError("crash")

    ref = await actor_system.spawn(Crashy)
    await ref.tell("crash")
    await ref.tell("crash")  # handled by the second incarnation, which ran no time at all
    await trio.sleep(1)
    assert len(started_at) == 3
    assert started_at[1] == started_at[0]
    assert 0.01 <= started_at[2] - started_at[1] <= 0.02


async def test_stopping_a_supervisor_cuts_its_backoff_short(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    sup, a = await spawn_tree(actor_system, [child(events, "a")], backoff=tenacity.wait_fixed(3600))
    await a.tell("crash")
    await a.tell("crash")  # the second in a row waits out the backoff
    await trio.testing.wait_all_tasks_blocked()
    assert a.stats().state is ActorState.RESTARTING
    start = trio.current_time()
    await sup.stop()
    assert trio.current_time() - start < 1
    assert not a.is_alive
    assert starts(events, "a") == 2


# -- shutdown deadlines ------------------------------------------------------------------------


class Stubborn(Actor):
    """Never finishes a message; logs whether on_stop ran."""

    def __init__(self, events: Events) -> None:
        self.events = events

    async def receive(self, message: Any) -> None:
        await trio.sleep_forever()

    async def on_stop(self) -> None:
        self.events.append(("stop", self.name))


async def test_a_child_that_ignores_stop_is_cancelled_at_its_shutdown_deadline(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    ref = await actor_system.spawn(Stubborn, events, name="stubborn", shutdown=2.5)
    await ref.tell("work")
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    terminated = await ref.stop()
    assert trio.current_time() - start == pytest.approx(2.5)
    assert isinstance(terminated.reason, trio.TooSlowError)
    assert "'stubborn'" in str(terminated.reason)
    assert "2.5s" in str(terminated.reason)
    assert events == []  # no on_stop after a cancellation


async def test_stop_timeout_overrides_the_shutdown_deadline(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Stubborn, [], shutdown=100)
    await ref.tell("work")
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    terminated = await ref.stop(timeout=0.25)
    assert trio.current_time() - start == pytest.approx(0.25)
    assert isinstance(terminated.reason, trio.TooSlowError)


async def test_a_supervisor_stopping_cancels_a_stubborn_child_at_its_deadline(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    sup, ref = await spawn_tree(
        actor_system, [ChildSpec(Stubborn, (events,), name="s", shutdown=3)]
    )
    await ref.tell("work")
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    assert (await sup.stop()).reason is None
    assert trio.current_time() - start == pytest.approx(3)
    assert isinstance((await ref.join()).reason, trio.TooSlowError)


async def test_a_child_within_its_deadline_stops_gracefully(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []

    class Finisher(Child):
        async def receive(self, message: Any) -> Any:
            await trio.sleep(1)
            return await super().receive(message)

    ref = await actor_system.spawn(Finisher, events, name="f", shutdown=2)
    await ref.tell("work")
    await trio.testing.wait_all_tasks_blocked()
    terminated = await ref.stop()
    assert terminated.reason is None
    assert events == [("start", "f"), ("stop", "f")]


class SlowToStop(Actor):
    """Takes `seconds` in on_stop, if any (and has no on_start of its own)."""

    def __init__(self, seconds: float, events: Events) -> None:
        self.seconds = seconds
        self.events = events

    async def receive(self, message: Any) -> Any:
        return message

    async def on_stop(self) -> None:
        if self.seconds:
            await trio.sleep(self.seconds)
        self.events.append(("stop", self.name))


@pytest.mark.parametrize("used", [False, True], ids=["never-messaged", "messaged"])
async def test_an_idle_actor_stops_at_once_even_with_a_zero_deadline(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock, used: bool
) -> None:
    events: Events = []
    ref = await actor_system.spawn(SlowToStop, 0, events, name="idle", shutdown=0)
    if used:
        assert await ref.ask("hi") == "hi"
    await trio.testing.wait_all_tasks_blocked()
    terminated = await ref.stop()
    assert terminated.reason is None
    assert events == [("stop", "idle")]


@pytest.mark.parametrize("used", [False, True], ids=["never-messaged", "messaged"])
async def test_an_on_stop_that_overruns_the_deadline_is_cancelled(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock, used: bool
) -> None:
    events: Events = []
    ref = await actor_system.spawn(SlowToStop, 60, events, name="slow", shutdown=2)
    if used:
        assert await ref.ask("hi") == "hi"
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    terminated = await ref.stop()
    assert trio.current_time() - start == pytest.approx(2)
    assert isinstance(terminated.reason, trio.TooSlowError)
    assert events == []


# -- dynamic children and trees ----------------------------------------------------------------


async def test_spawn_adds_a_dynamic_child_to_the_given_supervisor(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    sup, _ = await spawn_tree(actor_system, [child(events, "static")])
    dyn = await actor_system.spawn(Child, events, name="dyn", supervisor=sup)
    assert await dyn.ask("hi") == "dyn"
    await sup.stop()
    assert not dyn.is_alive
    assert events[-2:] == [("stop", "dyn"), ("stop", "static")]  # reverse start order


async def test_a_dynamic_child_is_restarted_by_its_supervisor(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    (sup,) = await spawn_tree(actor_system, [])
    dyn = await actor_system.spawn(Child, events, name="dyn", supervisor=sup)
    await dyn.tell("crash")
    assert await dyn.ask("hi") == "dyn"
    assert starts(events, "dyn") == 2


async def test_dynamic_children_are_not_restarted_when_their_supervisor_restarts(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    events: Events = []
    inner = Supervisor.spec(
        [child(events, "static")], name="inner", max_restarts=0, backoff=tenacity.wait_none()
    )
    _, inner_ref = await spawn_tree(actor_system, [inner])
    dyn = await actor_system.spawn(Child, events, name="dyn", supervisor=inner_ref)
    await actor_system.lookup("static").tell("crash")  # the inner supervisor gives up
    assert (await dyn.join()).reason is None
    await trio.sleep(1)
    assert inner_ref.stats().restarts == 1
    assert "dyn" not in actor_system.names
    assert "static" in actor_system.names
    assert (starts(events, "static"), starts(events, "dyn")) == (2, 1)


async def test_nested_supervisor_specs_build_a_tree(actor_system: ActorSystem) -> None:
    events: Events = []
    tree = Supervisor.spec(
        [
            child(events, "a"),
            Supervisor.spec([child(events, "b1"), child(events, "b2")], name="b"),
            child(events, "c"),
        ],
        name="top",
        strategy=Strategy.REST_FOR_ONE,
    )
    top = await actor_system.spawn(tree)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(actor_system.names) == ["a", "b", "b1", "b2", "c", "root", "top"]
    assert [await actor_system.lookup(n).ask("?") for n in ("a", "b1", "b2", "c")] == [
        "a",
        "b1",
        "b2",
        "c",
    ]
    await top.stop()
    assert actor_system.names == ["root"]
    assert [e for e in events if e[0] == "stop"] == [
        ("stop", "c"),
        ("stop", "b2"),
        ("stop", "b1"),
        ("stop", "a"),
    ]


async def test_a_supervisor_lists_its_children_in_start_order(
    actor_system: ActorSystem,
) -> None:
    seen: list[list[str]] = []

    class Introspecting(Supervisor):
        async def receive(self, message: Any) -> Any:
            seen.append([ref.name for ref in self.children])

    events: Events = []
    spec = ChildSpec(Introspecting, args=([child(events, "x"), child(events, "y")],), name="intro")
    sup = await actor_system.spawn(spec)
    await sup.tell("list")
    await trio.testing.wait_all_tasks_blocked()
    assert seen == [["x", "y"]]


async def test_spawning_a_supervisor_returns_once_its_whole_subtree_has_started(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    tree = Supervisor.spec(
        [child(events, "a"), Supervisor.spec([child(events, "b1")], name="b")], name="top"
    )
    await actor_system.spawn(tree)
    # No waiting: the children (and grandchildren) are registered when spawn returns.
    a, b1 = actor_system.lookup("a"), actor_system.lookup("b1")
    assert await a.ask("?") == "a"
    assert await b1.ask("?") == "b1"


async def test_children_can_be_spawned_under_a_supervisor_right_after_spawning_it(
    actor_system: ActorSystem,
) -> None:
    events: Events = []
    sup = await actor_system.spawn(Supervisor.spec([], name="fresh"))
    dyn = await actor_system.spawn(Child, events, name="dyn", supervisor=sup)
    assert await dyn.ask("?") == "dyn"

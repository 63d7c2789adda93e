"""Restart backoff is per child: a first crash is restarted at once, only a child that keeps
crashing waits, and no child's wait holds up a sibling, a spawn or a stop."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import tenacity
import trio
import trio.testing

from actors import (
    Actor,
    ActorRef,
    ActorState,
    ActorSystem,
    ChildSpec,
    InvalidConfig,
    Pool,
    Restart,
    Routing,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    open_system,
)

Starts = dict[str, list[float]]


class Crashy(Actor):
    """Records when each incarnation starts; crashes on "crash"."""

    def __init__(self, starts: Starts) -> None:
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.setdefault(self.name, []).append(trio.current_time())

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        return message


async def supervise(
    system: ActorSystem, names: str, starts: Starts, **options: Any
) -> list[ActorRef]:
    options.setdefault("max_restarts", 100)
    options.setdefault("within", 100)
    sup = await system.spawn(
        Supervisor.spec(
            [ChildSpec(Crashy, (starts,), name=n) for n in names],
            name="sup",
            restart=Restart.TEMPORARY,
            **options,
        )
    )
    return [sup, *(system.lookup(n) for n in names)]


async def test_one_childs_backoff_does_not_delay_a_sibling(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    starts: Starts = {}
    _, a, b = await supervise(actor_system, "ab", starts, backoff=tenacity.wait_fixed(10))
    t0 = trio.current_time()
    await a.tell("crash")
    await a.tell("crash")  # a's second in a row: it waits 10s
    await trio.sleep(1)
    assert a.stats().state is ActorState.RESTARTING
    await b.tell("crash")  # b's first: restarted at once, not after a's wait
    await trio.sleep(0.001)
    assert [t - t0 for t in starts["b"]] == pytest.approx([0, 1])
    assert await b.ask("still here") == "still here"
    await trio.sleep(10)
    assert [t - t0 for t in starts["a"]] == pytest.approx([0, 0, 10])


async def test_children_crashing_together_wait_out_their_backoffs_concurrently(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    starts: Starts = {}
    refs = await supervise(actor_system, "abc", starts, backoff=tenacity.wait_fixed(5))
    t0 = trio.current_time()
    for ref in refs[1:]:
        await ref.tell("crash")
        await ref.tell("crash")
    await trio.sleep(6)
    # Each waited its own 5s, all at the same time: 15s if they were one after another.
    for name in "abc":
        assert [t - t0 for t in starts[name]] == pytest.approx([0, 0, 5])


async def test_spawn_and_stop_under_a_supervisor_do_not_wait_for_a_childs_backoff(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    starts: Starts = {}
    sup, a, b = await supervise(actor_system, "ab", starts, backoff=tenacity.wait_fixed(3600))
    await a.tell("crash")
    await a.tell("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert a.stats().state is ActorState.RESTARTING
    t0 = trio.current_time()
    new = await actor_system.spawn(Crashy, starts, name="new", supervisor=sup)
    assert await new.ask("hi") == "hi"
    assert (await b.stop()).reason is None
    assert trio.current_time() == t0


async def test_immediate_restarts_still_count_towards_the_supervisors_intensity(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    starts: Starts = {}
    sup, a, b, c = await supervise(actor_system, "abc", starts, max_restarts=2, within=10)
    for ref in (a, b, c):  # three first crashes, each restarted at once...
        await ref.tell("crash")
        await trio.sleep(1)
    error = (await sup.join()).reason  # ...but three restarts within 10s is one too many
    assert isinstance(error, SupervisorGaveUp)
    assert error.child == "c"


async def test_a_group_restart_waits_as_the_failed_childs_backoff_says(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    starts: Starts = {}
    _, a, _b = await supervise(
        actor_system,
        "ab",
        starts,
        strategy=Strategy.ONE_FOR_ALL,
        backoff=tenacity.wait_fixed(2),
    )
    t0 = trio.current_time()
    await a.tell("crash")
    await trio.sleep(0.5)
    await a.tell("crash")  # ran 0.5s < reset_after: the group waits 2s this time
    await trio.sleep(5)
    for name in "ab":
        assert [t - t0 for t in starts[name]] == pytest.approx([0, 0, 2.5])


async def test_a_child_that_fails_to_start_never_resets_its_backoff(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    started_at: list[float] = []

    class SlowToFail(Actor):
        async def on_start(self) -> None:
            started_at.append(trio.current_time())
            await trio.sleep(3)  # longer than reset_after, but it never came up
            raise OSError("no database")

    await actor_system.spawn(
        Supervisor.spec(
            [ChildSpec(SlowToFail, name="s")],
            name="sup",
            max_restarts=100,
            within=1000,
            reset_after=1,
            backoff=tenacity.wait_exponential(multiplier=1, max=100),
            restart=Restart.TEMPORARY,
        )
    )
    await trio.sleep(30)
    gaps = [b - a for a, b in itertools.pairwise(started_at)]
    assert gaps[:4] == pytest.approx([3, 4, 5, 7])  # 3s to fail, then waits 0, 1, 2, 4


async def test_a_pool_with_crashing_tasks_keeps_its_throughput(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    """16 workers, 1% of the messages crash theirs: the pool stays within 70% of the speed
    of the same run without crashes (it collapsed when one worker's backoff stalled all)."""
    count = 3200

    class Work(Actor):
        def __init__(self, done: list[int], all_done: trio.Event, crashing: set[int]) -> None:
            self.done = done
            self.all_done = all_done
            self.crashing = crashing

        async def receive(self, n: int) -> None:
            await trio.sleep(0.01)
            self.done.append(n)
            if len(self.done) == count:
                self.all_done.set()
            if n in self.crashing:
                raise RuntimeError(f"task {n} broke its worker")

    async def run(crashing: set[int]) -> float:
        done: list[int] = []
        all_done = trio.Event()
        pool = await actor_system.spawn(
            Pool.spec(
                Work,
                16,
                args=(done, all_done, crashing),
                routing=Routing.LEAST_BUSY,
                max_restarts=10_000,
                within=1,
                restart=Restart.TEMPORARY,
            )
        )
        start = trio.current_time()
        for n in range(count):
            await pool.tell(n)
        await all_done.wait()
        elapsed = trio.current_time() - start
        assert sum(ref.stats().restarts for ref in pool.which_children()) == len(crashing)
        await pool.stop()
        return elapsed

    without = await run(set())
    with_crashes = await run(set(random.Random(12).sample(range(count), count // 100)))
    assert without / with_crashes >= 0.7


@pytest.mark.parametrize("value", [-1, float("nan"), "1"], ids=repr)
def test_reset_after_must_be_a_number_of_seconds(value: Any) -> None:
    with pytest.raises(InvalidConfig, match="reset_after must be"):
        Supervisor(reset_after=value)


async def test_a_child_waiting_out_its_backoff_ends_with_a_shutdown_that_runs_out_of_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Stubborn(Actor):
        async def receive(self, message: Any) -> None:
            await trio.sleep_forever()

    starts: Starts = {}
    async with open_system(shutdown_timeout=1) as system:
        await system.spawn(
            Supervisor.spec(
                [
                    ChildSpec(Crashy, (starts,), name="c"),
                    ChildSpec(Stubborn, name="s", shutdown=100),
                ],
                name="sup",
                backoff=tenacity.wait_fixed(3600),
            )
        )
        crashy = system.lookup("c")
        await crashy.tell("crash")
        await crashy.tell("crash")  # waits an hour for its next restart
        await system.lookup("s").tell("work")  # will not stop within the shutdown timeout
        await trio.testing.wait_all_tasks_blocked()
        assert crashy.stats().state is ActorState.RESTARTING
    # The shutdown cancelled what was left; the waiting child ended with it.
    assert not crashy.is_alive
    assert system.names == []
    assert isinstance((await crashy.join()).reason, RuntimeError)

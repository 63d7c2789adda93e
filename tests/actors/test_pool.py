"""Pools: supervised routees, round-robin or least-busy routing, asks answered by routees."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorError,
    ActorSystem,
    ChildSpec,
    InvalidConfig,
    Pool,
    Restart,
    Routing,
)


class Worker(Actor):
    """Answers with its own name; takes `seconds` per message; crashes on "crash"."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    async def receive(self, message: Any) -> str:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if self.seconds:
            await trio.sleep(self.seconds)
        return self.name


async def test_a_round_robin_pool_hands_messages_to_each_routee_in_turn(
    actor_system: ActorSystem,
) -> None:
    pool = await actor_system.spawn(Pool.spec(Worker, 3, name="workers"))
    answers = [await pool.ask(n) for n in range(6)]
    assert answers == ["workers-1", "workers-2", "workers-3"] * 2
    assert [ref.name for ref in pool.which_children()] == ["workers-1", "workers-2", "workers-3"]


async def test_a_least_busy_pool_prefers_an_idle_routee(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    pool = await actor_system.spawn(
        Pool.spec(Worker, 3, args=(1.0,), name="w", routing=Routing.LEAST_BUSY)
    )
    answers: list[str] = []

    async def ask(n: int) -> None:
        answers.append(await pool.ask(n))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, 0)
        await trio.sleep(0.5)  # w-1 is busy now
        nursery.start_soon(ask, 1)
        await trio.sleep(0.1)
        nursery.start_soon(ask, 2)
    assert sorted(answers) == ["w-1", "w-2", "w-3"]  # each went to an idle one


async def test_a_least_busy_pool_spreads_a_burst_over_its_routees(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    pool = await actor_system.spawn(
        Pool.spec(Worker, 4, args=(0.1,), name="w", routing=Routing.LEAST_BUSY)
    )
    answers: list[str] = []

    async def ask(n: int) -> None:
        answers.append(await pool.ask(n, timeout=60))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(40):
            nursery.start_soon(ask, n)
    assert Counter(answers) == {"w-1": 10, "w-2": 10, "w-3": 10, "w-4": 10}
    assert trio.current_time() - start == pytest.approx(1.0)  # 4 at a time


async def test_a_crashed_routee_is_restarted_and_keeps_its_share(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    pool = await actor_system.spawn(Pool.spec(Worker, 2, name="w"))
    with pytest.raises(RuntimeError, match="w-1 crashed"):
        await pool.ask("crash")  # the routee's exception reaches the asker
    assert [await pool.ask(n) for n in range(4)] == ["w-2", "w-1", "w-2", "w-1"]
    assert pool.which_children()[0].stats().restarts == 1
    assert pool.stats().restarts == 0  # the pool itself did not crash


async def test_a_routee_added_at_run_time_takes_work_and_a_stopped_one_none(
    actor_system: ActorSystem,
) -> None:
    pool = await actor_system.spawn(Pool.spec(Worker, 2, name="w"))
    await actor_system.spawn(Worker, name="extra", supervisor=pool)
    assert [await pool.ask(n) for n in range(3)] == ["w-1", "w-2", "extra"]
    await pool.which_children()[0].stop()
    assert sorted([await pool.ask(n) for n in range(2)]) == ["extra", "w-2"]


async def test_a_pool_without_routees_answers_an_ask_with_an_error(
    actor_system: ActorSystem,
) -> None:
    pool = await actor_system.spawn(Pool.spec(Worker, 1, name="w"))
    await pool.which_children()[0].stop()
    with pytest.raises(ActorError, match="pool 'w' has no routee left"):
        await pool.ask("anyone?")
    assert pool.is_alive


async def test_routees_get_the_spec_options(actor_system: ActorSystem) -> None:
    pool = await actor_system.spawn(
        Pool.spec(Worker, 2, name="w", mailbox_size=7, routee_shutdown=1)
    )
    assert [ref.stats().capacity for ref in pool.which_children()] == [7, 7]


def test_a_pool_checks_its_size_and_routing() -> None:
    routee = ChildSpec(Worker)
    with pytest.raises(InvalidConfig, match="size must be an int >= 1"):
        Pool(routee, 0)
    with pytest.raises(InvalidConfig, match="ROUND_ROBIN, LEAST_BUSY"):
        Pool(routee, 2, routing="random")  # type: ignore[arg-type]


async def test_a_pool_is_supervised_like_any_child(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    pool = await actor_system.spawn(
        Pool.spec(Worker, 1, name="w", max_restarts=0, restart=Restart.TEMPORARY)
    )
    with pytest.raises(RuntimeError):
        await pool.ask("crash")  # one crash is one too many for max_restarts=0
    reason = (await pool.join()).reason
    assert isinstance(reason, ActorError)
    assert "gave up" in str(reason)

"""Timers an actor sets for itself, cancelled with it, and the receive timeout."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorSystem,
    InvalidConfig,
    ReceiveTimeout,
    Restart,
    Timer,
)

Log = list[tuple[float, Any]]


class Clocked(Actor):
    """Logs (time, message); sets timers when told to."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.timers: dict[str, Timer] = {}

    async def receive(self, message: Any) -> Any:
        match message:
            case ("after", delay, payload):
                self.timers[payload] = self.send_after(delay, payload)
            case ("keyed", delay, payload):
                self.send_after(delay, payload, key="the-key")
            case ("every", interval, payload):
                self.timers[payload] = self.send_every(interval, payload)
            case ("cancel", payload):
                self.timers[payload].cancel()
            case "crash":
                raise RuntimeError("crash")
            case _:
                self.log.append((trio.current_time(), message))
        return None


async def spawn_clocked(system: ActorSystem, **options: Any) -> tuple[Any, Log, float]:
    log: Log = []
    ref = await system.spawn(Clocked, log, **options)
    return ref, log, trio.current_time()


async def test_send_after_delivers_the_message_once_after_the_delay(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, t0 = await spawn_clocked(actor_system)
    await ref.tell(("after", 2.5, "ding"))
    await trio.sleep(10)
    assert [(t - t0, m) for t, m in log] == [(pytest.approx(2.5), "ding")]


async def test_send_every_repeats_until_cancelled(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, t0 = await spawn_clocked(actor_system)
    await ref.tell(("every", 1.0, "tick"))
    await trio.sleep(3.5)
    await ref.tell(("cancel", "tick"))
    await trio.sleep(5)
    assert [t - t0 for t, _ in log] == pytest.approx([1, 2, 3])


async def test_a_cancelled_timer_sends_nothing(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, _ = await spawn_clocked(actor_system)
    await ref.tell(("after", 1, "never"))
    await ref.tell(("cancel", "never"))
    await trio.sleep(5)
    assert log == []


async def test_a_timer_with_the_same_key_replaces_the_active_one(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, t0 = await spawn_clocked(actor_system)
    await ref.tell(("keyed", 1, "first"))
    await trio.sleep(0.5)
    await ref.tell(("keyed", 1, "second"))  # pushes the deadline back: "first" never comes
    await trio.sleep(5)
    assert [(t - t0, m) for t, m in log] == [(pytest.approx(1.5), "second")]


async def test_timers_are_cancelled_when_the_actor_restarts(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, _ = await spawn_clocked(actor_system)
    await ref.tell(("every", 1, "tick"))
    await ref.tell(("after", 2, "ding"))
    await ref.tell("crash")
    await trio.sleep(5)
    assert log == []
    assert ref.stats().restarts == 1


async def test_timers_are_cancelled_when_the_actor_stops(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, _ = await spawn_clocked(actor_system)
    await ref.tell(("every", 1, "tick"))
    await trio.sleep(1.5)
    await ref.stop()
    await trio.sleep(5)
    assert len(log) == 1


async def test_many_replaced_timers_do_not_pile_up(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, log, _ = await spawn_clocked(actor_system)
    for _ in range(1000):  # a timeout pushed back on every message
        await ref.tell(("keyed", 60, "idle"))
    await trio.testing.wait_all_tasks_blocked()
    # White-box: memory is not observable through the API, so look at the timer heap: it
    # holds the live timer and a bounded number of cancelled ones, not a thousand.
    service = actor_system._timers
    assert service is not None
    assert len(service._heap) <= 130
    await trio.sleep(61)
    assert [m for _, m in log] == ["idle"]


async def test_a_periodic_tick_that_finds_the_mailbox_full_is_skipped(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ticks: list[float] = []
    timers: list[Timer] = []

    class Busy(Actor):
        async def receive(self, message: Any) -> None:
            if message == "start":
                timers.append(self.send_every(1, "tick"))
                await trio.sleep(9.5)  # busy: the mailbox (1) fills with the first tick
            elif message == "tick":
                ticks.append(trio.current_time())

    t0 = trio.current_time()
    ref = await actor_system.spawn(Busy, mailbox_size=1)
    await ref.tell("start")
    await trio.sleep(10.5)
    # The tick queued at 1 is handled at 9.5, the one of 10 on time; 2..9 were left out.
    assert [t - t0 for t in ticks] == pytest.approx([9.5, 10])
    assert timers[0].skipped == 8


async def test_a_single_timer_is_delivered_even_to_a_full_mailbox(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Any] = []

    class Busy(Actor):
        async def receive(self, message: Any) -> None:
            if message == "start":
                self.send_after(1, "deadline")
                await trio.sleep(5)
            seen.append(message)

    ref = await actor_system.spawn(Busy, mailbox_size=1)
    await ref.tell("start")
    await ref.tell("queued")  # fills the mailbox
    await trio.sleep(10)
    assert sorted(seen) == ["deadline", "queued", "start"]


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "1"], ids=repr)
async def test_a_timer_delay_must_be_a_finite_number_of_seconds(
    actor_system: ActorSystem, delay: Any
) -> None:
    errors: list[BaseException] = []

    class Bad(Actor):
        async def receive(self, message: Any) -> None:
            try:
                self.send_after(delay, "x")
            except InvalidConfig as exc:
                errors.append(exc)

    ref = await actor_system.spawn(Bad)
    await ref.ask("go")
    assert len(errors) == 1
    assert "seconds" in str(errors[0]) or ">= 0" in str(errors[0])


# -- receive timeout ------------------------------------------------------------------------


class Idle(Actor):
    def __init__(self, log: Log, seconds: float | None) -> None:
        self.log = log
        self.seconds = seconds

    async def on_start(self) -> None:
        self.set_receive_timeout(self.seconds)

    async def receive(self, message: Any) -> None:
        if message == "off":
            self.set_receive_timeout(None)
        self.log.append((trio.current_time(), message))


async def test_a_receive_timeout_fires_after_the_mailbox_stays_empty(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    t0 = trio.current_time()
    ref = await actor_system.spawn(Idle, log, 2.0)
    await trio.sleep(1)
    await ref.tell("hello")  # restarts the idle period
    await trio.sleep(4.5)
    assert [(t - t0, m) for t, m in log] == [
        (pytest.approx(1), "hello"),
        (pytest.approx(3), ReceiveTimeout(2.0)),
        (pytest.approx(5), ReceiveTimeout(2.0)),  # it repeats while the actor stays idle
    ]


async def test_a_receive_timeout_can_be_turned_off(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    ref = await actor_system.spawn(Idle, log, 1.0)
    await ref.tell("off")
    await trio.sleep(10)
    assert [m for _, m in log] == ["off"]


async def test_a_receive_timeout_set_in_init_works_before_the_first_message(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []

    class Early(Actor):
        def __init__(self) -> None:
            self.set_receive_timeout(1.5)

        async def receive(self, message: Any) -> None:
            log.append((trio.current_time(), message))

    t0 = trio.current_time()
    await actor_system.spawn(Early, restart=Restart.TEMPORARY)
    await trio.sleep(2)
    assert [(t - t0, m) for t, m in log] == [(pytest.approx(1.5), ReceiveTimeout(1.5))]

"""Request/response with `ask`: replies, the handler's exceptions, and timeouts."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import Actor, ActorError, ActorStopped, ActorSystem, AskTimeout, Restart


@attrs.frozen
class Add:
    a: int
    b: int


@attrs.frozen
class Nap:
    seconds: float


class Calculator(Actor):
    async def receive(self, message: Any) -> Any:
        if isinstance(message, Add):
            return message.a + message.b
        if isinstance(message, Nap):
            await trio.sleep(message.seconds)
            return "rested"
        if message == "fail":
            raise KeyError("no such thing")
        return None


async def test_ask_returns_the_value_receive_returned(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Calculator)
    assert await ref.ask(Add(2, 3)) == 5


async def test_ask_raises_the_handlers_exception_in_the_caller(
    actor_system: ActorSystem,
) -> None:
    ref = await actor_system.spawn(Calculator)
    with pytest.raises(KeyError, match="no such thing"):
        await ref.ask("fail")


async def test_an_ask_that_raises_also_crashes_the_actor(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator, restart=Restart.TEMPORARY)
    with pytest.raises(KeyError):
        await ref.ask("fail")
    terminated = await ref.join()
    assert isinstance(terminated.reason, KeyError)


async def test_ask_timeout_names_the_actor_and_the_message_type(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator, name="calc")
    with pytest.raises(AskTimeout) as info:
        await ref.ask(Nap(10), timeout=1.5)
    error = info.value
    assert (error.actor, error.message_type, error.timeout) == ("calc", "Nap", 1.5)
    assert "'calc'" in str(error)
    assert "Nap" in str(error)
    assert "1.5s" in str(error)
    assert "timeout=" in str(error)  # how to fix it


async def test_ask_timeout_is_a_timeout_error(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    with pytest.raises(TimeoutError):
        await ref.ask(Nap(10), timeout=1)


async def test_ask_times_out_after_exactly_its_timeout(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    start = trio.current_time()
    with pytest.raises(AskTimeout):
        await ref.ask(Nap(10), timeout=2)
    assert trio.current_time() - start == pytest.approx(2)


async def test_ask_timeout_covers_the_wait_for_mailbox_room(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator, mailbox_size=1)
    await ref.tell(Nap(100))  # being handled
    await trio.testing.wait_all_tasks_blocked()
    await ref.tell(Nap(100))  # fills the mailbox
    start = trio.current_time()
    with pytest.raises(AskTimeout):
        await ref.ask(Add(1, 1), timeout=3)
    assert trio.current_time() - start == pytest.approx(3)
    assert ref.stats().queued == 1


async def test_ask_without_timeout_waits_as_long_as_it_takes(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    start = trio.current_time()
    assert await ref.ask(Nap(3600), timeout=None) == "rested"
    assert trio.current_time() - start == pytest.approx(3600)


async def test_a_late_reply_is_discarded_and_the_actor_keeps_working(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    with pytest.raises(AskTimeout):
        await ref.ask(Nap(5), timeout=1)
    assert await ref.ask(Add(1, 2), timeout=10) == 3
    assert ref.stats().processed == 2
    assert ref.stats().restarts == 0


async def test_asks_are_answered_in_order_under_concurrency(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Calculator, mailbox_size=4)
    answers: dict[int, int] = {}

    async def ask(i: int) -> None:
        answers[i] = await ref.ask(Add(i, i))

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(ask, i)
    assert answers == {i: 2 * i for i in range(50)}


async def test_ask_to_a_stopped_actor_raises_actor_stopped(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Calculator)
    await ref.stop()
    with pytest.raises(ActorStopped):
        await ref.ask(Add(1, 1))


async def test_queued_asks_fail_with_actor_stopped_when_the_actor_stops_for_good(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    await ref.tell(Nap(1))
    await trio.testing.wait_all_tasks_blocked()
    errors: list[BaseException] = []

    async def ask() -> None:
        try:
            await ref.ask(Add(1, 1), timeout=None)
        except ActorError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()
    assert len(errors) == 1
    assert isinstance(errors[0], ActorStopped)
    assert "before answering" in str(errors[0])


async def test_an_ask_being_handled_when_the_actor_is_cancelled_fails_with_actor_stopped(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator, shutdown=1)
    errors: list[BaseException] = []

    async def ask() -> None:
        try:
            await ref.ask(Nap(1000), timeout=None)
        except ActorError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await ref.stop()  # the handler ignores the stop: it is cancelled after 1s
    assert trio.current_time() - start == pytest.approx(1)
    assert len(errors) == 1
    assert isinstance(errors[0], ActorStopped)


async def test_concurrent_asks_with_different_timeouts_each_time_out_on_their_own_deadline(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    start = trio.current_time()
    timed_out: dict[float, float] = {}

    async def ask(timeout: float) -> None:
        with pytest.raises(AskTimeout):
            await ref.ask(Nap(100), timeout=timeout)
        timed_out[timeout] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        for timeout in (7.0, 3.0, 5.0, 3.0, 1.0):
            nursery.start_soon(ask, timeout)
    assert timed_out == {
        7.0: pytest.approx(7.0),
        5.0: pytest.approx(5.0),
        3.0: pytest.approx(3.0),
        1.0: pytest.approx(1.0),
    }


async def test_an_ask_cancelled_from_outside_raises_cancelled_not_ask_timeout(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(Calculator)
    with trio.move_on_after(1) as scope:
        await ref.ask(Nap(3), timeout=10)
    assert scope.cancelled_caught
    # The actor finishes the nap and answers the next ask normally.
    assert await ref.ask(Add(1, 2), timeout=10) == 3

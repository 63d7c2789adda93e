"""The public extension points other packages build on: `Actor.run`, `stopping`,
`on_stop_requested`, `ChildSpec(factory=)`, `ActorRef.which_children`, shared mailboxes
(`Mailbox.get`, `wait_for_demand`, `put_first_nowait`) and `run_with_signals`."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
from actors import (
    Actor,
    ActorError,
    ActorStopped,
    ChildSpec,
    InvalidActor,
    InvalidConfig,
    Mailbox,
    Supervisor,
)


class Reader(Actor):
    """Not a message loop: takes messages from a shared mailbox until told to stop."""

    def __init__(self, source: Mailbox, seen: list[tuple[str, Any]]) -> None:
        self.source = source
        self.seen = seen
        self.scope: trio.CancelScope | None = None

    async def run(self) -> None:
        while not self.stopping:
            with trio.CancelScope() as self.scope:
                message = await self.source.get()
                self.seen.append((self.name, message))
            self.scope = None

    def on_stop_requested(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


async def test_run_override_replaces_the_message_loop_and_stops_when_asked() -> None:
    source = Mailbox(10)
    seen: list[tuple[str, Any]] = []
    async with actors.open_system() as system:
        ref = await system.spawn(ChildSpec(Reader, args=(source, seen), name="reader"))
        await source.put("a")
        await source.put("b")
        await trio.testing.wait_all_tasks_blocked()
        assert [m for _, m in seen] == ["a", "b"]
        terminated = await ref.stop(timeout=1.0)
        assert terminated.reason is None  # stopped promptly, not cancelled at its deadline


async def test_a_crash_in_run_is_supervised_like_any_other(autojump_clock: Any) -> None:
    starts: list[int] = []

    class Crashy(Actor):
        async def run(self) -> None:
            starts.append(1)
            if len(starts) == 1:
                raise RuntimeError("boom")
            await trio.sleep_forever()

    async with actors.open_system() as system:
        ref = await system.spawn(Crashy)
        await trio.sleep(5)  # past the restart backoff (virtual time)
        assert len(starts) == 2
        assert ref.stats().restarts == 1


async def test_stopping_is_false_while_running_and_true_after_a_stop_request() -> None:
    states: list[bool] = []
    release = trio.Event()

    class Watcher(Actor):
        async def run(self) -> None:
            states.append(self.stopping)
            await release.wait()
            states.append(self.stopping)

        def on_stop_requested(self) -> None:
            release.set()

    async with actors.open_system() as system:
        ref = await system.spawn(Watcher)
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()
    assert states == [False, True]


async def test_factory_builds_each_incarnation() -> None:
    built: list[Actor] = []

    class Counted(Actor):
        async def receive(self, message: Any) -> Any:
            if message == "crash":
                raise RuntimeError("crash")
            return id(self)

    def make() -> Counted:
        instance = Counted()
        built.append(instance)
        return instance

    async with actors.open_system() as system:
        ref = await system.spawn(ChildSpec(Counted, factory=make))
        first = await ref.ask("who")
        with pytest.raises(RuntimeError):
            await ref.ask("crash")
        second = await ref.ask("who")
    assert len(built) == 2
    assert first == id(built[0])
    assert second == id(built[1])


async def test_factory_returning_another_class_crashes_the_child_with_a_clear_error() -> None:
    class Wanted(Actor):
        async def receive(self, message: Any) -> Any:
            return message

    class Other(Actor):
        async def receive(self, message: Any) -> Any:
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(ChildSpec(Wanted, factory=Other, restart=actors.Restart.TEMPORARY))
        terminated = await ref.join()
    assert isinstance(terminated.reason, InvalidActor)
    assert "not an instance of Wanted" in str(terminated.reason)


def test_factory_with_args_is_refused() -> None:
    class A(Actor):
        pass

    with pytest.raises(InvalidConfig, match="either a factory or args"):
        ChildSpec(A, args=(1,), factory=A)
    with pytest.raises(InvalidConfig, match="callable"):
        ChildSpec(A, factory=42)  # type: ignore[arg-type]


async def test_which_children_lists_a_supervisors_children_in_start_order() -> None:
    class Idle(Actor):
        async def receive(self, message: Any) -> Any:
            return None

    async with actors.open_system() as system:
        sup = await system.spawn(
            Supervisor.spec([ChildSpec(Idle, name="one"), ChildSpec(Idle, name="two")])
        )
        assert [ref.name for ref in sup.which_children()] == ["one", "two"]
        with pytest.raises(ActorError, match="not a running Supervisor"):
            sup.which_children()[0].which_children()


# -- shared mailboxes -------------------------------------------------------------------


async def test_get_waits_for_a_message_and_each_message_goes_to_one_reader() -> None:
    box = Mailbox(100)
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}

    async def reader(index: int) -> None:
        while True:
            got[index].append(await box.get())

    async with trio.open_nursery() as nursery:
        for index in got:
            nursery.start_soon(reader, index)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(30):
            box.put_nowait(n)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    taken = sorted(n for values in got.values() for n in values)
    assert taken == list(range(30))
    assert all(values == sorted(values) for values in got.values())  # FIFO per reader


async def test_readers_are_served_in_the_order_they_began_to_wait() -> None:
    box = Mailbox(10)
    order: list[str] = []

    async def reader(name: str) -> None:
        await box.get()
        order.append(name)

    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(reader, name)
            await trio.testing.wait_all_tasks_blocked()
        box.put_nowait(1)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a"]
        box.put_nowait(2)
        box.put_nowait(3)
    assert order == ["a", "b", "c"]


async def test_a_cancelled_reader_takes_nothing() -> None:
    box = Mailbox(10)
    with trio.move_on_after(0.1):
        await box.get()
    box.put_nowait("x")
    assert box.get_nowait() == "x"
    assert box.demand == 0


async def test_get_on_a_closed_mailbox_raises_once_it_is_empty() -> None:
    box = Mailbox(10)
    result: list[BaseException] = []

    async def reader() -> None:
        try:
            await box.get()
        except ActorStopped as exc:
            result.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert len(result) == 1


async def test_wait_for_demand_returns_the_readers_waiting_for_nothing() -> None:
    box = Mailbox(10)
    demands: list[int] = []

    async def producer() -> None:
        demands.append(await box.wait_for_demand())
        for n in range(demands[-1]):
            box.put_nowait(n)

    async def reader() -> None:
        await box.get()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert demands == []  # nobody asked yet
        nursery.start_soon(reader)
        nursery.start_soon(reader)
    assert demands in ([1], [2])
    assert box.demand == 0


async def test_wait_for_demand_counts_the_readers_that_ask_during_its_checkpoint() -> None:
    # Readers woken with messages finish quick work (one checkpoint here) and ask again:
    # a producer that fetches for the demand gets them all in one answer, not 1 then 1.
    box: Mailbox = Mailbox(10)
    demands: list[int] = []

    async def reader() -> None:
        while True:
            await box.get()
            await trio.lowlevel.checkpoint()  # the work of one message

    async def producer() -> None:
        for _ in range(3):
            wanted = await box.wait_for_demand()
            demands.append(wanted)
            for n in range(wanted):
                box.put_nowait(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert demands == [2, 2, 2]


async def test_a_fetch_under_way_serves_its_readers_and_another_producer_the_rest() -> None:
    # Two producers: the second fetches only for readers that asked after the first's
    # fetch began (`fetching`), never for the same reader twice (no prefetch).
    box: Mailbox = Mailbox(10)
    got: list[int] = []
    asked: list[int] = []
    first_fetch = trio.Event()

    async def reader() -> None:
        got.append(await box.get())

    async def producer(gate: trio.Event | None) -> None:
        wanted = await box.wait_for_demand()
        asked.append(wanted)
        with box.fetching(wanted):
            if gate is not None:
                first_fetch.set()
                await gate.wait()  # a fetch under way
            for n in range(wanted):
                box.put_nowait(n)

    gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(producer, gate)
        await first_fetch.wait()
        assert box.demand == 0  # both readers are served by the fetch under way
        nursery.start_soon(producer, None)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert asked == [2, 1]  # the second producer: the third reader only
        gate.set()
    assert sorted(got) == [0, 0, 1]
    assert box.demand == 0


async def test_put_first_nowait_jumps_the_queue_but_not_the_bound() -> None:
    box = Mailbox(2)
    box.put_nowait("b")
    box.put_first_nowait("a")
    with pytest.raises(trio.WouldBlock):
        box.put_first_nowait("c")
    assert [box.get_nowait(), box.get_nowait()] == ["a", "b"]


@settings(max_examples=50, deadline=None)
@given(
    ops=st.lists(st.sampled_from(["put", "put_first", "get"]), max_size=60),
    capacity=st.integers(1, 8),
)
def test_get_and_get_nowait_take_the_same_messages_in_the_same_order(
    ops: list[str], capacity: int
) -> None:
    """The waiting `get` is a checkpoint plus `get_nowait`: same inputs, same outputs."""

    def run(use_get: bool) -> list[Any]:
        async def main() -> list[Any]:
            box = Mailbox(capacity)
            taken: list[Any] = []
            for index, op in enumerate(ops):
                try:
                    if op == "put":
                        box.put_nowait(index)
                    elif op == "put_first":
                        box.put_first_nowait(index)
                    elif len(box):
                        taken.append(await box.get() if use_get else box.get_nowait())
                except trio.WouldBlock:
                    taken.append(("full", index))
            return taken

        return trio.run(main)

    assert run(True) == run(False)


async def test_run_with_signals_runs_main_in_the_opened_system() -> None:
    result = await actors.run_with_signals(actors.open_system, lambda system: _name(system))
    assert result == "system"


async def _name(system: actors.ActorSystem) -> str:
    await trio.lowlevel.checkpoint()
    return system.name

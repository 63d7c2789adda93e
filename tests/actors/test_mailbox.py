"""Bounded mailboxes: backpressure, the overflow policies, and the counters that report them."""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import trio
import trio.testing

import actors
from actors import Actor, ActorSystem, Mailbox, MailboxFull, Overflow


class Gate(Actor):
    """Records messages; blocks on `gate` before handling each one."""

    def __init__(self, gate: trio.Event, seen: list[Any]) -> None:
        self.gate = gate
        self.seen = seen

    async def receive(self, message: Any) -> Any:
        await self.gate.wait()
        self.seen.append(message)
        return message


async def spawn_blocked(
    system: ActorSystem, size: int, overflow: Overflow
) -> tuple[actors.ActorRef, trio.Event, list[Any]]:
    """A Gate actor busy with message "first", its mailbox of `size` empty.

    shutdown=0: if a test leaves it blocked, the system cancels it at once on exit.
    """
    gate = trio.Event()
    seen: list[Any] = []
    ref = await system.spawn(Gate, gate, seen, mailbox_size=size, overflow=overflow, shutdown=0)
    await ref.tell("first")
    await trio.testing.wait_all_tasks_blocked()
    assert ref.stats().queued == 0  # "first" is in receive, not in the mailbox
    return ref, gate, seen


async def test_messages_are_handled_in_the_order_they_were_sent(
    actor_system: ActorSystem,
) -> None:
    gate = trio.Event()
    gate.set()
    seen: list[int] = []
    ref = await actor_system.spawn(Gate, gate, seen)
    for i in range(100):
        await ref.tell(i)
    assert await ref.ask("done") == "done"
    assert seen == [*range(100), "done"]


async def test_tell_returns_before_the_message_is_handled(actor_system: ActorSystem) -> None:
    ref, _, seen = await spawn_blocked(actor_system, 10, Overflow.WAIT)
    await ref.tell("second")
    assert seen == []
    assert ref.stats().queued == 1


async def test_wait_policy_blocks_the_sender_until_there_is_room(
    actor_system: ActorSystem,
) -> None:
    ref, gate, seen = await spawn_blocked(actor_system, 2, Overflow.WAIT)
    await ref.tell("a")
    await ref.tell("b")
    sent = trio.Event()

    async def send() -> None:
        await ref.tell("c")
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set(), "the sender should wait while the mailbox is full"
        assert ref.stats().queued == 2
        gate.set()
    assert sent.is_set()
    assert await ref.ask("end") == "end"
    assert seen == ["first", "a", "b", "c", "end"]
    assert ref.stats().dropped == 0


async def test_waiting_sender_can_be_cancelled(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref, _, _ = await spawn_blocked(actor_system, 1, Overflow.WAIT)
    await ref.tell("a")
    with trio.move_on_after(1) as scope:
        await ref.tell("b")
    assert scope.cancelled_caught
    assert ref.stats().queued == 1


async def test_reject_policy_raises_mailbox_full_and_counts_the_rejection(
    actor_system: ActorSystem,
) -> None:
    ref, gate, seen = await spawn_blocked(actor_system, 1, Overflow.REJECT)
    await ref.tell("a")
    with pytest.raises(MailboxFull) as info:
        await ref.tell("b")
    assert info.value.actor == ref.name
    assert info.value.capacity == 1
    assert "mailbox_size=" in str(info.value)
    assert ref.stats().rejected == 1
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    await ref.ask("end")
    assert seen == ["first", "a", "end"]


async def test_drop_oldest_policy_drops_the_oldest_queued_message(
    actor_system: ActorSystem,
) -> None:
    ref, gate, seen = await spawn_blocked(actor_system, 2, Overflow.DROP_OLDEST)
    for message in "abcd":
        await ref.tell(message)
    assert ref.stats().dropped == 2
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert seen == ["first", "c", "d"]


async def test_drop_newest_policy_drops_the_new_message(actor_system: ActorSystem) -> None:
    ref, gate, seen = await spawn_blocked(actor_system, 2, Overflow.DROP_NEWEST)
    for message in "abcd":
        await ref.tell(message)
    assert ref.stats().dropped == 2
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert seen == ["first", "a", "b"]


async def test_dropping_is_logged(
    actor_system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    ref, _, _ = await spawn_blocked(actor_system, 1, Overflow.DROP_NEWEST)
    await ref.tell("a")
    await ref.tell("b")
    assert any("dropped" in r.getMessage() and ref.name in r.getMessage() for r in caplog.records)


async def test_ask_dropped_by_drop_newest_fails_the_asker_with_mailbox_full(
    actor_system: ActorSystem,
) -> None:
    ref, _, _ = await spawn_blocked(actor_system, 1, Overflow.DROP_NEWEST)
    await ref.tell("a")
    with pytest.raises(MailboxFull, match="dropped by DROP_NEWEST"):
        await ref.ask("b")


async def test_ask_dropped_by_drop_oldest_fails_the_asker_with_mailbox_full(
    actor_system: ActorSystem,
) -> None:
    ref, gate, _ = await spawn_blocked(actor_system, 1, Overflow.DROP_OLDEST)
    errors: list[BaseException] = []

    async def ask_then_record() -> None:
        try:
            await ref.ask("old")
        except MailboxFull as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask_then_record)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("new")  # pushes the queued ask out
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 1
        assert "dropped by DROP_OLDEST" in str(errors[0])
        gate.set()
    assert ref.stats().dropped == 1


async def test_tell_nowait_queues_without_waiting(actor_system: ActorSystem) -> None:
    ref, gate, seen = await spawn_blocked(actor_system, 5, Overflow.WAIT)
    ref.tell_nowait("a")
    assert ref.stats().queued == 1
    gate.set()
    await ref.ask("end")
    assert seen == ["first", "a", "end"]


async def test_tell_nowait_raises_would_block_when_full_with_wait_policy(
    actor_system: ActorSystem,
) -> None:
    ref, _, _ = await spawn_blocked(actor_system, 1, Overflow.WAIT)
    ref.tell_nowait("a")
    with pytest.raises(trio.WouldBlock):
        ref.tell_nowait("b")
    assert ref.stats().queued == 1


async def test_stats_count_received_and_processed_messages(actor_system: ActorSystem) -> None:
    gate = trio.Event()
    gate.set()
    ref = await actor_system.spawn(Gate, gate, [], mailbox_size=7)
    for i in range(5):
        await ref.tell(i)
    await trio.testing.wait_all_tasks_blocked()
    stats = ref.stats()
    assert (stats.received, stats.processed, stats.queued, stats.capacity) == (5, 5, 0, 7)
    assert stats.name == ref.name
    assert stats.state is actors.ActorState.RUNNING


async def test_a_tight_tell_loop_lets_other_tasks_run(actor_system: ActorSystem) -> None:
    # The fast path skips the scheduler on most sends, but still yields once per batch.
    gate = trio.Event()
    gate.set()
    ref = await actor_system.spawn(Gate, gate, [], mailbox_size=10_000)
    ticks = 0
    ticks_seen: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()  # let the ticker start
        start = ticks
        for i in range(1000):
            await ref.tell(i)
            ticks_seen.append(ticks)
        nursery.cancel_scope.cancel()
    assert ticks_seen[-1] > start, "the sender never yielded to other tasks"
    # ...but not on every send: that is the fast path.
    assert ticks_seen[-1] - start < 500


async def test_an_actor_with_a_long_queue_lets_other_tasks_run(
    actor_system: ActorSystem,
) -> None:
    ticks = 0
    ticks_seen: list[int] = []
    done = trio.Event()

    class Busy(Actor):
        async def receive(self, message: Any) -> None:
            ticks_seen.append(ticks)  # never awaits: only the loop itself can yield
            if message == 999:
                done.set()

    ref = await actor_system.spawn(Busy, mailbox_size=1000)
    for i in range(1000):
        ref.tell_nowait(i)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await done.wait()
        nursery.cancel_scope.cancel()
    assert len(set(ticks_seen)) > 2, "the actor held the CPU through its whole queue"
    assert ref.stats().processed == 1000


async def test_a_sender_waiting_for_room_gets_actor_stopped_when_the_actor_stops(
    actor_system: ActorSystem,
) -> None:
    ref, _, _ = await spawn_blocked(actor_system, 1, Overflow.WAIT)
    await ref.tell("fills the mailbox")
    errors: list[BaseException] = []

    async def send() -> None:
        try:
            await ref.tell("waits")
        except actors.ActorStopped as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()  # cancels the blocked handler at once (shutdown=0)
    assert len(errors) == 1
    assert ref.stats().undelivered == 1


async def test_ask_on_a_full_mailbox_with_reject_policy_raises_mailbox_full(
    actor_system: ActorSystem,
) -> None:
    ref, _, _ = await spawn_blocked(actor_system, 1, Overflow.REJECT)
    await ref.tell("a")
    with pytest.raises(MailboxFull):
        await ref.ask("b")
    assert ref.stats().rejected == 1


# -- the Mailbox itself, against a model of its policies ----------------------------------------

Op = tuple[str, int]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    capacity=st.integers(1, 5),
    overflow=st.sampled_from(Overflow),
    ops=st.lists(st.tuples(st.sampled_from(["put", "get"]), st.integers(0, 999)), max_size=60),
)
def test_a_mailbox_never_exceeds_its_capacity_and_accounts_for_every_message(
    capacity: int, overflow: Overflow, ops: list[Op]
) -> None:
    box = Mailbox(capacity, overflow, owner="model")
    model: list[int] = []
    got: list[int] = []
    waited = 0
    for op, value in ops:
        if op == "get":
            try:
                got.append(box.get_nowait())
            except trio.WouldBlock:
                assert model == []
            else:
                assert got[-1] == model.pop(0)
            continue
        full = len(model) == capacity
        try:
            queued = box.put_nowait(value)
        except trio.WouldBlock:
            assert full
            assert overflow is Overflow.WAIT
            waited += 1
            continue
        except MailboxFull:
            assert full
            assert overflow is Overflow.REJECT
            continue
        if not full:
            model.append(value)
            assert queued
        elif overflow is Overflow.DROP_OLDEST:
            model.pop(0)
            model.append(value)
            assert queued
        else:
            assert overflow is Overflow.DROP_NEWEST
            assert not queued
        assert len(box) <= capacity
    assert len(box) == len(model)
    puts = sum(1 for op, _ in ops if op == "put")
    # Nothing is lost silently: every put was handed out, is still queued, or was counted.
    assert puts == len(got) + len(box) + box.dropped + box.rejected + waited
    assert box.received == puts - box.rejected - waited - (
        box.dropped if overflow is Overflow.DROP_NEWEST else 0
    )


async def test_a_mailbox_has_one_reader_at_a_time() -> None:
    box = Mailbox(10, owner="single")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.wait_readable)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError, match="'single'"):
            await box.wait_readable()
        box.put_nowait("wake")


async def test_a_reader_cancelled_while_waiting_frees_the_mailbox_for_the_next() -> None:
    box = Mailbox(10)
    with trio.move_on_after(1) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.wait_readable)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            # Rescheduled (cancelled) but not yet run: a message must not wake it twice.
            box.put_nowait("first")
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.wait_readable)
        await trio.testing.wait_all_tasks_blocked()
        box.wake_reader()
    assert box.get_nowait() == "first"

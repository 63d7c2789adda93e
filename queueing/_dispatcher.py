"""The dispatcher: the actor that owns every served queue's buffer and fills it."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from actors import Actor, Mailbox, Overflow

from ._logs import task_fields
from ._ranked import Fair, RetriesAhead, feed
from ._task import TaskState

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import QueueRuntime

log = logging.getLogger("queueing")
_RUNNING = TaskState.RUNNING

#: Seconds one `claim` waits for ready tasks before the dispatcher asks again (and the
#: longest a stop of the dispatcher may wait for a claim in flight).
CLAIM_WAIT = 0.5
#: Ready tasks an in-process broker hands over per claim (due delays and retries).
LOCAL_CLAIM = 1024
#: Claims of one queue under way at once (shared brokers). A claim asks for the workers
#: idle when it starts; with more than one, workers that become idle while a claim is under
#: way start the next one rather than wait for its answer, each asking only for the idle
#: workers no claim under way serves (`Mailbox.fetching`): no prefetch. One: on a quiet
#: machine two cost 1 to 3.5% of the no-op throughput and about 0.5 ms of the p50 at 3,700
#: tasks/s (more claims, each for fewer tasks), and gave nothing with a task that waits on
#: Redis (docs/scale.md, "Turns, claims and the tail").
CLAIMS_IN_FLIGHT = 1


class Dispatcher(Actor):
    """Owns each served queue's buffer, an `actors.Mailbox` its pool's workers read.

    - In process (`memory://`), a task accepted ready is put in its queue's buffer by the
      engine at once; the dispatcher adds the tasks that become ready later inside the
      broker (a delay or a retry backoff ran out).
    - With a shared broker, the dispatcher claims from the broker only what idle workers
      asked for (`Mailbox.wait_for_demand`: no prefetch), keeps the leases of what this
      process holds, and stops the local run of a task settled elsewhere (cancelled). Up
      to `CLAIMS_IN_FLIGHT` claims of a queue are under way at once (one by default),
      each for the idle workers the others do not serve (`Mailbox.fetching`).
    """

    def __init__(self, engine: Engine, runtimes: dict[str, QueueRuntime]) -> None:
        self.engine = engine
        self.runtimes = runtimes
        self._scope: trio.CancelScope | None = None

    @staticmethod
    def buffer_for(rt: QueueRuntime, shared: bool) -> Mailbox:
        """A new buffer for a served queue: in process, room for every outstanding task
        (and one handed back by each worker); shared, room for one task per worker (what
        idle workers asked for)."""
        capacity = rt.spec.workers if shared else rt.spec.maxsize + rt.spec.workers
        return Mailbox(capacity, Overflow.WAIT, owner=f"{rt.name}.buffer")

    async def run(self) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                for rt in self.runtimes.values():
                    nursery.start_soon(self._fill, rt, name=f"dispatch {rt.name}")
                if self.engine.shared:
                    nursery.start_soon(self._keep_leases)

    def on_stop_requested(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _fill(self, rt: QueueRuntime) -> None:
        broker = self.engine.broker
        buffer = rt.buffer
        assert buffer is not None
        info = rt.info
        if broker.shared:
            async with trio.open_nursery() as nursery:
                for i in range(CLAIMS_IN_FLIGHT):
                    nursery.start_soon(self._claims, rt, name=f"claims {rt.name} {i}")
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rank, rt)
                ahead = info.retry_ahead
                while True:
                    for task in await broker.claim(info, LOCAL_CLAIM, wait=math.inf):
                        rt.scheduled -= 1
                        if ahead and task.attempts:
                            # A due retry: ahead of the new tasks of its priority.
                            ranked = self.engine.rank(rt)
                            assert isinstance(ranked, RetriesAhead | Fair)
                            ranked.push_retry(task)
                        elif rt.ranked is not None:
                            rt.ranked.push(task)  # by priority, with the ones waiting
                        else:
                            await buffer.put(task)

    async def _claims(self, rt: QueueRuntime) -> None:
        """One of a queue's claim loops (shared brokers): claim for the idle workers no
        other claim under way serves, and hand what came to them."""
        broker = self.engine.broker
        buffer = rt.buffer
        assert buffer is not None
        info = rt.info
        held = rt.held
        while True:
            wanted = await buffer.wait_for_demand()
            with buffer.fetching(wanted):
                tasks = await broker.claim(info, wanted, wait=CLAIM_WAIT)
                # No checkpoint from here on: a stop cannot come between the claim's
                # answer and the buffer (where `release` finds what was never started).
                for i, task in enumerate(tasks):
                    try:
                        buffer.put_nowait(task)  # a worker waits for each one: room
                    except trio.WouldBlock:
                        await self._put_rest(rt, tasks[i:])
                        break
                    held[task.id] = task
                    if task.deliveries:
                        self._reclaimed(rt, task)
            if tasks:
                # The workers just woken run before the next claim is sent (the checkpoint
                # here and `wait_for_demand`'s: two turns of the scheduler, so after theirs
                # whatever order the scheduler runs a turn's tasks in), so that the
                # outcomes of the tasks that finish at once go along with it instead of in
                # a write of their own (docs/scale.md, "The worker's CPU per task").
                await trio.lowlevel.checkpoint()

    async def _put_rest(self, rt: QueueRuntime, tasks: list[Task]) -> None:
        """Claimed tasks that found the buffer full (its workers were replaced while the
        claim was under way): wait for room; stopped meanwhile, the rest go back to the
        broker (another process takes them at once)."""
        buffer = rt.buffer
        assert buffer is not None
        for task in tasks:
            rt.held[task.id] = task
            if task.deliveries:
                self._reclaimed(rt, task)
        for i, task in enumerate(tasks):
            try:
                await buffer.put(task)
            except BaseException:
                left = tasks[i:]
                for one in left:
                    rt.held.pop(one.id, None)
                with trio.CancelScope(shield=True):
                    await self.engine.broker.release(rt.info, left)
                raise

    async def _rank(self, rt: QueueRuntime) -> None:
        """In process, once the queue uses priorities or tenants: feed its workers from its
        store (`_ranked.py`)."""
        await rt.ranking.wait()
        await feed(rt)

    def _reclaimed(self, rt: QueueRuntime, task: Task) -> None:
        """A task delivered before and left without an outcome (its lease ran out: the
        process that held it died or stalled) is delivered again: counted."""
        rt.reclaimed += 1
        log.info(
            "queue %r: task %s is delivered again (delivery %d): its lease ran out before "
            "it had an outcome",
            rt.name,
            task.id,
            task.deliveries + 1,
            extra=task_fields(task),
        )

    async def _keep_leases(self) -> None:
        broker = self.engine.broker
        while True:
            await trio.sleep(broker.lease / 3)
            for rt in self.runtimes.values():
                if rt.held:
                    held = list(rt.held.values())
                    for task in await broker.renew(rt.info, held):
                        self._lost(rt, task)
                    await self._stop_ended_stages(held)

    async def _stop_ended_stages(self, held: list[Task]) -> None:
        """Pipeline stage tasks running here whose run ended in another process (a failure
        at another stage, a cancel): they stop now, as they would in that process."""
        runs = {task.run for task in held if task.run is not None and task.state is _RUNNING}
        for run_id in runs:
            if run_id is not None and await self.engine.runs.ended(run_id):
                await self.engine.stop_stages(run_id)

    def _lost(self, rt: QueueRuntime, task: Task) -> None:
        """A task this process no longer holds: settled elsewhere (cancelled), or taken
        over by another process after this one stalled past its lease."""
        rt.held.pop(task.id, None)
        if task.state.final:
            if task._scope is not None:
                task._scope.cancel()  # its outcome is recorded: stop running it here
            return
        log.warning(
            "queue %r: task %s was reclaimed by another process after this one stalled "
            "past its lease (%gs)",
            rt.name,
            task.id,
            self.engine.broker.lease,
            extra=task_fields(task),
        )
        if task.state is TaskState.PENDING:
            task.state = TaskState.CANCELLED  # here only: the worker that finds it skips it
        # A running one runs on; the first outcome recorded wins.


async def release(engine: Engine, runtimes: dict[str, QueueRuntime]) -> None:
    """At shutdown (the workers and the dispatcher have stopped): close the buffers and
    hand back to a shared broker what was claimed and never started, so that another
    process takes it at once. (In process, `Engine.abandon` ends them.)"""
    for rt in runtimes.values():
        buffer = rt.buffer
        if buffer is None:
            continue
        left = [task for task in buffer.close() if task.state is TaskState.PENDING]
        if left and engine.shared:
            for task in left:
                rt.held.pop(task.id, None)
            await engine.broker.release(rt.info, left)


if TYPE_CHECKING:
    from ._task import Task

"""Outcomes: settle, dead-letter, retry later, cancel.

A claimed task's outcome is written by `finish.lua` (batched: see `_batch`), which acts only
on the entry the task's record names (its `e` field, written with the entry): a copy of
the entry under another id, forged or stale, never resolves or acknowledges the real task.
The first outcome wins.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from ..._task import ErrorInfo, Task, TaskState
from .._contract import QueueInfo, queue_of
from . import _keys as k
from ._batch import Batcher, Op
from ._calls import Calls
from ._consumer import Consumer
from ._losses import Losses
from ._wire import encode_envelope, encode_meta, encode_outcome, letter_of, task_from_record

if TYPE_CHECKING:
    from ._runs import RedisRuns

log = logging.getLogger("queueing.redis")

#: What `finish.lua` and `retry.lua` answer when the record names another entry, or none.
_NOT_THIS_ENTRY = -2
_NO_RECORD = -1


class Outcomes:
    """Writes of outcomes (batched for workers, direct for a client's cancel)."""

    def __init__(
        self,
        calls: Calls,
        keys: k.Keys,
        batcher: Batcher,
        consumer: Consumer,
        losses: Losses,
        *,
        max_dead_letters: int,
    ) -> None:
        self.calls = calls
        self.keys = keys
        self.batcher = batcher
        self.consumer = consumer
        self.losses = losses
        self.max_dead_letters = max_dead_letters
        self.runs: RedisRuns | None = None
        self._heads: dict[tuple[str, int, bool], tuple[list[str], list[Any]]] = {}
        #: The queue and ttl of each short head (see `_head`), by its id.
        self._short: dict[int, tuple[str, int]] = {}
        #: Queues seen with tenants: their `finish.lua` calls pass every fair key.
        self._fair: set[str] = set()
        batcher.on_fair = self._turned_fair

    def _head(self, queue: str, ttl: int, full: bool = False) -> tuple[list[str], list[Any]]:
        """The keys and arguments of a `finish.lua` call common to a queue's tasks (whose
        outcomes are kept `ttl` ms). Short (of the fair keys only `fair` and `tenants`,
        which tell whether the queue has tenants) unless `full` or the queue was seen with
        tenants: every key passed costs Redis about as much as a command's share."""
        full = full or queue in self._fair
        head = self._heads.get((queue, ttl, full))
        if head is None:
            fair = self.keys.fair(queue)
            keys = [
                self.keys.ready(queue),
                self.keys.outstanding(queue),
                self.keys.stats(queue),
                self.keys.room(queue),
                self.keys.done(queue),
                self.keys.dead(queue),
                self.keys.delayed(queue),
                self.keys.envs(queue),
                self.keys.live(queue),
                self.keys.waiting(queue),
                self.keys.held(queue),
                *(fair if full else (fair[0], fair[2])),
            ]
            args = [
                self.max_dead_letters,
                k.DONE_MAXLEN,
                k.REPLIES_MAXLEN,
                k.REPLIES_TTL,
                k.ROOM_TOKENS,
                k.NOTICE_OUTCOME_MAX,
                ttl,
                # Where a task id starts in its record's key (1-based, as Lua counts).
                len(self.keys.record(queue, "")) + 1,
                "1" if full else "",
            ]
            head = self._heads[(queue, ttl, full)] = (keys, args)
            if not full:
                self._short[id(head)] = (queue, ttl)
        return head

    def _turned_fair(self, ops: list[Op]) -> None:
        """A short `finish.lua` call found its queue with tenants (and wrote nothing): its
        outcomes go again, with every fair key, in the next write."""
        for op in ops:
            assert op.head is not None
            queue, ttl = self._short[id(op.head)]
            self._fair.add(queue)
            op.head = self._head(queue, ttl)
            self.batcher.push(op)

    def _finish_part(
        self, queue: str, task: Task, entry: str, reply: str, letter: str
    ) -> tuple[list[str], list[Any]]:
        """One task's keys and arguments in a `finish.lua` call (its record's key is
        `Keys.record(queue, id)`: the script reads the id from it)."""
        keys = [self.keys.record(queue, task.id)]
        state = task.state.value
        if reply:  # its notice goes to this stream (the client its entry or record names)
            keys.append(self.keys.replies(queue, reply))
            state = ("+!" if letter else "+") + state
        elif letter:
            state = "!" + state
        if letter:
            return keys, [entry, state, encode_outcome(task), letter]
        return keys, [entry, state, encode_outcome(task)]

    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any,
        error: ErrorInfo | None,
        *,
        dead: bool = False,
    ) -> bool:
        if task.state.final:
            return False
        if not state.final:
            raise ValueError(f"an outcome must be a final state, got {state}")
        task.settle(state, result, error, time.time())
        self.consumer.forget(queue.name, task)
        entry, reply = task.handle if task.handle is not None else ("", "")
        letter = letter_of(task, k.base(queue.name)) if dead else ""
        name = queue.name
        keys, args = self._finish_part(name, task, entry, reply, letter)
        then = functools.partial(self._finished, task)
        self.batcher.push(Op("finish", keys, args, then, self._head(name, k.ttl(queue.result_ttl))))
        if self.batcher.congested:
            await self.batcher.relieve()
        return True

    def _finished(self, task: Task, answer: Any) -> None:
        if answer == _NOT_THIS_ENTRY:
            log.warning(
                "task %s: outcome %s not recorded: the task's record names another entry than "
                "the one it was claimed from (it was taken over and retried elsewhere, or the "
                "entry was a copy)",
                task.id,
                task.state.value,
            )
        elif answer == _NO_RECORD:
            self.losses.note("a task finished here has no record any more")

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        name = queue.name
        self.consumer.forget(name, task)
        task.state = TaskState.SCHEDULED
        entry = task.handle[0] if task.handle is not None else ""
        keys = [
            self.keys.task(task.id),
            self.keys.ready(name),
            self.keys.delayed(name),
            self.keys.envs(name),
            self.keys.stats(name),
            self.keys.live(name),
            *self.keys.fair(name),
        ]
        args = [
            entry,
            task.id,
            encode_envelope(task),
            encode_meta(task),
            int(due * 1000),
            "1" if queue.retry_ahead else "",
            k.NUDGE_TOKENS,
        ]

        def then(answer: Any) -> None:
            if answer == _NOT_THIS_ENTRY:
                self._finished(task, answer)
            self.consumer.wake_promoter(name)

        self.batcher.push(Op("retry", keys, args, then))
        if self.batcher.congested:
            await self.batcher.relieve()

    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        """Settle a task CANCELLED unless it has an outcome; its record if this did it."""
        if not queue_of(task_id):
            return None
        name = self.keys.home(task_id)
        record = self.keys.task(task_id)
        state, reply, meta, ttl = await self.calls.retrying(
            "cancel", lambda: self.calls.client.hmget(record, ["s", "r", "m", "t"])
        )
        if state is None or state not in ("pending", "scheduled"):
            return None
        working = None
        if state == "pending":  # a worker may run it now: that attempt counts, as elsewhere
            lookup = [record, self.keys.ready(name)]
            working = (await self.calls.eval("lookup", "lookup", lookup, []))[3]
        task = task_from_record(task_id, state, meta, None, working)
        if task.route is not None and task.run is None:  # a pipeline run's own record
            assert self.runs is not None
            return await self.runs.cancel(task_id, error)
        task.settle(TaskState.CANCELLED, None, error, time.time())
        reply = str(reply or "")[: k.MAX_CLIENT_LENGTH]
        keys, args = self._finish_part(name, task, "", reply, "")
        head_keys, head_args = self._head(name, int(ttl or k.MIN_TTL), full=True)
        (answer,) = await self.calls.eval(
            "cancel", "finish", [*head_keys, *keys], [*head_args, *args]
        )
        return task if answer == 1 else None

"""Pipeline runs in Redis: each step one `run.lua` call on the pipeline's own keys.

A run's record (`{P:pipeline}:task:<run id>`, findable by `lookup` like any task's) and
its state (`{P:pipeline}:run:<run id>`: branches pending, results by branch path, the
stage tasks counted) live under the pipeline's hash tag; its stage tasks live under their
queues' tags. Steps that touch both are separate single-slot steps, each idempotent:

- `start` writes the run's record first, then accepts the first stage task; if that is
  refused (FULL), the record it wrote is deleted. A crash between the two leaves a run
  record with no task (it expires after `RUN_TTL`; no receipt waits for it).
- `advance` counts a stage task's children once (by the stage task's id), `branch_done`
  records a last-stage result once (by branch path), `end` gives the run an outcome once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..._task import ErrorInfo, PipelineTask, Task, TaskState
from .._contract import Admission, QueueInfo, RunStore, queue_of
from . import _keys as k
from ._batch import Batcher
from ._calls import Calls
from ._wire import (
    apply_outcome,
    dumps,
    encode_meta,
    encode_outcome,
    path_key,
    task_from_record,
)

Accept = Callable[[QueueInfo, Task, float | None], Awaitable[Admission]]


class RedisRuns(RunStore):
    """The `RunStore` of `RedisBroker` (its `runs`)."""

    def __init__(
        self, calls: Calls, keys: k.Keys, batcher: Batcher, accept: Accept, starting: set[str]
    ) -> None:
        self.calls = calls
        self.keys = keys
        self.batcher = batcher
        self._accept = accept
        #: Runs being started, or refused for want of room: their records may come and
        #: go (the receipt side does not take them for lost).
        self._starting = starting

    def _keys_of(self, run_id: str) -> list[str]:
        return [self.keys.task(run_id), self.keys.run(run_id), self.keys.done(queue_of(run_id))]

    async def _step(self, run_id: str, step: str, *args: Any) -> PipelineTask | None:
        """One `run.lua` step; the run's record if it gave the run its outcome."""
        head = [step, run_id, repr(time.time()), k.DONE_MAXLEN]
        answer = await self.calls.eval(
            f"pipeline run {step}", "run", self._keys_of(run_id), [*head, *args]
        )
        if not isinstance(answer, list | tuple):
            return None
        client, outcome, meta = (str(part) for part in answer)
        if client:
            # The wake-up for the client that started the run (its stored outcome is what
            # counts: a crash before this write delays that client until its next sweep).
            replies = self.keys.replies(queue_of(run_id), client[: k.MAX_CLIENT_LENGTH])

            from coredis.tokens import PureToken

            def fill(pipe: Any) -> list[Any]:
                return [
                    pipe.xadd(
                        replies,
                        {"id": run_id},
                        nomkstream=True,  # a client gone is sent nothing (see finish.lua)
                        trim_strategy=PureToken.MAXLEN,
                        threshold=k.REPLIES_MAXLEN,
                        trim_operator=PureToken.APPROXIMATELY,
                    ),
                    pipe.expire(replies, k.REPLIES_TTL),
                ]

            await self.calls.pipelined("notify a run's client", fill)
        run = task_from_record(run_id, "pending", meta, None)
        if not isinstance(run, PipelineTask):  # pragma: no cover - a run's meta says "run"
            raise TypeError(f"the record of run {run_id!r} is not a run's")
        apply_outcome(run, outcome)
        return run

    async def start(
        self, run: PipelineTask, queue: QueueInfo, first: PipelineTask, *, due: float | None
    ) -> Admission:
        route = run.route or queue_of(run.id)
        await self.batcher.open_replies(queue_of(run.id))
        self._starting.add(run.id)
        created = await self.calls.eval(
            "start a pipeline run",
            "run",
            self._keys_of(run.id),
            [
                "start",
                run.id,
                repr(time.time()),
                k.DONE_MAXLEN,
                self.batcher.client_id,
                encode_meta(run),
                k.ttl(queue.result_ttl),
                k.RUN_TTL,
                route,
                repr(run.submitted_at),
            ],
        )
        admission = await self._accept(queue, first, due)
        if admission is Admission.FULL and created == 1:
            record, state = self.keys.task(run.id), self.keys.run(run.id)
            await self.calls.retrying(
                "drop a run", lambda: self.calls.client.delete([record, state])
            )
        if admission is not Admission.FULL:
            self._starting.discard(run.id)
        return admission

    async def ended(self, run_id: str) -> bool:
        record = self.keys.task(run_id)
        state = await self.calls.retrying("run state", lambda: self.calls.client.hget(record, "s"))
        return state is None or state not in ("pending", "scheduled")

    async def advance(
        self, run_id: str, stage_task_id: str, children: int, fanned: bool
    ) -> PipelineTask | None:
        return await self._step(run_id, "advance", stage_task_id, children, "1" if fanned else "0")

    async def branch_done(
        self, run_id: str, path: tuple[int, ...], result: Any
    ) -> PipelineTask | None:
        return await self._step(run_id, "branch", path_key(path), dumps(result))

    async def end(
        self, run_id: str, stage: PipelineTask, state: TaskState, error: ErrorInfo | None
    ) -> PipelineTask | None:
        outcome = self._outcome(run_id, stage.route, state, error)
        outcome.stage, outcome.attempts, outcome.deliveries = (
            stage.stage,
            stage.attempts,
            stage.deliveries,
        )
        return await self._step(run_id, "end", state.value, encode_outcome(outcome))

    async def cancel(self, run_id: str, error: ErrorInfo) -> PipelineTask | None:
        """End a run CANCELLED (a client cancelled it by id)."""
        outcome = self._outcome(run_id, None, TaskState.CANCELLED, error)
        return await self._step(run_id, "end", outcome.state.value, encode_outcome(outcome))

    def _outcome(
        self, run_id: str, route: str | None, state: TaskState, error: ErrorInfo | None
    ) -> PipelineTask:
        name = route or queue_of(run_id)
        outcome = PipelineTask(run_id, name, None, 0.0, route=name)
        outcome.settle(state, None, error, time.time())
        return outcome

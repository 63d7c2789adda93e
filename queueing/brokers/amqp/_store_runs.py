"""Pipeline runs of the RabbitMQ broker, in its results store: each step one `run.lua` call.

The layout and the steps are the Redis broker's (see its `_runs.py`): a run's record
(`{P:pipeline}:task:<run id>`, found by `lookup` like any task's) and its state
(`{P:pipeline}:run:<run id>`) live under the pipeline's hash tag; its stage tasks are
messages in their queues like any other task. Every step is idempotent:

- `start` writes the run's record first, then accepts the first stage task; if that is
  refused (FULL), the record it wrote is deleted;
- `advance` counts a stage task's children once (by the stage task's id), `branch_done`
  records a last-stage result once (by branch path), `end` gives the run an outcome once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..._task import ErrorInfo, PipelineTask, Task, TaskState
from .._contract import Admission, QueueInfo, RunStore, queue_of
from ..redis import _keys as k
from ..redis._wire import (
    apply_outcome,
    dumps,
    encode_meta,
    encode_outcome,
    path_key,
    task_from_record,
)
from ._store import Store, StoreCalls
from ._store_reads import Reads

Accept = Callable[[QueueInfo, Task, float | None], Awaitable[Admission]]


class RabbitMQRuns(RunStore):
    """The `RunStore` of `RabbitMQBroker` (its `runs`)."""

    def __init__(
        self, calls: StoreCalls, keys: k.Keys, store: Store, reads: Reads, accept: Accept
    ) -> None:
        self.calls = calls
        self.keys = keys
        self.store = store
        self.reads = reads
        self._accept = accept

    def _keys_of(self, run_id: str) -> list[str]:
        return [self.keys.task(run_id), self.keys.run(run_id)]

    async def _step(self, run_id: str, step: str, *args: Any) -> PipelineTask | None:
        """One `run.lua` step; the run's record if it gave the run its outcome."""
        answer = await self.calls.eval(
            f"pipeline run {step}",
            "run",
            self._keys_of(run_id),
            [step, run_id, repr(time.time()), *args],
        )
        if not isinstance(answer, list | tuple):
            return None
        client, outcome, meta = (str(part) for part in answer)
        if client:
            # The wake-up of the client that started the run (its stored outcome is what
            # counts: a crash before this write delays that client until its next sweep).
            replies = self.keys.replies(queue_of(run_id), client[: k.MAX_CLIENT_LENGTH])

            from coredis.tokens import PureToken

            def fill(pipe: Any) -> list[Any]:
                return [
                    pipe.xadd(
                        replies,
                        {"id": run_id},
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
        self.store.note_replied(queue_of(run.id))
        self.store.starting.add(run.id)
        self.reads.expect(run.id, own=True, stored=False)
        created = await self.calls.eval(
            "start a pipeline run",
            "run",
            self._keys_of(run.id),
            [
                "start",
                run.id,
                repr(time.time()),
                self.store.client_id,
                encode_meta(run),
                k.ttl(queue.result_ttl),
                k.RUN_TTL,
                route,
                repr(run.submitted_at),
            ],
        )
        admission = await self._accept(queue, first, due)
        if admission is Admission.FULL and created == 1:
            record, state = self._keys_of(run.id)
            await self.calls.retrying(
                "drop a run", lambda: self.calls.client.delete([record, state])
            )
        if admission is not Admission.FULL:
            self.store.starting.discard(run.id)
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

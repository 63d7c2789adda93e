"""Pipeline runs in the SQLite file: the `RunStore` of the SQLite broker.

A run's own record is a row of `tasks` (its queue is the pipeline's name; it is never
claimed and never counts toward a queue's maxsize), so `lookup`, `wait_settled` and
`cancel` find it like any task. While it is in flight, `runs` holds how many branches are
still running, and `run_steps` the steps already counted: `a:<stage task id>` for a stage
task that handed on its result, `b:<path>` with the result of a finished branch. A stage
task run twice after a crash finds its step there and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..._task import ErrorInfo, PipelineTask, Task, TaskState
from .._contract import Admission, QueueInfo, RunStore
from . import _ops
from ._records import (
    COLUMNS,
    INSERT_TASK,
    dumps,
    error_text,
    loads,
    path_key,
    record,
    task_row,
    ttl_end,
)
from ._tx import Tx

if TYPE_CHECKING:
    from ._broker import SqliteBroker

#: Seconds a pipeline run's outcome stays retrievable by id (as in memory://).
RUN_TTL = 3600.0


def start(
    tx: Tx,
    info: QueueInfo,
    first: tuple[str, tuple[Any, ...]],
    run: tuple[str, str, tuple[Any, ...]],
    due: float | None,
) -> Admission:
    task_id, row = first
    admission = _ops.accept(tx, info, row, task_id, due)
    if admission is Admission.ACCEPTED:
        run_id, pipeline, run_row = run
        tx.execute(INSERT_TASK, (run_id, pipeline, "pending", None, *run_row))
        tx.execute("INSERT OR IGNORE INTO runs (id, pending) VALUES (?, 1)", (run_id,))
    return admission


def ended(tx: Tx, run_id: str) -> bool:
    return tx.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None


def _record(tx: Tx, run_id: str) -> Task:
    row = tx.execute(f"SELECT {COLUMNS} FROM tasks WHERE id = ?", (run_id,)).fetchone()
    return record(row)


def _finish(
    tx: Tx,
    run_id: str,
    state: TaskState,
    result: str | None,
    error: str | None,
    stage: tuple[int, int, int] | None,
    fanned: bool,
) -> Task | None:
    """Give the run its outcome and forget its steps."""
    tx.execute("DELETE FROM runs WHERE id = ?", (run_id,))
    tx.execute("DELETE FROM run_steps WHERE run = ?", (run_id,))
    sets = "stage = ?, attempts = ?, deliveries = ?, " if stage is not None else ""
    cursor = tx.execute(
        f"UPDATE tasks SET {sets}state = ?, result = ?, error = ?, finished_at = ?, "
        "fanned = ?, keep_until = ?, settled = ? "
        "WHERE id = ? AND state IN ('pending', 'scheduled', 'running')",
        (
            *(stage or ()),
            state.value,
            result,
            error,
            tx.now,
            int(fanned),
            ttl_end(tx.now, RUN_TTL),
            tx.settle_seq(),
            run_id,
        ),
    )
    if cursor.rowcount == 0:
        return None
    tx.effects.add("settled")
    return _record(tx, run_id)


def _complete_if_done(tx: Tx, run_id: str) -> Task | None:
    pending, fanned = tx.execute(
        "SELECT pending, fanned FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    if pending > 0:
        return None
    results = tx.execute(
        "SELECT step, result FROM run_steps WHERE run = ? AND step LIKE 'b:%' ORDER BY step",
        (run_id,),
    ).fetchall()
    if fanned:
        value: Any = [loads(text) for _, text in results]
    else:
        value = loads(results[0][1]) if results else None
    return _finish(tx, run_id, TaskState.SUCCEEDED, dumps(value), None, None, bool(fanned))


def advance(tx: Tx, run_id: str, stage_task_id: str, children: int, fanned: bool) -> Task | None:
    if ended(tx, run_id):
        return None
    cursor = tx.execute(
        "INSERT OR IGNORE INTO run_steps (run, step) VALUES (?, ?)", (run_id, f"a:{stage_task_id}")
    )
    if cursor.rowcount == 0:
        return None  # counted already: this stage task ran twice
    tx.execute(
        "UPDATE runs SET pending = pending + ?, fanned = max(fanned, ?) WHERE id = ?",
        (children - 1, int(fanned), run_id),
    )
    return _complete_if_done(tx, run_id)


def branch_done(tx: Tx, run_id: str, path: tuple[int, ...], result: str) -> Task | None:
    if ended(tx, run_id):
        return None
    cursor = tx.execute(
        "INSERT OR IGNORE INTO run_steps (run, step, result) VALUES (?, ?, ?)",
        (run_id, f"b:{path_key(path)}", result),
    )
    if cursor.rowcount == 0:
        return None
    tx.execute("UPDATE runs SET pending = pending - 1 WHERE id = ?", (run_id,))
    return _complete_if_done(tx, run_id)


def end(
    tx: Tx, run_id: str, stage: tuple[int, int, int], state: TaskState, error: str | None
) -> Task | None:
    if ended(tx, run_id):
        return None
    fanned = tx.execute("SELECT fanned FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    return _finish(tx, run_id, state, None, error, stage, bool(fanned))


def cancel(tx: Tx, task_id: str, error: str, finished_at: float) -> Task | None:
    """`Broker.cancel`: a pipeline run's record ends CANCELLED; any other task is settled
    CANCELLED (unless either has an outcome)."""
    row = tx.execute("SELECT route, run FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is not None and row[0] is not None and row[1] is None:
        if ended(tx, task_id):
            return None
        return _finish(tx, task_id, TaskState.CANCELLED, None, error, None, False)
    return _ops.cancel_task(tx, task_id, error, finished_at)


class SqliteRuns(RunStore):
    """Pipeline runs kept in the SQLite file."""

    def __init__(self, broker: SqliteBroker) -> None:
        self._broker = broker

    async def start(
        self, run: PipelineTask, queue: QueueInfo, first: PipelineTask, *, due: float | None
    ) -> Admission:
        call = self._broker.writer.call
        admission: Admission = await call(
            start,
            queue,
            (first.id, task_row(first)),
            (run.id, run.queue, task_row(run)),
            due,
        )
        return admission

    async def ended(self, run_id: str) -> bool:
        return bool(await self._broker.writer.call(ended, run_id, write=False))

    async def advance(
        self, run_id: str, stage_task_id: str, children: int, fanned: bool
    ) -> PipelineTask | None:
        return await self._broker.writer.call(  # type: ignore[no-any-return]
            advance, run_id, stage_task_id, children, fanned
        )

    async def branch_done(
        self, run_id: str, path: tuple[int, ...], result: Any
    ) -> PipelineTask | None:
        return await self._broker.writer.call(  # type: ignore[no-any-return]
            branch_done, run_id, path, dumps(result)
        )

    async def end(
        self, run_id: str, stage: PipelineTask, state: TaskState, error: ErrorInfo | None
    ) -> PipelineTask | None:
        counts = (stage.stage, stage.attempts, stage.deliveries)
        return await self._broker.writer.call(  # type: ignore[no-any-return]
            end, run_id, counts, state, error_text(error)
        )

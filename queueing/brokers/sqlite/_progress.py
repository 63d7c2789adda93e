"""Task progress in the SQLite file: the `progress` column of a task's row (JSON).

Replaced at each publish (the engine coalesces reports); it goes with the row, so it is
kept exactly as long as the task's record.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..._task import Progress, progress_from_doc
from ._records import loads
from ._tx import Tx

#: Ids per `IN (...)` list.
IN_CHUNK = 500


def store(tx: Tx, items: Sequence[tuple[str, str]]) -> None:
    """Replace the progress of the tasks named (id, JSON text); rows gone are skipped."""
    tx.conn.executemany("UPDATE tasks SET progress = ? WHERE id = ?", [(t, i) for i, t in items])


def read(tx: Tx, task_ids: Sequence[str]) -> dict[str, Progress]:
    found = {}
    for start in range(0, len(task_ids), IN_CHUNK):
        chunk = task_ids[start : start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = tx.execute(
            f"SELECT id, progress FROM tasks WHERE id IN ({marks}) AND progress IS NOT NULL "
            "AND (keep_until IS NULL OR keep_until > ?)",
            (*chunk, tx.now),
        ).fetchall()
        for task_id, text in rows:
            progress = progress_from_doc(loads(text))
            if progress is not None:
                found[task_id] = progress
    return found

"""`SqliteBroker`: durable queues in one SQLite file, shared by the processes of a machine."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ..._exceptions import BrokerError
from ..._task import DeadLetter, ErrorInfo, Progress, Task, TaskState, progress_doc
from .._contract import Admission, Broker, QueueInfo, TenantFigures, check_lease, queue_of
from . import _admin, _fair, _ops, _progress, _rates, _runs
from ._records import STATES, dumps, error_of, error_text, letter_of, letter_text, loads, task_row
from ._settings import parse_url
from ._writer import Writer

log = logging.getLogger("queueing")
#: The longest pause between two heartbeats of a serving process (`status` lists it).
HEARTBEAT = 5.0
#: Seconds before the engine's background loops (claims, outcomes) try a failed read or
#: write again (a file locked past busy_timeout, a full disk).
BACKGROUND_RETRY = 1.0
#: Seconds between two checks that the records of every task waited for still exist.
SWEEP_EVERY = 10.0
#: Seconds an id waited for may have no record before it is reported LOST.
UNSEEN_LOST = 600.0
_LOST = ErrorInfo(
    "TaskLost",
    "its record is gone from the SQLite file (the file was replaced or restored, or a "
    "power failure undid its last writes with synchronous=normal)",
)
#: The longest `wait_settled` waits for more outcomes while they keep coming.
GATHER_MAX = 0.005


class SqliteBroker(Broker):
    """Tasks, outcomes and dead letters in a SQLite file (`sqlite:///path.db`).

    Every process that opens the same file shares its queues: workers claim tasks with a
    lease (`?lease=`, 30 s), renewed while they run, so that the tasks of a process that
    died are claimed again by another one once their lease runs out. Writes are batched
    by one thread per process (see `_writer.py`); `?synchronous=` says how far a commit
    goes toward the disk (see docs/concepts/sqlite.md).
    """

    durable = True
    shared = True
    clock = staticmethod(time.time)

    def __init__(self, url: str, *, max_dead_letters: int = 10_000) -> None:
        self.settings = parse_url(url)
        self.url = url
        self.lease = check_lease(self.settings.lease)
        self.max_dead_letters = max_dead_letters
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.runs = _runs.SqliteRuns(self)
        self._writer: Writer | None = None
        #: Tasks this process claimed and has not settled, retried or released: a cancel
        #: made here settles the very record its worker runs.
        self._claimed: dict[str, Task] = {}
        self._serving = False
        #: Workers this process runs, for `status` (as the Redis broker's heartbeat says
        #: them); `open_system` sets it, the broker does not know.
        self.workers = 0
        #: For `wait_settled`: the ids known to be open as of outcome number `_since`.
        self._open_ids: frozenset[str] = frozenset()
        self._since: int | None = None
        self._gather = False
        self._returned_at = 0.0
        self._sweep_at = 0.0
        #: Ids waited for whose record was not there when first looked for, and since when.
        self._unseen: dict[str, float] = {}

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("the SQLite broker is used outside of its connect() block")
        return self._writer

    # -- life ------------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, queues: Mapping[str, QueueInfo], *, serve: bool) -> AsyncIterator[None]:
        writer = Writer(self.settings, self.owner, _admin.cleanup)
        try:
            async with anyio.create_task_group() as group:
                try:
                    await writer.start(group)
                    self._writer = writer
                    self._serving = serve
                    process = None
                    if serve:
                        process = (
                            os.getpid(),
                            socket.gethostname(),
                            dumps(sorted(queues)),
                            self.workers,
                        )
                    await writer.call(_admin.declare, list(queues.values()), process)
                    try:
                        yield
                    finally:
                        with anyio.CancelScope(shield=True):
                            if serve:
                                try:
                                    await writer.call(_admin.leave)
                                except Exception:
                                    log.debug("SQLite broker: could not sign off", exc_info=True)
                            await writer.close()
                finally:
                    writer.stop_delivering()
                    group.cancel_scope.cancel()
        except BaseExceptionGroup as group_error:
            if len(group_error.exceptions) == 1:
                only = group_error.exceptions[0]
                raise only from only.__cause__
            raise
        finally:
            self._writer = None
            writer.dispose()

    async def run(self) -> None:
        """Heartbeats of a serving process (for `status`), until cancelled."""
        every = min(HEARTBEAT, self.lease / 3)
        while True:
            await anyio.sleep(every)
            if self._serving:
                await self.writer.send(_admin.heartbeat)

    async def flush(self) -> None:
        if self._writer is not None:
            await self._writer.flush()

    # -- the client side -------------------------------------------------------------------

    async def accept(self, queue: QueueInfo, task: Task, *, due: float | None = None) -> Admission:
        admission: Admission = await self.writer.call(
            _ops.accept, queue, task_row(task), task.id, due
        )
        return admission

    async def accept_many(self, queue: QueueInfo, tasks: Sequence[Task]) -> int:
        rows = [(task.id, task_row(task)) for task in tasks]
        return int(await self.writer.call(_ops.accept_many, queue, rows))

    async def wait_room(self, queue: QueueInfo, timeout: float) -> None:
        room = self.writer.signals.event(f"room:{queue.name}")
        if await self.outstanding(queue.name) < queue.maxsize:
            return
        with anyio.move_on_after(timeout):
            await room.wait()

    async def lookup(self, task_id: str) -> Task | None:
        task: Task | None = await self.writer.call(_ops.lookup, task_id, write=False)
        return task

    async def wait_settled(self, task_ids: Collection[str], timeout: float) -> list[Task]:
        writer = self.writer
        now = anyio.current_time()
        deadline = now + timeout
        if self._gather:
            # Outcomes keep coming, and each call costs the caller time that grows with the
            # number of ids it passes: wait about as long as it spent since the last call,
            # so that one call takes many outcomes instead of a few.
            self._gather = False
            await anyio.sleep(min(now - self._returned_at, GATHER_MAX))
        while True:
            settled = writer.signals.event("settled")
            wanted = frozenset(task_ids)  # read again at each look: the engine's set grows
            since = self._since
            fresh = list(wanted - self._open_ids) if since is not None else list(wanted)
            sweep: list[str] = []
            if anyio.current_time() >= self._sweep_at:
                self._sweep_at = anyio.current_time() + SWEEP_EVERY
                sweep = list(self._open_ids & wanted)
            try:
                done, cursor, seen, gone = await writer.call(
                    _ops.settled, fresh, wanted, since, sweep, write=False
                )
            except BrokerError as exc:  # the receipts' loop asks again
                log.warning("SQLite broker: reading outcomes failed (%s)", exc)
                await anyio.sleep(max(0.0, min(deadline - anyio.current_time(), BACKGROUND_RETRY)))
                return []
            done += self._lost(fresh, seen, sweep, gone)
            self._since = cursor
            self._open_ids = wanted.difference(task.id for task in done)
            if done or anyio.current_time() >= deadline:
                self._gather = bool(done)
                self._returned_at = anyio.current_time()
                return done  # type: ignore[no-any-return]
            with anyio.move_on_after(deadline - anyio.current_time()):
                await settled.wait()

    def _lost(
        self, fresh: list[str], seen: set[str], sweep: list[str], gone: set[str]
    ) -> list[Task]:
        """Records in state LOST for ids whose record is gone from the file: seen before
        and missing at a sweep, or never seen for `UNSEEN_LOST` seconds (a pipeline run is
        watched before its record is written, and may wait for room that long)."""
        unseen = self._unseen
        now = anyio.current_time()
        if unseen and sweep:  # forget ids no longer waited for (a receipt dropped)
            for task_id in unseen.keys() - self._open_ids - set(fresh):
                del unseen[task_id]
        for task_id in fresh:
            if task_id not in seen:
                unseen.setdefault(task_id, now)
        lost = []
        for task_id in gone:
            since = unseen.get(task_id)
            if since is None or now - since >= UNSEEN_LOST:
                unseen.pop(task_id, None)
                task = Task(task_id, queue_of(task_id), None, 0.0)
                task.settle(TaskState.LOST, None, _LOST, time.time())
                lost.append(task)
        for task_id in seen.union(sweep).difference(gone):
            unseen.pop(task_id, None)
        return lost

    async def cancel(self, task_id: str, error: ErrorInfo) -> Task | None:
        record: Task | None = await self.writer.call(
            _runs.cancel, task_id, error_text(error), time.time()
        )
        if record is None:
            return None
        mine = self._claimed.pop(task_id, None)
        if mine is not None:
            # Running (or about to run) here: its worker's own record learns the outcome.
            mine.settle(record.state, None, record.error, record.finished_at or time.time())
            return mine
        return record

    # -- the worker side -------------------------------------------------------------------

    async def claim(self, queue: QueueInfo, n: int, *, wait: float) -> list[Task]:
        writer = self.writer
        deadline = anyio.current_time() + wait
        while True:
            ready = writer.signals.event(f"ready:{queue.name}")
            try:
                tasks, nxt = await writer.call(_ops.claim, queue, n, self.lease, lease=True)
            except BrokerError as exc:
                # The dispatcher's loop has nothing better to do than to try again later:
                # a file locked for long (or a full disk) must not stop this process.
                log.warning("SQLite broker: claiming from %r failed (%s)", queue.name, exc)
                tasks, nxt = [], time.time() + BACKGROUND_RETRY
            if tasks:
                claimed = self._claimed
                for task in tasks:
                    claimed[task.id] = task
                return tasks  # type: ignore[no-any-return]
            now = anyio.current_time()
            if now >= deadline:
                return []
            pause = deadline - now
            if nxt is not None:
                pause = min(pause, max(0.0, nxt - time.time()))
            with anyio.move_on_after(pause):
                await ready.wait()

    async def renew(self, queue: QueueInfo, tasks: Sequence[Task]) -> list[Task]:
        if not tasks:
            return []
        by_id = {task.id: task for task in tasks}
        try:
            answers = await self.writer.call(_ops.renew, list(by_id), self.lease, lease=True)
        except BrokerError as exc:  # the next renewal tries again
            log.warning("SQLite broker: renewing leases of %r failed (%s)", queue.name, exc)
            return []
        lost = []
        for task_id, state, result, error, finished_at in answers:
            task = by_id[task_id]
            self._claimed.pop(task_id, None)
            outcome = STATES.get(state or "")
            if outcome is not None and outcome.final and not task.state.final:
                task.settle(outcome, loads(result), error_of(error), finished_at or time.time())
            lost.append(task)
        return lost

    async def release(self, queue: QueueInfo, tasks: Sequence[Task]) -> None:
        items = []
        for task in tasks:
            self._claimed.pop(task.id, None)
            items.append((task.id, task.attempts, task.deliveries, task.first_started))
        if items:
            await self.writer.call(_ops.release, queue.name, items, lease=True)

    async def settle(
        self,
        queue: QueueInfo,
        task: Task,
        state: TaskState,
        result: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        # Not waited for (the contract allows it: `flush` waits): a worker goes on to its
        # next task while the outcome is written with others. True unless this process
        # knows of an outcome; if another process recorded one first (a cancel), the
        # write changes nothing and that outcome stands.
        if task.state.final:
            return False
        now = time.time()
        counts = (task.attempts, task.deliveries, task.first_started)
        self._claimed.pop(task.id, None)
        task.settle(state, result, error, now)
        await self.writer.send(
            _ops.settle, queue, task.id, state, dumps(result), error_text(error), counts, now
        )
        return True

    async def retry_at(self, queue: QueueInfo, task: Task, due: float) -> None:
        self._claimed.pop(task.id, None)
        task.state = TaskState.SCHEDULED
        counts = (task.attempts, task.deliveries, task.first_started)
        await self.writer.call(
            _ops.retry_at,
            queue.name,
            task.id,
            due,
            error_text(task.error),
            counts,
            queue.retry_ahead,
        )

    async def dead_letter(
        self, queue: QueueInfo, task: Task, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        if task.state.final:
            return False
        now = time.time()
        counts = (task.attempts, task.deliveries, task.first_started)
        letter = letter_text(task, queue.name, state, error, now)
        settled: bool = await self.writer.call(
            _ops.dead_letter,
            queue,
            task.id,
            state,
            error_text(error),
            counts,
            now,
            letter,
            self.max_dead_letters,
        )
        self._claimed.pop(task.id, None)
        if settled:
            task.settle(state, None, error, now)
        return settled

    async def take_start(
        self, queue: QueueInfo, key: str, within: float, task_id: str | None = None
    ) -> float:
        return float(await self.writer.call(_rates.take_start, queue, key, within, task_id))

    async def tenant_figures(self, queue: str, limit: int) -> list[TenantFigures] | None:
        found: list[TenantFigures] = await self.writer.call(
            _fair.figures, queue, limit, write=False
        )
        return found

    async def rate_figures(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = await self.writer.call(_rates.rate_figures, write=False)
        return found

    # -- dead letters and figures ----------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        texts = await self.writer.call(_admin.dead_letters, queue, limit, write=False)
        return [letter_of(text) for text in texts]

    async def take_dead_letters(self, queue: str, ids: Collection[str] | None) -> list[DeadLetter]:
        wanted = None if ids is None else list(ids)
        texts = await self.writer.call(_admin.take_dead_letters, queue, wanted)
        return [letter_of(text) for text in texts]

    async def outstanding(self, queue: str) -> int:
        return int(await self.writer.call(_ops.outstanding, queue, write=False))

    # -- progress (_progress.py) -------------------------------------------------------------

    async def store_progress(
        self, queue: QueueInfo, updates: Sequence[tuple[Task, Progress]]
    ) -> None:
        items = [(task.id, dumps(progress_doc(progress))) for task, progress in updates]
        await self.writer.send(_progress.store, items)

    async def read_progress(self, task_ids: Collection[str]) -> dict[str, Progress]:
        found: dict[str, Progress] = await self.writer.call(
            _progress.read, list(task_ids), write=False
        )
        return found

    async def figures(self, queue: str) -> dict[str, int] | None:
        found: dict[str, int] | None = await self.writer.call(_admin.figures, queue, write=False)
        return found

    async def status(self) -> dict[str, Any]:
        """Every queue in the file (counts by state, outcome counters, dead letters) and
        the serving processes seen lately, as plain data (`queueing status`)."""
        info: dict[str, Any] = await self.writer.call(_admin.status, write=False)
        info["rates"] = await self.rate_figures()
        return info

    async def declared(self) -> dict[str, QueueInfo]:
        rows = await self.writer.call(_admin.declared, write=False)
        found = {}
        for name, maxsize, max_payload, ttl, tenants in rows:
            limits = _tenant_limits(tenants)
            found[name] = QueueInfo(
                name,
                maxsize,
                max_payload,
                math.inf if ttl >= 1e18 else ttl,
                tenant_concurrency=limits.get("tenant_concurrency"),
                tenant_maxsize=limits.get("tenant_maxsize"),
            )
        return found

    async def declare_pipelines(self, pipelines: Mapping[str, Sequence[str]]) -> None:
        items = [(name, dumps(list(stages))) for name, stages in pipelines.items()]
        if items:
            await self.writer.call(_admin.declare_pipelines, items)

    async def declare_payload_types(self, types: Mapping[str, str]) -> None:
        if types:
            await self.writer.call(_admin.declare_payload_types, list(types.items()))

    async def declared_payload_types(self) -> dict[str, str]:
        rows = await self.writer.call(_admin.declared_payload_types, write=False)
        return {name: value for name, value in rows if isinstance(value, str)}

    async def declared_pipelines(self) -> dict[str, tuple[str, ...]]:
        rows = await self.writer.call(_admin.declared_pipelines, write=False)
        pipelines = {}
        for name, value in rows:
            try:
                stages = loads(value)
                if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
                    raise ValueError("not a list of queue names")
                pipelines[name] = tuple(stages)
            except (ValueError, TypeError) as exc:
                log.warning("pipeline %r: unreadable declaration %r (%s)", name, value, exc)
        return pipelines


def _tenant_limits(text: Any) -> dict[str, int]:
    """The tenant limits a serving process declared (`_admin.TENANTS_KEY`), leniently:
    a value that is not a positive int is left out."""
    try:
        doc = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        key: value
        for key, value in doc.items()
        if key in ("tenant_concurrency", "tenant_maxsize") and type(value) is int and value > 0
    }

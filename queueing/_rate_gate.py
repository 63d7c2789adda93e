"""The start of a task of a rate-limited queue (`Queue(rate_limit=)`): its worker takes a
start from the broker's `take_start` before it runs the task. docs/concepts/rate-limits.md
says how a worker waits, per key or for the queue as a whole."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import trio

from ._convert import AS_ANY
from ._exceptions import PayloadError
from ._task import ErrorInfo, Task, TaskState

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import QueueRuntime

log = logging.getLogger("queueing")
_PENDING = TaskState.PENDING

#: Seconds ahead a worker of a rate-limited queue (without `rate_key`) books its next
#: start and waits for it holding its task; a start due later is asked for again then.
BOOK_AHEAD = 1.0
#: A task of a `rate_key` whose booked start is at most this many seconds away waits for
#: it in its worker (which then serves no other key for that long) rather than going back.
KEY_HOLD = 0.02
#: The longest a worker sleeps before it asks a rate limit again (a slow limit, "2/h").
MAX_RATE_SLEEP = 30.0
#: The longest `rate_key` (characters); a longer one is replaced by its digest.
MAX_RATE_KEY = 200
#: Bytes of the digest that replaces a longer `rate_key`.
KEY_DIGEST = 16


async def may_start(engine: Engine, rt: QueueRuntime, task: Task) -> bool:
    """Before a task of a rate-limited queue starts: take its start. True: start it now
    (after waiting for its start, if it was not due at once), or it is past its deadline
    (the worker ends it: no start is taken for it). False: it does not start here now:
    its key has no free start now (it is booked the key's next one and waits for it,
    SCHEDULED, while this worker takes the next task), or it ended meanwhile.

    Without `rate_key` every task waits for the same limit, so the worker waits with its
    task (sleeping, never polling) rather than handing it back: nothing behind it could
    start sooner."""
    broker = engine.broker
    if _expired(engine, task):
        return True
    if rt.spec.rate_key is not None:
        key = await _rate_key(engine, rt, task)
        if key is None:
            return False
        while True:
            # Booked for this task if not free now: deferred to it, the task finds its
            # booking when it comes back (one call per start, whatever the key's backlog).
            wait = await broker.take_start(rt.info, key, 0.0, task.id)
            if wait <= 0:
                return task.state is _PENDING
            if wait > KEY_HOLD:
                break
            await _wait_holding(rt, task, wait)  # its start is close: cheaper than a deferral
            if task.state is not _PENDING:
                return False
        rt.scheduled += 1
        if engine.shared:
            rt.held.pop(task.id, None)
        elif rt.fair is not None:
            rt.fair.done(task)  # its tenant runs one task fewer while it waits
        # Back late (a broker that rounds delays up, busy workers), it starts late, without
        # bunching up with the starts booked after it (see `take_for_task`).
        await broker.retry_at(rt.info, task, engine.clock() + wait)
        await trio.lowlevel.checkpoint()  # a run of deferrals lets others run
        return False
    while True:
        if _expired(engine, task):
            return True  # it waited past its deadline: its start is left to another
        wait = await broker.take_start(rt.info, "", BOOK_AHEAD)
        if wait <= BOOK_AHEAD:
            if wait > 0:
                await _wait_holding(rt, task, wait)
            return task.state is _PENDING
        await _wait_holding(rt, task, min(wait - BOOK_AHEAD, MAX_RATE_SLEEP))
        if task.state is not _PENDING:
            return False  # cancelled while it waited


def _expired(engine: Engine, task: Task) -> bool:
    return task.expires_at is not None and engine.clock() > task.expires_at


async def _wait_holding(rt: QueueRuntime, task: Task, seconds: float) -> None:
    """Sleep before a task starts; stopped meanwhile (shutdown), the task goes back first
    in the queue's buffer (it never started)."""
    try:
        await trio.sleep(seconds)
    except BaseException:
        if rt.buffer is not None and task.state is _PENDING:
            try:
                rt.buffer.put_first_nowait(task)
            except Exception:  # closed or full: the broker still has it
                log.debug("task %s could not go back to its buffer", task.id)
        raise


async def _rate_key(engine: Engine, rt: QueueRuntime, task: Task) -> str | None:
    """The task's `rate_key` as a str; None if it raised (the task is dead-lettered: a
    function of its payload fails again on every try)."""
    payload = task.payload
    codec = rt.payload_codec
    try:
        if codec.as_is is not AS_ANY and type(payload) is not codec.as_is:
            payload = codec.received(payload)
    except PayloadError as exc:  # dead-lettered as the worker does: no retry converts it
        await engine.dead_letter(rt, task, TaskState.DEAD_LETTERED, ErrorInfo.from_exception(exc))
        return None
    try:
        key = rt.spec.rate_key(payload)
    except Exception as exc:  # the user's function: any error
        error = ErrorInfo(
            "RateKeyError", f"rate_key of queue {rt.name!r} raised {type(exc).__name__}: {exc}"
        )
        await engine.dead_letter(rt, task, TaskState.DEAD_LETTERED, error)
        return None
    key = key if type(key) is str else str(key)
    if len(key) > MAX_RATE_KEY:
        key = "~" + hashlib.blake2b(key.encode(), digest_size=KEY_DIGEST).hexdigest()
    return key

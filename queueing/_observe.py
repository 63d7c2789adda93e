"""The seam that metrics and traces plug into: hooks the engine calls around each task.

Every queue's runtime holds four lists of hooks, empty by default; where the engine and
the workers call them, an empty list costs one truthiness check: all a system that
observes nothing pays per task (bench/observe_bench.py measures it).

- `sending(task)`: a new task (or the next stage's task of a pipeline run) is about to be
  handed to the broker, in the submitter's trio task (traces start their `send` span
  and write its context into `task.trace` here); it may return a function, called with
  None once the hand-over ended (accepted, or found by its key) or with the exception
  that ended it;
- `starting(task)`: a worker starts an attempt (`task.attempts` counts it already), in the
  worker's own trio task, just before the handler: a context variable set here is the
  handler's (a sync handler's thread gets a copy);
- `ended(task, started, error)`: the attempt ended: its handler returned (`error` None)
  or raised `error`, and the engine has taken the outcome (recorded it, scheduled a
  retry, or sent the result on to the pipeline's next stage: within the attempt, so that
  its `send` is a child of this `process` span). For a handler that crashed its worker
  (`Worker.fatal`) or was cancelled (its timeout, a cancel, shutdown) it is called before
  that unwinds, with the exception. `started` is the broker-clock time the attempt
  started at.

Hooks must be quick and must not raise: they run on the per-task path.

Timings (the metrics' two histograms) skip the hook call: a queue's runtime may hold one
`Timings`, whose lists the worker loop appends each attempt's duration and each first
wait to itself, and whose owner folds them (`Timings.fold`) when they grow long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs

from ._task import Task

if TYPE_CHECKING:
    from ._runtime import QueueRuntime

SentHook = Callable[[BaseException | None], None]

#: Observations a `Timings` list holds before the worker loop asks its owner to fold them:
#: few enough that the floats a fold frees are still in the CPU's caches when the next
#: observations take their place (a fold's own cost is a few instructions an observation).
PENDING = 512


class Timings:
    """Where the worker loop records, per attempt, its duration (broker-clock seconds from
    its start to its outcome handed to the broker, as the `ended` hooks see it) and, for a
    first attempt, its wait (from the submit to the start; the owner's fold counts one
    below zero, the clocks of two machines a little apart, as zero). `fold()`
    (the owner's) empties the lists; the loop calls it once a list holds `PENDING`."""

    __slots__ = ("durations", "fold", "waits")

    def __init__(
        self, durations: list[float], waits: list[float], fold: Callable[[], None]
    ) -> None:
        self.durations = durations
        self.waits = waits
        self.fold = fold

    def record(self, task: Task, started: float, now: float) -> None:
        """One attempt (the worker loop inlines this on its common path)."""
        self.durations.append(now - started)
        if task.attempts == 1:
            self.waits.append(started - task._born)
        if len(self.durations) >= PENDING or len(self.waits) >= PENDING:
            self.fold()


SendHook = Callable[[Task], SentHook | None]
StartHook = Callable[[Task], None]
EndHook = Callable[[Task, float, BaseException | None], None]


@attrs.frozen
class Hooks:
    """What one observer hooks into one queue (None: nothing there)."""

    sending: SendHook | None = None
    starting: StartHook | None = None
    ended: EndHook | None = None


def add_hooks(
    runtimes: dict[str, QueueRuntime], make: Callable[[QueueRuntime], Hooks]
) -> Callable[[], None]:
    """Hook `make(rt)` into every queue; returns the function that takes them out again."""
    added: list[tuple[list[object], object]] = []
    for rt in runtimes.values():
        hooks = make(rt)
        for where, hook in (
            (rt.sending, hooks.sending),
            (rt.starting, hooks.starting),
            (rt.ended, hooks.ended),
        ):
            if hook is not None:
                where.append(hook)  # type: ignore[arg-type]
                added.append((where, hook))  # type: ignore[arg-type]

    def remove() -> None:
        for where, hook in added:
            if hook in where:
                where.remove(hook)
        added.clear()

    return remove


def send_started(rt: QueueRuntime, task: Task) -> list[SentHook]:
    """Call the `sending` hooks (there are some); returns what to call when it ended."""
    ends = []
    for hook in rt.sending:
        end = hook(task)
        if end is not None:
            ends.append(end)
    return ends


def send_ended(ends: list[SentHook] | None, error: BaseException | None) -> None:
    """The hand-over ended (see `send_started`)."""
    for end in ends or ():
        end(error)


@contextmanager
def sending(rt: QueueRuntime, task: Task) -> Iterator[None]:
    """`send_started` and `send_ended` around a block, if `rt` has `sending` hooks (off
    the per-task path: pipeline stages, submit_many's chunks)."""
    if not rt.sending:
        yield
        return
    ends = send_started(rt, task)
    try:
        yield
    except BaseException as exc:
        send_ended(ends, exc)
        raise
    send_ended(ends, None)

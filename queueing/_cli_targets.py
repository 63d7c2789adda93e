"""What `queueing worker TARGET` serves: the queues, pipelines and schedules a module
defines, and the number of workers per queue the command line sets (`--concurrency`)."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

import attrs
import click

from ._exceptions import InvalidQueue
from ._queue import Pipeline, Queue
from ._schedule import Schedule
from ._validate import worker_count
from ._worker import Worker

Spec = Queue[Any] | Pipeline | Schedule
_SPECS = (Queue, Pipeline, Schedule)


def _import(module_name: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "its source"
        raise click.BadParameter(
            f"cannot import {module_name!r}: a syntax error in {where}: {exc.msg}"
        ) from exc
    except Exception as exc:  # the module raised while it was imported
        raise click.BadParameter(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc} "
            "(run `python -c 'import " + module_name + "'` for the traceback)"
        ) from exc


def _defined(module: Any) -> list[Spec]:
    return [v for v in vars(module).values() if isinstance(v, _SPECS)]


def _what_it_defines(module: Any, module_name: str) -> str:
    names = [name for name, v in vars(module).items() if isinstance(v, Queue | Pipeline)]
    if not names:
        return f"{module_name!r} defines no Queue or Pipeline at module level"
    return f"{module_name!r} defines " + ", ".join(f"{module_name}:{name}" for name in names)


def load(target: str) -> list[Spec]:
    """Import MODULE[:ATTR]; ATTR is a Queue, a Pipeline, a Schedule, an iterable of them,
    or a function returning one of those (default: every Queue, Pipeline and Schedule the
    module defines).

    Raises:
        click.BadParameter: the module does not import, or ATTR is none of those.
    """
    module_name, _, attr = target.partition(":")
    module = _import(module_name)
    if not attr:
        specs = _defined(module)
        if not any(isinstance(spec, Queue | Pipeline) for spec in specs):
            raise click.BadParameter(
                f"{module_name!r} defines no Queue or Pipeline at module level: define one "
                "(`resize = Queue('resize', Resize)`), or name it as MODULE:ATTR"
            )
        return specs
    try:
        value: Any = getattr(module, attr)
    except AttributeError:
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attr!r}; "
            + _what_it_defines(module, module_name)
        ) from None
    if isinstance(value, type) and issubclass(value, Worker):
        raise click.BadParameter(
            f"{target!r} is a Worker class, not a Queue: a worker runs tasks of a queue, "
            f"so serve the queue (`{attr.lower()} = Queue({attr.lower()!r}, {attr})` in "
            f"{module_name}.py, then `queueing worker {module_name}:{attr.lower()}`); "
            + _what_it_defines(module, module_name)
        )
    if callable(value) and not isinstance(value, (*_SPECS, type)):
        value = value()
    if isinstance(value, _SPECS):
        return [value]
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else []
    if not values or not all(isinstance(v, _SPECS) for v in values):
        raise click.BadParameter(
            f"{target!r} is {type(value).__name__} {value!r:.60}, not a Queue, a Pipeline, "
            "or a list of them; " + _what_it_defines(module, module_name)
        )
    return values


@attrs.frozen
class Concurrency:
    """`--concurrency` as given: a number for every queue, and numbers for named queues."""

    default: int | None = None
    per_queue: dict[str, int] = attrs.field(factory=dict)

    @classmethod
    def parse(cls, values: Iterable[str]) -> Concurrency:
        """Parse `N` (every queue) and `QUEUE=N` (one queue) values.

        Raises:
            click.BadParameter: a value is malformed or repeats.
        """
        default: int | None = None
        per_queue: dict[str, int] = {}
        for value in values:
            name, sep, number = value.rpartition("=")
            workers = _workers(value, number)
            if not sep:
                if default is not None:
                    raise click.BadParameter(
                        f"a number for every queue is given twice ({default} and {workers}): "
                        "give one, and QUEUE=N for the queues that differ",
                        param_hint="--concurrency",
                    )
                default = workers
            elif not name:
                raise click.BadParameter(
                    f"{value!r} names no queue: write QUEUE=N", param_hint="--concurrency"
                )
            elif name in per_queue:
                raise click.BadParameter(
                    f"queue {name!r} is given twice ({per_queue[name]} and {workers})",
                    param_hint="--concurrency",
                )
            else:
                per_queue[name] = workers
        return cls(default, per_queue)

    def apply(self, specs: list[Spec]) -> list[Spec]:
        """The specs with the workers per queue set, pipelines' stages included (a queue
        shared by two pipelines stays one queue).

        Raises:
            click.BadParameter: a name is not a queue these specs serve.
        """
        queues: dict[str, Queue[Any]] = {}
        pipelines: dict[str, Pipeline] = {}
        for spec in specs:
            if isinstance(spec, Pipeline):
                pipelines[spec.name] = spec
                queues.update((stage.name, stage) for stage in spec.stages)
            elif isinstance(spec, Queue):
                queues[spec.name] = spec
        for name in self.per_queue:
            if name in queues:
                continue
            if name in pipelines:
                stages = ", ".join(f"{s.name}=N" for s in pipelines[name].stages)
                raise click.BadParameter(
                    f"{name!r} is a pipeline: its stages are queues with workers of their "
                    f"own; set them one by one ({stages})",
                    param_hint="--concurrency",
                )
            close = difflib.get_close_matches(name, queues, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise click.BadParameter(
                f"no queue named {name!r} is served here (queues: {', '.join(sorted(queues))})"
                + hint,
                param_hint="--concurrency",
            )
        evolved: dict[int, Queue[Any]] = {}

        def set_workers(queue: Queue[Any]) -> Queue[Any]:
            workers = self.per_queue.get(queue.name, self.default)
            if workers is None or workers == queue.workers:
                return queue
            if id(queue) not in evolved:
                evolved[id(queue)] = attrs.evolve(queue, workers=workers)
            return evolved[id(queue)]

        result: list[Spec] = []
        for spec in specs:
            if isinstance(spec, Pipeline):
                result.append(attrs.evolve(spec, stages=[set_workers(s) for s in spec.stages]))
            elif isinstance(spec, Queue):
                result.append(set_workers(spec))
            else:
                result.append(spec)
        return result


def _workers(value: str, number: str) -> int:
    try:
        workers = int(number)
    except ValueError:
        workers = 0
    if workers < 1 or not number.strip().isdigit():
        raise click.BadParameter(
            f"{value!r} is not N or QUEUE=N with N a whole number >= 1 "
            "(e.g. --concurrency 8 --concurrency store=1)",
            param_hint="--concurrency",
        )
    try:
        worker_count("workers", workers)
    except InvalidQueue as exc:
        raise click.BadParameter(str(exc), param_hint="--concurrency") from exc
    return workers


def _rate(queue: Queue[Any]) -> str:
    """A queue's rate limit in its banner: ", at most 100/s" (per key: "per key")."""
    if queue.rate_limit is None:
        return ""
    return f", at most {queue.rate_limit}{' per key' if queue.rate_key is not None else ''}"


def describe(specs: list[Spec]) -> str:
    """What a worker process serves, for its banner: each queue with its workers."""
    queues: dict[str, Queue[Any]] = {}
    pipelines = []
    schedules = []
    for spec in specs:
        if isinstance(spec, Pipeline):
            pipelines.append(spec.name)
            queues.update((stage.name, stage) for stage in spec.stages)
        elif isinstance(spec, Queue):
            queues[spec.name] = spec
        else:
            schedules.append(spec.name)
    parts = [
        f"{name} ({q.workers} worker{'s' if q.workers != 1 else ''}{_rate(q)})"
        for name, q in queues.items()
    ]
    text = ", ".join(parts)
    if pipelines:
        text += f"; pipeline{'s' if len(pipelines) > 1 else ''} " + ", ".join(pipelines)
    if schedules:
        text += f"; schedule{'s' if len(schedules) > 1 else ''} " + ", ".join(schedules)
    return text

"""Reads of task records for the receipt side: which have an outcome, which are gone."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from . import _keys as k
from ._calls import Calls

#: Records per `outcomes.lua` call, and calls per round trip, when checking ids.
CHECK_CHUNK = 500
CHECK_PIPELINE = 20


class Reads:
    """What `read_outcomes` read."""

    __slots__ = ("answers", "made", "positions")

    def __init__(self) -> None:
        #: Per `outcomes.lua` call: queue (or pipeline), ids, fresh, its answer.
        self.answers: list[tuple[str, list[str], bool, list[Any]]] = []
        #: The newest entry of each `done` stream asked for ("0-0" if it has none).
        self.positions: dict[str, str] = {}
        #: The queues (or pipelines) whose `done` stream was watched and did not exist.
        self.made: list[str] = []


async def read_outcomes(
    calls: Calls,
    keys: k.Keys,
    known: list[str],
    fresh: list[str],
    positions: list[str],
    watch: Collection[str] = (),
) -> Reads:
    """Read the records of `known` and `fresh` ids with `outcomes.lua` (for fresh ones, also
    who submitted those without an outcome), and where the `done` streams of `positions`
    stand, first, in the same round trip (as few round trips as the ids need). Before
    both, the `done` streams of `positions` and `watch` are kept (`watch.lua`: outcomes
    are written there only while a reader keeps it): an outcome recorded before is read
    in its record, one recorded after is in the stream."""
    watched = sorted({*positions, *watch})
    parts: list[tuple[str, list[str], bool]] = []  # (name, ids, fresh)
    for ids, is_fresh in ((list(dict.fromkeys(known)), False), (fresh, True)):
        by_name: dict[str, list[str]] = {}
        for task_id in ids:
            by_name.setdefault(keys.home(task_id), []).append(task_id)
        for name, members in by_name.items():
            for i in range(0, len(members), CHECK_CHUNK):
                parts.append((name, members[i : i + CHECK_CHUNK], is_fresh))
    reads = Reads()
    ttl = int(k.DONE_WATCH_TTL * 1000)
    for start in range(0, len(parts), CHECK_PIPELINE):
        part = parts[start : start + CHECK_PIPELINE]
        heads = positions if start == 0 else []
        kept = watched if start == 0 else []

        def fill(
            pipe: Any, part: list[Any] = part, heads: list[str] = heads, kept: list[str] = kept
        ) -> list[Any]:
            watches = [calls.script(pipe, "watch", [keys.done(name)], [ttl]) for name in kept]
            marks = [pipe.xrevrange(keys.done(name), count=1) for name in heads]
            checks = [
                calls.script(pipe, "outcomes", [keys.task(i) for i in ids], ["1" if f else "0"])
                for _, ids, f in part
            ]
            return [*watches, *marks, *checks]

        answers = await calls.pipelined("read outcomes", fill)
        for name, made in zip(kept, answers, strict=False):
            if isinstance(made, Exception):
                raise made
            if made == 1:
                reads.made.append(name)
        answers = answers[len(kept) :]
        for name, newest in zip(heads, answers, strict=False):
            if not isinstance(newest, Exception):
                reads.positions[name] = str(newest[0].identifier) if newest else "0-0"
        for (name, ids, is_fresh), answer in zip(part, answers[len(heads) :], strict=True):
            if isinstance(answer, Exception):
                raise answer
            reads.answers.append((name, ids, is_fresh, answer))
    return reads

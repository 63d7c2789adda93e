"""A queue in shards (`Queue(shards=N)`): its keys under N hash tags, `{prefix:queue:i}`.

Each shard is a queue of its own to the rest of the broker (its ready stream, records,
`outstanding`, dead letters...), named `queue:i`; a task's shard is a stable hash of its id
(`_keys.shard_of`), so every step of a task goes to the same shard, and a keyed task (its
id made of its key) always lands on the same one: unique keys stay unique. `maxsize` is
split evenly over the shards. Figures, `outstanding` and dead letters are summed over them
(`_admin`). A queue of one shard is the queue itself: nothing here runs for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ..._task import Task
from .._contract import QueueInfo
from . import _keys as k

#: The longest one claim of a sharded queue blocks on one shard when all were empty
#: (seconds): a task that arrives on another shard meanwhile waits at most about this.
SHARD_BLOCK = 0.1


class Shards:
    """The shards of the sharded queues this process has seen, and whose turn it is."""

    def __init__(self, keys: k.Keys) -> None:
        self.keys = keys
        self._parts: dict[str, list[QueueInfo]] = {}
        self._turn: dict[str, int] = {}
        #: The shard that last refused a task for being full, by queue (for `wait_room`).
        self.full: dict[str, QueueInfo] = {}

    def learn(self, info: QueueInfo) -> None:
        """Key names follow `info.shards` from now on."""
        if info.shards > 1:
            self.keys.shards[info.name] = info.shards
        else:
            self.keys.shards.pop(info.name, None)

    def parts(self, info: QueueInfo) -> list[QueueInfo]:
        """Each shard as a queue (`queue:i`, its share of `maxsize`)."""
        parts = self._parts.get(info.name)
        if parts is None or len(parts) != info.shards:
            self.learn(info)
            size = -(-info.maxsize // info.shards)
            parts = [
                attrs.evolve(info, name=name, maxsize=size, shards=1)
                for name in k.shard_names(info.name, info.shards)
            ]
            self._parts[info.name] = parts
        return parts

    def of(self, info: QueueInfo, task_id: str) -> QueueInfo:
        """The shard a task of `info` lives in."""
        return self.parts(info)[k.shard_of(task_id, info.shards)]

    def group(self, info: QueueInfo, tasks: Sequence[Task]) -> list[tuple[QueueInfo, list[Task]]]:
        """Tasks by shard."""
        parts = self.parts(info)
        groups: dict[int, list[Task]] = {}
        for task in tasks:
            groups.setdefault(k.shard_of(task.id, info.shards), []).append(task)
        return [(parts[i], group) for i, group in groups.items()]

    def rotation(self, info: QueueInfo) -> list[QueueInfo]:
        """All shards, starting one further at each call (fair claims)."""
        parts = self.parts(info)
        turn = self._turn.get(info.name, 0)
        self._turn[info.name] = (turn + 1) % len(parts)
        return parts[turn:] + parts[:turn]

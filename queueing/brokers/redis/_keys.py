"""The key space of the Redis broker, and the limits of what it stores.

Every key of one queue sits under one hash tag, `{prefix:queue}:…`, so that each script
call touches a single Redis Cluster slot. A task's record lives under its queue's tag (the
queue is the part of the id before the first `:`); a pipeline run's record and state live
under the pipeline's own tag (a run id starts with the pipeline's name). Only five keys are
global: the declared queues, their payload types and the pipelines, the heartbeats of
serving processes, and the epoch.

docs/concepts/delivery-guarantees.md lists the keys and which script touches which.
"""

from __future__ import annotations

import zlib

from ..._task import MAX_PRIORITY, TaskState
from .._contract import queue_of

#: The consumer group of every ready stream (the Lua files name it too: tests check).
GROUP = "workers"

# -- caps and TTLs of what the broker stores ---------------------------------------------

#: Entries kept in a queue's `done` stream (wake-ups for receipts looked up by id).
DONE_MAXLEN = 10_000
#: Seconds a queue's `done` stream is kept after a reader last said it reads it
#: (lua/watch.lua): outcomes are written there only while it exists. Readers say so again
#: with their reads of records (`_receipts.WATCH_EVERY`).
DONE_WATCH_TTL = 60.0
#: Entries kept in one client's `replies` stream of one queue (wake-ups for its receipts).
REPLIES_MAXLEN = 10_000
#: Seconds a client's `replies` stream outlives its last notice or its opening. A client
#: deletes its streams when it closes and opens them again when this is half gone; only a
#: client that went away without closing (killed) leaves them behind, for this long.
REPLIES_TTL = 86_400
#: The longest outcome (characters of JSON) a notice in `replies` carries along; a longer
#: one is read from the task's record.
NOTICE_OUTCOME_MAX = 4096
#: Tokens a queue's `room` list keeps for submitters waiting on a full queue.
ROOM_TOKENS = 64
#: Tokens a ranked queue's `nudge` list keeps for consumers waiting for tasks.
NUDGE_TOKENS = 64
#: Priority levels of a fair queue's `heads` sets (one each: lua/_fair.lua).
FAIR_LEVELS = MAX_PRIORITY + 1
#: Seconds a pipeline run's state outlives its start (a run abandoned half-way).
RUN_TTL = 7 * 86_400
#: The shortest and longest TTL of a stored outcome, in milliseconds (PEXPIRE).
MIN_TTL = 1
MAX_TTL = 10 * 365 * 86_400 * 1000

# -- caps on what one task carries ----------------------------------------------------------

#: The longest task id (longer ones are refused at `accept` and dead-lettered if read).
MAX_ID_LENGTH = 200
#: The longest submitting-client id read from a record.
MAX_CLIENT_LENGTH = 200
#: Characters of an error message kept with an outcome or a dead letter.
MAX_MESSAGE = 4096
#: Characters of a traceback kept with an outcome or a dead letter.
MAX_TRACEBACK = 16_384
#: Bytes an envelope may have beyond its queue's `max_payload` (ids, times, pipeline fields).
ENVELOPE_OVERHEAD = 4096
#: Fields, characters per field name and per value, of an entry that is not a task, kept
#: in its dead letter.
BAD_ENTRY_FIELDS = 20
BAD_ENTRY_NAME_CHARS = 100
BAD_ENTRY_FIELD_CHARS = 4096

#: Stats counter of each outcome, in a queue's `stats` hash.
COUNTERS = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.EXPIRED: "expired",
    TaskState.DEAD_LETTERED: "dead_lettered",
}


def shard_of(task_id: str, shards: int) -> int:
    """The shard of a task of a queue in `shards` parts: a stable hash of its id (a keyed
    task's id is made of its key, so a key always lands on the same shard)."""
    return zlib.crc32(task_id.encode()) % shards


def shard_names(name: str, shards: int) -> list[str]:
    """The names whose hash tags hold a queue's keys: the queue's own, or one per shard."""
    return [name] if shards <= 1 else [f"{name}:{i}" for i in range(shards)]


def base(name: str) -> str:
    """The queue a shard's name belongs to (a queue's name has no `:`)."""
    return name.partition(":")[0]


def ttl(seconds: float) -> int:
    """A queue's `result_ttl` as the scripts take it: milliseconds, within the caps."""
    # min() before round(): round(inf) raises (result_ttl=math.inf keeps outcomes for
    # MAX_TTL).
    return int(max(MIN_TTL, round(min(seconds * 1000, MAX_TTL))))


class Keys:
    """Key names under one prefix."""

    __slots__ = ("_fair", "prefix", "shards")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: The queues in more than one shard (`Queue(shards=)`), by name.
        self.shards: dict[str, int] = {}
        self._fair: dict[str, list[str]] = {}

    def home(self, task_id: str) -> str:
        """The name whose tag holds a task's keys: its queue's, or its shard's."""
        queue = queue_of(task_id)
        shards = self.shards.get(queue, 1)
        return queue if shards == 1 else f"{queue}:{shard_of(task_id, shards)}"

    def names(self, queue: str) -> list[str]:
        """The names whose tags hold a queue's keys (see `shard_names`)."""
        return shard_names(queue, self.shards.get(queue, 1))

    def of(self, name: str, what: str) -> str:
        """A key of a queue or a pipeline: `{prefix:name}:what`."""
        return f"{{{self.prefix}:{name}}}:{what}"

    def tag(self, key: str) -> str:
        """The hash tag of a key (what Redis Cluster hashes)."""
        start = key.find("{")
        end = key.find("}", start + 1)
        return key[start + 1 : end] if start >= 0 and end > start + 1 else key

    # -- one queue's keys -------------------------------------------------------------------

    def ready(self, queue: str) -> str:
        return self.of(queue, "ready")

    def delayed(self, queue: str) -> str:
        return self.of(queue, "delayed")

    def envs(self, queue: str) -> str:
        return self.of(queue, "envs")

    def outstanding(self, queue: str) -> str:
        return self.of(queue, "outstanding")

    def stats(self, queue: str) -> str:
        return self.of(queue, "stats")

    def dead(self, queue: str) -> str:
        return self.of(queue, "dead")

    def room(self, queue: str) -> str:
        return self.of(queue, "room")

    def waiting(self, queue: str) -> str:
        """A ranked queue's ready tasks by priority (a sorted set: see submit.lua)."""
        return self.of(queue, "waiting")

    def ranked(self, queue: str) -> str:
        """Exists once the queue has had a task with a priority: its waiting sequence."""
        return self.of(queue, "ranked")

    def levels(self, queue: str) -> str:
        """The priority levels above 0 a queue's tasks were submitted with (RabbitMQ: a
        ready queue each; a set)."""
        return self.of(queue, "levels")

    def nudge(self, queue: str) -> str:
        """Wake-ups for consumers idle on a ranked queue (a list of tokens)."""
        return self.of(queue, "nudge")

    def fair(self, queue: str) -> list[str]:
        """A queue's keys of fair share between tenants, in the order lua/_fair.lua takes
        them: `fair` (exists once the queue had a task with a tenant), `fifo`, `tenants`,
        `backlog`, `nudge`, then `heads:<p>` for each priority (`FAIR_LEVELS`)."""
        keys = self._fair.get(queue)
        if keys is None:
            keys = [self.of(queue, what) for what in ("fair", "fifo", "tenants", "backlog")]
            keys.append(self.nudge(queue))
            keys += [self.of(queue, f"heads:{p}") for p in range(FAIR_LEVELS)]
            self._fair[queue] = keys
        return keys

    def live(self, queue: str) -> str:
        """Entry id -> submitting client, for every entry a task's record names."""
        return self.of(queue, "live")

    # -- a queue's or a pipeline's keys -----------------------------------------------------

    def held(self, queue: str) -> str:
        """Exists while a task long running holds back the trims of the ready stream
        (lua/finish.lua)."""
        return self.of(queue, "held")

    def done(self, name: str) -> str:
        return self.of(name, "done")

    def replies(self, name: str, client: str) -> str:
        return self.of(name, f"replies:{client}")

    def task(self, task_id: str) -> str:
        """The record of a task (or of a pipeline run), under its queue's (pipeline's) tag."""
        return self.of(self.home(task_id), f"task:{task_id}")

    def record(self, queue: str, task_id: str) -> str:
        """The record a task id names within `queue` (the same key as `task` for an id of
        that queue; for an id read from Redis, which may name another, it keeps the tag)."""
        return self.of(queue, f"task:{task_id}")

    def run(self, run_id: str) -> str:
        """A pipeline run's state (branches pending, results so far)."""
        return self.of(queue_of(run_id), f"run:{run_id}")

    # -- global keys ------------------------------------------------------------------------

    def queues(self) -> str:
        return f"{{{self.prefix}}}:queues"

    def pipelines(self) -> str:
        return f"{{{self.prefix}}}:pipelines"

    def payload_types(self) -> str:
        return f"{{{self.prefix}}}:payload-types"

    def workers(self) -> str:
        return f"{{{self.prefix}}}:workers"

    def epoch(self) -> str:
        """A random token written once: gone or changed, Redis lost data (see `_losses`)."""
        return f"{{{self.prefix}}}:epoch"

"""redis-server instructions per task of the hot scripts alone (`submit.lua`, the claim's
`XREADGROUP`, `finish.lua`), called directly: no broker scheduling, so the same commands
every run.

`bench/redis_replay.py` replays through the broker, whose batching moves a little with
timing (a loaded machine changes how many outcomes ride along with a claim, and how many
notices a read takes): two runs of the same code there differ by a few thousand
instructions per task. Here one synchronous client sends, per block of 64 tasks, one
`submit.lua` call (compact form, as `submit_many` sends it), then reads the entries `--finish`
at a time (`XREADGROUP`) and records their outcomes in one `finish.lua` call each (a
notice to the client's replies stream each). The figure is the instructions
redis-server's `readQueryFromClient` ran (`valgrind --tool=callgrind`; everything Redis
does for its clients, and nothing that depends on the wall time: `serverCron` and the
event loop are left out), for `--blocks` and 3 x `--blocks` blocks after a warm-up block:
the difference over 2 x `--blocks` x 64 tasks.

    python bench/redis_script_cost.py                 # finish calls of 8 tasks
    python bench/redis_script_cost.py --finish 1      # one task per finish call
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queueing.brokers.redis import _calls  # noqa: E402
from queueing.brokers.redis import _keys as k  # noqa: E402

QUEUE = "job"
CLIENT = "c" * 16
BLOCK = 64
KEYS = k.Keys("bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served(path: Path) -> int:
    """Instructions under `readQueryFromClient` (inclusive) in a callgrind file."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s.*:readQueryFromClient\b", line)
        if m:
            return int(m.group(1).replace(",", ""))
    raise SystemExit(f"no readQueryFromClient in {path}")


def submit_call(ids: list[str]) -> tuple[list[str], list[object]]:
    keys = [
        KEYS.outstanding(QUEUE),
        KEYS.ready(QUEUE),
        KEYS.delayed(QUEUE),
        KEYS.envs(QUEUE),
        KEYS.stats(QUEUE),
        KEYS.live(QUEUE),
        KEYS.waiting(QUEUE),
        KEYS.ranked(QUEUE),
        KEYS.nudge(QUEUE),
        *KEYS.fair(QUEUE),
    ]
    start = KEYS.of(QUEUE, "task:")
    args: list[object] = [1_000_000, CLIENT, 3_600_000, k.NUDGE_TOKENS, 0, len(start)]
    for task_id in ids:
        keys.append(start + task_id)
        args += [f'{{"i":"{task_id}","q":"job","p":12345,"t":1764640000.123}}', "{}"]
    return keys, args


def finish_call(done: list[tuple[str, str]]) -> tuple[list[str], list[object]]:
    keys = [
        KEYS.ready(QUEUE),
        KEYS.outstanding(QUEUE),
        KEYS.stats(QUEUE),
        KEYS.room(QUEUE),
        KEYS.done(QUEUE),
        KEYS.dead(QUEUE),
        KEYS.delayed(QUEUE),
        KEYS.envs(QUEUE),
        KEYS.live(QUEUE),
        KEYS.waiting(QUEUE),
        KEYS.held(QUEUE),
        KEYS.fair(QUEUE)[0],
        KEYS.fair(QUEUE)[2],
    ]
    args: list[object] = [
        10_000,
        k.DONE_MAXLEN,
        k.REPLIES_MAXLEN,
        k.REPLIES_TTL,
        k.ROOM_TOKENS,
        k.NOTICE_OUTCOME_MAX,
        3_600_000,
        len(KEYS.record(QUEUE, "")) + 1,
        "",  # a short call: the queue has no tenants
    ]
    for n, (task_id, entry) in enumerate(done):
        if n == 0:  # the client's replies stream once per call (as `Batch` merges them)
            keys += [KEYS.record(QUEUE, task_id), KEYS.replies(QUEUE, CLIENT)]
            args += [entry, "+succeeded", "12345"]
        else:
            keys.append(KEYS.record(QUEUE, task_id))
            args += [entry, "=succeeded", "12345"]
    return keys, args


def run(blocks: int, per: int, out: Path | None) -> None:
    port = free_port()
    server = _common.start_redis_server(port, callgrind=out)
    try:
        r = redis.Redis(port=port, decode_responses=True, socket_timeout=300)
        deadline = time.monotonic() + 300
        while True:
            try:
                r.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):  # still starting
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.2)
        sources = _calls.lua_sources()
        sha = {name: r.script_load(sources[name]) for name in ("submit", "finish")}
        ready = KEYS.ready(QUEUE)
        r.xgroup_create(ready, k.GROUP, id="0", mkstream=True)
        r.xadd(KEYS.replies(QUEUE, CLIENT), {"open": "1"})
        serial = 0
        for _ in range(blocks + 1):  # a warm-up block first
            ids = [f"job:{serial + j:012d}" for j in range(BLOCK)]
            serial += BLOCK
            keys, args = submit_call(ids)
            assert r.evalsha(sha["submit"], len(keys), *keys, *args) == [BLOCK]
            taken = 0
            while taken < BLOCK:
                got = r.xreadgroup(k.GROUP, "w1", {ready: ">"}, count=per)[0][1]
                done = [(dict(fields)["env"].split('"')[3], entry) for entry, fields in got]
                keys, args = finish_call(done)
                codes = r.evalsha(sha["finish"], len(keys), *keys, *args)
                assert codes == [1] * len(done), codes
                taken += len(got)
        r.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection
    finally:
        try:
            server.wait(300)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=4, help="blocks of 64 tasks (and 3x)")
    parser.add_argument("--finish", type=int, default=8, help="tasks per finish.lua call")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="redis-script-cost-"))
    small, large = work / "small.out", work / "large.out"
    run(args.blocks, args.finish, small)
    run(3 * args.blocks, args.finish, large)
    per = (served(large) - served(small)) / (2 * args.blocks * BLOCK)
    print(
        f"redis-server instructions per task: {per / 1000:.1f}k (submit.lua 64 tasks per "
        f"call, finish.lua {args.finish} per call; callgrind files in {work})"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

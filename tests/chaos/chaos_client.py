"""A client process of the chaos scenarios: `python chaos_client.py URL OUT COUNT CHUNK`.

Submits COUNT numbers to queue `chaos` with `submit_many`, CHUNK at a time, appending
`id number` lines to OUT after each call (one write(2) per chunk: survives a SIGKILL);
prints SUBMITTED; waits for every receipt; writes a JSON summary to OUT.json and prints
DONE.
"""

from __future__ import annotations

import json
import os
import sys
import time

import trio
from chaos_tasks import queue

from queueing import TaskLost, connect


async def main(url: str, out: str, count: int, chunk: int) -> None:
    log = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    summary = {"ok": 0, "wrong": 0, "lost": 0, "failed": 0}
    async with connect(url, queue) as system:
        receipts = []
        for start in range(0, count, chunk):
            got = await system.submit_many("chaos", range(start, min(start + chunk, count)))
            os.write(log, "".join(f"{r.id} {start + i}\n" for i, r in enumerate(got)).encode())
            receipts += got
        print("SUBMITTED", flush=True)
        for number, receipt in enumerate(receipts):
            try:
                result = await receipt.result(timeout=300)
            except TaskLost:
                summary["lost"] += 1
            except Exception:
                summary["failed"] += 1
            else:
                summary["ok" if result == 2 * number else "wrong"] += 1
        summary["done_at"] = time.time()
    await trio.Path(out + ".json").write_text(json.dumps(summary))
    print("DONE", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

"""A client process for the crash tests: `python sq_client.py URL LOG COUNT CHUNK`.

Submits COUNT numbers to queue `mp` with `submit_many`, CHUNK at a time, and after each
call appends the ids it got receipts for to LOG (one write(2) per chunk: what is in the
file survives a SIGKILL). Then waits for every result and prints DONE.
"""

from __future__ import annotations

import os
import sys

import trio
from sq_tasks import queue

from queueing import connect


async def main(url: str, log_path: str, count: int, chunk: int) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    async with connect(url, queue) as system:
        receipts = []
        for start in range(0, count, chunk):
            got = await system.submit_many("mp", range(start, min(start + chunk, count)))
            os.write(log, "".join(f"{r.id} {start + i}\n" for i, r in enumerate(got)).encode())
            receipts += got
        for receipt in receipts:
            await receipt
    print("DONE", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

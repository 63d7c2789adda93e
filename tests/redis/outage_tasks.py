"""A queue whose handler calls a backend over TCP (the test's own server, at
`$QUEUEING_TEST_BACKEND_PORT`), with the default retry policy: run by
`queueing worker outage_tasks` in the backend-outage test."""

from __future__ import annotations

import os

import trio

from queueing import Queue, Worker


class Call(Worker):
    """Sends its number to the backend and returns it once the backend said "ok"."""

    async def handle(self, number: int) -> int:
        port = int(os.environ["QUEUEING_TEST_BACKEND_PORT"])
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # refused while it is down
        async with stream:
            await stream.send_all(b"%d\n" % number)
            answer = await stream.receive_some(64)
        if answer != b"ok\n":
            raise ConnectionResetError(f"the backend answered {answer!r}")
        return number


calls = Queue("calls", Call, workers=8)  # the default RetryPolicy: nothing set here

"""A process starts over a slow link within its connect timeout: start-up takes a few round
trips, not one per script (20 scripts one by one at 200 ms a round trip were 4 s of the
5 s). The chaos suite's lagging-network scenario is the same with worker processes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest
import trio

from queueing import UnknownTask, connect

if TYPE_CHECKING:
    from conftest import RedisServer

pytestmark = pytest.mark.redis

#: Seconds each direction waits: a round trip is 0.2 s.
LAG = 0.1
#: Start-up fits in this: about 11 round trips, 2.2 s (one per script was 31, 6.2 s).
CONNECT_TIMEOUT = 4.5


async def lagging(
    target: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Forward connections to `target`, each chunk of bytes LAG seconds late (in order)."""

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def deliver() -> None:
            async for at, data in receive:
                await trio.sleep_until(at)
                await sink.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            async for data in source:
                await send.send((trio.current_time() + LAG, data))
            await send.aclose()

    async def handle(downstream: trio.SocketStream) -> None:
        async with downstream:
            upstream = await trio.open_tcp_stream("127.0.0.1", target)
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(pump, downstream, upstream)
                nursery.start_soon(pump, upstream, downstream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_a_client_connects_over_a_200_ms_round_trip(make_redis_server: Any) -> None:
    server: RedisServer = make_redis_server()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lagging, server.port)
        url = f"redis://127.0.0.1:{port}/0?prefix=slow"
        async with connect(url, connect_timeout=CONNECT_TIMEOUT) as system:
            with pytest.raises(UnknownTask):  # a round trip: it is connected
                await system.receipt("no-such-task").status()
        nursery.cancel_scope.cancel()

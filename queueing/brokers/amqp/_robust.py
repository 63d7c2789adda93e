"""A connection that reconnects: `connect_robust()`.

It remembers the exchanges, queues and bindings declared through it and the consumers
started through it. When the connection drops it reconnects with tenacity backoff,
declares them again, and starts the consumers again on fresh channels, so a consumer's
iteration goes on. Publishing goes through one confirm channel, reopened as needed.

What it does not hide: a publish already written when the connection dropped fails with
`PublishOutcomeUnknown` (the broker may have routed it; the caller decides whether to
publish again); one not yet written waits for the new connection and goes out there.
Deliveries taken before a drop cannot be acked afterwards (their channel is gone): the
broker delivers them again.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
import tenacity

from ._channel import Channel
from ._connect import connect
from ._connection import Connection
from ._errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ReconnectFailed,
    VirtualHostNotAllowed,
    fresh,
)
from ._message import Properties
from ._params import ConnectionParameters
from ._robust_consumer import RobustConsumer
from ._topology import QueueInfo

log = logging.getLogger("queueing.amqp")

# The defaults ride out a broker restart or a network outage of about a minute.
DEFAULT_RECONNECT_WAIT = tenacity.wait_exponential(multiplier=0.2, max=5.0) + tenacity.wait_random(
    0, 0.5
)
DEFAULT_RECONNECT_STOP = tenacity.stop_after_delay(60.0)

_Step = Callable[[Channel], Awaitable[Any]]


def _retryable(exc: BaseException) -> bool:
    """Worth another connection attempt: the network or the broker, not the settings."""
    if isinstance(exc, AuthenticationFailed | VirtualHostNotAllowed):
        return False
    # anyio.BrokenResourceError: a socket reset by the peer midway through connecting.
    return isinstance(exc, OSError | TimeoutError | anyio.BrokenResourceError)


class RobustConnection:
    """A connection that reconnects and restores what was declared through it.

    Made by `connect_robust()`. Every method waits while it reconnects, and raises
    `ReconnectFailed` once it gave up.

    Attributes:
        params: the connection parameters.
        reconnects: how many times it reconnected after losing the connection.
    """

    def __init__(
        self,
        params: ConnectionParameters,
        *,
        ssl_context: ssl.SSLContext | None,
        reconnect_wait: tenacity.wait.wait_base,
        reconnect_stop: tenacity.stop.stop_base,
    ) -> None:
        self.params = params
        self.reconnects = 0
        self._ssl_context = ssl_context
        self._wait = reconnect_wait
        self._stop = reconnect_stop
        self._connection: Connection | None = None
        self._ready = anyio.Event()
        self._final: BaseException | None = None
        self._steps: dict[tuple[Any, ...], _Step] = {}
        self._consumers: set[RobustConsumer] = set()
        self._publisher: Channel | None = None
        self._publisher_lock = anyio.Lock()

    @property
    def connection(self) -> Connection | None:
        """The current connection (None while reconnecting)."""
        return self._connection

    async def wait_connected(self) -> Connection:
        """The current connection, waiting while it reconnects.

        Raises:
            ReconnectFailed: it gave up reconnecting (or the robust connection was closed).
        """
        while True:
            if self._final is not None:
                raise fresh(self._final)
            connection = self._connection
            if connection is not None and not connection.is_closed:
                await anyio.lowlevel.checkpoint()
                return connection
            await self._ready.wait()

    # ---- topology ----------------------------------------------------------------------

    async def _apply(self, key: tuple[Any, ...] | None, step: _Step) -> Any:
        """Run a topology step now (on a channel of its own); remember it under `key`."""
        while True:
            connection = await self.wait_connected()
            try:
                async with await connection.open_channel() as channel:
                    result = await step(channel)
            except ConnectionClosed:
                if connection.is_closed and self._final is None:
                    continue  # lost meanwhile: run it on the next connection
                raise
            if key is not None:
                self._steps[key] = step
            return result

    async def declare_exchange(
        self, name: str, exchange_type: str = "direct", **options: Any
    ) -> None:
        """`Channel.declare_exchange`, and again after every reconnect."""

        async def step(channel: Channel) -> None:
            await channel.declare_exchange(name, exchange_type, **options)

        await self._apply(("exchange", name), step)

    async def declare_queue(self, name: str, **options: Any) -> QueueInfo:
        """`Channel.declare_queue`, and again after every reconnect (the name is required:
        a broker-named queue would get a new name each time)."""
        if not name:
            raise ValueError("a robust connection needs queue names (the broker's would change)")

        async def step(channel: Channel) -> QueueInfo:
            return await channel.declare_queue(name, **options)

        info: QueueInfo = await self._apply(("queue", name), step)
        return info

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """`Channel.bind_queue`, and again after every reconnect."""

        async def step(channel: Channel) -> None:
            await channel.bind_queue(queue, exchange, routing_key, arguments=arguments)

        key = ("binding", queue, exchange, routing_key, repr(sorted((arguments or {}).items())))
        await self._apply(key, step)

    async def delete_queue(self, name: str, **options: Any) -> int:
        """`Channel.delete_queue`; it and its bindings are no longer restored."""
        self._forget(lambda key: key[:2] == ("queue", name) or key[:2] == ("binding", name))

        async def step(channel: Channel) -> int:
            return await channel.delete_queue(name, **options)

        count: int = await self._apply(None, step)
        return count

    async def delete_exchange(self, name: str, **options: Any) -> None:
        """`Channel.delete_exchange`; it and bindings to it are no longer restored."""
        self._forget(
            lambda key: key == ("exchange", name) or (key[0] == "binding" and key[2] == name)
        )

        async def step(channel: Channel) -> None:
            await channel.delete_exchange(name, **options)

        await self._apply(None, step)

    def _forget(self, predicate: Callable[[tuple[Any, ...]], bool]) -> None:
        for key in [key for key in self._steps if predicate(key)]:
            del self._steps[key]

    # ---- publishing and consuming -----------------------------------------------------

    async def _publisher_channel(self) -> Channel:
        while True:
            connection = await self.wait_connected()
            async with self._publisher_lock:
                channel = self._publisher
                if channel is None or channel.is_closed or channel.connection is not connection:
                    try:
                        channel = await connection.open_channel(publisher_confirms=True)
                    except ConnectionClosed:
                        if connection.is_closed and self._final is None:
                            continue
                        raise
                    self._publisher = channel
                return channel

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish with publisher confirms (see `Channel.publish` for what it raises).

        A message that had not gone out when the connection dropped is sent on the next
        connection; one that had raises `PublishOutcomeUnknown`.
        """
        while True:
            channel = await self._publisher_channel()
            try:
                await channel.publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                )
            except ConnectionClosed:
                # Only raised for a message that was never written: safe to send again.
                if channel.connection.is_closed and self._final is None:
                    continue
                raise
            return

    def consume(
        self,
        queue: str,
        *,
        prefetch_count: int = 0,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> RobustConsumer:
        """A consumer that is started again after every reconnect; use it with
        `async with` and iterate it with `async for` (see `RobustConsumer`).

        Args:
            prefetch_count: Basic.Qos on its own channel: at most this many unacked
                deliveries at a time (0: no limit; set one, it also bounds memory).
        """
        return RobustConsumer(
            self,
            queue,
            prefetch_count=prefetch_count,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
        )

    # ---- the connection's life ----------------------------------------------------------

    async def _establish(self, stack: AsyncExitStack) -> Connection:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("%s: connecting failed (%s); retrying", self.params.url, error)

        retrying = tenacity.AsyncRetrying(
            wait=self._wait,
            stop=self._stop,
            retry=tenacity.retry_if_exception(_retryable),
            sleep=anyio.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        started = anyio.current_time()
        try:
            async for attempt in retrying:
                with attempt:
                    async with AsyncExitStack() as attempt_stack:
                        connection = await attempt_stack.enter_async_context(
                            connect(self.params, ssl_context=self._ssl_context)
                        )
                        await self._restore(connection)
                        stack.push_async_exit(attempt_stack.pop_all())
                        return connection
        except Exception as exc:
            if not _retryable(exc):
                raise
            attempts = retrying.statistics.get("attempt_number", 1)
            elapsed = anyio.current_time() - started
            raise ReconnectFailed(
                f"gave up connecting to {self.params.url} after {attempts} attempts over "
                f"{elapsed:.0f}s: {exc}; is the broker up and reachable? (reconnect_stop= "
                "sets how long to keep trying)"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _restore(self, connection: Connection) -> None:
        if self._steps:
            async with await connection.open_channel() as channel:
                for step in list(self._steps.values()):
                    await step(channel)
        for consumer in list(self._consumers):
            await consumer._restart(connection)

    async def _maintain(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        first = True
        while self._final is None:
            try:
                async with AsyncExitStack() as stack:
                    connection = await self._establish(stack)
                    self._connection = connection
                    self._ready.set()
                    connection._on_close.append(functools.partial(self._lost, connection))
                    if first:
                        task_status.started()
                        first = False
                    else:
                        self.reconnects += 1
                        log.info("%s: reconnected", self.params.url)
                    error = await connection.wait_closed()
                    self._lost(connection)
                    if self._final is None:
                        log.warning(
                            "%s: connection lost (%s); reconnecting", self.params.url, error
                        )
            except Exception as exc:
                self._end(exc)
                if first:
                    raise
                log.error("%s: %s", self.params.url, exc)
                return

    def _lost(self, connection: Connection, _: BaseException | None = None) -> None:
        # Synchronous with the loss, so no caller sees a closed connection as the current one.
        if self._connection is connection:
            self._connection = None
            if self._final is None:
                self._ready = anyio.Event()

    def _end(self, error: BaseException) -> None:
        if self._final is None:
            self._final = error
            self._ready.set()
            for consumer in list(self._consumers):
                consumer._end(error)

    async def _close(self) -> None:
        self._end(
            ReconnectFailed(f"the robust connection to {self.params.url} was closed by this client")
        )
        if self._connection is not None:
            await self._connection.close()


@asynccontextmanager
async def connect_robust(
    url: str | ConnectionParameters,
    *,
    ssl_context: ssl.SSLContext | None = None,
    reconnect_wait: tenacity.wait.wait_base = DEFAULT_RECONNECT_WAIT,
    reconnect_stop: tenacity.stop.stop_base = DEFAULT_RECONNECT_STOP,
    **options: Any,
) -> AsyncIterator[RobustConnection]:
    """Open a `RobustConnection`: the first connection is made (with the same retries)
    before this returns.

    Args:
        url, ssl_context, options: as for `connect()`.
        reconnect_wait: tenacity wait strategy between attempts.
        reconnect_stop: tenacity stop strategy for one outage (the clock restarts after
            every successful reconnect).

    Raises:
        AuthenticationFailed, VirtualHostNotAllowed: not retried: the settings are wrong.
        ReconnectFailed: no connection before `reconnect_stop`.
    """
    params = url if isinstance(url, ConnectionParameters) else ConnectionParameters.from_url(url)
    if options:
        params = attrs.evolve(params, **options)
    robust = RobustConnection(
        params,
        ssl_context=ssl_context,
        reconnect_wait=reconnect_wait,
        reconnect_stop=reconnect_stop,
    )
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(robust._maintain)
            try:
                yield robust
            finally:
                with anyio.CancelScope(shield=True):
                    await robust._close()
                tasks.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # As in `connect_stream`: the background never raises, so this is the caller's.
        if len(group.exceptions) != 1:
            raise
        own = group.exceptions[0]
    else:
        return
    raise own

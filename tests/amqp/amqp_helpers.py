"""Helpers for the AMQP tests (fixtures are in conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import anyio

POLL_INTERVAL = 0.01


class Names:
    """Unique names for one test, remembered so the test's queues and exchanges are deleted."""

    def __init__(self) -> None:
        self.prefix = f"qtest-{secrets.token_hex(4)}"
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, label: str = "q") -> str:
        name = f"{self.prefix}-{label}"
        self.queues.append(name)
        return name

    def exchange(self, label: str = "x") -> str:
        name = f"{self.prefix}-{label}"
        self.exchanges.append(name)
        return name


async def close_connections(rabbitmqctl: list[str], connection_name: str) -> int:
    """Make the broker close the connections named `connection_name` (CONNECTION_FORCED)."""
    listing = await anyio.run_process(
        [*rabbitmqctl, "list_connections", "pid", "client_properties", "-q", "--no-table-headers"]
    )
    closed = 0
    for line in listing.stdout.decode().splitlines():
        if f'{{"connection_name","{connection_name}"}}' in line:
            pid = line.split("\t", 1)[0]
            await anyio.run_process([*rabbitmqctl, "close_connection", pid, "test"])
            closed += 1
    return closed


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll an async predicate until it is true (broker state has no event to wait on)."""
    with anyio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110 - polls the broker
            await anyio.sleep(POLL_INTERVAL)

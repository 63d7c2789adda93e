"""Pytest plugin and test kit for actors (registered through the ``pytest11`` entry point).

Fixtures (they need pytest-trio: ``trio_mode = true``, or mark the test
``@pytest.mark.trio``):

- ``actor_system``: a running `ActorSystem`, shut down after the test. Its `open_system()`
  options (``strategy=``, ``max_restarts=``, ``within=``, ``backoff=``, ``reset_after=``,
  ``shutdown_timeout=``, ``name=``) come from the ``actor_system_options`` fixture (none by
  default: override it in a module or a ``conftest.py``), then from the test's
  ``@pytest.mark.actor_system(...)`` marker.
- ``probe``: a `Probe` in that system.

Time-based behaviour (backoff, timeouts, restarts, timers) is best tested with pytest-trio's
``autojump_clock`` fixture (``trio.testing.MockClock(autojump_threshold=0)``): sleeps are
skipped, so such tests take milliseconds. It skips ahead whenever every trio task waits,
and a task waiting for ``trio.to_thread`` work counts as waiting: an ``ask`` to an actor
that does blocking work in a thread (SQLite, say) times out at once in virtual time. Test
such actors on the real clock (no ``autojump_clock``), with generous timeouts, or give them
a fake of the blocking part that does not use a thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest
import trio

from ._actor import Actor
from ._ref import ActorRef, Terminated
from ._reply import Reply
from ._spec import Restart
from ._system import ActorSystem, open_system

T = TypeVar("T")

# How long the expect_* calls wait by default, in (possibly virtual) seconds.
DEFAULT_WITHIN = 3.0
_NOTHING: Any = object()


class _ProbeActor(Actor):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def receive(self, message: Any) -> None:
        reply = self.defer_reply() if self._cell.asking is not None else None
        self.probe._arrived(message, reply)


class Probe:
    """An actor for tests that records every message it receives, with assertions that wait
    for them (Akka's `TestProbe`).

    Hand `probe.ref` to the actor under test (as a reply-to address, a watcher, a routee...),
    then assert on what arrives:

        probe = await Probe.start(system)
        await greeter.tell(Greet("ada", reply_to=probe.ref))
        assert await probe.expect_message() == "hello ada"

    An `ask` to the probe is recorded like a `tell` and stays unanswered until
    `probe.reply(value)` (so an actor that asks others can be tested step by step).
    """

    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self._inbox: deque[tuple[Any, Reply[Any] | None]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._last_reply: Reply[Any] | None = None
        self._ref: ActorRef[Any] | None = None

    @classmethod
    async def start(cls, system: ActorSystem, *, name: str | None = None) -> Probe:
        """Spawn a probe in `system` (under the root, TEMPORARY: a crash is not hidden)."""
        probe = cls(system)
        probe._ref = await system.spawn(
            _ProbeActor, probe, name=name, restart=Restart.TEMPORARY, shutdown=0
        )
        return probe

    @property
    def ref(self) -> ActorRef[Any]:
        """The probe's ref, to send to or to hand to the actor under test."""
        assert self._ref is not None, "start the probe with `await Probe.start(system)`"
        return self._ref

    def _arrived(self, message: Any, reply: Reply[Any] | None) -> None:
        self._inbox.append((message, reply))
        self._lot.unpark_all()

    async def _next(self, within: float, expected: str) -> Any:
        with trio.move_on_after(within):
            while not self._inbox:
                await self._lot.park()
        if not self._inbox:
            raise AssertionError(
                f"probe {self.ref.name!r} received no message within {within:g}s "
                f"(expected {expected})"
            )
        message, reply = self._inbox.popleft()
        self._last_reply = reply
        return message

    async def expect_message(
        self, expected: Any = _NOTHING, *, within: float = DEFAULT_WITHIN
    ) -> Any:
        """Wait for the next message and return it; if `expected` is given, assert that the
        message equals it.

        Raises:
            AssertionError: no message within `within` seconds, or a different one.
        """
        wanted = "any message" if expected is _NOTHING else repr(expected)
        message = await self._next(within, wanted)
        if expected is not _NOTHING and message != expected:
            raise AssertionError(
                f"probe {self.ref.name!r} expected {expected!r}, received {message!r}"
            )
        return message

    async def expect_message_type(self, cls: type[T], *, within: float = DEFAULT_WITHIN) -> T:
        """Wait for the next message, assert that it is an instance of `cls`, return it."""
        message = await self._next(within, f"a {cls.__name__}")
        if not isinstance(message, cls):
            raise AssertionError(
                f"probe {self.ref.name!r} expected a {cls.__name__}, received {message!r}"
            )
        return message

    async def expect_no_message(self, *, within: float = 0.1) -> None:
        """Assert that no message arrives within `within` seconds.

        Raises:
            AssertionError: a message arrived (it is named in the error).
        """
        with trio.move_on_after(within):
            while not self._inbox:
                await self._lot.park()
        if self._inbox:
            message, _ = self._inbox[0]
            raise AssertionError(
                f"probe {self.ref.name!r} expected no message within {within:g}s, "
                f"received {message!r}"
            )

    async def expect_terminated(
        self, ref: ActorRef[Any], *, within: float = DEFAULT_WITHIN
    ) -> Terminated:
        """Watch `ref` (if not watched yet) and assert that the next message is its
        `Terminated` notice; return it (its `reason` says why `ref` stopped)."""
        ref.watch(self.ref)
        message = await self._next(within, f"Terminated of {ref.name!r}")
        if not (isinstance(message, Terminated) and message.actor == ref):
            raise AssertionError(
                f"probe {self.ref.name!r} expected Terminated of {ref.name!r}, received {message!r}"
            )
        return message

    def watch(self, ref: ActorRef[Any]) -> None:
        """Receive `ref`'s `Terminated` notice when it stops for good."""
        ref.watch(self.ref)

    def reply(self, value: Any) -> None:
        """Answer the last message taken by an expect_* call, which must be an `ask`."""
        if self._last_reply is None:
            raise AssertionError(
                f"probe {self.ref.name!r}: the last message taken was not an ask, "
                "so there is nothing to reply to"
            )
        self._last_reply.send(value)

    @property
    def pending(self) -> int:
        """Messages received and not yet taken by an expect_* call."""
        return len(self._inbox)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "actor_system(**options): open_system() options for the actor_system fixture",
    )


@pytest.fixture
def actor_system_options() -> dict[str, Any]:
    """Default `open_system()` options for the `actor_system` fixture: none. Override this
    fixture (in a module or a `conftest.py`) to set them for many tests; a test's
    `@pytest.mark.actor_system(...)` keywords apply on top."""
    return {}


@pytest.fixture
async def actor_system(
    request: pytest.FixtureRequest, actor_system_options: dict[str, Any]
) -> AsyncIterator[ActorSystem]:
    """A running actor system, configured by `actor_system_options` and the test's
    `actor_system` marker."""
    marker = request.node.get_closest_marker("actor_system")
    options = {"name": "test", **actor_system_options, **(marker.kwargs if marker else {})}
    async with open_system(**options) as system:
        yield system


@pytest.fixture
async def probe(actor_system: ActorSystem) -> Probe:
    """A `Probe` in the test's `actor_system`."""
    return await Probe.start(actor_system)


__all__ = ["DEFAULT_WITHIN", "Probe"]

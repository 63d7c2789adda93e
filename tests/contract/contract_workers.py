"""Workers and helpers shared by the broker contract tests (import as `contract_workers`).

On every broker the queues of `open_system` are served in the test's own process (over
Redis too: the tasks travel through Redis, the workers run here), so a worker can share
Python objects with its test: a `Probe` tells the test which payloads started, finished
or were cancelled, and holds the gate that gated workers wait at.

Times are real on Redis: keep them small. Assert order and outcomes, never that something
took less than some wall time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

import queueing
from queueing import FanOut, Queue, Worker, open_system

#: The longest any test waits for something that must happen (a result, a worker to
#: start). Generous on purpose: reaching it is a failure, not a slow pass. Under the
#: memory broker's MockClock it passes at once when nothing else can happen.
WAIT = 5.0
#: Seconds a system's busy workers get at shutdown, so that a test failing with a closed
#: gate does not hold its worker for the default 10 s.
SHUTDOWN = 1.0
#: A pause long enough for a broker to have acted on something already due (a submit
#: waiting for room, a deadline passed), used to check that something did NOT happen.
SETTLE = 0.2
#: How long a handler sleeps when it is meant to outlast a timeout or a cancel.
LONG = 30.0


@asynccontextmanager
async def serve(
    broker: str, *specs: Queue | queueing.Pipeline
) -> AsyncIterator[queueing.QueueSystem]:
    """`open_system(*specs, broker=broker)` with the contract suite's short shutdown."""
    async with open_system(*specs, broker=broker, shutdown_timeout=SHUTDOWN) as system:
        yield system


async def until_ready(
    broker: str, system: queueing.QueueSystem, queue: str, count: int, *, due_in: float = 0.0
) -> None:
    """Wait until `count` tasks of `queue` wait for a claim, `due_in` seconds at least (the
    longest any of them still waits out a delay or a retry's backoff): what became due is
    where the next claim takes it from. Under load that takes a broker a while: Redis's
    promoter and RabbitMQ's delay queues move due tasks in the background, a pipeline's
    next stage is written after its first returned; so the broker's figures say when, not
    a fixed pause. In memory (MockClock) a pause of SETTLE (no real time) lets it act."""
    await trio.sleep(due_in)
    with trio.fail_after(WAIT):
        while True:
            figures = await system._broker.figures(queue)
            if figures is None:  # in process: nothing moves in the background
                await trio.sleep(SETTLE)
                return
            if "ready" in figures:  # Redis, RabbitMQ: what is in the queue
                ready = figures["ready"]
            else:  # SQLite: a claim takes what is due (`due_in` is over)
                ready = figures["outstanding"] - figures["in_flight"]
            if broker.startswith("amqp"):
                # What RabbitMQ delivered to this process's consumer ahead of a claim (its
                # prefetch) is no longer ready there: it waits in the consumer's buffer.
                feed = system._broker._holds.feeds.get(queue)  # type: ignore[attr-defined]
                ready += len(feed.buffer) if feed is not None else 0
            if ready >= count:
                return
            await trio.sleep(0.02)


def pipeline(name: str, *stages: Queue) -> queueing.Pipeline:
    """`Pipeline(name, stages)`, typed: mypy reads the parameter of `Pipeline` (and of
    `FanOut`) from its attrs `converter=tuple` as `Iterable[_T_co]` and refuses every
    argument."""
    return queueing.Pipeline(name, stages)  # type: ignore[arg-type]


async def outcome_of(receipt: queueing.Receipt, *, timeout: float = WAIT) -> Any:
    """The receipt's result, or the `TaskFailed` it raises (to assert on either)."""
    try:
        return await receipt.result(timeout=timeout)
    except queueing.TaskFailed as exc:
        return exc


async def failure_of(receipt: queueing.Receipt) -> queueing.TaskFailed:
    """The `TaskFailed` the receipt raises (fails the test if it has a result instead)."""
    outcome = await outcome_of(receipt)
    assert isinstance(outcome, queueing.TaskFailed), f"expected a failure, got {outcome!r}"
    return outcome


class Probe:
    """What the handlers of one test did, and a gate they can be made to wait at."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.started: list[Any] = []
        #: For `Gated`: `trio.current_time()` at each start, in the order of `started`.
        self.started_at: list[float] = []
        self.finished: list[Any] = []
        self.cancelled: list[Any] = []
        #: For `Troubled`: while False, payloads marked "broken" fail.
        self.fixed = False
        self._moved = trio.Event()

    def note(self, log: list[Any], item: Any) -> None:
        log.append(item)
        self._moved.set()
        self._moved = trio.Event()

    async def wait_for(self, log: list[Any], count: int = 1, *, timeout: float = WAIT) -> None:
        """Wait until `log` (one of this probe's lists) holds at least `count` items."""
        with trio.fail_after(timeout):
            while len(log) < count:
                await self._moved.wait()


# -- plain data --------------------------------------------------------------------------


class Echo(Worker):
    """Returns its payload, whatever it is (no declared types)."""

    async def handle(self, payload: Any) -> Any:
        return payload


class EchoInt(Worker):
    async def handle(self, number: int) -> int:
        return number


class EchoFloat(Worker):
    async def handle(self, number: float) -> float:
        return number


class EchoStr(Worker):
    async def handle(self, text: str) -> str:
        return text


class EchoBool(Worker):
    async def handle(self, flag: bool) -> bool:
        return flag


class Nothing(Worker):
    """Declares `-> None` and returns None."""

    async def handle(self, text: str) -> None:
        return None


class ToFloat(Worker):
    """`float(text)`: "nan", "inf" and "-inf" give results that JSON cannot hold."""

    async def handle(self, text: str) -> float:
        return float(text)


class Half(Worker):
    async def handle(self, number: float) -> float:
        return number / 2


# -- attrs classes and dataclasses -------------------------------------------------------


@attrs.frozen
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Label:
    text: str
    at: list[int]


class Describe(Worker):
    """An attrs payload in, a dataclass result out."""

    async def handle(self, point: Point) -> Label:
        return Label(f"({point.x}, {point.y})", [point.x, point.y])


class Locate(Worker):
    """A dataclass payload in, an attrs result out."""

    async def handle(self, label: Label) -> Point:
        return Point(*label.at)


# -- workers that report to a probe ------------------------------------------------------


class Gated(Worker):
    """Logs each payload it starts, waits at the probe's gate, then returns the payload
    (a handler cancelled while it waits is logged in `probe.cancelled`)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, payload: Any) -> Any:
        self.probe.started_at.append(trio.current_time())
        self.probe.note(self.probe.started, payload)
        try:
            await self.probe.gate.wait()
        except trio.Cancelled:
            self.probe.note(self.probe.cancelled, payload)
            raise
        self.probe.note(self.probe.finished, payload)
        return payload


class Sleeper(Worker):
    """Sleeps `seconds[attempt - 1]` (0 past the list's end), then returns the attempt."""

    async def handle(self, seconds: list[float]) -> int:
        attempt = self.attempt
        await trio.sleep(seconds[attempt - 1] if attempt <= len(seconds) else 0)
        return attempt


class Troubled(Worker):
    """Payload `{"name": ..., "transient": n, "broken": bool}`: raises `Transient` on the
    first `n` attempts, then `ValueError` if broken (until `probe.fixed`), else returns
    the name upper-cased. Logs (name, attempt) for each start."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, payload: dict[str, Any]) -> str:
        name = payload["name"]
        self.probe.note(self.probe.started, (name, self.attempt))
        if self.attempt <= payload.get("transient", 0):
            raise queueing.Transient(f"{name}: not yet (attempt {self.attempt})")
        if payload.get("broken") and not self.probe.fixed:
            raise ValueError(f"cannot handle {name}")
        return str(name).upper()


class WorkerBroken(Exception):
    """The worker's own state is broken: a fatal error, the worker must be rebuilt."""


class Fatal(Worker):
    """Crashes its worker (a `fatal` error) on the payload "poison" every time, and on
    "once" the first time; returns the payload otherwise."""

    fatal = (WorkerBroken,)

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, payload: str) -> str:
        self.probe.note(self.probe.started, payload)
        crash = payload == "poison" or (payload == "once" and self.probe.started == ["once"])
        if crash:
            raise WorkerBroken(f"worker state lost while handling {payload!r}")
        return payload


class FlakyStart(Worker):
    """`on_start` fails the first `failures` times (counted across instances in
    `probe.started`); `handle` adds one."""

    def __init__(self, probe: Probe, failures: int) -> None:
        self.probe = probe
        self.failures = failures

    async def on_start(self) -> None:
        self.probe.note(self.probe.started, "on_start")
        if len(self.probe.started) <= self.failures:
            raise ConnectionRefusedError("the database is not up yet")

    async def handle(self, number: int) -> int:
        return number + 1


class WhoAmI(Worker):
    """Returns what the worker knows of its task: `[task_id, attempt]`."""

    async def handle(self, payload: str) -> list[Any]:
        return [self.task_id, self.attempt]


class Greeter(Worker):
    """Built with `worker_args=(greeting,)`."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    async def handle(self, name: str) -> str:
        return f"{self.greeting}, {name}"


# -- pipeline stages ---------------------------------------------------------------------


class Parse(Worker):
    async def handle(self, text: str) -> int:
        return int(text)


class Double(Worker):
    """Doubles a number; refuses negative ones (a failure at a middle stage)."""

    async def handle(self, number: int) -> int:
        if number < 0:
            raise ValueError(f"cannot double {number}")
        return 2 * number


class Render(Worker):
    async def handle(self, number: int) -> str:
        return f"#{number}"


class Words(Worker):
    """Fans a sentence out into its words."""

    async def handle(self, sentence: str) -> FanOut:
        return FanOut(sentence.split())  # type: ignore[arg-type]  # see pipeline()


#: Shout sleeps this long divided by the word's length: short words finish last.
STAGGER = 0.1


class Shout(Worker):
    async def handle(self, word: str) -> str:
        await trio.sleep(STAGGER / len(word))
        return word.upper()

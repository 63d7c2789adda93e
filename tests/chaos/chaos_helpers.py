"""Helpers of the chaos scenarios (import as `chaos_helpers`): worker and client
processes, what ran where, memory of processes, and the outcomes of receipts."""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from queueing import Receipt, TaskLost

HERE = Path(__file__).parent


def start_process(
    command: list[str], logs: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A Python process run from this directory (its modules importable); output to a file
    in `logs`."""
    import queueing

    environ = {**os.environ, **(env or {})}
    # The queueing this test imported (a worktree on PYTHONPATH, say), whatever the cwd.
    package_root = str(Path(queueing.__file__).resolve().parent.parent)
    inherited = [os.path.abspath(p) for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environ["PYTHONPATH"] = os.pathsep.join([str(HERE), package_root, *inherited])
    output = (logs / f"process-{secrets.token_hex(3)}.log").open("wb")
    with output:
        return subprocess.Popen(
            [sys.executable, *command], cwd=HERE, env=environ, stdout=output, stderr=output
        )


def start_worker(
    url: str,
    logs: Path,
    runs: Path,
    *,
    target: str = "chaos_tasks:queue",
    seconds: float = 0.005,
    concurrency: int = 8,
) -> subprocess.Popen[bytes]:
    """`queueing worker TARGET` recording its runs in `runs`."""
    env = {"QUEUEING_CHAOS_RUNS": str(runs), "QUEUEING_CHAOS_TASK_SECONDS": str(seconds)}
    command = ["-m", "queueing", "worker", target, "--broker", url]
    command += ["--concurrency", str(concurrency), "--shutdown-timeout", "5"]
    return start_process(command, logs, env)


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGCONT (a stopped one cannot stop), SIGTERM, then SIGKILL after `timeout`."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def runs(directory: Path) -> dict[int, Counter[str]]:
    """What each process ran (pid: task id -> runs)."""
    return {
        int(path.stem): Counter(line.split()[0] for line in path.read_text().splitlines())
        for path in directory.glob("*.log")
        if path.stat().st_size
    }


def first_started(directory: Path) -> dict[str, float]:
    """When each task first started (wall-clock time), in any process."""
    first: dict[str, float] = {}
    for path in directory.glob("*.log"):
        for line in path.read_text().splitlines():
            task_id, at = line.split()
            first[task_id] = min(first.get(task_id, float(at)), float(at))
    return first


def second_runs(directory: Path) -> dict[str, float]:
    """When each task that ran again started its second run (wall-clock time)."""
    starts: dict[str, list[float]] = {}
    for path in directory.glob("*.log"):
        for line in path.read_text().splitlines():
            task_id, at = line.split()
            starts.setdefault(task_id, []).append(float(at))
    return {task_id: sorted(at)[1] for task_id, at in starts.items() if len(at) > 1}


def ran(directory: Path) -> int:
    """Runs so far, in every process."""
    return sum(path.read_text().count("\n") for path in directory.glob("*.log"))


def duplicated(directory: Path) -> tuple[set[str], dict[int, set[str]]]:
    """Ids that ran more than once, and each process's ids."""
    by_process = runs(directory)
    total: Counter[str] = Counter()
    for counts in by_process.values():
        total.update(counts)
    twice = {task_id for task_id, n in total.items() if n > 1}
    return twice, {pid: set(counts) for pid, counts in by_process.items()}


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (`VmRSS`) or its peak (`VmHWM`), in MB (0: gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Memory:
    """Samples the resident memory of some processes (`watch`) while `sample_loop` runs."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.samples: dict[str, list[tuple[float, float]]] = {}

    def watch(self, label: str, pid: int) -> None:
        self.pids[label] = pid
        self.samples.setdefault(label, [])

    def sample(self) -> None:
        now = time.monotonic()
        for label, pid in self.pids.items():
            mb = memory_mb(pid)
            if mb:
                self.samples[label].append((now, mb))

    async def sample_loop(self, every: float = 0.25) -> None:
        while True:
            self.sample()
            await trio.sleep(every)

    def peak(self, label: str) -> float:
        return max((mb for _, mb in self.samples.get(label, [])), default=0.0)

    def peaks(self) -> dict[str, float]:
        return {label: self.peak(label) for label in self.pids}


class Inconclusive(AssertionError):
    """The fault did not strike as the scenario planned (a killed worker held no task, say):
    the run proves nothing either way. The test fails, and the table says `inconclusive`,
    not `BROKEN`."""


def struck(fault_struck: bool, why: str) -> None:
    """Raise `Inconclusive(why)` unless the scenario's fault struck as planned."""
    if not fault_struck:
        raise Inconclusive(why)


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout}s: {check}")
        time.sleep(every)


async def wait_for(check: Callable[[], Any], timeout: float, every: float = 0.05) -> None:
    """Poll an async predicate (state in Redis or a file has no event to wait on)."""
    with trio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - polls state that has no event
            await trio.sleep(every)


class Outcomes:
    """What receipts ended in: the right result, another, TaskLost, another failure, or
    nothing within the time given (unresolved)."""

    def __init__(self) -> None:
        self.ok = 0
        self.wrong = 0
        self.lost = 0
        self.failed: list[str] = []
        self.unresolved = 0
        self.last_at = 0.0

    async def gather(
        self, receipts: Iterable[tuple[int, Receipt[Any]]], timeout: float, limit: int = 64
    ) -> Outcomes:
        """Wait for `(number, receipt)` pairs (the result should be `2 * number`), at most
        `timeout` seconds in all."""
        pending = list(receipts)
        deadline = trio.current_time() + timeout

        async def one(number: int, receipt: Receipt[Any]) -> None:
            try:
                with trio.fail_at(deadline):
                    result = await receipt
            except trio.TooSlowError:
                self.unresolved += 1
                return
            except TaskLost:
                self.lost += 1
            except Exception as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                if result == 2 * number:
                    self.ok += 1
                else:
                    self.wrong += 1
            self.last_at = max(self.last_at, time.monotonic())

        async def lane(items: list[tuple[int, Receipt[Any]]]) -> None:
            for number, receipt in items:
                await one(number, receipt)

        async with trio.open_nursery() as nursery:
            for i in range(limit):
                nursery.start_soon(lane, pending[i::limit])
        return self


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# -- Redis ---------------------------------------------------------------------------------


def redis_keys(url: str) -> Any:
    """The broker's key names for the URL's prefix."""
    from urllib.parse import parse_qs, urlsplit

    from queueing.brokers.redis._keys import Keys

    return Keys(parse_qs(urlsplit(url).query)["prefix"][0])


def raw_redis(url: str) -> Any:
    """A plain coredis client on the URL's server (use `async with`)."""
    from urllib.parse import urlsplit

    import coredis

    parts = urlsplit(url)
    return coredis.Redis(parts.hostname, parts.port, decode_responses=True)


async def succeeded(client: Any, url: str, queue: str = "chaos") -> int:
    try:
        return int(await client.hget(redis_keys(url).stats(queue), "succeeded") or 0)
    except Exception:
        return -1


async def held_by(client: Any, url: str, pid: int, queue: str = "chaos") -> int:
    """Entries of `queue` held (claimed, not acknowledged) by the process `pid`."""
    summary = await client.xpending(redis_keys(url).ready(queue), "workers")
    return sum(int(n) for name, n in (summary.consumers or {}).items() if f"-{pid}-" in name)


async def serving(client: Any, url: str) -> int:
    """How many processes serve (their heartbeats)."""
    return int(await client.hlen(redis_keys(url).workers()))


async def submit_numbers(
    system: Any,
    count: int,
    first: int = 0,
    chunk: int = 250,
    queue: str = "chaos",
    delay: float | None = None,
) -> list[tuple[int, Receipt[Any]]]:
    """`submit_many` of the numbers first..first+count-1, `chunk` at a time."""
    pairs: list[tuple[int, Receipt[Any]]] = []
    for start in range(first, first + count, chunk):
        numbers = range(start, min(start + chunk, first + count))
        got = await system.submit_many(queue, numbers, delay=delay)
        pairs += zip(numbers, got, strict=True)
    return pairs


class Submitter:
    """Submits numbers in small chunks with a key each (`n<number>`), and on a
    `BrokerError` checks that it accounts for every payload of the chunk (accepted, unknown
    or rejected) and submits the chunk again: the keys make that safe."""

    def __init__(self, system: Any, queue: str = "chaos") -> None:
        self.system = system
        self.queue = queue
        self.pairs: list[tuple[int, Receipt[Any]]] = []
        self.errors = 0
        self.unaccounted: list[str] = []

    async def run(self, numbers: range, chunk: int = 50, pause: float = 0.01) -> None:
        from queueing import BrokerError

        for start in range(numbers.start, numbers.stop, chunk):
            part = list(range(start, min(start + chunk, numbers.stop)))
            while True:
                try:
                    got = await self.system.submit_many(self.queue, part, key=lambda n: f"n{n}")
                except BrokerError as exc:
                    self.errors += 1
                    told = len(exc.accepted) + len(exc.unknown) + len(exc.rejected)
                    if told != len(part):
                        self.unaccounted.append(f"{told} of {len(part)} accounted for: {exc}")
                    await trio.sleep(0.5)
                    continue
                self.pairs += zip(part, got, strict=True)
                break
            await trio.sleep(pause)


def envelope(queue: str, task_id: Any, payload: Any, **fields: Any) -> str:
    """An envelope as the Redis broker writes one; `fields` override or add."""
    doc: dict[str, Any] = {
        "v": 1,
        "id": task_id,
        "queue": queue,
        "payload": payload,
        "submitted_at": time.time(),
        "expires_at": None,
        "attempts": 0,
        "first_started": None,
    }
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not REMOVE})


#: An `envelope()` field given as REMOVE is left out.
REMOVE: Any = object()


# -- the network ---------------------------------------------------------------------------


class Proxy:
    """A loopback TCP proxy to a server's `port`, for the processes a scenario points at it:
    it can cut every connection and refuse new ones (`cut`, `refusing`: an outage as the
    processes see it, each connection reset); stop forwarding while connections stay open
    (`partition`: a network that drops every packet, what a pulled cable or a firewall
    looks like, no reset, only silence), until `heal`; and delay each direction's bytes by
    `lag` seconds (a (low, high) range: each chunk its own, in order)."""

    def __init__(self, port: int, lag: tuple[float, float] = (0.0, 0.0)) -> None:
        self.target = port
        self.port = 0
        self.lag = lag
        self.refusing = False
        self.connections = 0
        self._scopes: set[trio.CancelScope] = set()
        self._open = trio.Event()
        self._open.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        """Close every connection (each end sees it reset or closed)."""
        for scope in list(self._scopes):
            scope.cancel()

    def partition(self) -> None:
        """Forward nothing, in either direction, until `heal` (connections stay open)."""
        self._open = trio.Event()

    def heal(self) -> None:
        self._open.set()

    async def _handle(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            if self.refusing:
                return
            self.connections += 1
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    await self._open.wait()  # a new connection's SYN is dropped too
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, downstream, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, downstream, nursery.cancel_scope)
                finally:
                    self._scopes.discard(scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        import random

        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def deliver() -> None:
            due = 0.0
            async for at, data in receive:
                due = max(due, at)  # in order, whatever each chunk's own lag
                await trio.sleep_until(due)
                await self._open.wait()
                await sink.send_all(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(deliver)
                async for data in source:
                    await self._open.wait()
                    await send.send((trio.current_time() + random.uniform(*self.lag), data))
                await send.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

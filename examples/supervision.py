"""Supervision: a flaky actor crashes, its supervisor restarts it, the rest keeps going.

    python examples/supervision.py

The tree this program builds:

    root                  (the system's root supervisor)
    ├── station           Supervisor, ONE_FOR_ONE: restarts only the child that failed
    │   ├── sensor        a flaky thermometer: its connection drops on every 4th reading
    │   └── recorder      keeps the readings; unaffected by the sensor's crashes
    └── lab               Supervisor allowing 2 restarts within 5 seconds
        └── probe         broken for good: it fails every time it starts

Part 1 shows "let it crash": an exception in the sensor crashes it, the caller of `ask`
gets that exception, the supervisor starts a fresh sensor, and the recorder (a sibling)
keeps its state. Part 2 shows restart intensity: the lab gives up after too many restarts
and reports why, with the probe's own error as the cause.
Docs: docs/concepts/supervision.md explains each knob used here.
"""

from __future__ import annotations

import itertools
from typing import Any

import tenacity

from actors import (
    Actor,
    ActorSystem,
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    run_system,
)

# Short pauses between restarts (50 ms, 100 ms, 200 ms...), so the demo runs in a blink.
BACKOFF = tenacity.wait_exponential(multiplier=0.05, max=0.5)


class Sensor(Actor):
    """Answers "read" with a temperature; every 4th reading loses the connection."""

    def __init__(self, counter: itertools.count[int]) -> None:
        # The counter is shared with the program, so it survives restarts; anything set on
        # `self` belongs to this incarnation only.
        self.counter = counter

    async def on_start(self) -> None:
        restarts = self.ref.stats().restarts
        print(f"  [{self.name}] started" + (f" again (restart #{restarts})" if restarts else ""))

    async def receive(self, message: Any) -> float:
        n = next(self.counter)
        if n % 4 == 0:
            raise ConnectionError(f"lost the connection on reading {n}")
        return 20.0 + n / 2


class Recorder(Actor):
    """Keeps every reading it is told; answers "count"."""

    def __init__(self) -> None:
        self.readings: list[float] = []

    async def receive(self, message: Any) -> int | None:
        if message == "count":
            return len(self.readings)
        self.readings.append(message)
        return None


class Probe(Actor):
    """A device that is unplugged: it cannot even start."""

    async def on_start(self) -> None:
        print(f"  [{self.name}] cannot start: device not found")
        raise OSError("device not found")


async def main(system: ActorSystem) -> None:
    print("Part 1: a flaky sensor under a ONE_FOR_ONE supervisor")
    station = Supervisor.spec(
        [
            ChildSpec(Sensor, args=(itertools.count(1),), name="sensor"),
            ChildSpec(Recorder, name="recorder"),
        ],
        name="station",
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=5,
        within=10,
        backoff=BACKOFF,
    )
    await system.spawn(station)
    sensor, recorder = system.lookup("sensor"), system.lookup("recorder")

    for _ in range(10):
        try:
            temperature = await sensor.ask("read", timeout=2)
        except ConnectionError as exc:
            print(f"  reading failed: {exc} -> the sensor crashed; the supervisor restarts it")
            continue
        print(f"  reading: {temperature:.1f} C")
        await recorder.tell(temperature)

    recorded = await recorder.ask("count")
    print(f"readings recorded: {recorded}")
    print(f"sensor restarts:   {sensor.stats().restarts}")
    print(f"recorder restarts: {recorder.stats().restarts} (it kept all {recorded} readings)")

    print()
    print("Part 2: a probe that never recovers; its supervisor gives up")
    lab = Supervisor.spec(
        [ChildSpec(Probe, name="probe")],
        name="lab",
        max_restarts=2,
        within=5,
        backoff=BACKOFF,
        restart=Restart.TEMPORARY,  # when the lab gives up, the root lets it go
    )
    lab_ref = await system.spawn(lab)
    terminated = await lab_ref.join()
    error = terminated.reason
    assert isinstance(error, SupervisorGaveUp)
    limit = f"more than {error.max_restarts} times in {error.within:g}s"
    print(f"lab gave up: {error.child!r} failed {limit}")
    print(f"  cause: {error.__cause__!r}")
    print("done: the system shuts down, and every actor with it")


if __name__ == "__main__":
    run_system(main)

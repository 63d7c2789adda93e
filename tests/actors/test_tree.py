"""A whole supervision tree: restarts, escalation to the top, and nothing left running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tenacity
import trio
import trio.lowlevel
import trio.testing

import actors
from actors import Actor, ActorRef, ChildSpec, Strategy, Supervisor, SupervisorGaveUp

ACTORS_DIR = Path(actors.__file__).parent


class Member(Actor):
    def __init__(self, starts: dict[str, int]) -> None:
        self.starts = starts

    async def on_start(self) -> None:
        self.starts[self.name] = self.starts.get(self.name, 0) + 1

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        return message


def all_tasks() -> list[trio.lowlevel.Task]:
    found: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        found.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


def runtime_tasks() -> list[str]:
    """Names of live tasks running code of the actors package (actors and supervisors)."""
    return [
        task.name
        for task in all_tasks()
        if Path(task.coro.cr_code.co_filename).is_relative_to(ACTORS_DIR)
    ]


async def test_a_supervision_tree_restarts_escalates_and_leaves_no_task_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r"""The tree, under a root that gives up at the first failure:

    root (max_restarts=0)
    └── top      ONE_FOR_ONE, max_restarts=1
        ├── mid  ONE_FOR_ALL, max_restarts=2
        │   ├── a
        │   ├── flaky
        │   └── c
        └── other
    """
    starts: dict[str, int] = {}
    tasks_before = len(all_tasks())
    backoff = tenacity.wait_fixed(0.5)
    mid_spec = Supervisor.spec(
        [ChildSpec(Member, (starts,), name=n) for n in ("a", "flaky", "c")],
        name="mid",
        strategy=Strategy.ONE_FOR_ALL,
        max_restarts=2,
        within=60,
        backoff=backoff,
    )
    top_spec = Supervisor.spec(
        [mid_spec, ChildSpec(Member, (starts,), name="other")],
        name="top",
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=1,
        within=60,
        backoff=backoff,
    )
    refs: list[ActorRef] = []

    async def run_the_tree() -> None:
        async with actors.open_system(max_restarts=0) as system:
            refs.append(await system.spawn(top_spec))
            await trio.testing.wait_all_tasks_blocked()
            a, flaky, c, mid, other = (
                system.lookup(n) for n in ("a", "flaky", "c", "mid", "other")
            )
            refs.extend([system.root, a, flaky, c, mid, other])
            # Every actor of the tree runs in a task: top, mid, a, flaky, c, other, root;
            # plus the system's ask timer.
            assert len(runtime_tasks()) == 8

            # 1. ONE_FOR_ALL: the flaky grandchild's crash restarts its siblings, and only them.
            await flaky.tell("crash")
            await trio.sleep(1)
            assert starts == {"a": 2, "flaky": 2, "c": 2, "other": 1}
            assert [system.lookup(n) for n in ("a", "flaky", "c")] == [a, flaky, c]
            assert await c.ask("still c") == "still c"

            # 2. Two more crashes within 60s: mid exceeds max_restarts=2 and gives up; its
            #    children end with it (the crashing one with its error), and top restarts it.
            await flaky.tell("crash")
            await trio.sleep(1)
            await flaky.tell("crash")
            assert isinstance((await flaky.join()).reason, RuntimeError)
            assert (await a.join()).reason is None
            await trio.sleep(1)
            assert mid.is_alive
            assert mid.stats().restarts == 1
            assert starts == {"a": 4, "flaky": 4, "c": 4, "other": 1}  # a fresh mid subtree
            new_flaky = system.lookup("flaky")
            assert new_flaky is not flaky
            refs.append(new_flaky)

            # 3. mid gives up again: top exceeds its own max_restarts=1 and gives up, and so
            #    does the root: the system stops with the whole chain of causes.
            for _ in range(3):
                await new_flaky.tell("crash")
                await trio.sleep(1)
            raise AssertionError("the root should have given up by now")

    with pytest.raises(SupervisorGaveUp) as info:
        await run_the_tree()

    root_error = info.value
    assert (root_error.supervisor, root_error.child) == ("root", "top")
    top_error = root_error.__cause__
    assert isinstance(top_error, SupervisorGaveUp)
    assert (top_error.supervisor, top_error.child) == ("top", "mid")
    mid_error = top_error.__cause__
    assert isinstance(mid_error, SupervisorGaveUp)
    assert (mid_error.supervisor, mid_error.child) == ("mid", "flaky")
    assert isinstance(mid_error.__cause__, RuntimeError)
    assert str(mid_error.__cause__) == "flaky crashed"

    # Nothing of the tree survives: every ref is dead, and no task runs actors code.
    assert len(refs) == 8
    assert not any(ref.is_alive for ref in refs)
    assert runtime_tasks() == []
    assert len(all_tasks()) == tasks_before

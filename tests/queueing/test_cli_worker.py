"""`queueing worker TARGET`: what it serves, and the workers per queue `--concurrency` sets;
what cannot apply is refused before anything starts. (Serving itself is tested against a
private Redis in tests/redis/test_cli_tasks.py.)"""

from __future__ import annotations

import gc
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result

from queueing import Pipeline, Queue, QueueSystem, Worker, open_system, run_system
from queueing._cli_targets import Concurrency, load
from queueing.cli import frozen, main

MODULE = """
from queueing import Pipeline, Queue, Schedule, Worker


class Fetch(Worker):
    async def handle(self, url: str) -> str:
        return url


class Store(Worker):
    def handle(self, page: str) -> int:
        return len(page)


fetch = Queue("fetch", Fetch, workers=4)
store = Queue("store", Store, workers=2)
crawl = Pipeline("crawl", [fetch, store])
nightly = Schedule("nightly", queue="fetch", cron="0 3 * * *", payload="https://example.org")
greeting = "hello"


def everything():
    return [crawl]
"""
#: A port nothing listens on: a worker that got past its checks fails to connect.
NOWHERE = "redis://127.0.0.1:1/0"


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"shop_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return name


def worker(*args: str) -> Result:
    return CliRunner().invoke(main, ["worker", *args, "--broker", NOWHERE])


def workers_of(target: str, *concurrency: str) -> dict[str, int]:
    specs = Concurrency.parse(concurrency).apply(load(target))
    found: dict[str, int] = {}
    for spec in specs:
        stages = spec.stages if isinstance(spec, Pipeline) else [spec]
        for stage in stages:
            assert found.get(stage.name, stage.workers) == stage.workers
            found[stage.name] = stage.workers
    return found


def test_a_pipeline_target_takes_the_concurrency_per_queue(module: str) -> None:
    assert workers_of(f"{module}:crawl") == {"fetch": 4, "store": 2}
    assert workers_of(f"{module}:crawl", "8") == {"fetch": 8, "store": 8}
    assert workers_of(f"{module}:crawl", "store=1", "8") == {"fetch": 8, "store": 1}
    assert workers_of(f"{module}:crawl", "fetch=16") == {"fetch": 16, "store": 2}


def test_a_queue_shared_by_the_module_and_its_pipeline_stays_one_queue(module: str) -> None:
    specs = Concurrency.parse(["store=1"]).apply(load(module))
    queues = [s for s in specs if isinstance(s, Queue)]
    (pipeline,) = [s for s in specs if isinstance(s, Pipeline)]
    store = next(q for q in queues if q.name == "store")
    assert pipeline.stages[1] is store
    assert store.workers == 1


def test_a_module_brings_its_schedules(module: str) -> None:
    from queueing import Schedule

    (schedule,) = [s for s in load(module) if isinstance(s, Schedule)]
    assert schedule.name == "nightly"
    done = worker(module)
    assert "pipeline crawl; schedule nightly" in done.output


def test_the_banner_names_each_queue_with_its_workers(module: str) -> None:
    done = worker(f"{module}:everything", "--concurrency", "store=1", "--concurrency", "8")
    assert "serving fetch (8 workers), store (1 worker); pipeline crawl" in done.output
    assert done.exit_code == 1  # then it found no Redis
    assert "cannot use Redis at redis://127.0.0.1:1/0" in done.output


@pytest.mark.parametrize(
    ("concurrency", "message"),
    [
        (
            ["crawl=2"],
            "'crawl' is a pipeline: its stages are queues with workers of their own; "
            "set them one by one (fetch=N, store=N)",
        ),
        (
            ["stor=1"],
            "no queue named 'stor' is served here (queues: fetch, store); did you mean 'store'?",
        ),
        (["8", "4"], "a number for every queue is given twice (8 and 4)"),
        (["store=1", "store=2"], "queue 'store' is given twice (1 and 2)"),
        (["store=0"], "'store=0' is not N or QUEUE=N with N a whole number >= 1"),
        (["many"], "'many' is not N or QUEUE=N"),
        (["=3"], "'=3' names no queue: write QUEUE=N"),
        # Before: a traceback (InvalidQueue from Queue(workers=)), exit status 1.
        (["20000"], "workers must be at most 10000 per queue in one process, got 20000"),
        (["store=10001"], "workers must be at most 10000 per queue in one process, got 10001"),
    ],
)
def test_a_concurrency_that_cannot_apply_is_refused(
    module: str, concurrency: list[str], message: str
) -> None:
    args = [a for value in concurrency for a in ("--concurrency", value)]
    done = worker(module, *args)
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())
    assert "serving" not in done.output  # refused before anything started


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("reddis://127.0.0.1:1/0", "unsupported broker URL 'reddis://127.0.0.1:1/0'"),
        ("memory:/", "the memory broker's URL is exactly 'memory://'"),
        ("redis://127.0.0.1:1/0?leese=5", "unknown option 'leese'"),
        ("sqlite://queues.db", "names a host ('queues.db')"),
    ],
    ids=["scheme", "memory", "option", "sqlite-host"],
)
def test_a_bad_broker_url_is_a_usage_error_before_the_banner(
    module: str, url: str, message: str
) -> None:
    # Before: "serving fetch (...) on reddis://..." first, then the error, exit status 1.
    done = CliRunner().invoke(main, ["worker", module, "--broker", url])
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())
    assert "serving" not in done.output


def test_a_worker_class_as_target_says_to_serve_its_queue(module: str) -> None:
    done = worker(f"{module}:Fetch")
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert f"'{module}:Fetch' is a Worker class, not a Queue" in text
    assert f"then `queueing worker {module}:fetch`" in text
    assert f"{module}:fetch, {module}:store, {module}:crawl" in text
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("greeting", "is str 'hello', not a Queue, a Pipeline, or a list of them"),
        ("nothing", "has no attribute 'nothing'"),
    ],
)
def test_a_target_that_is_no_queue_is_a_clear_error(module: str, attr: str, message: str) -> None:
    done = worker(f"{module}:{attr}")
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())


def test_a_metrics_port_in_use_is_a_clear_error(module: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = f"sqlite:///{tmp_path}/q.db"
        arguments = ["worker", module, "--broker", broker, "--metrics-port", str(port)]
        result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1, result.output
    assert f"Error: --metrics-port {port}: cannot listen on 127.0.0.1: " in result.output
    assert "Address already in use" in result.output


class Echo(Worker):
    async def handle(self, text: str) -> str:
        return text


def test_the_worker_freezes_what_start_up_made_before_it_serves() -> None:
    """`queueing worker`'s main moves the objects start-up made out of the collector's
    sight (a full collection walked them all: long pauses while serving), then runs the
    observers' main."""
    seen: dict[str, int] = {}

    async def then(system: QueueSystem) -> None:
        seen["frozen"] = gc.get_freeze_count()
        receipt = await system.submit("echo", "hi")
        seen["served"] = await receipt == "hi"

    gc.unfreeze()
    try:
        run_system(Queue("echo", Echo), broker="memory://", main=frozen(then))
        assert seen["frozen"] > 0
        assert seen["served"]
    finally:
        gc.unfreeze()


async def test_the_worker_main_without_observers_waits_until_stopped(
    autojump_clock: Any,
) -> None:
    async with open_system(Queue("echo", Echo), broker="memory://") as system:
        with trio.move_on_after(3600) as scope:
            try:
                await frozen(None)(system)
            finally:
                gc.unfreeze()
    assert scope.cancelled_caught

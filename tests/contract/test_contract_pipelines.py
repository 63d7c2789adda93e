"""Pipelines: the last stage's result, failures that name their stage, `FanOut` lists in
item order, and cancelling a whole run."""

from __future__ import annotations

import pytest
import trio
from contract_workers import (
    WAIT,
    Describe,
    Double,
    Echo,
    Gated,
    Parse,
    Probe,
    Render,
    Shout,
    Words,
    failure_of,
    outcome_of,
    pipeline,
    serve,
)

from queueing import Pipeline, Queue, TaskCancelled, TaskState, Worker


def steps() -> Pipeline:
    return pipeline(
        "steps", Queue("parse", Parse), Queue("double", Double), Queue("render", Render)
    )


async def test_a_pipeline_gives_the_result_of_its_last_stage(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, steps()) as system:
        receipt = await system.submit("steps", "21")
        assert await outcome_of(receipt) == "#42"
        assert (await receipt.status()).state is TaskState.SUCCEEDED


async def test_a_failure_at_a_middle_stage_names_the_stage(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, steps()) as system:
        receipt = await system.submit("steps", "-1")
        failure = await failure_of(receipt)
        status = await receipt.status()
    assert failure.outcome is TaskState.FAILED
    assert failure.stage == "double"
    assert failure.queue == "steps"
    assert failure.error_type == "ValueError"
    assert "cannot double -1" in failure.error
    assert (status.state, status.stage) == (TaskState.FAILED, "double")


async def test_a_fan_out_gives_the_final_results_in_item_order(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # Shout finishes short words last: the results come back in item order all the same.
    shout = pipeline("shout", Queue("words", Words), Queue("upper", Shout, workers=4))
    async with serve(broker, shout) as system:
        receipt = await system.submit("shout", "a bb ccc dddd")
        assert await outcome_of(receipt) == ["A", "BB", "CCC", "DDDD"]


async def test_an_empty_fan_out_gives_an_empty_list(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    shout = pipeline("shout", Queue("words", Words), Queue("upper", Shout))
    async with serve(broker, shout) as system:
        assert await outcome_of(await system.submit("shout", "   ")) == []


def gates(first: Probe, last: Probe) -> Pipeline:
    return pipeline(
        "gates",
        Queue("first", Gated, worker_kwargs={"probe": first}),
        Queue("last", Gated, worker_kwargs={"probe": last}),
    )


async def test_cancelling_a_pipeline_run_resolves_its_receipt_as_cancelled(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    first, last = Probe(), Probe()
    async with serve(broker, gates(first, last)) as system:
        receipt = await system.submit("gates", "run")
        await first.wait_for(first.started)
        assert await receipt.cancel() is True
        with pytest.raises(TaskCancelled) as info:
            await receipt.result(timeout=WAIT)
        assert info.value.outcome is TaskState.CANCELLED
        assert (await receipt.status()).state is TaskState.CANCELLED
        assert await receipt.cancel() is False
        first.gate.set()
        last.gate.set()


async def test_a_cancelled_pipeline_run_hands_nothing_to_its_next_stage(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    first, last = Probe(), Probe()
    last.gate.set()
    async with serve(broker, gates(first, last)) as system:
        receipt = await system.submit("gates", "run")
        await first.wait_for(first.started)
        assert await receipt.cancel() is True
        first.gate.set()  # a first stage still running now would hand on its result
        await system.drain(timeout=WAIT)
    assert last.started == []


async def test_a_stage_queue_takes_submissions_of_its_own(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    async with serve(broker, steps(), Queue("echo", Echo)) as system:
        assert await outcome_of(await system.submit("double", 5)) == 10
        assert await outcome_of(await system.submit("steps", "5")) == "#10"


async def test_a_result_that_does_not_fit_the_next_stage_fails_the_stage_that_made_it(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    mismatch = pipeline("mismatch", Queue("parse", Parse), Queue("describe", Describe))
    async with serve(broker, mismatch) as system:
        failure = await failure_of(await system.submit("mismatch", "7"))
    assert failure.outcome is TaskState.FAILED
    assert failure.stage == "parse"
    assert failure.error_type == "queueing.PayloadError"
    assert "describe" in failure.error


class Picky(Worker):
    """Fails for good on payloads in `refused` (a set the test can change)."""

    def __init__(self, refused: set[int]) -> None:
        self.refused = refused

    async def handle(self, n: int) -> int:
        if n in self.refused:
            raise ValueError(f"cannot take {n} yet")
        return n + 1


async def test_a_requeued_stage_dead_letter_goes_on_down_its_pipeline(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    refused = {42}
    flow = pipeline(
        "flow",
        Queue("parse", Parse),
        Queue("picky", Picky, worker_kwargs={"refused": refused}),
        Queue("render", Render),
    )
    async with serve(broker, flow) as system:
        failed = await system.submit("flow", "42")  # parse gives 42, which picky refuses
        failure = await failure_of(failed)
        assert (failure.outcome, failure.stage) == (TaskState.FAILED, "picky")
        (letter,) = await system.dead_letters("picky")
        refused.clear()  # the cause is fixed
        (again,) = await system.requeue("picky", [letter.id])
        assert await outcome_of(again) == "#43"  # picky, then render, ran
        assert await system.dead_letters("picky") == []
        # The first run keeps its outcome: exactly one per run.
        assert (await failed.status()).state is TaskState.FAILED


async def test_a_client_that_knows_no_pipeline_submits_to_one_by_name(
    broker: str, clock: trio.abc.Clock | None
) -> None:
    # What `queueing submit PIPELINE` does: a connect() client given no Pipeline object
    # learns of the pipelines from what the serving processes declared.
    from queueing import InvalidQueue, connect

    if broker == "memory://":  # nothing to connect to: the queues live in one process
        with pytest.raises(InvalidQueue, match="needs a shared broker"):
            async with connect(broker):
                pass
        return
    async with serve(broker, steps()), connect(broker) as client:
        receipt = await client.submit("steps", "21")
        assert await outcome_of(receipt) == "#42"
        assert (await receipt.status()).state is TaskState.SUCCEEDED

"""The test kit in `actors.testing`: the probe and the configurable `actor_system` fixture."""

from __future__ import annotations

from typing import Any

import pytest
import tenacity
import trio
import trio.testing

from actors import Actor, ActorSystem, Restart, Strategy, Terminated
from actors.testing import Probe


class Greeter(Actor):
    """On ("greet", name, reply_to): tells reply_to a greeting. On ("lookup", who, via):
    asks `via` for a title and answers with it."""

    async def receive(self, message: Any) -> Any:
        match message:
            case ("greet", name, reply_to):
                await reply_to.tell(f"hello {name}")
            case ("lookup", who, via):
                title = await via.ask(("title?", who))
                return f"{title} {who}"
            case "crash":
                raise RuntimeError("crash")
        return None


async def test_expect_message_returns_what_the_actor_sent(
    actor_system: ActorSystem, probe: Probe
) -> None:
    greeter = await actor_system.spawn(Greeter)
    await greeter.tell(("greet", "ada", probe.ref))
    assert await probe.expect_message("hello ada") == "hello ada"


async def test_expect_message_fails_on_a_different_message(
    actor_system: ActorSystem, probe: Probe
) -> None:
    greeter = await actor_system.spawn(Greeter)
    await greeter.tell(("greet", "bob", probe.ref))
    with pytest.raises(AssertionError, match="expected 'hello ada', received 'hello bob'"):
        await probe.expect_message("hello ada")


async def test_expect_message_fails_when_nothing_comes_in_time(
    probe: Probe, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    with pytest.raises(AssertionError, match=r"received no message within 2s \(expected 'x'\)"):
        await probe.expect_message("x", within=2)
    assert trio.current_time() - start == pytest.approx(2)


async def test_expect_message_type_checks_the_type(probe: Probe) -> None:
    await probe.ref.tell(42)
    assert await probe.expect_message_type(int) == 42
    await probe.ref.tell("x")
    with pytest.raises(AssertionError, match="expected a int, received 'x'"):
        await probe.expect_message_type(int)


async def test_expect_no_message_passes_in_silence_and_names_an_intruder(
    probe: Probe, autojump_clock: trio.testing.MockClock
) -> None:
    await probe.expect_no_message(within=5)
    await probe.ref.tell("surprise")
    with pytest.raises(AssertionError, match="expected no message within 1s, received 'surprise'"):
        await probe.expect_no_message(within=1)
    assert probe.pending == 1


async def test_expect_terminated_returns_why_the_actor_stopped(
    actor_system: ActorSystem, probe: Probe
) -> None:
    greeter = await actor_system.spawn(Greeter, restart=Restart.TEMPORARY)
    probe.watch(greeter)
    await greeter.tell("crash")
    terminated = await probe.expect_terminated(greeter)
    assert isinstance(terminated, Terminated)
    assert isinstance(terminated.reason, RuntimeError)


async def test_expect_terminated_fails_if_the_actor_keeps_running(
    actor_system: ActorSystem, probe: Probe, autojump_clock: trio.testing.MockClock
) -> None:
    greeter = await actor_system.spawn(Greeter, name="alive")
    with pytest.raises(AssertionError, match="expected Terminated of 'alive'"):
        await probe.expect_terminated(greeter, within=1)


async def test_a_probe_answers_an_ask_when_the_test_says(
    actor_system: ActorSystem, probe: Probe
) -> None:
    greeter = await actor_system.spawn(Greeter)
    results: list[str] = []

    async def lookup() -> None:
        results.append(await greeter.ask(("lookup", "lovelace", probe.ref)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookup)
        assert await probe.expect_message() == ("title?", "lovelace")
        probe.reply("countess")
    assert results == ["countess lovelace"]


async def test_reply_without_an_ask_is_an_assertion_error(probe: Probe) -> None:
    await probe.ref.tell("told")
    await probe.expect_message("told")
    with pytest.raises(AssertionError, match="nothing to reply to"):
        probe.reply("x")


async def test_probes_can_be_started_by_hand(actor_system: ActorSystem) -> None:
    first = await Probe.start(actor_system, name="first")
    second = await Probe.start(actor_system)
    assert first.ref.name == "first"
    assert first.ref != second.ref


@pytest.mark.actor_system(strategy=Strategy.ONE_FOR_ALL, backoff=tenacity.wait_none(), name="t")
async def test_the_actor_system_marker_configures_the_fixture(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    assert actor_system.name == "t"
    crashy = await actor_system.spawn(Greeter)
    bystander = await actor_system.spawn(Greeter)
    await crashy.tell("crash")
    await trio.sleep(1)
    assert bystander.stats().restarts == 1  # the root restarts all its children: ONE_FOR_ALL


@pytest.fixture
def actor_system_options() -> dict[str, Any]:
    """Overriding the options fixture sets them for every test of this module; a marker
    applies on top (see the test above, named "t")."""
    return {"name": "module-wide"}


async def test_overriding_actor_system_options_sets_the_defaults(
    actor_system: ActorSystem,
) -> None:
    assert actor_system.name == "module-wide"

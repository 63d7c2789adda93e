"""Bad use fails early with an error that says what was wrong and how to fix it."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import actors
from actors import (
    Actor,
    ActorError,
    ActorStopped,
    ActorSystem,
    ChildSpec,
    InvalidActor,
    InvalidConfig,
    Mailbox,
    Supervisor,
    open_system,
    run_system,
)


class Echo(Actor):
    async def receive(self, message: Any) -> Any:
        return message


def echo_function(message: Any) -> Any:
    return message


# -- not an actor ------------------------------------------------------------------------------


# Explicit ids: repr(echo_function) holds its address, which differs between processes
# (pytest-xdist's workers must collect the same ids).
@pytest.mark.parametrize(
    "thing",
    [int, echo_function, "Echo", None],
    ids=["int-class", "a-function", "a-string", "None"],
)
async def test_spawning_something_that_is_not_an_actor_class_raises_invalid_actor(
    actor_system: ActorSystem, thing: Any
) -> None:
    with pytest.raises(InvalidActor, match="expected an Actor subclass") as info:
        await actor_system.spawn(thing)
    assert "class My(Actor)" in str(info.value)
    assert isinstance(info.value, TypeError)


async def test_spawning_an_actor_instance_says_to_pass_the_class(
    actor_system: ActorSystem,
) -> None:
    with pytest.raises(InvalidActor, match=r"pass the class itself \(not an instance\)"):
        await actor_system.spawn(Echo())  # type: ignore[arg-type]


def test_a_child_spec_checks_its_actor_class() -> None:
    with pytest.raises(InvalidActor):
        ChildSpec(dict)  # type: ignore[arg-type]


# -- stopped actors ----------------------------------------------------------------------------


async def test_telling_a_stopped_actor_says_so_and_how_to_tell(actor_system: ActorSystem) -> None:
    ref = await actor_system.spawn(Echo, name="done")
    await ref.stop()
    with pytest.raises(ActorStopped) as info:
        await ref.tell("hello?")
    message = str(info.value)
    assert "'done' has stopped" in message
    assert "is_alive" in message  # how to check before sending


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "10", None], ids=repr)
def test_a_mailbox_must_have_a_positive_int_capacity(capacity: Any) -> None:
    with pytest.raises(InvalidConfig, match="mailbox capacity must be an int >= 1") as info:
        Mailbox(capacity)
    assert "always bounded" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_mailbox_overflow_policy_must_be_an_overflow_member() -> None:
    with pytest.raises(InvalidConfig, match="WAIT, REJECT, DROP_OLDEST, DROP_NEWEST"):
        Mailbox(10, "drop")  # type: ignore[arg-type]


async def test_spawn_checks_the_mailbox_size(actor_system: ActorSystem) -> None:
    with pytest.raises(InvalidConfig, match="capacity"):
        await actor_system.spawn(Echo, mailbox_size=0)
    assert actor_system.names == ["root"]


async def test_spawn_checks_the_overflow_policy(actor_system: ActorSystem) -> None:
    with pytest.raises(InvalidConfig, match="Overflow member"):
        await actor_system.spawn(Echo, overflow="reject")  # type: ignore[arg-type]


def test_a_child_spec_checks_its_restart_type() -> None:
    with pytest.raises(InvalidConfig, match="PERMANENT, TRANSIENT, TEMPORARY"):
        ChildSpec(Echo, restart="always")  # type: ignore[arg-type]


@pytest.mark.parametrize("shutdown", [-1, float("nan"), "5"], ids=repr)
def test_a_child_spec_checks_its_shutdown_deadline(shutdown: Any) -> None:
    with pytest.raises(InvalidConfig, match="shutdown must be"):
        ChildSpec(Echo, shutdown=shutdown)


def test_a_supervisor_checks_its_strategy() -> None:
    with pytest.raises(InvalidConfig, match="ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE"):
        Supervisor(strategy="one_for_one")  # type: ignore[arg-type]


@pytest.mark.parametrize("max_restarts", [-1, 1.5, True], ids=repr)
def test_a_supervisor_checks_max_restarts(max_restarts: Any) -> None:
    with pytest.raises(InvalidConfig, match="max_restarts must be an int >= 0"):
        Supervisor(max_restarts=max_restarts)


def test_a_supervisor_checks_its_window() -> None:
    with pytest.raises(InvalidConfig, match="within must be > 0"):
        Supervisor(within=0)


def test_a_supervisor_wants_child_specs() -> None:
    with pytest.raises(InvalidConfig, match="ChildSpec") as info:
        Supervisor([Echo])  # type: ignore[list-item]
    assert "ChildSpec(Echo, ...)" in str(info.value)


async def test_spawn_under_an_actor_that_is_not_a_supervisor_is_refused(
    actor_system: ActorSystem,
) -> None:
    plain = await actor_system.spawn(Echo, name="plain")
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(InvalidConfig, match="supervisor= must be a Supervisor's ref"):
        await actor_system.spawn(Echo, supervisor=plain)


async def test_spawn_of_a_child_spec_takes_no_extra_arguments(
    actor_system: ActorSystem,
) -> None:
    with pytest.raises(InvalidConfig, match="in the ChildSpec"):
        await actor_system.spawn(ChildSpec(Echo), "extra")


def test_run_system_wants_an_async_main() -> None:
    with pytest.raises(InvalidConfig, match="main must be an async function"):
        run_system("main")  # type: ignore[arg-type]


async def test_open_system_checks_its_shutdown_timeout() -> None:
    with pytest.raises(InvalidConfig, match="shutdown_timeout"):
        async with open_system(shutdown_timeout=-1):
            pass


# -- the exception tree ------------------------------------------------------------------------


def test_every_runtime_error_derives_from_actor_error() -> None:
    errors = [
        getattr(actors, name)
        for name in actors.__all__
        if isinstance(getattr(actors, name), type)
        and issubclass(getattr(actors, name), BaseException)
    ]
    assert len(errors) == 13
    assert all(issubclass(error, ActorError) for error in errors)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (actors.AskTimeout, TimeoutError),
        (actors.ActorNotFound, LookupError),
        (actors.NameTaken, ValueError),
        (actors.InvalidActor, TypeError),
        (actors.InvalidConfig, ValueError),
    ],
)
def test_runtime_errors_mix_in_the_builtin_they_resemble(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, builtin)

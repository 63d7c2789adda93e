"""Crashes, restarts and give-ups are logged as OTP and Akka do, on loggers one can tune."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorSystem,
    ChildSpec,
    Restart,
    Supervisor,
    SupervisorGaveUp,
    open_system,
)


@attrs.frozen
class Charge:
    cents: int


class Card(Actor):
    async def receive(self, message: Any) -> Any:
        if isinstance(message, Charge) and message.cents < 0:
            raise ValueError("negative charge")
        return message


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


async def test_a_crash_is_reported_at_error_with_the_path_and_the_message_type(
    actor_system: ActorSystem,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await actor_system.spawn(Supervisor.spec([ChildSpec(Card, name="visa")], name="payments"))
    await actor_system.lookup("visa").tell(Charge(-5))  # a tell: nobody else would know
    await trio.sleep(1)
    (report,) = records(caplog, "actors.crashes")
    assert report.levelno == logging.ERROR
    assert report.getMessage() == (
        "actor root/payments/visa crashed handling a Charge message: ValueError('negative charge')"
    )
    assert report.exc_info is not None  # with the traceback
    assert isinstance(report.exc_info[1], ValueError)


async def test_a_crash_in_on_start_says_so(
    actor_system: ActorSystem,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoDisk(Actor):
        async def on_start(self) -> None:
            raise OSError("disk full")

    await actor_system.spawn(NoDisk, name="writer", restart=Restart.TEMPORARY)
    await trio.sleep(1)
    (report,) = records(caplog, "actors.crashes")
    assert report.getMessage() == "actor root/writer crashed starting: OSError('disk full')"


async def test_a_restart_is_logged_at_warning_with_its_timing(
    actor_system: ActorSystem,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ref = await actor_system.spawn(Card, name="card")
    await ref.tell(Charge(-1))
    await ref.tell(Charge(-2))
    await trio.sleep(1)
    restarts = records(caplog, "actors.restarts")
    assert [r.levelno for r in restarts] == [logging.WARNING, logging.WARNING]
    assert (
        restarts[0]
        .getMessage()
        .startswith("supervisor root restarts 'card' at once (restart 1 in a row) after ValueError")
    )
    assert "restarts 'card' in 0.0" in restarts[1].getMessage()
    assert "(restart 2 in a row)" in restarts[1].getMessage()


async def test_a_supervisor_giving_up_is_logged_once_at_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:

    async def run() -> None:
        async with open_system(max_restarts=0) as system:
            await system.spawn(
                Supervisor.spec([ChildSpec(Card, name="card")], name="payments", max_restarts=0)
            )
            await system.lookup("card").tell(Charge(-1))
            await trio.sleep_forever()

    with pytest.raises(SupervisorGaveUp):
        await run()
    give_ups = records(caplog, "actors.supervisors")
    assert [r.levelno for r in give_ups] == [logging.ERROR, logging.ERROR]
    assert give_ups[0].getMessage().startswith("supervisor 'payments' gave up: child 'card'")
    assert give_ups[1].getMessage().startswith("supervisor 'root' gave up: child 'payments'")
    assert not records(caplog, "actors")  # the root's give-up is not reported twice


async def test_crash_reports_can_be_turned_down_like_any_logger(
    actor_system: ActorSystem,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    crashes = logging.getLogger("actors.crashes")
    crashes.setLevel(logging.CRITICAL)
    try:
        ref = await actor_system.spawn(Card)
        await ref.tell(Charge(-1))
        await trio.sleep(1)
    finally:
        crashes.setLevel(logging.NOTSET)
    assert records(caplog, "actors.crashes") == []
    assert len(records(caplog, "actors.restarts")) == 1


async def test_an_error_reply_or_a_normal_stop_logs_no_crash(
    actor_system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    from actors import ErrorReply

    class Polite(Actor):
        async def receive(self, message: Any) -> Any:
            return ErrorReply(KeyError(message))

    ref = await actor_system.spawn(Polite)
    with pytest.raises(KeyError):
        await ref.ask("missing")
    await ref.stop()
    assert records(caplog, "actors.crashes") == []

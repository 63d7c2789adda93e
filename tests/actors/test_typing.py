"""Typed refs: mypy checks what is sent to an `ActorRef[Msg]` and types an ask's reply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
from __future__ import annotations

import attrs

from actors import Actor, ActorRef, ActorSystem, Request


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Balance(Request[int]):
    pass


Msg = Deposit | Balance


class Account(Actor[Msg]):
    async def receive(self, message: Msg) -> int | None:
        return None


class Untyped(Actor):
    async def receive(self, message: object) -> None:
        return None


async def main(system: ActorSystem) -> None:
    ref = await system.spawn(Account)
    reveal_type(ref)
    reveal_type(await ref.ask(Balance()))
    await ref.tell(Deposit(5))
    await ref.tell("deposit 5")  # the wrong message
    anything: ActorRef = await system.spawn(Untyped)
    await anything.tell("fine")
"""


def test_mypy_catches_a_wrong_message_and_types_the_reply(tmp_path: Path) -> None:
    source = tmp_path / "bank.py"
    source.write_text(SNIPPET)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(source),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=110,
        check=False,
    )
    lines = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if ": " in line]
    assert lines == [
        'note: Revealed type is "actors._ref.ActorRef[bank.Deposit | bank.Balance]"',
        'note: Revealed type is "int"',
        'error: Argument 1 to "tell" of "ActorRef" has incompatible type "str"; '
        'expected "Deposit | Balance"  [arg-type]',
    ], proc.stdout + proc.stderr
    assert "bank.py:37: error" in proc.stdout  # the line of the wrong tell

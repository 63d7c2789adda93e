"""A supervised bank: accounts restored from SQLite after a crash, transfers as a saga.

    python examples/bank.py

The tree this program builds:

    root
    └── bank          Supervisor, ONE_FOR_ONE
        ├── accounts  Supervisor: one Account actor per customer, spawned at run time
        │   ├── alice
        │   ├── bob
        │   └── carol
        └── transfers the saga coordinator: runs each transfer step by step

Part 1 crashes an account on purpose: its supervisor restarts it at once, and the new
instance reloads its balance from SQLite in `on_start`, so nothing committed is lost.
Part 2 runs transfers as a saga. Each step (debit, credit) carries an id that the account
records in the same transaction as the balance, so a step sent twice is applied once; the
coordinator records each transfer's progress, and when it restarts it resumes every
unfinished transfer. A refusal (insufficient funds) is an `ErrorReply`, not a crash. One
transfer crashes the coordinator after its credit but before the credit is recorded: the
restarted coordinator resumes it and sends the credit again, the account applies it once,
and the totals still add up.

SQLite runs in a worker thread (`trio.to_thread.run_sync`), as blocking I/O should.
Docs: docs/concepts/patterns.md ("State and sagas that survive a crash").
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import (
    Actor,
    ActorSystem,
    ChildSpec,
    ErrorReply,
    Request,
    Supervisor,
    run_system,
)

OPENING = {"alice": 100, "bob": 50, "carol": 0}


class InsufficientFunds(Exception):
    """A debit larger than the balance: refused, the account does not crash."""


# -- the ledger: SQLite, one short transaction per call ------------------------------------


class Ledger:
    """The bank's durable state. Each method runs in a worker thread with its own
    connection (sqlite3 connections belong to the thread that made them)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)  # explicit BEGIN/COMMIT

    def create(self, opening: dict[str, int]) -> None:
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE accounts (owner TEXT PRIMARY KEY, balance INTEGER NOT NULL);
                CREATE TABLE applied (op TEXT PRIMARY KEY, owner TEXT, delta INTEGER);
                CREATE TABLE transfers (
                    id INTEGER PRIMARY KEY, source TEXT, target TEXT, amount INTEGER,
                    state TEXT NOT NULL  -- started, debited, done, refused
                );
                """
            )
            db.executemany("INSERT INTO accounts VALUES (?, ?)", opening.items())

    def balance(self, owner: str) -> int:
        with self._connect() as db:
            row = db.execute("SELECT balance FROM accounts WHERE owner = ?", (owner,)).fetchone()
        return int(row[0])

    def apply(self, owner: str, op: str, delta: int) -> int:
        """Add `delta` to the balance once per `op` id; return the balance.

        Raises:
            InsufficientFunds: the balance would go below zero.
        """
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                (balance,) = db.execute(
                    "SELECT balance FROM accounts WHERE owner = ?", (owner,)
                ).fetchone()
                if db.execute("SELECT 1 FROM applied WHERE op = ?", (op,)).fetchone():
                    db.execute("ROLLBACK")
                    return int(balance)  # applied before a crash: nothing to do
                if balance + delta < 0:
                    raise InsufficientFunds(f"{owner} has {balance}, needs {-delta}")
                db.execute(
                    "UPDATE accounts SET balance = ? WHERE owner = ?", (balance + delta, owner)
                )
                db.execute("INSERT INTO applied VALUES (?, ?, ?)", (op, owner, delta))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return int(balance + delta)

    def new_transfer(self, source: str, target: str, amount: int) -> int:
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO transfers (source, target, amount, state) VALUES (?, ?, ?, ?)",
                (source, target, amount, "started"),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set_state(self, transfer: int, state: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE transfers SET state = ? WHERE id = ?", (state, transfer))

    def transfer(self, transfer: int) -> tuple[str, str, int, str]:
        with self._connect() as db:
            row = db.execute(
                "SELECT source, target, amount, state FROM transfers WHERE id = ?", (transfer,)
            ).fetchone()
        return str(row[0]), str(row[1]), int(row[2]), str(row[3])

    def unfinished(self) -> list[int]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT id FROM transfers WHERE state NOT IN ('done', 'refused') ORDER BY id"
            ).fetchall()
        return [int(row[0]) for row in rows]

    def applied_ops(self) -> list[str]:
        with self._connect() as db:
            return [str(row[0]) for row in db.execute("SELECT op FROM applied ORDER BY op")]


# -- messages ----------------------------------------------------------------------------------


@attrs.frozen
class Apply(Request[int]):
    """Add `delta` (negative: a debit) once per `op`; answered with the new balance."""

    op: str
    delta: int


@attrs.frozen
class Balance(Request[int]):
    pass


@attrs.frozen
class Crash:
    """Make the actor crash, to show what a crash does and does not lose."""


AccountMsg = Apply | Balance | Crash


@attrs.frozen
class Transfer(Request[str]):
    """Move `amount` from `source` to `target`; answered with "done" or "refused: ..."."""

    source: str
    target: str
    amount: int


@attrs.frozen
class Status(Request[str]):
    transfer: int


# -- actors ------------------------------------------------------------------------------------


class Account(Actor[AccountMsg]):
    """One customer's account. Its balance lives in SQLite; the instance only caches it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.balance = 0

    async def on_start(self) -> None:
        self.balance = await trio.to_thread.run_sync(self.ledger.balance, self.name)
        restarts = self.ref.stats().restarts
        if restarts:
            print(
                f"  [{self.name}] restarted (restart #{restarts}): "
                f"balance {self.balance} restored from SQLite"
            )

    async def receive(self, message: AccountMsg) -> Any:
        match message:
            case Apply(op, delta):
                try:
                    # Committed before we answer: whatever the caller is told survives.
                    self.balance = await trio.to_thread.run_sync(
                        self.ledger.apply, self.name, op, delta
                    )
                except InsufficientFunds as refused:
                    return ErrorReply(refused)
                return self.balance
            case Balance():
                return self.balance
            case Crash():
                raise RuntimeError(f"{self.name}: simulated failure")
        return None


class Transfers(Actor[Transfer | Status]):
    """The saga coordinator: each transfer is debit, then credit, each step recorded."""

    def __init__(self, ledger: Ledger, crash_before_done: set[int]) -> None:
        self.ledger = ledger
        # Shared with the program, so it survives restarts: each id crashes us once.
        self.crash_before_done = crash_before_done

    async def on_start(self) -> None:
        # Before any new message: finish what a crashed incarnation left half done.
        for transfer in await trio.to_thread.run_sync(self.ledger.unfinished):
            *_, state = await trio.to_thread.run_sync(self.ledger.transfer, transfer)
            print(f"  [{self.name}] restarted: resuming transfer #{transfer} ({state})")
            await self.run_saga(transfer)

    async def receive(self, message: Transfer | Status) -> str:
        match message:
            case Transfer(source, target, amount):
                transfer = await trio.to_thread.run_sync(
                    self.ledger.new_transfer, source, target, amount
                )
                return await self.run_saga(transfer)
            case Status(transfer):
                return (await trio.to_thread.run_sync(self.ledger.transfer, transfer))[3]

    async def run_saga(self, transfer: int) -> str:
        source, target, amount, state = await trio.to_thread.run_sync(
            self.ledger.transfer, transfer
        )
        if state == "started":
            try:
                await self.system.lookup(source).ask(Apply(f"t{transfer}-debit", -amount))
            except InsufficientFunds as refused:
                await trio.to_thread.run_sync(self.ledger.set_state, transfer, "refused")
                return f"refused ({refused})"
            await trio.to_thread.run_sync(self.ledger.set_state, transfer, "debited")
        # "debited": the credit is idempotent too, so a resumed saga may send it again.
        await self.system.lookup(target).ask(Apply(f"t{transfer}-credit", amount))
        if transfer in self.crash_before_done:
            self.crash_before_done.discard(transfer)
            raise RuntimeError(f"simulated crash before recording transfer #{transfer} done")
        await trio.to_thread.run_sync(self.ledger.set_state, transfer, "done")
        return "done"


# -- the program -------------------------------------------------------------------------------


async def main(system: ActorSystem) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "bank.db")
        await trio.to_thread.run_sync(ledger.create, OPENING)
        crash_before_done = {3}
        await system.spawn(
            Supervisor.spec(
                [
                    Supervisor.spec([], name="accounts"),
                    ChildSpec(Transfers, args=(ledger, crash_before_done), name="transfers"),
                ],
                name="bank",
                max_restarts=5,
                within=10,
            )
        )
        accounts = system.lookup("accounts")
        for owner in OPENING:
            await system.spawn(Account, ledger, name=owner, supervisor=accounts)
        print("opened: " + ", ".join(f"{o} {b}" for o, b in OPENING.items()))

        print("Part 1: an account crashes; its state comes back from SQLite")
        alice = system.lookup("alice")
        print(f"  alice deposits 25 -> balance {await alice.ask(Apply('deposit-1', 25))}")
        await alice.tell(Crash())
        print(f"  alice's balance after the crash: {await alice.ask(Balance())}")
        print(f"  alice restarts: {alice.stats().restarts}")

        print("Part 2: transfers as a saga")
        transfers = system.lookup("transfers")
        for number, (source, target, amount) in enumerate(
            [("alice", "bob", 30), ("bob", "carol", 500), ("alice", "carol", 40)], start=1
        ):
            try:
                outcome = await transfers.ask(Transfer(source, target, amount), timeout=10)
            except RuntimeError as crash:
                print(f"  transfer #{number} {source} -> {target} {amount}: crashed: {crash}")
                # The restarted coordinator resumed it in on_start, before this message.
                outcome = await transfers.ask(Status(number), timeout=10)
                print(f"  transfer #{number} finished: {outcome}")
                continue
            print(f"  transfer #{number} {source} -> {target} {amount}: {outcome}")

        balances = {owner: await system.lookup(owner).ask(Balance()) for owner in OPENING}
        total = sum(balances.values())
        print(
            "final balances: "
            + ", ".join(f"{o} {b}" for o, b in balances.items())
            + f" (total {total}, deposited {sum(OPENING.values()) + 25})"
        )
        ops = await trio.to_thread.run_sync(ledger.applied_ops)
        print(f"applied steps: {', '.join(ops)} ({len(ops)}, each once)")
        await system.lookup("bank").stop()  # before the database goes away


class _NoTraceback(logging.Formatter):
    """The crashes here are on purpose: log each on one line (the default shows tracebacks)."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    handler = logging.StreamHandler()
    handler.setFormatter(_NoTraceback("  log %(name)s: %(message)s"))
    logging.getLogger("actors").addHandler(handler)
    run_system(main)

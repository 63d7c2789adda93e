"""The public surface of `actors`: exactly the documented names, each importable and documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

import actors

# The documented public API of the actor runtime (docs/reference/actors.md renders these).
# Adding or removing a name is an API change: update this list, the docs and the changelog.
DOCUMENTED = [
    "Actor",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorState",
    "ActorStats",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "ChildSpec",
    "ErrorReply",
    "InvalidActor",
    "InvalidConfig",
    "LinkedActorFailed",
    "Mailbox",
    "MailboxDeadlock",
    "MailboxFull",
    "NameTaken",
    "Overflow",
    "Pool",
    "ReceiveTimeout",
    "Reply",
    "Request",
    "Restart",
    "Routing",
    "StashFull",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorRestarting",
    "Terminated",
    "Timer",
    "open_system",
    "run_system",
    "run_with_signals",
]


def test_all_is_exactly_the_documented_names() -> None:
    assert actors.__all__ == DOCUMENTED


def test_all_is_sorted() -> None:
    assert list(actors.__all__) == sorted(actors.__all__)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("actors")
    assert getattr(module, name) is getattr(actors, name)
    namespace: dict[str, object] = {}
    exec(f"from actors import {name}", namespace)
    assert namespace[name] is getattr(actors, name)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(actors, name)
    doc = inspect.getdoc(obj)
    assert doc, f"actors.{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        # Inherited docstrings don't count: every public class says what it is.
        assert obj.__doc__, f"actors.{name} inherits its docstring instead of having one"


def test_no_private_module_leaks_into_the_namespace() -> None:
    public = {name for name in vars(actors) if not name.startswith("_")}
    # Submodules imported as a side effect (actors.testing via the pytest plugin) are fine.
    modules = {name for name in public if inspect.ismodule(getattr(actors, name))}
    assert public - modules == set(DOCUMENTED)


# The documented public API of the processing queues (docs/reference/queueing.md).
QUEUEING_DOCUMENTED = [
    "AsyncioClient",
    "BrokerError",
    "BrokerOutOfMemory",
    "DeadLetter",
    "DrainTimeout",
    "ErrorInfo",
    "FanOut",
    "Full",
    "InvalidQueue",
    "Overflow",
    "PayloadError",
    "PayloadTooLarge",
    "Pipeline",
    "Progress",
    "Queue",
    "QueueFull",
    "QueueStats",
    "QueueSystem",
    "QueueingError",
    "RateLimit",
    "Receipt",
    "ResultTimeout",
    "RetryPolicy",
    "Schedule",
    "SyncClient",
    "SyncReceipt",
    "SystemStopping",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskFields",
    "TaskLost",
    "TaskState",
    "TaskStatus",
    "TaskTimeout",
    "TenantFigures",
    "Transient",
    "UnknownQueue",
    "UnknownTask",
    "Worker",
    "WorkersCrashed",
    "connect",
    "connect_sync",
    "is_transient",
    "make_converter",
    "open_system",
    "run_system",
]


def test_queueing_all_is_exactly_the_documented_names() -> None:
    import queueing

    assert queueing.__all__ == QUEUEING_DOCUMENTED


def test_full_is_the_runtimes_overflow() -> None:
    import queueing

    assert queueing.Full is actors.Overflow
    assert queueing.Overflow is actors.Overflow


@pytest.mark.parametrize("name", [n for n in QUEUEING_DOCUMENTED if n != "Full"])
def test_queueing_public_name_has_a_docstring(name: str) -> None:
    import queueing

    assert inspect.getdoc(getattr(queueing, name)), f"queueing.{name} has no docstring"


def test_a_receipt_shows_no_internal_attributes() -> None:
    import queueing

    public = {name for name in dir(queueing.Receipt) if not name.startswith("_")}
    assert public == {"id", "queue", "done", "result", "status", "watch", "cancel"}

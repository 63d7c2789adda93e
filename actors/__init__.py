"""A supervised actor runtime on trio."""

from ._actor import Actor as Actor
from ._actor import ActorRef as ActorRef
from ._actor import ActorState as ActorState
from ._actor import ActorStats as ActorStats
from ._actor import Terminated as Terminated
from ._exceptions import ActorError as ActorError
from ._exceptions import ActorNotFound as ActorNotFound
from ._exceptions import ActorStopped as ActorStopped
from ._exceptions import AskTimeout as AskTimeout
from ._exceptions import InvalidActor as InvalidActor
from ._exceptions import InvalidConfig as InvalidConfig
from ._exceptions import MailboxFull as MailboxFull
from ._exceptions import NameTaken as NameTaken
from ._exceptions import SupervisorGaveUp as SupervisorGaveUp
from ._mailbox import Mailbox as Mailbox
from ._mailbox import Overflow as Overflow
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import Restart as Restart
from ._supervisor import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._system import ActorSystem as ActorSystem
from ._system import open_system as open_system
from ._system import run_system as run_system
from ._system import run_with_signals as run_with_signals

__all__ = [
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
    "InvalidActor",
    "InvalidConfig",
    "Mailbox",
    "MailboxFull",
    "NameTaken",
    "Overflow",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "Terminated",
    "open_system",
    "run_system",
    "run_with_signals",
]

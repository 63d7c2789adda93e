"""A supervised actor runtime on trio."""

from ._actor import Actor as Actor
from ._exceptions import ActorError as ActorError
from ._exceptions import ActorNotFound as ActorNotFound
from ._exceptions import ActorStopped as ActorStopped
from ._exceptions import AskTimeout as AskTimeout
from ._exceptions import InvalidActor as InvalidActor
from ._exceptions import InvalidConfig as InvalidConfig
from ._exceptions import LinkedActorFailed as LinkedActorFailed
from ._exceptions import MailboxDeadlock as MailboxDeadlock
from ._exceptions import MailboxFull as MailboxFull
from ._exceptions import NameTaken as NameTaken
from ._exceptions import StashFull as StashFull
from ._exceptions import SupervisorGaveUp as SupervisorGaveUp
from ._exceptions import SupervisorRestarting as SupervisorRestarting
from ._mailbox import Mailbox as Mailbox
from ._mailbox import Overflow as Overflow
from ._pool import Pool as Pool
from ._pool import Routing as Routing
from ._ref import ActorRef as ActorRef
from ._ref import ActorState as ActorState
from ._ref import ActorStats as ActorStats
from ._ref import Terminated as Terminated
from ._reply import ErrorReply as ErrorReply
from ._reply import Reply as Reply
from ._reply import Request as Request
from ._run import run_system as run_system
from ._run import run_with_signals as run_with_signals
from ._spec import ChildSpec as ChildSpec
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._system import ActorSystem as ActorSystem
from ._system import open_system as open_system
from ._timers import ReceiveTimeout as ReceiveTimeout
from ._timers import Timer as Timer

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

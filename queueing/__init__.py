"""Processing queues built on supervised actors, on trio."""

from actors import Overflow as Overflow

from ._asyncio_client import AsyncioClient as AsyncioClient
from ._asyncio_client import connect as connect
from ._convert import make_converter as make_converter
from ._exceptions import BrokerError as BrokerError
from ._exceptions import BrokerOutOfMemory as BrokerOutOfMemory
from ._exceptions import DrainTimeout as DrainTimeout
from ._exceptions import InvalidQueue as InvalidQueue
from ._exceptions import PayloadError as PayloadError
from ._exceptions import PayloadTooLarge as PayloadTooLarge
from ._exceptions import QueueFull as QueueFull
from ._exceptions import QueueingError as QueueingError
from ._exceptions import ResultTimeout as ResultTimeout
from ._exceptions import SystemStopping as SystemStopping
from ._exceptions import TaskCancelled as TaskCancelled
from ._exceptions import TaskExpired as TaskExpired
from ._exceptions import TaskFailed as TaskFailed
from ._exceptions import TaskLost as TaskLost
from ._exceptions import TaskTimeout as TaskTimeout
from ._exceptions import Transient as Transient
from ._exceptions import UnknownQueue as UnknownQueue
from ._exceptions import UnknownTask as UnknownTask
from ._exceptions import WorkersCrashed as WorkersCrashed
from ._logs import TaskFields as TaskFields
from ._open import open_system as open_system
from ._open import run_system as run_system
from ._queue import FanOut as FanOut
from ._queue import Full as Full
from ._queue import Pipeline as Pipeline
from ._queue import Queue as Queue
from ._ratelimit import RateLimit as RateLimit
from ._receipt import Receipt as Receipt
from ._retry import RetryPolicy as RetryPolicy
from ._retry import is_transient as is_transient
from ._schedule import Schedule as Schedule
from ._stats import QueueStats as QueueStats
from ._sync_client import SyncClient as SyncClient
from ._sync_client import SyncReceipt as SyncReceipt
from ._sync_client import connect_sync as connect_sync
from ._system import QueueSystem as QueueSystem
from ._task import DeadLetter as DeadLetter
from ._task import ErrorInfo as ErrorInfo
from ._task import Progress as Progress
from ._task import TaskState as TaskState
from ._task import TaskStatus as TaskStatus
from ._worker import Worker as Worker
from .brokers._contract import TenantFigures as TenantFigures

__all__ = [
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

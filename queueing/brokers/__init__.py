"""Brokers: where tasks wait, outcomes live, and dead letters are kept.

The contract every broker implements (`Broker`, `RunStore`, `QueueInfo`, `Admission`, the
`Task` records) is documented in docs/concepts/brokers.md. The SQLite, Redis and RabbitMQ
brokers are imported only when they are used (Redis and RabbitMQ need the `redis` and
`amqp` extras).
"""

from typing import Any

from .._task import PipelineTask as PipelineTask
from .._task import Task as Task
from ._contract import Admission as Admission
from ._contract import Broker as Broker
from ._contract import QueueInfo as QueueInfo
from ._contract import RunStore as RunStore
from ._contract import TenantFigures as TenantFigures
from ._contract import queue_of as queue_of
from ._contract import run_of as run_of
from ._memory import MemoryBroker as MemoryBroker

__all__ = [
    "Admission",
    "TenantFigures",
    "Broker",
    "MemoryBroker",
    "PipelineTask",
    "QueueInfo",
    "RabbitMQBroker",
    "RedisBroker",
    "RunStore",
    "SqliteBroker",
    "Task",
    "queue_of",
    "run_of",
]


def __getattr__(name: str) -> Any:
    if name == "RedisBroker":
        from .redis import RedisBroker

        return RedisBroker
    if name == "SqliteBroker":
        from .sqlite import SqliteBroker

        return SqliteBroker
    if name == "RabbitMQBroker":
        from .amqp import RabbitMQBroker

        return RabbitMQBroker
    raise AttributeError(name)

"""Brokers: where tasks wait, results live, and dead letters are kept."""

from ._base import Broker as Broker
from ._memory import MemoryBroker as MemoryBroker
from ._redis import RedisBroker as RedisBroker

__all__ = ["Broker", "MemoryBroker", "RedisBroker"]

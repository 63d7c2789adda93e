"""Brokers: where tasks wait, results live, and dead letters are kept."""

from ._base import Broker as Broker
from ._memory import MemoryBroker as MemoryBroker

__all__ = ["Broker", "MemoryBroker"]

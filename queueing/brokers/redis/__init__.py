"""The Redis Streams broker (`redis://`, `rediss://`, `unix://`): many processes, many machines."""

from ._broker import RedisBroker as RedisBroker

__all__ = ["RedisBroker"]

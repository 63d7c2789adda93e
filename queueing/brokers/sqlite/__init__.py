"""The SQLite broker (`sqlite:///path.db`): durable queues in one file, for the processes
of one machine, with nothing to install (Python's own `sqlite3`)."""

from ._broker import SqliteBroker as SqliteBroker
from ._schema import SCHEMA_VERSION as SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SqliteBroker"]

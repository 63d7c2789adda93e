"""The settings of a SQLite broker, read from its URL.

`sqlite:///relative/path.db` and `sqlite:////absolute/path.db` (SQLAlchemy's convention:
three slashes, then the path), with options in the query string:

- `synchronous=full|normal` (full): how hard a commit pushes to the disk (see
  docs/concepts/sqlite.md for what each can lose on power failure);
- `lease=SECONDS` (30): how long a claimed task stays this process's without a renewal;
- `busy_timeout=SECONDS` (30): how long a transaction keeps trying while other processes
  hold the file's write lock, before its callers get a `BrokerError` (see `_writer.py`);
- `poll=SECONDS` (0.05): the longest an idle process goes without looking for other
  processes' writes (the worst-case delay before it sees them).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from ..._exceptions import BrokerError

#: The `synchronous` settings offered, as SQLite's PRAGMA names them.
SYNCHRONOUS = ("full", "normal")
#: Seconds a claimed task stays leased without a renewal (the default of `?lease=`).
DEFAULT_LEASE = 30.0
#: Seconds a transaction keeps trying while the file is locked (`?busy_timeout=`).
DEFAULT_BUSY_TIMEOUT = 30.0
#: The longest pause between two looks for other processes' writes (`?poll=`).
DEFAULT_POLL = 0.05
_OPTIONS = ("synchronous", "lease", "busy_timeout", "poll")


@attrs.frozen
class Settings:
    """What a `sqlite://` URL says."""

    url: str
    path: str
    synchronous: str = "full"
    lease: float = DEFAULT_LEASE
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    poll: float = DEFAULT_POLL


def _seconds(url: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BrokerError(f"{url!r}: {name} must be a number of seconds > 0, got {text!r}")
    return value


def parse_url(url: str) -> Settings:
    """The settings a `sqlite://` URL names; `BrokerError` says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise BrokerError(f"{url!r} is not a sqlite:// URL")
    if parts.netloc:
        raise BrokerError(
            f"{url!r} names a host ({parts.netloc!r}); a SQLite file is local: use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)[1:]  # the slash after the (empty) host is not the path's
    if not path:
        raise BrokerError(
            f"{url!r} names no file: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if path == ":memory:" or path.startswith("file:"):
        raise BrokerError(
            f"{url!r}: the SQLite broker keeps tasks in a file that processes share; for "
            "tasks in this process only, use memory://"
        )
    options: dict[str, object] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise BrokerError(
                f"{url!r}: unknown option {name!r}; the options are {', '.join(_OPTIONS)}"
            )
        if name in options:
            raise BrokerError(f"{url!r}: option {name!r} is given twice; give it once")
        if name == "synchronous":
            if value.lower() not in SYNCHRONOUS:
                raise BrokerError(
                    f"{url!r}: synchronous must be one of {', '.join(SYNCHRONOUS)}, got {value!r}"
                )
            options[name] = value.lower()
        else:
            options[name] = _seconds(url, name, value)
    return Settings(url, path, **options)  # type: ignore[arg-type]

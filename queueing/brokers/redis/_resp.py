"""A lean Redis client on trio sockets, for the broker's hot paths on a plain Redis.

coredis (6.9) spends about 260 us of CPU per round trip on trio (some 800 Python calls and
five scheduler turns through its reader and writer tasks). The broker's hot paths use a
handful of commands whose replies it reads itself, so this module speaks RESP2 to Redis on
non-blocking sockets directly:

- `encode` packs a command (str, bytes, int and float arguments, as coredis does);
  `Parser` reads replies (simple strings, errors, integers, bulk strings, arrays, nulls)
  fed to it in any pieces, bulk strings decoded as UTF-8 (left as bytes when they are not
  UTF-8, as coredis's `decode_responses=True` does). An error reply becomes the
  exception coredis raises for it (`error_of`: `NoScriptError` for NOSCRIPT,
  `ReadOnlyError`, `BusyLoadingError`, `StreamConsumerGroupError` for NOGROUP, ...).
- `LeanRedis` holds one multiplexed connection for non-blocking commands: a caller writes
  its command(s) whole (a plain socket is written without yielding when the kernel takes
  the bytes, so writes never interleave; a TLS stream is written under a lock), queues a
  waiter, and parks; one reader task parses the replies and wakes the waiters in order
  (`trio.lowlevel.reschedule`, no Event per call). A pipeline is many commands in one
  write, and their replies in one waiter. Blocking commands (XREAD/XREADGROUP with
  BLOCK, BLPOP) go on dedicated connections, taken from a small free list.
- Connections open with a timeout, AUTH with the URL's user and password, SELECT the
  URL's database; `rediss://` speaks TLS with the `ssl_*` query options coredis takes
  (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`, `ssl_check_hostname`);
  `unix://path?db=N` URLs reach a unix socket.
- A lost connection fails every waiting caller with `coredis.exceptions.ConnectionError`
  (which `_calls.Calls.retrying` retries); the next call opens a new connection. A caller
  cancelled after its command was written leaves its waiter in the queue: its reply is
  read and dropped, so the others' replies stay in order. A write cut midway breaks the
  connection (the next call opens another).

`LeanRedis`'s command methods take coredis's arguments and return coredis's reply shapes
(`StreamEntry`s for stream reads, say), so the call sites read either client's answers.
`LeanRedis.pipeline` gives a `Pipe` with the commands the broker's pipelines use; one it
does not know raises `Unsupported` (the caller then uses coredis).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import socket
import ssl
from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import coredis.exceptions as ce
import outcome
import trio
from coredis.response.types import StreamEntry

#: What `encode` takes: coredis's argument types.
Arg = str | bytes | int | float
#: Dedicated connections for blocking commands kept open between uses.
FREE_BLOCKING = 8
#: Bytes asked of the socket per read.
READ_SIZE = 65536
#: Bulk-string and array sizes and integers below this are read from a table (`_NUMBERS`).
SMALL_NUMBERS = 1024
#: Set (by `Calls`) around a blocking read whose caller takes back what it read even when
#: cancelled (a claim): `LeanRedis.blocking` then ends it early and returns its reply.
#: Unset (a background loop's read), a cancelled read raises at once.
HAND_BACK: contextvars.ContextVar[bool] = contextvars.ContextVar("hand_back", default=False)
#: Seconds a blocking read cancelled midway waits for `CLIENT UNBLOCK`'s answer and then
#: for its own (empty) reply, on top of the read's own wait when it cannot be unblocked.
UNBLOCK_GRACE = 1.0


class Unsupported(AttributeError):
    """A command `Pipe` does not have (the caller uses coredis's pipeline instead)."""


# -- encoding -------------------------------------------------------------------------------


def _arg(value: Arg) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return b"%.15g" % value
    raise TypeError(
        f"a Redis command argument must be str, bytes, int or float, got "
        f"{type(value).__name__} ({value!r})"
    )


def encode(args: Sequence[Arg]) -> bytes:
    """One command as RESP (an array of bulk strings)."""
    # The common command (ASCII text and ints: keys, ids, JSON documents) as one str,
    # encoded once: no bytes per argument, no `%`-formatting of bytes. Anything else
    # takes the general way (`encode_each`; tests/redis/test_resp_parse.py compares them).
    parts = [f"*{len(args)}\r\n"]
    for value in args:
        if type(value) is str and value.isascii():
            parts.append(f"${len(value)}\r\n{value}\r\n")
        elif type(value) is int:
            text = int.__repr__(value)
            parts.append(f"${len(text)}\r\n{text}\r\n")
        else:
            return encode_each(args)
    return "".join(parts).encode()


def encode_body(args: Sequence[Arg]) -> bytes:
    """`encode` without the array's header: its arguments' bulk strings, to be joined
    with others' (a command put together from parts encoded once: `Pipe.evalsha`)."""
    parts = []
    for value in args:
        if type(value) is str and value.isascii():
            parts.append(f"${len(value)}\r\n{value}\r\n")
        elif type(value) is int:
            text = int.__repr__(value)
            parts.append(f"${len(text)}\r\n{text}\r\n")
        else:
            whole = encode_each(args)
            return whole[whole.index(b"\r\n") + 2 :]
    return "".join(parts).encode()


def encode_each(args: Sequence[Arg]) -> bytes:
    """`encode`, each argument made bytes on its own (any argument type). The common
    types are told apart here, without a call per argument (a batch's `finish.lua` call
    has ~60)."""
    parts = [b"*%d\r\n" % len(args)]
    values: Sequence[Any] = args
    data: bytes
    for value in values:
        kind = type(value)
        if kind is str:
            data = value.encode()
        elif kind is int:
            data = b"%d" % value
        elif kind is bytes:
            data = value
        else:
            data = _arg(value)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


# -- parsing --------------------------------------------------------------------------------

#: Error codes, as coredis's parser maps them (coredis 6.9, `Parser.EXCEPTION_CLASSES`).
ERRORS: dict[str, type[ce.RedisError]] = {
    "ASK": ce.AskError,
    "BUSYGROUP": ce.StreamDuplicateConsumerGroupError,
    "CLUSTERDOWN": ce.ClusterDownError,
    "CROSSSLOT": ce.ClusterCrossSlotError,
    "EXECABORT": ce.ExecAbortError,
    "LOADING": ce.BusyLoadingError,
    "NOSCRIPT": ce.NoScriptError,
    "MOVED": ce.MovedError,
    "NOAUTH": ce.AuthenticationRequiredError,
    "NOGROUP": ce.StreamConsumerGroupError,
    "NOKEY": ce.NoKeyError,
    "NOPERM": ce.AuthorizationError,
    "NOPROTO": ce.ProtocolError,
    "NOTBUSY": ce.NotBusyError,
    "READONLY": ce.ReadOnlyError,
    "TRYAGAIN": ce.TryAgainError,
    "UNBLOCKED": ce.UnblockedError,
    "WRONGPASS": ce.AuthenticationFailureError,
    "WRONGTYPE": ce.WrongTypeError,
}
#: "ERR ..." errors coredis tells apart by their message.
ERR_MESSAGES: dict[str, type[ce.RedisError]] = {
    "max number of clients reached": ce.ConnectionError,
    "unknown command": ce.UnknownCommandError,
    "unknown subcommand": ce.UnknownCommandError,
    "sub command not supported": ce.UnknownCommandError,
}


def error_of(text: str) -> ce.RedisError:
    """The exception coredis makes of an error reply `text`."""
    code = text.split(" ", 1)[0]
    if code == "ERR":
        message = text[4:]
        lowered = message.lower()
        for start, kind in ERR_MESSAGES.items():
            if lowered.startswith(start):
                return kind(message)
        return ce.ResponseError(message)
    found = ERRORS.get(code)
    if found is None:
        return ce.ResponseError(text)
    kind = found
    if kind is ce.AskError or kind is ce.MovedError:
        return ce.ResponseError(text)  # redirections: a plain Redis sends none
    return kind(text[len(code) + 1 :])


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()

#: A bulk string at least this long that is not all here yet: the parser waits for its
#: bytes (`_Long`) instead of splitting what it holds again at each read.
LONG_BULK = 1 << 16


class _Long(_Incomplete):
    """A long bulk string whose bytes are not all here: its data starts at line `line`
    and takes `size` bytes (and its CR LF)."""

    def __init__(self, line: int, size: int) -> None:
        self.line = line
        self.size = size


#: What `Parser.next` answers while the buffer holds no whole reply.
NOT_READY: Any = object()


def _text(data: bytes | bytearray) -> str | bytes:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return bytes(data)  # as coredis does with a value that is not UTF-8


#: The lines of small bulk-string and array headers and integer replies (`$5`, `*8`, `:1`),
#: and the number each says: a dict lookup where `int()` of the line's digits is a slice
#: and a call, for most of a reply's lines.
_NUMBERS: dict[bytes, int] = {
    b"%c%d" % (kind, n): n for kind in (36, 42, 58) for n in range(-1, SMALL_NUMBERS)
}


def _bulk(lines: list[bytes], i: int, last: int, size: int) -> tuple[bytes, int]:
    """A bulk string whose line `i` is shorter than its `size`: it holds CR LF, so it goes
    on over the next lines. Its bytes, and the index of its last line."""
    total = len(lines[i])
    j = i
    while total < size:
        j += 1
        if j >= last:
            raise _Long(i, size) if size >= LONG_BULK else _INCOMPLETE
        total += 2 + len(lines[j])
    if total != size:
        raise ce.ProtocolError(f"a bulk string of Redis's is not {size} bytes long")
    return b"\r\n".join(lines[i : j + 1]), j


def _parse(lines: list[bytes], i: int) -> tuple[Any, int]:
    """The reply that starts at line `i` (of a buffer split at each CR LF; the last line is
    the unterminated rest), and the line after it. Arrays are read in this one loop (a
    stack of the arrays being filled), not by a call per item: a stream read's reply has
    seven items per entry. A bulk string is its own line, unless it holds CR LF."""
    stack: list[tuple[list[Any], int]] = []  # the arrays being read, and their sizes
    last = len(lines) - 1
    numbers = _NUMBERS
    while True:
        if i >= last:
            raise _INCOMPLETE
        line = lines[i]
        kind = line[0] if line else 0
        value: Any
        if kind == 36:  # $ bulk string
            size = numbers.get(line)
            if size is None:
                size = int(line[1:])
            if size < 0:
                value = None
                i += 1
            else:
                i += 1
                if i >= last:
                    raise _Long(i, size) if size >= LONG_BULK else _INCOMPLETE
                data = lines[i]
                if len(data) != size:
                    data, i = _bulk(lines, i, last, size)
                i += 1
                try:
                    value = data.decode()
                except UnicodeDecodeError:
                    value = data  # as coredis does with a value that is not UTF-8
        elif kind == 42:  # * array
            size = numbers.get(line)
            if size is None:
                size = int(line[1:])
            i += 1
            if size > 0:
                stack.append(([], size))
                continue
            value = None if size < 0 else []
        elif kind == 58:  # : integer
            value = numbers.get(line)
            if value is None:
                value = int(line[1:])
            i += 1
        elif kind == 43:  # + simple string
            value = _text(line[1:])
            i += 1
        elif kind == 45:  # - error
            value = error_of(line[1:].decode(errors="replace"))
            i += 1
        else:
            raise ce.ProtocolError(f"unexpected RESP reply type {chr(kind)!r} from Redis")
        # The value goes in the innermost array being read; a full array, in the next.
        while stack:
            items, size = stack[-1]
            items.append(value)
            if len(items) < size:
                break
            stack.pop()
            value = items
        else:
            return value, i


class Parser:
    """RESP2 replies from bytes fed in any pieces. Error replies come out as exception
    instances (not raised: a pipeline's caller sorts them out).

    What was fed is split at each CR LF once (one call into C for every line of the
    replies in it); the lines not parsed yet are joined again when more comes. While a long
    bulk string (`LONG_BULK` bytes or more) is not all here, what comes is only kept until
    its bytes are: joined and split again at each read, a reply of N bytes cost O(N^2)
    (16 MiB read 64 KiB at a time: seconds of the event loop's time)."""

    def __init__(self) -> None:
        #: The lines fed so far and not taken: the last one is the unterminated rest.
        self._lines: list[bytes] = [b""]
        #: The first line of the next reply.
        self._next = 0
        #: While a long bulk string is awaited: the bytes from `_next` on it takes (0: none
        #: awaited), how many are here, and those fed since (not split yet).
        self._need = 0
        self._have = 0
        self._held: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if self._need:
            self._held.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._held)
            self._held = []
            self._need = 0
        lines = self._lines
        first = self._next
        if first == len(lines) - 1:  # every whole line taken: only the rest is left
            rest = lines[first]
            text = rest + data if rest else bytes(data)
        else:
            text = b"\r\n".join(lines[first:]) + data
        self._lines = text.split(b"\r\n")
        self._next = 0

    def next(self) -> Any:
        """The next whole reply, or `NOT_READY`."""
        if self._need or self._next >= len(self._lines) - 1:
            return NOT_READY
        try:
            value, self._next = _parse(self._lines, self._next)
        except _Long as long:
            # Wait for its bytes: those before its data, its data and CR LF.
            lines = self._lines
            first = self._next
            before = sum(map(len, lines[first : long.line])) + 2 * (long.line - first)
            self._need = before + long.size + 2
            self._have = sum(map(len, lines[first:])) + 2 * (len(lines) - 1 - first)
            return NOT_READY
        except _Incomplete:
            return NOT_READY
        return value


# -- reply shapes (coredis's) ------------------------------------------------------------------


def _pairs(flat: Any) -> dict[Any, Any] | None:
    if flat is None:
        return None
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def stream_entries(reply: Any) -> tuple[StreamEntry, ...]:
    """XRANGE/XREVRANGE's reply, as coredis gives it."""
    return tuple(StreamEntry(entry[0], _pairs(entry[1])) for entry in reply or ())  # type: ignore[arg-type]


def multi_stream(reply: Any) -> dict[Any, tuple[StreamEntry, ...]] | None:
    """XREAD/XREADGROUP's reply, as coredis gives it: {stream: entries}, or None."""
    if not reply:
        return None
    return {name: stream_entries(entries) for name, entries in reply}


def group_entries(reply: Any) -> list[tuple[str, dict[Any, Any]]]:
    """An XREADGROUP reply of one stream as (id, fields) pairs (an entry deleted while
    pending has no fields: `{}`); `[]` for none."""
    if not reply:
        return []
    entries = []
    for ident, flat in reply[0][1]:
        if flat:
            it = iter(flat)
            entries.append((ident, dict(zip(it, it, strict=False))))
        else:
            entries.append((ident, {}))
    return entries


def _as_bool(reply: Any) -> bool:
    return reply == "OK" if isinstance(reply, str) else bool(reply)


def _raise_error(reply: Any) -> Any:
    if isinstance(reply, ce.RedisError):
        raise reply
    return reply


# -- URLs -------------------------------------------------------------------------------------


@attrs.frozen
class Target:
    """Where and how to connect (from a `redis://`, `rediss://` or `unix://` URL)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    connect_timeout: float = 1.0


_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def target_of(url: str, *, connect_timeout: float) -> Target:
    """The `Target` of a plain Redis URL, read as coredis reads it."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items() if values}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    db = int(query["db"]) if "db" in query else 0
    if parts.scheme == "unix":
        return Target(
            path=unquote(parts.path),
            username=username,
            password=password,
            db=db,
            connect_timeout=connect_timeout,
        )
    if "db" not in query and parts.path.strip("/"):
        db = int(parts.path.strip("/"))
    context = None
    if parts.scheme == "rediss":
        context = ssl.create_default_context()
        certfile, keyfile = query.get("ssl_certfile"), query.get("ssl_keyfile")
        if certfile and keyfile:
            context.load_cert_chain(certfile=certfile, keyfile=keyfile)
        ca_certs = query.get("ssl_ca_certs")
        if ca_certs:
            if os.path.isdir(ca_certs):
                context.load_verify_locations(capath=ca_certs)
            else:
                context.load_verify_locations(cafile=ca_certs)
        check = query.get("ssl_check_hostname", "").lower() in ("1", "true", "yes", "on")
        context.check_hostname = check
        reqs = query.get("ssl_cert_reqs")
        context.verify_mode = _CERT_REQS[reqs.lower()] if reqs else ssl.CERT_OPTIONAL
    host = unquote(parts.hostname) if parts.hostname else "localhost"
    return Target(
        host=host,
        port=parts.port or 6379,
        username=username,
        password=password,
        db=db,
        ssl_context=context,
        server_hostname=host,
        connect_timeout=connect_timeout,
    )


# -- connections ----------------------------------------------------------------------------


class NoReply(Exception):
    """A guarded call (`LeanRedis.run`'s `guard`) had no reply within its limit: its
    caller gives up (its replies are read and dropped when they come)."""


class _Waiter:
    """A caller's place in a multiplexed connection's queue: `n` replies to collect."""

    __slots__ = ("due", "n", "parked", "replies", "result", "task")

    def __init__(self, task: trio.lowlevel.Task | None, n: int) -> None:
        self.task = task  # None: dropped (its caller was cancelled)
        self.n = n
        self.replies: list[Any] = []
        self.result: outcome.Outcome[list[Any]] | None = None
        self.parked = False
        #: A guarded call's limit (trio clock): not cancelled, given up then (`_watch`).
        self.due: float | None = None

    def abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        if self.due is not None:
            # Guarded: the caller's cancellation waits for the reply (as in a shielded
            # scope), and is delivered at its next checkpoint.
            return trio.lowlevel.Abort.FAILED
        self.task = None  # its replies are read and dropped
        self.parked = False
        return trio.lowlevel.Abort.SUCCEEDED

    def give_up(self, limit: float) -> None:
        """No reply by `due`: the caller gets `NoReply`; the replies are dropped."""
        task = self.task
        self.task = None
        if task is not None and self.parked:
            self.parked = False
            error = NoReply(f"no reply within {limit:g}s")
            trio.lowlevel.reschedule(task, outcome.Error(error))


def _lost(exc: BaseException | None) -> ce.ConnectionError:
    if isinstance(exc, ce.ConnectionError):
        return exc
    error = ce.ConnectionError(f"lost the connection to Redis: {exc or 'closed'}")
    error.__cause__ = exc
    return error


class Link:
    """One connection to Redis: a non-blocking socket (or a TLS stream) and its parser."""

    def __init__(self, sock: socket.socket | None, stream: trio.SSLStream[Any] | None) -> None:
        self.sock = sock
        self.stream = stream
        self.parser = Parser()
        self.waiters: collections.deque[_Waiter] = collections.deque()
        #: Bytes written by callers that the kernel has not taken yet (plain sockets).
        self.out = bytearray()
        self.flushing = False
        self.send_lock = trio.Lock()  # TLS only
        self.broken: BaseException | None = None
        #: The connection's `CLIENT ID` (a dedicated one on a plain socket): what
        #: `CLIENT UNBLOCK` names to end its blocking read early. None: not known.
        self.client_id: int | None = None

    # A plain socket is written at once when the kernel takes the bytes (no yield: the
    # writes of concurrent callers never interleave); what is left waits in `out`.
    def write(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        sock = self.sock
        assert sock is not None
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.fail(exc)
            raise _lost(exc) from exc
        if sent < len(data):
            self.out += data[sent:]

    async def flush(self) -> None:
        """Wait until `out` is written (one caller writes; the others wait for it)."""
        sock = self.sock
        assert sock is not None
        if self.flushing:
            return  # another caller writes it: a failure fails every waiter
        self.flushing = True
        try:
            while self.out:
                await trio.lowlevel.wait_writable(sock)
                try:
                    sent = sock.send(self.out)
                except BlockingIOError:
                    continue
                del self.out[:sent]
        except BaseException as exc:
            # Cut midway (cancelled, or the socket failed): the stream is out of step.
            self.fail(exc)
            if isinstance(exc, OSError):
                raise _lost(exc) from exc
            raise
        finally:
            self.flushing = False

    async def send_all(self, data: bytes) -> None:
        """Write `data` whole (a dedicated connection, or a TLS one under its lock)."""
        try:
            if self.stream is not None:
                async with self.send_lock:
                    await self.stream.send_all(data)
            else:
                self.write(data)
                if self.out:
                    await self.flush()
        except BaseException as exc:
            self.fail(exc)
            if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
                raise _lost(exc) from exc
            raise

    async def receive(self) -> bytes:
        """Some bytes from Redis (waits for them)."""
        if self.stream is not None:
            try:
                data = bytes(await self.stream.receive_some(READ_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _lost(exc) from exc
        else:
            sock = self.sock
            assert sock is not None
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _lost(exc) from exc
                break
        if not data:
            raise _lost(None)
        return data

    async def read_reply(self) -> Any:
        """The next reply (a dedicated connection: no reader task)."""
        while True:
            reply = self.parser.next()
            if reply is not NOT_READY:
                return reply
            self.parser.feed(await self.receive())

    async def call(self, *args: Arg) -> Any:
        """One command on a dedicated connection: its reply, an error reply raised."""
        try:
            await self.send_all(encode(args))
            return _raise_error(await self.read_reply())
        except BaseException as exc:
            if not isinstance(exc, ce.RedisError) or isinstance(exc, ce.ConnectionError):
                self.fail(exc)
            raise

    def fail(self, exc: BaseException | None) -> None:
        """Close the connection; every waiting caller gets a `ConnectionError`."""
        if self.broken is None:
            self.broken = exc if exc is not None else _lost(None)
        self.close()
        error = _lost(exc)
        while self.waiters:
            waiter = self.waiters.popleft()
            waiter.result = outcome.Error(error)
            if waiter.parked and waiter.task is not None:
                waiter.parked = False
                trio.lowlevel.reschedule(waiter.task, waiter.result)

    def close(self) -> None:
        if self.broken is None:
            self.broken = _lost(None)
        if self.sock is not None:
            sock, self.sock = self.sock, None
            trio.lowlevel.notify_closing(sock)
            sock.close()
        if self.stream is not None:
            stream, self.stream = self.stream, None
            transport = stream.transport_stream
            if isinstance(transport, trio.SocketStream):
                trio.lowlevel.notify_closing(transport.socket)
                transport.socket.close()


async def open_link(target: Target) -> Link:
    """A connection to `target`, authenticated and on its database. Errors are
    `coredis.exceptions.ConnectionError` (or the AUTH's error)."""
    try:
        with trio.fail_after(target.connect_timeout):
            if target.path is not None:
                stream = await trio.open_unix_socket(target.path)
            else:
                stream = await trio.open_tcp_stream(target.host, target.port)
            if target.ssl_context is not None:
                tls = trio.SSLStream(
                    stream, target.ssl_context, server_hostname=target.server_hostname
                )
                try:
                    await tls.do_handshake()
                except BaseException:
                    stream.socket.close()
                    raise
                link = Link(None, tls)
            else:
                sock = socket.socket(fileno=stream.socket.detach())
                sock.setblocking(False)
                link = Link(sock, None)
            try:
                if target.password is not None:
                    if target.username is not None:
                        await link.call("AUTH", target.username, target.password)
                    else:
                        await link.call("AUTH", target.password)
                if target.db:
                    await link.call("SELECT", target.db)
            except BaseException:
                link.close()
                raise
    except trio.TooSlowError:
        where = target.path or f"{target.host}:{target.port}"
        raise ce.ConnectionError(
            f"cannot connect to Redis at {where} within {target.connect_timeout:g}s"
        ) from None
    except (OSError, trio.BrokenResourceError) as exc:
        where = target.path or f"{target.host}:{target.port}"
        if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
            raise ce.ConnectionError(
                f"TLS handshake with Redis at {where} failed: {exc.__cause__}"
            ) from exc
        raise ce.ConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
    return link


# -- the client -----------------------------------------------------------------------------


class _Pending:
    """A command queued in a `Pipe`: its reply once the pipeline ran (`value`), which
    awaiting gives (an error reply raised), as coredis's pipelines do."""

    __slots__ = ("shape", "value")

    def __init__(self, shape: Any) -> None:
        self.shape = shape
        self.value: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return _raise_error(self.value)
        yield  # a generator that never yields


#: Commands a claim sends again and again (the same consumer, stream and count), encoded
#: once; `_remember` keeps at most `ENCODED_MAX` (then starts again).
_ENCODED: dict[tuple[Any, ...], Any] = {}
ENCODED_MAX = 4096


_E = TypeVar("_E", bytes, tuple[bytes, bytes])


def _remember(key: tuple[Any, ...], encoded: _E) -> _E:
    if len(_ENCODED) >= ENCODED_MAX:
        _ENCODED.clear()
    _ENCODED[key] = encoded
    return encoded


class Pipe:
    """Commands for one round trip (`LeanRedis.run`); each method returns its reply's
    placeholder, filled in after the run, in coredis's shape."""

    #: Set on the lean pipeline's class: `Batcher.fill` tells it from coredis's.
    LEAN = True

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.pending: list[_Pending] = []
        #: The sizes (keys, arguments) of the head of the next `evalsha` (see there).
        self.head_next: tuple[int, int] | None = None

    def __getattr__(self, name: str) -> Any:
        raise Unsupported(f"the lean Redis pipeline has no {name!r} (coredis's has)")

    def _add(self, args: Sequence[Arg], shape: Any = None) -> _Pending:
        self.commands.append(encode(args))
        pending = _Pending(shape)
        self.pending.append(pending)
        return pending

    def _add_encoded(self, data: bytes, shape: Any = None) -> _Pending:
        """`_add` of a command encoded already (once, for many calls: `_ENCODED`)."""
        self.commands.append(data)
        pending = _Pending(shape)
        self.pending.append(pending)
        return pending

    def evalsha(
        self, sha1: str, keys: Sequence[Arg] | None = None, args: Sequence[Arg] | None = None
    ) -> _Pending:
        keys = keys or ()
        args = args or ()
        head = self.head_next
        if head is None:
            return self._add(("EVALSHA", sha1, len(keys), *keys, *args))
        # The call's first keys and arguments are a head common to many calls (a queue's
        # `finish.lua` head, see `Batcher.fill`): encoded once (`_ENCODED`), the rest here.
        self.head_next = None
        n_keys, n_args = head
        key = ("EVALSHA", sha1, tuple(keys[:n_keys]), tuple(args[:n_args]))
        parts = _ENCODED.get(key)
        if parts is None:
            parts = _remember(key, (encode_body(keys[:n_keys]), encode_body(args[:n_args])))
        total = 3 + len(keys) + len(args)
        start = encode_body(("EVALSHA", sha1, len(keys)))
        return self._add_encoded(
            b"".join(
                (
                    b"*%d\r\n" % total,
                    start,
                    parts[0],
                    encode_body(keys[n_keys:]),
                    parts[1],
                    encode_body(args[n_args:]),
                )
            )
        )

    def xack(self, key: str, group: str, identifiers: Iterable[Arg]) -> _Pending:
        return self._add(("XACK", key, group, *identifiers))

    def xdel(self, key: str, identifiers: Iterable[Arg]) -> _Pending:
        return self._add(("XDEL", key, *identifiers))

    def exists(self, keys: Iterable[str]) -> _Pending:
        keys = tuple(keys)
        if len(keys) != 1:
            return self._add(("EXISTS", *keys))
        # One key (a claim's look at its queue's `ranked` key): encoded once (`_ENCODED`).
        key = ("EXISTS", keys[0])
        data = _ENCODED.get(key)
        if data is None:
            data = _remember(key, encode(key))
        return self._add_encoded(data)

    def get(self, key: str) -> _Pending:
        return self._add(("GET", key))

    def expire(self, key: str, seconds: int) -> _Pending:
        return self._add(("EXPIRE", key, seconds), _as_bool)

    def set(
        self,
        key: str,
        value: Arg,
        *,
        ex: int | None = None,
        px: int | None = None,
        condition: Any = None,
    ) -> _Pending:
        args: list[Arg] = ["SET", key, value]
        if ex is not None:
            args += ["EX", ex]
        if px is not None:
            args += ["PX", px]
        if condition is not None:
            args.append(_token(condition))
        return self._add(args, _as_bool)

    def xadd(
        self,
        key: str,
        field_values: Mapping[str, Arg],
        *,
        identifier: Arg | None = None,
        nomkstream: bool | None = None,
        trim_strategy: Any = None,
        threshold: Arg | None = None,
        trim_operator: Any = None,
        limit: int | None = None,
    ) -> _Pending:
        args: list[Arg] = ["XADD", key]
        if nomkstream is not None:
            args.append("NOMKSTREAM")
        if trim_strategy is not None:
            args.append(_token(trim_strategy))
            if trim_operator:
                args.append(_token(trim_operator))
            if threshold is not None:
                args.append(threshold)
        if limit is not None:
            args += ["LIMIT", limit]
        args.append(identifier or "*")
        for field, value in field_values.items():
            args += [field, value]
        return self._add(args)

    def xrevrange(
        self, key: str, end: Arg = "+", start: Arg = "-", count: int | None = None
    ) -> _Pending:
        args: list[Arg] = ["XREVRANGE", key, end, start]
        if count is not None:
            args += ["COUNT", count]
        return self._add(args, stream_entries)

    def xreadgroup_entries(self, group: str, consumer: str, count: int, stream: str) -> _Pending:
        """A non-blocking `XREADGROUP` of one stream's new entries (`>`), answered as a
        list of (id, fields) pairs (not coredis's shape: `group_entries`). Encoded once
        per consumer, stream and count (a claim's: `_ENCODED`)."""
        key = ("XREADGROUP", group, consumer, count, stream)
        data = _ENCODED.get(key)
        if data is None:
            args = _xreadgroup_args(group, consumer, count, None, None, {stream: ">"})
            data = _remember(key, encode(args))
        return self._add_encoded(data, group_entries)

    def xreadgroup(
        self,
        group: str,
        consumer: str,
        *,
        count: int | None = None,
        block: int | None = None,
        noack: bool | None = None,
        streams: Mapping[str, Arg],
    ) -> _Pending:
        if block is not None:
            raise Unsupported("a blocking XREADGROUP does not go in a pipeline")
        return self._add(
            _xreadgroup_args(group, consumer, count, None, noack, streams), multi_stream
        )


def _token(value: Any) -> Arg:
    """A coredis token (`PureToken`, a bytes enum) or a plain str, as an argument."""
    if isinstance(value, (str, bytes)):
        return value
    return str(getattr(value, "value", value))


def _xreadgroup_args(
    group: str,
    consumer: str,
    count: int | None,
    block: int | None,
    noack: bool | None,
    streams: Mapping[str, Arg],
) -> list[Arg]:
    args: list[Arg] = ["XREADGROUP", "GROUP", group, consumer]
    if count is not None:
        args += ["COUNT", count]
    if block is not None:
        args += ["BLOCK", block]
    if noack:
        args.append("NOACK")
    args.append("STREAMS")
    args += list(streams)
    args += list(streams.values())
    return args


class LeanRedis:
    """A Redis client for the hot paths (see the module's docstring); open it with
    `open_lean`. Its command methods mirror coredis's (arguments and reply shapes)."""

    def __init__(self, target: Target, nursery: trio.Nursery) -> None:
        self.target = target
        self._nursery = nursery
        #: Seconds a guarded call waits for its replies (see `run`; 0: no call is
        #: guarded). Set by `Calls` before the first call.
        self.guard = 0.0
        self._link: Link | None = None
        self._connecting = trio.Lock()
        self._free: list[Link] = []
        self._closed = False

    # -- the multiplexed connection ----------------------------------------------------------

    async def _ready_link(self) -> Link:
        link = self._link
        if link is not None and link.broken is None:
            return link
        async with self._connecting:
            link = self._link
            if link is not None and link.broken is None:
                return link
            if self._closed:
                raise ce.ConnectionError("the lean Redis client is closed")
            link = await open_link(self.target)
            self._link = link
            self._nursery.start_soon(self._reader, link)
            if self.guard > 0:
                self._nursery.start_soon(self._watch, link)
            return link

    def guardable(self) -> bool:
        """Whether a call now may be guarded (`run`'s `guard`): the multiplexed connection
        is up, on a plain socket (so `run` does not wait before its write)."""
        link = self._link
        return link is not None and link.broken is None and link.stream is None

    async def _watch(self, link: Link) -> None:
        """Give up the guarded calls on `link` that are past their limit (`NoReply`), at
        their limit. Every guarded call has the same limit and the calls wait in the
        order they were made, so the oldest one still waiting is the next due: the
        watchdog sleeps until it (or, none waiting, a limit: a call made meanwhile is due
        later), and wakes about once a limit however many calls pass. (Looking every half
        limit instead let a call wait up to half its limit more: a 15 s stall of Redis
        went unseen by calls whose limit was 12 s.)"""
        while link.broken is None:
            guard = self.guard
            now = trio.current_time()
            due = now + guard
            for waiter in link.waiters:
                if waiter.due is None or waiter.task is None:
                    continue  # not guarded, or given up (its replies still to drop)
                if waiter.due > now:
                    due = waiter.due
                    break
                waiter.give_up(guard)
            await trio.sleep_until(due)

    async def _reader(self, link: Link) -> None:
        """Parse replies and hand each waiter its own, in order."""
        parser = link.parser
        waiters = link.waiters
        reschedule = trio.lowlevel.reschedule
        try:
            while link.broken is None:
                data = await link.receive()
                parser.feed(data)
                while True:
                    reply = parser.next()
                    if reply is NOT_READY:
                        break
                    if not waiters:
                        raise ce.ProtocolError("Redis sent a reply nobody asked for")
                    waiter = waiters[0]
                    waiter.replies.append(reply)
                    if len(waiter.replies) < waiter.n:
                        continue
                    waiters.popleft()
                    if waiter.task is None:
                        continue  # its caller was cancelled: dropped
                    waiter.result = outcome.Value(waiter.replies)
                    if waiter.parked:
                        waiter.parked = False
                        reschedule(waiter.task, waiter.result)
        except trio.Cancelled:
            link.fail(None)
            raise
        except BaseException as exc:
            link.fail(exc)
            if not isinstance(exc, (Exception,)):
                raise

    async def run(self, commands: Sequence[bytes], guarded: bool = False) -> list[Any]:
        """Encoded commands in one write; their replies (error replies as exceptions).

        `guarded` (when `guardable()`): the call is not cancelled midway, and gives up
        with `NoReply` after `guard` seconds without its replies, as in a shielded cancel
        scope with that deadline, without a scope per call (`Calls.pipelined`)."""
        link = await self._ready_link()
        waiter = _Waiter(trio.lowlevel.current_task(), len(commands))
        if link.stream is None:
            link.waiters.append(waiter)
            link.write(commands[0] if len(commands) == 1 else b"".join(commands))
            if guarded:
                waiter.due = trio.current_time() + self.guard
            if link.out:
                try:
                    if guarded:
                        with trio.CancelScope(shield=True, deadline=waiter.due or 0.0):
                            await link.flush()
                    else:
                        await link.flush()
                except BaseException:
                    waiter.task = None
                    raise
        else:
            try:
                async with link.send_lock:
                    if link.broken is not None:
                        raise _lost(link.broken)
                    link.waiters.append(waiter)
                    await link.stream.send_all(b"".join(commands))
            except BaseException as exc:
                waiter.task = None
                link.fail(exc)
                if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
                    raise _lost(exc) from exc
                raise
        if waiter.result is None:
            waiter.parked = True
            result: list[Any] = await trio.lowlevel.wait_task_rescheduled(waiter.abort)
            return result
        return waiter.result.unwrap()

    async def execute(self, *args: Arg) -> Any:
        """One command on the multiplexed connection: its reply, an error reply raised."""
        (reply,) = await self.run((encode(args),))
        return _raise_error(reply)

    async def run_pipe(self, pipe: Pipe, guarded: bool = False) -> list[Any]:
        """Run a `Pipe`: its replies (error replies as exceptions), also set on each
        placeholder (`guarded`: see `run`)."""
        replies = await self.run(pipe.commands, guarded)
        for pending, reply in zip(pipe.pending, replies, strict=True):
            shape = pending.shape
            if shape is not None and not isinstance(reply, ce.RedisError):
                reply = shape(reply)
            pending.value = reply
        return [pending.value for pending in pipe.pending]

    def pipeline(self) -> Pipe:
        return Pipe()

    # -- dedicated connections (blocking commands) -------------------------------------------

    @property
    def interruptible(self) -> bool:
        """Whether a blocking read cancelled midway ends at once and returns what it
        read (`blocking`): on a plain socket, not TLS (a TLS stream cancelled midway
        breaks)."""
        return self.target.ssl_context is None

    async def blocking(self, *args: Arg, wait: float = 0.0) -> Any:
        """A blocking command on a connection of its own (from the free list); an error
        reply raised. `wait`: the seconds it may block in Redis.

        Cancelled midway on a plain socket (`interruptible`) under `HAND_BACK` (a claim),
        it has Redis end the read at once (`CLIENT UNBLOCK` from the multiplexed
        connection: the read answers as if its time ran out, or with what it took just
        before) and returns that reply, the cancellation left for the caller's next
        checkpoint: a read that took entries always hands them to its caller, and a stop
        does not wait out the read. Otherwise (TLS, a background loop's read), cancelled
        midway, the connection is closed."""
        link = self._free.pop() if self._free else await self._open_blocking()
        done = False
        try:
            try:
                if link.client_id is None or not HAND_BACK.get():
                    reply = await link.call(*args)
                else:
                    reply = await self._interruptible_call(link, args, wait)
            except ce.RedisError as exc:
                done = not isinstance(exc, ce.ConnectionError)  # an error reply: still in step
                raise
            done = True
        finally:
            if done and not self._closed and len(self._free) < FREE_BLOCKING:
                self._free.append(link)
            else:
                link.close()
        return reply

    async def _open_blocking(self) -> Link:
        link = await open_link(self.target)
        if self.interruptible:
            # Not allowed (an ACL): its reads are waited out when cancelled.
            with contextlib.suppress(ce.ResponseError):
                link.client_id = int(await link.call("CLIENT", "ID"))
        return link

    async def _interruptible_call(self, link: Link, args: Sequence[Arg], wait: float) -> Any:
        client_id = link.client_id
        assert client_id is not None
        await link.send_all(encode(args))  # cut midway: the link is failed
        try:
            return _raise_error(await link.read_reply())
        except trio.Cancelled:
            # Shielded: the reply is read whole (the link stays in step) and handed back.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + UNBLOCK_GRACE
                try:
                    await self.execute("CLIENT", "UNBLOCK", client_id)
                except ce.RedisError:
                    # Not allowed, or the multiplexed connection is down: wait out the read.
                    scope.deadline += wait
                reply = _raise_error(await link.read_reply())
            if not scope.cancelled_caught:
                return reply  # the caller's cancellation is delivered at its next checkpoint
            link.fail(None)  # no reply in time: out of step
            raise

    # -- coredis's commands ------------------------------------------------------------------

    async def ping(self) -> str:
        reply: str = await self.execute("PING")
        return reply

    async def script_load(self, script: str) -> str:
        reply: str = await self.execute("SCRIPT", "LOAD", script)
        return reply

    async def evalsha(
        self, sha1: str, keys: Sequence[Arg] | None = None, args: Sequence[Arg] | None = None
    ) -> Any:
        keys = keys or ()
        return await self.execute("EVALSHA", sha1, len(keys), *keys, *(args or ()))

    async def lpop(self, key: str, count: int | None = None) -> Any:
        if count is None:
            return await self.execute("LPOP", key)
        return await self.execute("LPOP", key, count)

    async def blpop(self, keys: Sequence[str], timeout: float) -> list[Any] | None:
        reply: list[Any] | None = await self.blocking("BLPOP", *keys, timeout, wait=timeout)
        return reply

    async def xreadgroup(
        self,
        group: str,
        consumer: str,
        *,
        count: int | None = None,
        block: int | None = None,
        noack: bool | None = None,
        streams: Mapping[str, Arg],
    ) -> dict[Any, tuple[StreamEntry, ...]] | None:
        args = _xreadgroup_args(group, consumer, count, block, noack, streams)
        if block is None:
            return multi_stream(await self.execute(*args))
        return multi_stream(await self.blocking(*args, wait=block / 1000))

    async def xread(
        self, streams: Mapping[str, Arg], *, count: int | None = None, block: int | None = None
    ) -> dict[Any, tuple[StreamEntry, ...]] | None:
        args: list[Arg] = ["XREAD"]
        if count is not None:
            args += ["COUNT", count]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", *streams, *streams.values()]
        if block is None:
            return multi_stream(await self.execute(*args))
        return multi_stream(await self.blocking(*args, wait=block / 1000))

    def close(self) -> None:
        self._closed = True
        if self._link is not None:
            self._link.fail(None)
        while self._free:
            self._free.pop().close()


@asynccontextmanager
async def open_lean(url: str, *, connect_timeout: float) -> AsyncIterator[LeanRedis]:
    """A `LeanRedis` on a plain Redis URL, open for the block (it connects on first use)."""
    target = target_of(url, connect_timeout=connect_timeout)
    async with trio.open_nursery() as nursery:
        client = LeanRedis(target, nursery)
        try:
            yield client
        finally:
            client.close()
            nursery.cancel_scope.cancel()

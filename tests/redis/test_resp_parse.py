"""The lean Redis client's wire layer (`_resp`): command encoding, reply parsing from any
pieces, and error replies mapped to the exceptions coredis raises (no server needed)."""

from __future__ import annotations

from typing import Any

import coredis.exceptions as ce
import pytest
from coredis.tokens import PureToken
from hypothesis import given
from hypothesis import strategies as st

from queueing.brokers.redis import _calls, _resp
from queueing.brokers.redis._resp import (
    NOT_READY,
    Parser,
    Pipe,
    Unsupported,
    encode,
    encode_each,
    error_of,
    group_entries,
    multi_stream,
    target_of,
)

# -- a test-side RESP writer, and the values it stands for ------------------------------------


class Err:
    """An error reply (compared by its text)."""

    def __init__(self, text: str) -> None:
        self.text = text


def resp(value: Any) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, Err):
        return b"-" + value.text.encode() + b"\r\n"
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, tuple):  # a simple string
        return b"+" + value[0].encode() + b"\r\n"
    if isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        return b"$%d\r\n%s\r\n" % (len(data), data)
    return b"*%d\r\n" % len(value) + b"".join(resp(item) for item in value)


def expected(value: Any) -> Any:
    """What the parser gives for `value`."""
    if isinstance(value, Err):
        return ("error", str(error_of(value.text)), type(error_of(value.text)))
    if isinstance(value, tuple):
        return value[0]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        return [expected(item) for item in value]
    return value


def comparable(parsed: Any) -> Any:
    if isinstance(parsed, ce.RedisError):
        return ("error", str(parsed), type(parsed))
    if isinstance(parsed, list):
        return [comparable(item) for item in parsed]
    return parsed


simple_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)
leaves = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.tuples(simple_text),
    st.builds(
        Err,
        st.one_of(
            st.sampled_from(["NOSCRIPT No matching script", "ERR unknown command 'X'"]),
            simple_text.map(lambda t: "ERR " + t),
        ),
    ),
)
replies = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def parse_all(parser: Parser) -> list[Any]:
    out = []
    while (reply := parser.next()) is not NOT_READY:
        out.append(reply)
    return out


@given(st.lists(replies, min_size=1, max_size=4), st.data())
def test_replies_cut_at_any_byte_boundaries_parse_the_same(values: list[Any], data: Any) -> None:
    wire = b"".join(resp(value) for value in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser = Parser()
    got: list[Any] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        parser.feed(wire[start:cut])
        got += parse_all(parser)
        start = cut
    assert [comparable(g) for g in got] == [expected(v) for v in values]


def test_bulk_strings_holding_cr_lf_parse_whole_from_any_cut() -> None:
    values = [b"a\r\nb", b"\r\n", b"\r\n\r\n", b"x\r", b"\ny", b"\r\r\n\n", b""]
    wire = b"".join(resp(value) for value in values) + resp([b"\r\n", [b"1\r\n2"]])
    want = [*(value.decode() for value in values), ["\r\n", ["1\r\n2"]]]
    for cut in range(len(wire) + 1):
        parser = Parser()
        parser.feed(wire[:cut])
        got = parse_all(parser)
        parser.feed(wire[cut:])
        assert got + parse_all(parser) == want


long_values = st.binary(min_size=0, max_size=40).map(
    lambda data: data.replace(b"\r", b"\r\n")  # CR LF inside, often
)


@given(
    st.lists(st.one_of(replies, long_values, st.lists(long_values, max_size=3)), max_size=5),
    st.data(),
)
def test_long_bulk_strings_awaited_whole_parse_the_same_from_any_cuts(
    values: list[Any], data: Any
) -> None:
    # With LONG_BULK this small, most bulk strings here are "long": the parser keeps what
    # comes until their bytes are all here instead of splitting it again at each feed.
    wire = b"".join(resp(value) for value in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_resp, "LONG_BULK", 4)
        parser = Parser()
        got: list[Any] = []
        start = 0
        for cut in [*cuts, len(wire)]:
            parser.feed(wire[start:cut])
            got += parse_all(parser)
            start = cut
    assert [comparable(g) for g in got] == [expected(v) for v in values]


def test_a_long_bulk_string_read_in_small_pieces_is_split_once_it_is_all_here() -> None:
    # 4 MiB in 4 KiB reads, with CR LF inside and a reply after it: the lines held are not
    # joined and split again at each read (that made a reply of N bytes cost O(N^2)).
    value = (b"x" * 1000 + b"\r\n") * 4186
    wire = resp([value, b"after"]) + resp(7)
    parser = Parser()
    got: list[Any] = []
    splits = 0
    for start in range(0, len(wire), 4096):
        before = parser._lines
        parser.feed(wire[start : start + 4096])
        splits += parser._lines is not before
        got += parse_all(parser)
    assert got == [[value.decode(), "after"], 7]
    assert splits <= 3


def test_a_bulk_string_longer_than_its_length_is_a_protocol_error() -> None:
    parser = Parser()
    parser.feed(b"$2\r\nabc\r\n")
    with pytest.raises(ce.ProtocolError, match="not 2 bytes long"):
        parser.next()


def test_every_reply_type() -> None:
    parser = Parser()
    parser.feed(b"+OK\r\n:-7\r\n$6\r\nh\xc3\xa9llo\r\n$-1\r\n*-1\r\n*0\r\n$2\r\n\xff\xfe\r\n")
    parser.feed(b"*3\r\n:1\r\n*1\r\n$1\r\na\r\n-WRONGTYPE Operation against a key\r\n")
    got = parse_all(parser)
    assert got[:7] == ["OK", -7, "h\u00e9llo", None, None, [], b"\xff\xfe"]
    nested = got[7]
    assert nested[:2] == [1, ["a"]]
    assert isinstance(nested[2], ce.WrongTypeError)
    assert str(nested[2]) == "Operation against a key"


def test_a_reply_of_an_unknown_type_is_a_protocol_error() -> None:
    parser = Parser()
    parser.feed(b"?what\r\n")
    with pytest.raises(ce.ProtocolError, match="unexpected RESP reply type"):
        parser.next()


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("NOSCRIPT No matching script.", ce.NoScriptError, "No matching script."),
        ("READONLY You can't write", ce.ReadOnlyError, "You can't write"),
        ("LOADING Redis is loading", ce.BusyLoadingError, "Redis is loading"),
        ("NOGROUP No such key 'q'", ce.StreamConsumerGroupError, "No such key 'q'"),
        ("BUSYGROUP Consumer Group name", ce.StreamDuplicateConsumerGroupError, None),
        ("WRONGPASS invalid username-password pair", ce.AuthenticationFailureError, None),
        ("NOAUTH Authentication required.", ce.AuthenticationRequiredError, None),
        ("ERR unknown command 'FOO'", ce.UnknownCommandError, "unknown command 'FOO'"),
        ("ERR max number of clients reached", ce.ConnectionError, None),
        ("ERR Error running script", ce.ResponseError, "Error running script"),
        ("OOM command not allowed", ce.ResponseError, "OOM command not allowed"),
    ],
)
def test_error_replies_become_coredis_exceptions(
    text: str, kind: type[Exception], message: str | None
) -> None:
    error = error_of(text)
    assert type(error) is kind
    if message is not None:
        assert str(error) == message


def test_the_calls_layer_retries_what_it_retried_under_coredis() -> None:
    assert _calls._retryable(error_of("NOSCRIPT No matching script."))
    assert _calls._retryable(error_of("READONLY You can't write against a read only replica."))
    assert _calls._retryable(error_of("NOGROUP No such key 'q' or consumer group 'g'"))
    assert not _calls._retryable(error_of("BUSYGROUP Consumer Group name already exists"))
    assert not _calls._retryable(error_of("WRONGTYPE Operation against a key"))


def test_encode_takes_coredis_argument_types() -> None:
    assert encode(["SET", b"k\x00", 12, 0.5, PureToken.NX]) == (
        b"*5\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$2\r\n12\r\n$3\r\n0.5\r\n$2\r\nNX\r\n"
    )
    assert encode(["X", "\u00e9"]) == b"*2\r\n$1\r\nX\r\n$2\r\n\xc3\xa9\r\n"


_ARGS = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=127)),
    st.integers(),
    st.booleans(),
    st.binary(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.lists(_ARGS, max_size=12))
def test_encode_writes_what_the_general_encode_writes(args: list[Any]) -> None:
    assert encode(args) == encode_each(args)


@given(
    st.lists(st.text(), max_size=6),
    st.lists(_ARGS, max_size=6),
    st.lists(st.text(), max_size=4),
    st.lists(_ARGS, max_size=4),
)
def test_a_script_call_with_a_head_encoded_once_writes_the_same_command(
    head_keys: list[str], head_args: list[Any], keys: list[str], args: list[Any]
) -> None:
    # (`Batcher.fill` marks a merged `finish.lua` call's head; the second call reuses it.)
    every_key, every_arg = [*head_keys, *keys], [*head_args, *args]
    for _ in range(2):
        pipe = Pipe()
        pipe.head_next = (len(head_keys), len(head_args))
        pipe.evalsha("f" * 40, keys=every_key, args=every_arg)
        assert pipe.head_next is None
        (command,) = pipe.commands
        assert command == encode(["EVALSHA", "f" * 40, len(every_key), *every_key, *every_arg])


def test_encode_names_an_argument_of_another_type() -> None:
    with pytest.raises(TypeError, match=r"str, bytes, int or float, got list \(\[1\]\)"):
        encode(["SET", "k", [1]])


def test_stream_reads_take_coredis_shapes() -> None:
    read = multi_stream([["s", [["1-0", ["a", "1", "b", "2"]], ["2-0", None]]]])
    assert read is not None
    (first, second) = read["s"]
    assert first.identifier == "1-0"
    assert first.field_values == {"a": "1", "b": "2"}
    assert second.field_values is None
    assert multi_stream(None) is None


def test_encode_takes_bools_and_int_and_str_subclasses_as_coredis_does() -> None:
    class Name(str):
        pass

    assert encode([True, Name("k"), 2**70]) == (
        b"*3\r\n$1\r\n1\r\n$1\r\nk\r\n$22\r\n1180591620717411303424\r\n"
    )


def test_a_claims_read_gives_id_and_fields_pairs() -> None:
    reply = [["s", [["1-0", ["env", "{}", "x", "1-0 c"]], ["2-0", None], ["3-0", []]]]]
    assert group_entries(reply) == [("1-0", {"env": "{}", "x": "1-0 c"}), ("2-0", {}), ("3-0", {})]
    assert group_entries(None) == []
    # The same pairs as from coredis's shape (what the claim reads with coredis).
    (entry, _, _) = (multi_stream(reply) or {})["s"]
    assert (entry.identifier, entry.field_values) == group_entries(reply)[0]


def test_a_pipe_without_a_command_says_so() -> None:
    pipe = Pipe()
    with pytest.raises(Unsupported, match="'xautoclaim'"):
        pipe.xautoclaim("s", "g", "c", 0, "0-0")


def test_urls_are_read_as_coredis_reads_them(tmp_path: Any) -> None:
    target = target_of("redis://user:p%40ss@example.org:6390/4", connect_timeout=2)
    assert (target.host, target.port, target.db) == ("example.org", 6390, 4)
    assert (target.username, target.password) == ("user", "p@ss")
    assert target.ssl_context is None
    assert target_of("redis://:secret@h/0", connect_timeout=1).password == "secret"
    unix = target_of("unix:///run/redis.sock?db=2", connect_timeout=1)
    assert (unix.path, unix.db) == ("/run/redis.sock", 2)
    tls = target_of("rediss://h:1/0?ssl_cert_reqs=required", connect_timeout=1)
    assert tls.ssl_context is not None
    import ssl

    assert tls.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert not tls.ssl_context.check_hostname

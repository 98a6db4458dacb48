"""resp: bytes -> Request / Reply / ParseError / Gap.

Tables of well-formed requests and replies, every prefix (stateless: NEED_MORE,
nothing consumed) and every split point (decoder: same frames), invalid input
(ParseError + resync), hostile input (huge lengths, deep nesting, garbage,
pipelining, streamed values, gaps), byte accounting, no payload in reprs, and a
differential check against a real redis-server of what it accepts.
"""

from __future__ import annotations

import itertools
import random

import pytest

from auditor import limits
from auditor.resp import ReplyDecoder, RequestDecoder, State, parse_reply, parse_request, split_inline
from auditor.types import Gap, ParseError, Reply, Request, RespType

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def feed_chunks(dec, chunks: list[bytes], finish: bool = True) -> list:
    """Feed chunk i with ts_ns=i; returns all frames (and finish()'s)."""
    out = []
    for i, c in enumerate(chunks):
        out += dec.feed(c, i)
    if finish:
        out += dec.finish(len(chunks))
    return out


def split_at(data: bytes, *points: int) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def rsum(r: Reply) -> tuple:
    """A reply without sizes and times: (kind, value, count, children)."""
    ch = None if r.children is None else [rsum(c) for c in r.children]
    return (r.kind.name, r.value, r.count, ch)


def key(f) -> tuple:
    """A frame without its timestamp (which depends on the chunking)."""
    if type(f) is Request:
        return ("req", tuple(f.args), None if f.lens is None else tuple(f.lens), f.nbytes, f.inline, f.gap_bytes)
    if type(f) is Reply:
        return ("rep", rsum(f), f.nbytes, f.gap_bytes)
    if type(f) is ParseError:
        return ("err", f.nbytes, f.reason)
    if type(f) is Gap:
        return ("gap", f.nbytes, f.reason)
    raise AssertionError(type(f))


def starts(frames: list) -> list[int]:
    """Stream offset of each frame's first byte (frames are contiguous)."""
    pos, out = 0, []
    for f in frames:
        out.append(pos)
        pos += f.nbytes
    return out


def S(v):  # table shorthand: simple string
    return ("SIMPLE", v, 0, None)


def I(v):  # noqa: E743 - integer
    return ("INTEGER", v, 0, None)


def B(v):  # bulk string
    return ("BULK", v, 0, None)


# ----------------------------------------------------------------------------
# well-formed requests
# ----------------------------------------------------------------------------

BIG = b"v" * 5000
REQUESTS: list[tuple[bytes, list[bytes], list[int] | None, bool]] = [
    (b"*1\r\n$4\r\nPING\r\n", [b"PING"], None, False),
    (b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", [b"SET", b"key", b"value"], None, False),
    (b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", [b"GET", b""], None, False),
    (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\n\r\nb\r\n", [b"SET", b"k", b"a\r\n\r\nb"], None, False),
    (b"*1\r\n$123\r\n" + b"y" * 123 + b"\r\n", [b"y" * 123], None, False),
    (b"*2\r\n$4\r\nECHO\r\n$5000\r\n" + BIG + b"\r\n", [b"ECHO", BIG[: limits.MAX_ARG_KEEP]], [4, 5000], False),
    (b"*12\r\n" + b"$1\r\nx\r\n" * 12, [b"x"] * 12, None, False),
    (b"*1024\r\n" + b"$1\r\nx\r\n" * 1024, [b"x"] * 1024, None, False),
    (b"*1025\r\n" + b"$1\r\nx\r\n" * 1025, [b"x"] * 1025, None, False),
    # what redis-server accepts although it is not canonical RESP: a header line
    # ends at '\r' plus any byte, the 2 bytes after a payload are not checked
    (b"*1\rX$4\rYPING\r\n", [b"PING"], None, False),
    (b"*1\r\n$4\r\nPINGXY", [b"PING"], None, False),
    (b"PING\r\n", [b"PING"], None, True),
    (b"PING\n", [b"PING"], None, True),
    (b"  set  a\tb \r\n", [b"set", b"a", b"b"], None, True),
    (b'SET k "v \\x41\\n\\"q"\r\n', [b"SET", b"k", b'v A\n"q'], None, True),
    (b"SET k 'it\\'s'\r\n", [b"SET", b"k", b"it's"], None, True),
    (b'ECHO a"b c"\r\n', [b"ECHO", b"ab c"], None, True),
    (b'ECHO ""\r\n', [b"ECHO", b""], None, True),
    (b"ECHO a\x0bb\r\n", [b"ECHO", b"a\x0bb"], None, True),
    (b"ECHO " + b"w" * 5000 + b"\r\n", [b"ECHO", b"w" * limits.MAX_ARG_KEEP], [4, 5000], True),
]

IGNORED = [b"\r\n", b"\n", b"   \r\n", b"*0\r\n", b"*-1\r\n", b"*-5\r\n"]


@pytest.mark.parametrize(("wire", "args", "lens", "inline"), REQUESTS)
def test_request_table(wire: bytes, args: list[bytes], lens: list[int] | None, inline: bool) -> None:
    state, f, consumed = parse_request(wire + b"*1\r\n$4\r\nPING\r\n")
    assert state is State.OK
    assert consumed == len(wire)
    assert type(f) is Request
    assert f.args == args
    assert f.lens == lens
    assert f.inline is inline
    assert f.nbytes == len(wire)
    assert f.gap_bytes == 0


@pytest.mark.parametrize("wire", IGNORED)
def test_request_ignored(wire: bytes) -> None:
    assert parse_request(wire) == (State.OK, None, len(wire))
    d = RequestDecoder()
    frames = feed_chunks(d, [wire + b"PING\r\n"])
    assert [key(f) for f in frames] == [("req", (b"PING",), None, 6, True, 0)]
    assert d.ignored_bytes == len(wire)


@pytest.mark.parametrize(("wire", "args", "lens", "inline"), REQUESTS)
def test_request_every_prefix_needs_more(wire: bytes, args: list[bytes], lens: list[int] | None, inline: bool) -> None:
    for i in range(len(wire)):
        assert parse_request(wire[:i]) == (State.NEED_MORE, None, 0), i


@pytest.mark.parametrize("wire", IGNORED)
def test_request_ignored_every_prefix_needs_more(wire: bytes) -> None:
    for i in range(len(wire)):
        assert parse_request(wire[:i]) == (State.NEED_MORE, None, 0), i


STREAM = b"".join(w for w, *_ in REQUESTS)
STREAM_KEYS = [("req", tuple(a), None if ln is None else tuple(ln), len(w), il, 0) for w, a, ln, il in REQUESTS]


def test_request_stream_whole() -> None:
    frames = feed_chunks(RequestDecoder(), [STREAM])
    assert [key(f) for f in frames] == STREAM_KEYS
    assert sum(f.nbytes for f in frames) == len(STREAM)


def test_request_stream_every_split() -> None:
    small = [(w, k) for (w, *_), k in zip(REQUESTS, STREAM_KEYS, strict=True) if len(w) < 1000]
    stream = b"".join(w for w, _ in small)
    for i in range(len(stream) + 1):
        frames = feed_chunks(RequestDecoder(), split_at(stream, i))
        assert [key(f) for f in frames] == [k for _, k in small], i
        assert [f.ts_ns for f in frames] == [0 if s < i else 1 for s in starts(frames)], i
    for i in range(0, len(STREAM) + 1, 7):  # the big ones too, every 7th cut
        frames = feed_chunks(RequestDecoder(), split_at(STREAM, i))
        assert [key(f) for f in frames] == STREAM_KEYS, i
        assert [f.ts_ns for f in frames] == [0 if s < i else 1 for s in starts(frames)], i


def test_request_stream_byte_by_byte() -> None:
    d = RequestDecoder()
    frames = feed_chunks(d, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert [key(f) for f in frames] == STREAM_KEYS
    assert [f.ts_ns for f in frames] == starts(frames)  # ts of the chunk holding the first byte
    assert d.buffered == 0


def test_request_ignored_split_everywhere() -> None:
    stream = b"".join(w + b"*1\r\n$4\r\nPING\r\n" for w in IGNORED)
    for i in range(len(stream) + 1):
        d = RequestDecoder()
        frames = feed_chunks(d, split_at(stream, i))
        assert [f.args for f in frames] == [[b"PING"]] * len(IGNORED), i
        assert d.ignored_bytes == sum(map(len, IGNORED))


def test_request_random_chunkings() -> None:
    rnd = random.Random(1)
    for _ in range(300):
        cuts = sorted(rnd.sample(range(1, len(STREAM)), rnd.randint(1, 40)))
        frames = feed_chunks(RequestDecoder(), split_at(STREAM, *cuts))
        assert [key(f) for f in frames] == STREAM_KEYS


# ----------------------------------------------------------------------------
# invalid requests: a ParseError, then resync on the next command
# ----------------------------------------------------------------------------

PING = b"*1\r\n$4\r\nPING\r\n"
BAD_REQUESTS: list[tuple[bytes, str]] = [
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*\r\n", "invalid multibulk length"),
    (b"*+1\r\n", "invalid multibulk length"),
    (b"*-0\r\n", "invalid multibulk length"),
    (b"*01\r\n$1\r\nx\r\n", "invalid multibulk length"),
    (b"*9223372036854775808\r\n", "invalid multibulk length"),
    (b"*" + b"9" * 40 + b"\r\n", "invalid multibulk length"),
    (b"*%d\r\n" % (limits.MAX_ARRAY_LEN + 1), "invalid multibulk length"),
    (b"*1\r\n$x\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$03\r\nabc\r\n", "invalid bulk length"),
    (b"*1\r\n$ 3\r\nabc\r\n", "invalid bulk length"),
    (b"*1\r\n$9223372036854775808\r\n", "invalid bulk length"),
    (b"*1\r\n$%d\r\n" % (limits.MAX_BULK_LEN + 1), "invalid bulk length"),
    (b"*2\r\n$3\r\nGET\r\n$" + b"1" * 30 + b"\r\n", "invalid bulk length"),
    (b"*1\r\nX4\r\nPING\r\n", "expected '$'"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$'"),
    (b'SET "abc\r\n', "unbalanced quotes in request"),
    (b"SET 'abc\r\n", "unbalanced quotes in request"),
    (b'SET "a"b\r\n', "unbalanced quotes in request"),
    (b"x" * (limits.MAX_INLINE_LEN + 10) + b"\r\n", "too big inline request"),
    (b"ECHO a\x00b\r\n", "NUL in inline request"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_REQUESTS)
def test_request_invalid(bad: bytes, reason: str) -> None:
    state, f, consumed = parse_request(bad + PING)
    assert state is State.INVALID
    assert type(f) is ParseError
    assert f.reason == reason
    assert f.nbytes == consumed == len(bad)
    # alone (no resync point): everything is the error
    state, f, consumed = parse_request(bad)
    assert state is State.INVALID and f.nbytes == consumed == len(bad)


@pytest.mark.parametrize(("bad", "reason"), BAD_REQUESTS)
def test_request_invalid_resyncs(bad: bytes, reason: str) -> None:
    stream = PING + bad + PING + PING
    ping = ("req", (b"PING",), None, 14, False, 0)
    want = [ping, ("err", len(bad), reason), ping, ping]
    assert [key(f) for f in feed_chunks(RequestDecoder(), [stream])] == want
    step = max(1, len(stream) // 300)
    for i in range(0, len(stream) + 1, step):
        assert [key(f) for f in feed_chunks(RequestDecoder(), split_at(stream, i))] == want, i
    if len(stream) < 2000:
        assert [key(f) for f in feed_chunks(RequestDecoder(), [bytes([b]) for b in stream])] == want


def test_request_resync_skips_to_multibulk_start() -> None:
    # after garbage, inline-looking lines are not trusted: only "\n*N\r\n$" resyncs
    stream = b"*1\r\n$zz\r\nSET a b\r\nFLUSHALL\r\n" + PING
    frames = feed_chunks(RequestDecoder(), [stream])
    assert [key(f) for f in frames] == [("err", len(stream) - 14, "invalid bulk length"), key(frames[1])]
    assert frames[1].args == [b"PING"]


def test_request_truncated_at_end() -> None:
    for part in (b"*2\r\n$3\r\nGET\r\n$3\r\nab", b"*2\r\n$3\r", b"PIN", b"*1\r\n$100\r\n" + b"x" * 50):
        d = RequestDecoder()
        assert d.feed(part, 7) == []
        assert [key(f) for f in d.finish(9)] == [("err", len(part), "truncated at end of stream")]
        assert d.buffered == 0
        assert [f.args for f in d.feed(PING, 10)] == [[b"PING"]]  # usable again


# ----------------------------------------------------------------------------
# well-formed replies
# ----------------------------------------------------------------------------

REPLIES: list[tuple[bytes, tuple]] = [
    (b"+OK\r\n", S(b"OK")),
    (b"+\r\n", S(b"")),
    (b"-ERR unknown command\r\n", ("ERROR", b"ERR unknown command", 0, None)),
    (b":0\r\n", I(0)),
    (b":-42\r\n", I(-42)),
    (b":+7\r\n", I(7)),
    (b":9223372036854775807\r\n", I(2**63 - 1)),
    (b":-9223372036854775808\r\n", I(-(2**63))),
    (b"$0\r\n\r\n", B(b"")),
    (b"$5\r\nhello\r\n", B(b"hello")),
    (b"$4\r\na\r\nb\r\n", B(b"a\r\nb")),
    (b"$-1\r\n", ("BULK", None, -1, None)),
    (b"$1000\r\n" + b"z" * 1000 + b"\r\n", B(b"z" * limits.MAX_REPLY_KEEP)),
    (b"+" + b"s" * 600 + b"\r\n", S(b"s" * limits.MAX_REPLY_KEEP)),
    (b"*-1\r\n", ("ARRAY", None, -1, None)),
    (b"*0\r\n", ("ARRAY", None, 0, [])),
    (b"*2\r\n$3\r\nfoo\r\n:1\r\n", ("ARRAY", None, 2, [B(b"foo"), I(1)])),
    (
        b"*3\r\n+OK\r\n-ERR no\r\n$-1\r\n",
        ("ARRAY", None, 3, [S(b"OK"), ("ERROR", b"ERR no", 0, None), ("BULK", None, -1, None)]),
    ),
    (
        b"*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*1\r\n:3\r\n",
        ("ARRAY", None, 2, [("ARRAY", None, 2, [I(1), I(2)]), ("ARRAY", None, 1, [("ARRAY", None, 1, None)])]),
    ),
    (b"_\r\n", ("NULL", None, 0, None)),
    (b"#t\r\n", ("BOOLEAN", True, 0, None)),
    (b"#f\r\n", ("BOOLEAN", False, 0, None)),
    (b",3.14\r\n", ("DOUBLE", b"3.14", 0, None)),
    (b",-inf\r\n", ("DOUBLE", b"-inf", 0, None)),
    (
        b"(3492890328409238509324850943850943825024385\r\n",
        ("BIGNUM", b"3492890328409238509324850943850943825024385", 0, None),
    ),
    (b"(-12\r\n", ("BIGNUM", b"-12", 0, None)),
    (b"!21\r\nSYNTAX invalid syntax\r\n", ("BLOB_ERROR", b"SYNTAX invalid syntax", 0, None)),
    (b"=15\r\ntxt:Some string\r\n", ("VERBATIM", b"txt:Some string", 0, None)),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", ("MAP", None, 2, [S(b"first"), I(1), S(b"second"), I(2)])),
    (b"%0\r\n", ("MAP", None, 0, [])),
    (b"~2\r\n+a\r\n+b\r\n", ("SET", None, 2, [S(b"a"), S(b"b")])),
    (b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", ("PUSH", None, 3, [B(b"message"), B(b"ch"), B(b"hi")])),
    (
        b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
        ("ARRAY", None, 2, [I(2039123), I(9543892)]),
    ),
    (b"*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n", ("ARRAY", None, 2, [I(1), I(2)])),
    (b"|0\r\n+OK\r\n", S(b"OK")),
    (b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n", B(b"Hello word")),
    (b"$?\r\n;0\r\n", B(b"")),
    (b"*?\r\n:1\r\n:2\r\n:3\r\n.\r\n", ("ARRAY", None, 3, [I(1), I(2), I(3)])),
    (b"%?\r\n+a\r\n:1\r\n+b\r\n:2\r\n.\r\n", ("MAP", None, 2, [S(b"a"), I(1), S(b"b"), I(2)])),
    (b"~?\r\n.\r\n", ("SET", None, 0, [])),
    (b">?\r\n+x\r\n.\r\n", ("PUSH", None, 1, [S(b"x")])),
    (b"*1\r\n$?\r\n;2\r\nab\r\n;0\r\n", ("ARRAY", None, 1, [B(b"ab")])),
    (
        b"*2\r\n*?\r\n:1\r\n.\r\n%1\r\n+k\r\n*1\r\n:5\r\n",
        ("ARRAY", None, 2, [("ARRAY", None, 1, [I(1)]), ("MAP", None, 1, [S(b"k"), ("ARRAY", None, 1, None)])]),
    ),
]


@pytest.mark.parametrize(("wire", "want"), REPLIES)
def test_reply_table(wire: bytes, want: tuple) -> None:
    state, f, consumed = parse_reply(wire + b"+OK\r\n")
    assert state is State.OK
    assert consumed == len(wire)
    assert type(f) is Reply
    assert rsum(f) == want
    assert f.nbytes == len(wire)


@pytest.mark.parametrize(("wire", "want"), REPLIES)
def test_reply_every_prefix_needs_more(wire: bytes, want: tuple) -> None:
    for i in range(len(wire)):
        assert parse_reply(wire[:i]) == (State.NEED_MORE, None, 0), i


def test_reply_child_sizes_and_attributes() -> None:
    _, f, _ = parse_reply(b"*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n$2\r\nab\r\n")
    assert [c.nbytes for c in f.children] == [len(b"|1\r\n+ttl\r\n:3600\r\n:1\r\n"), 8]
    assert f.children[0].is_error is False
    _, f, _ = parse_reply(b"!3\r\nERR\r\n")
    assert f.is_error


RSTREAM = b"".join(w for w, _ in REPLIES)
RSTREAM_KEYS = [("rep", want, len(w), 0) for w, want in REPLIES]


def test_reply_stream_whole() -> None:
    frames = feed_chunks(ReplyDecoder(), [RSTREAM])
    assert [key(f) for f in frames] == RSTREAM_KEYS


def test_reply_stream_every_split() -> None:
    for i in range(len(RSTREAM) + 1):
        frames = feed_chunks(ReplyDecoder(), split_at(RSTREAM, i))
        assert [key(f) for f in frames] == RSTREAM_KEYS, i
        assert [f.ts_ns for f in frames] == [0 if s < i else 1 for s in starts(frames)], i


def _check_child_intervals(r: Reply) -> None:
    """Fed one byte per chunk (ts = offset), children lie inside their parent, in order."""
    pos = r.ts_ns
    for c in r.children or []:
        assert pos <= c.ts_ns and c.ts_ns + c.nbytes <= r.ts_ns + r.nbytes
        pos = c.ts_ns + c.nbytes
        _check_child_intervals(c)


def test_reply_stream_byte_by_byte() -> None:
    d = ReplyDecoder()
    frames = feed_chunks(d, [RSTREAM[i : i + 1] for i in range(len(RSTREAM))])
    assert [key(f) for f in frames] == RSTREAM_KEYS
    assert [f.ts_ns for f in frames] == starts(frames)
    for f in frames:
        _check_child_intervals(f)


def test_reply_children_timestamps() -> None:
    wire = b"*3\r\n$1\r\na\r\n$2\r\nbc\r\n:7\r\n"
    child_starts = [4, 11, 19]
    for i in range(len(wire) + 1):
        (f,) = feed_chunks(ReplyDecoder(), split_at(wire, i))
        assert f.ts_ns == (0 if i > 0 else 1)
        assert [c.ts_ns for c in f.children] == [0 if s < i else 1 for s in child_starts], i
        assert [c.nbytes for c in f.children] == [7, 8, 4]


def test_reply_random_chunkings() -> None:
    rnd = random.Random(2)
    for _ in range(300):
        cuts = sorted(rnd.sample(range(1, len(RSTREAM)), rnd.randint(1, 60)))
        assert [key(f) for f in feed_chunks(ReplyDecoder(), split_at(RSTREAM, *cuts))] == RSTREAM_KEYS


def test_reply_children_caps() -> None:
    n = limits.MAX_REPLY_CHILDREN + 5
    _, f, _ = parse_reply(b"*%d\r\n" % n + b":1\r\n" * n)
    assert f.count == n and len(f.children) == limits.MAX_REPLY_CHILDREN
    # grandchildren are kept up to a budget per reply, the rest only counted
    inner = b"*1000\r\n" + b":2\r\n" * 1000
    m = limits.MAX_REPLY_GRANDCHILDREN // 1000 + 3
    _, f, consumed = parse_reply(b"*%d\r\n" % m + inner * m)
    assert consumed == f.nbytes
    assert len(f.children) == m and all(c.count == 1000 for c in f.children)
    assert sum(len(c.children) for c in f.children) == limits.MAX_REPLY_GRANDCHILDREN


# ----------------------------------------------------------------------------
# invalid replies
# ----------------------------------------------------------------------------

OK = b"+OK\r\n"
BAD_REPLIES: list[tuple[bytes, str]] = [
    (b"?foo\r\n", "unknown type byte"),
    (b"hello world\r\n", "unknown type byte"),
    (b"$abc\r\n", "invalid length"),
    (b"$-2\r\n", "invalid length"),
    (b"$03\r\nabc\r\n", "invalid length"),
    (b"*-2\r\n", "invalid length"),
    (b"%-1\r\n", "invalid length"),
    (b"|?\r\n", "invalid length"),
    (b"$9223372036854775808\r\n", "invalid length"),
    (b"*9223372036854775808\r\n", "invalid length"),
    (b"$%d\r\n" % (limits.MAX_BULK_LEN + 1), "invalid length"),
    (b"$3\r\nabcXY\r\n", "bad bulk terminator"),
    (b":abc\r\n", "invalid integer"),
    (b":9223372036854775808\r\n", "invalid integer"),
    (b":\r\n", "invalid integer"),
    (b"#x\r\n", "invalid boolean"),
    (b"_x\r\n", "invalid null"),
    (b",\r\n", "invalid double"),
    (b"(12a\r\n", "invalid double"),
    (b".\r\n", "unexpected end of streamed aggregate"),
    (b"*1\r\n.\r\n", "unexpected end of streamed aggregate"),
    (b"%?\r\n+a\r\n.\r\n", "unexpected end of streamed aggregate"),
    (b";3\r\nabc\r\n", "unexpected streamed string chunk"),
    (b"$?\r\n+OK\r\n", "unexpected streamed string chunk"),
    (b"*2\r\n:1\r\n$x\r\n", "invalid length"),
    (b"+" + b"x" * (limits.MAX_LINE_LEN + 10) + b"\r\n", "line too long"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_REPLIES)
def test_reply_invalid(bad: bytes, reason: str) -> None:
    state, f, consumed = parse_reply(bad + OK)
    assert state is State.INVALID
    assert type(f) is ParseError
    assert f.reason == reason
    assert f.nbytes == consumed == len(bad)
    state, f, consumed = parse_reply(bad)
    assert state is State.INVALID and f.nbytes == consumed == len(bad)


@pytest.mark.parametrize(("bad", "reason"), BAD_REPLIES)
def test_reply_invalid_resyncs(bad: bytes, reason: str) -> None:
    stream = OK + bad + OK + b"$2\r\nhi\r\n"
    want = [("rep", S(b"OK"), 5, 0), ("err", len(bad), reason), ("rep", S(b"OK"), 5, 0), ("rep", B(b"hi"), 8, 0)]
    assert [key(f) for f in feed_chunks(ReplyDecoder(), [stream])] == want
    step = max(1, len(stream) // 300)
    for i in range(0, len(stream) + 1, step):
        assert [key(f) for f in feed_chunks(ReplyDecoder(), split_at(stream, i))] == want, i
    if len(stream) < 2000:
        assert [key(f) for f in feed_chunks(ReplyDecoder(), [bytes([b]) for b in stream])] == want


def test_reply_truncated_at_end() -> None:
    for part in (b"*2\r\n:1\r\n", b"$5\r\nhel", b"+O", b"|1\r\n+a\r\n+b\r\n", b"$?\r\n;2\r\nab\r\n", b"*?\r\n"):
        d = ReplyDecoder()
        assert d.feed(part, 3) == []
        assert [key(f) for f in d.finish(4)] == [("err", len(part), "truncated at end of stream")]
        assert [rsum(f) for f in d.feed(OK, 5)] == [S(b"OK")]


# ----------------------------------------------------------------------------
# hostile input
# ----------------------------------------------------------------------------


def test_hostile_length_2_pow_63() -> None:
    for dec, wire in (
        (RequestDecoder, b"*1\r\n$9223372036854775808\r\n"),
        (RequestDecoder, b"*9223372036854775808\r\n"),
        (ReplyDecoder, b"$9223372036854775808\r\n"),
        (ReplyDecoder, b"*9223372036854775808\r\n"),
    ):
        frames = feed_chunks(dec(), [wire])
        assert [type(f) for f in frames] == [ParseError]
        assert frames[0].nbytes == len(wire)


def test_hostile_nesting_10000() -> None:
    wire = b"*1\r\n" * 10_000 + b":1\r\n"
    d = ReplyDecoder()
    frames = feed_chunks(d, [wire])  # no RecursionError
    assert type(frames[0]) is ParseError and frames[0].reason == "nesting too deep"
    assert frames[0].nbytes >= limits.MAX_NESTING * 4
    assert sum(f.nbytes for f in frames) == len(wire)  # every byte accounted for
    state, f, _ = parse_reply(wire)
    assert state is State.INVALID and f.reason == "nesting too deep"
    # exactly at the limit is fine
    ok = b"*1\r\n" * (limits.MAX_NESTING - 1) + b":1\r\n"
    assert parse_reply(ok)[0] is State.OK


def test_hostile_1mb_garbage_no_newline() -> None:
    garbage = bytes(random.Random(3).choices(b"abcdefghij \t", k=1 << 20))
    for dec in (RequestDecoder, ReplyDecoder):
        d = dec()
        frames, peak = [], 0
        for i in range(0, len(garbage), 16384):
            frames += d.feed(garbage[i : i + 16384], i)
            peak = max(peak, d.buffered)
        assert peak <= limits.MAX_LINE_LEN + 16
        frames += d.feed(b"\r\n" + (PING if dec is RequestDecoder else OK), 99)
        frames += d.finish(100)
        assert [type(f) for f in frames] == [ParseError, Request if dec is RequestDecoder else Reply]
        assert frames[0].nbytes == len(garbage) + 2
    state, f, consumed = parse_request(garbage)
    assert state is State.INVALID and f.reason == "too big inline request" and consumed == len(garbage)


def test_hostile_100k_pipelined() -> None:
    cmd = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$3\r\nxxx\r\n"
    wire = b"".join(cmd % i for i in range(100_000))
    frames = RequestDecoder().feed(wire, 5)
    assert len(frames) == 100_000
    assert frames[-1].args == [b"SET", b"key:%012d" % 99_999, b"xxx"]
    assert sum(f.nbytes for f in frames) == len(wire)
    replies = ReplyDecoder().feed(OK * 100_000, 6)
    assert len(replies) == 100_000


def test_hostile_1mb_value_streams() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % len(value) + value + b"\r\n" + PING
    d = RequestDecoder()
    frames, peak = [], 0
    for i in range(0, len(wire), 16384):
        frames += d.feed(wire[i : i + 16384], i)
        peak = max(peak, d.buffered)
    assert peak < 64 * 1024
    assert [f.args[0] for f in frames] == [b"SET", b"PING"]
    assert frames[0].args[2] == value[: limits.MAX_ARG_KEEP]
    assert frames[0].lens == [3, 1, len(value)]
    assert frames[0].nbytes == len(wire) - len(PING)

    rwire = b"$%d\r\n" % len(value) + value + b"\r\n" + OK
    d = ReplyDecoder()
    frames, peak = [], 0
    for i in range(0, len(rwire), 16384):
        frames += d.feed(rwire[i : i + 16384], i)
        peak = max(peak, d.buffered)
    assert peak < 64 * 1024
    assert [rsum(f) for f in frames] == [B(value[: limits.MAX_REPLY_KEEP]), S(b"OK")]
    assert frames[0].nbytes == len(rwire) - 5


def test_hostile_declared_512mb_streams() -> None:
    d = RequestDecoder()
    assert d.feed(b"*2\r\n$3\r\nSET\r\n$%d\r\n" % limits.MAX_BULK_LEN + b"a" * 100, 1) == []
    for i in range(200):
        assert d.feed(b"b" * 16384, i) == []
    assert d.buffered <= limits.MAX_ARG_KEEP
    assert d.gap(limits.MAX_BULK_LEN - 100 - 200 * 16384, 2) == []
    (f,) = d.feed(b"\r\n", 3)
    assert f.lens == [3, limits.MAX_BULK_LEN] and f.gap_bytes > 0 and f.ts_ns == 1


# ----------------------------------------------------------------------------
# gaps
# ----------------------------------------------------------------------------


def test_gap_inside_request_payload_absorbed() -> None:
    head = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$100000\r\n"
    d = RequestDecoder()
    assert d.feed(head + b"a" * 1000, 10) == []
    assert d.gap(90_000, 11) == []  # absorbed
    frames = d.feed(b"z" * 9000 + b"\r\n" + PING, 12)
    assert [f.args[:2] for f in frames] == [[b"SET", b"key"], [b"PING"]]
    f = frames[0]
    assert f.gap_bytes == 90_000
    assert f.lens == [3, 3, 100_000]
    assert f.nbytes == len(head) + 100_002
    assert f.ts_ns == 10
    assert frames[1].ts_ns == 12


def test_gap_covering_payload_end_absorbed() -> None:
    d = RequestDecoder()
    assert d.feed(b"*2\r\n$4\r\nECHO\r\n$10\r\nabc", 1) == []
    (f,) = d.gap(9, 2)  # the last 7 payload bytes and the "\r\n": completes the command
    assert f.args == [b"ECHO", b"abc"] and f.lens == [4, 10] and f.gap_bytes == 9 and f.ts_ns == 1
    assert f.nbytes == len(b"*2\r\n$4\r\nECHO\r\n$10\r\n") + 12
    assert d.buffered == 0
    assert [g.args for g in d.feed(PING, 3)] == [[b"PING"]]
    assert d.finish(4) == []


def test_gap_inside_reply_payload_absorbed() -> None:
    d = ReplyDecoder()
    assert d.feed(b"*2\r\n:1\r\n$50000\r\n" + b"x" * 100, 1) == []
    assert d.gap(49_000, 2) == []
    (f, ok) = d.feed(b"y" * 900 + b"\r\n" + OK, 3)
    assert f.kind.name == "ARRAY" and f.gap_bytes == 49_000 and f.children[1].gap_bytes == 49_000
    assert f.nbytes == 4 + 4 + 8 + 50_002
    assert f.children[1].value == b"x" * 100  # bytes after the gap are not trusted
    assert rsum(ok) == S(b"OK")


def test_gap_outside_payload_then_resync() -> None:
    d = RequestDecoder()
    part = b"*2\r\n$3\r\nGET\r\n"
    assert d.feed(part, 1) == []
    frames = d.gap(100, 2)
    assert [key(f) for f in frames] == [("gap", 100, "missing")]
    # the data after the gap starts mid-command: skipped up to the next command
    tail = b"ey\r\n$5\r\nvalue\r\n"
    frames = d.feed(tail + PING, 3)
    assert [key(f) for f in frames] == [
        ("err", len(part) + len(tail), "resync after gap"),
        ("req", (b"PING",), None, 14, False, 0),
    ]


def test_gap_at_frame_boundary_is_clean() -> None:
    for dec, msg in ((RequestDecoder, PING), (ReplyDecoder, OK)):
        d = dec()
        d.feed(msg, 1)
        assert [key(f) for f in d.gap(None, 2)] == [("gap", None, "missing")]
        frames = d.feed(msg + msg, 3) + d.finish(4)  # starts right at a frame: nothing skipped
        assert [type(f) for f in frames] == [Request if dec is RequestDecoder else Reply] * 2
        assert [f.ts_ns for f in frames] == [3, 3]


def test_gap_larger_than_payload_drops_frame() -> None:
    d = ReplyDecoder()
    assert d.feed(b"$10\r\nab", 1) == []
    assert [key(f) for f in d.gap(50, 2)] == [("gap", 50, "missing")]
    frames = d.feed(b"garbage\r\n-ERR x\r\n", 3) + d.finish(4)
    assert [key(f) for f in frames] == [("err", 7 + 9, "resync after gap"), ("rep", ("ERROR", b"ERR x", 0, None), 8, 0)]


def test_gap_during_resync_flushes_error() -> None:
    d = RequestDecoder()
    assert d.feed(b"*zz\r\nxxxx", 1) == []
    frames = d.gap(None, 2)
    assert [key(f) for f in frames] == [("err", 9, "invalid multibulk length"), ("gap", None, "missing")]
    assert [f.args for f in d.feed(PING, 3)] == [[b"PING"]]


def test_byte_accounting_with_random_gaps_and_garbage() -> None:
    """Every byte fed or lost is in exactly one frame (or ignored by Redis)."""
    rnd = random.Random(4)
    for dec_cls, stream in ((RequestDecoder, STREAM), (ReplyDecoder, RSTREAM)):
        for _ in range(200):
            data = bytearray(stream)
            for _ in range(rnd.randint(0, 3)):  # garbage
                p = rnd.randrange(len(data))
                data[p:p] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 30)))
            d = dec_cls()
            frames, pos, lost = [], 0, 0
            while pos < len(data):
                n = rnd.randint(1, 200)
                if rnd.random() < 0.05:
                    gap = min(n, len(data) - pos)
                    frames += d.gap(gap, pos)
                    lost += gap
                else:
                    frames += d.feed(bytes(data[pos : pos + n]), pos)
                pos += n
            frames += d.finish(pos)
            total = sum(f.nbytes for f in frames if f.nbytes is not None)
            ignored = d.ignored_bytes if dec_cls is RequestDecoder else 0
            assert total + ignored == len(data), (total, ignored, len(data), lost)


# ----------------------------------------------------------------------------
# no payload bytes in reprs or reasons
# ----------------------------------------------------------------------------

CANARY = b"CANARY-SECRET-123"


def _all_replies(frames):
    for f in frames:
        yield f
        if type(f) is Reply and f.children:
            yield from _all_replies(f.children)


def test_reprs_never_contain_payload() -> None:
    c = CANARY
    req = [
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(c), c, len(c), c),
        b"AUTH " + c + b"\r\n",
        b'SET "' + c + b"\r\n",  # unbalanced quotes
        b"*1\r\n$x" + c + b"\r\n",
        b"*" + c + b"\r\n",
        c * 5000 + b"\r\n",
        b"*1\r\n$" + c + b"\r\n",
        b"*2\r\n$4\r\nAUTH\r\n$20000\r\n" + c * 100,
    ]
    rep = [
        b"$%d\r\n%s\r\n" % (len(c), c),
        b"-ERR " + c + b"\r\n",
        b"+" + c + b"\r\n",
        b"*2\r\n+" + c + b"\r\n$-1\r\n",
        b"%1\r\n+" + c + b"\r\n=21\r\ntxt:" + c + b"\r\n",
        b"(" + c + b"\r\n",
        b"," + c + b"\r\n",
        c + b"\r\n",
        b"$3\r\n" + c + b"\r\n",
        b"$?\r\n;17\r\n" + c + b"\r\n;0\r\n",
    ]
    frames = []
    for w in req:
        frames += feed_chunks(RequestDecoder(), [w])
        frames.append(parse_request(w)[1])
    for w in rep:
        frames += feed_chunks(ReplyDecoder(), [w])
        frames.append(parse_reply(w)[1])
    d = RequestDecoder()
    d.feed(req[-1], 1)
    frames += d.gap(None, 2)
    frames = [f for f in frames if f is not None]
    assert any(type(f) is ParseError for f in frames) and any(type(f) is Reply for f in frames)
    assert any(type(f) is Request and CANARY in f.args for f in frames)  # the canary was parsed...
    text = "\n".join(repr(f) + str(f) for f in _all_replies(frames))
    assert "CANARY" not in text  # ...and never printed
    for f in frames:
        if type(f) is ParseError:
            assert "CANARY" not in f.reason and len(f.reason) < 60


# ----------------------------------------------------------------------------
# sdssplitargs and the real redis-server
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (b"", []),
        (b"a b", [b"a", b"b"]),
        (b'"a\\tb" c', [b"a\tb", b"c"]),
        (b'"\\x4g"', [b"x4g"]),
        (b'"\\xff"', [b"\xff"]),
        (b"'a\\nb'", [b"a\\nb"]),
        (b'"abc', None),
        (b"'abc", None),
        (b'"a"b', None),
        (b"'a'b", None),
        (b'"a"\x0bb', [b"a", b"b"]),
    ],
)
def test_split_inline(line: bytes, want: list[bytes] | None) -> None:
    assert split_inline(line) == want


DIFF_INPUTS = [
    b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n",
    b"*2\rX$4\rYECHO\r\n$3\rZabcQQ",
    b"ECHO plain\r\n",
    b"ECHO plain\n",
    b"\r\n\n  \r\n*0\r\n*-1\r\n*-7\r\nECHO after-ignored\r\n",
    b'ECHO "q\\x41\\n\\"" \r\n',
    b"ECHO 'it\\'s'\r\n",
    b'ECHO a"b c"\r\n',
    b"ECHO a\x00b c\r\n",
    b"ECHO a\x0bb\r\n",
    b"ECHO \x0bb\r\n",
    b"ECHO a\rb\r\n",
    b'ECHO "a\r\n',
    b'ECHO "a"b\r\n',
    b"*1\r\n$x\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$03\r\nabc\r\n",
    b"*01\r\n$4\r\nPING\r\n",
    b"*-0\r\n",
    b"*+1\r\n$4\r\nPING\r\n",
    b"*1\r\nX4\r\nPING\r\n",
    b"*1\r\n$9223372036854775808\r\n",
    b"*9223372036854775808\r\n",
    b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
    b"*2\r\n$4\r\nECHO\r\n$5000\r\n" + b"v" * 5000 + b"\r\n",
    b"*1\r\n$4\r\nPINGXYECHO tail\r\n",
    b"*2\r\n$4\r\nECHO\r\n$3\r\n\x00\r\n\r\n",
    b"*1\x00\r\n$4\r\nPING\r\n",
    b"*1\r\n$4\x00\r\nPING\r\n",
    b"*1\r\x00$4\r\x00PING\r\n",
    b"PING\r\n\r\n*1\r\n$4\r\nPING\r\n   \nPING\n",
    b"*3\r\n$4\r\nECHO\r\n$1\r\na\r\n$1\r\nb\r\n",
    b"*2\r\n$4\r\nECHO\r\n$1\r\na\r\n*2\r\n$4\r\nECHO\r\n:1\r\n",
]


@pytest.mark.parametrize("wire", DIFF_INPUTS)
def test_same_commands_as_redis(redis_server, wire: bytes) -> None:
    """What redis-server runs (or rejects) is what we parse: each ECHO/PING we
    see gets its reply, a ParseError gets "-ERR Protocol error" and a close."""
    conn = redis_server.raw()
    try:
        conn.send(wire + b"*1\r\n$4\r\nQUIT\r\n")
        got = conn.read_until_closed(timeout=1 if b"\x00" in wire else 5)
    finally:
        conn.close()
    replies = [
        (r.kind.name, r.value[:20] if r.kind.name != "ERROR" else r.value[:18]) for r in ReplyDecoder().feed(got, 0)
    ]
    expect = []
    for f in feed_chunks(RequestDecoder(), [wire + b"*1\r\n$4\r\nQUIT\r\n"]):
        if type(f) is ParseError:
            # Redis answers a protocol error and closes, or (a NUL before the end of a
            # line: strchr() never finds it) waits for more; either way nothing more runs
            assert replies[len(expect) :] in ([("ERROR", b"ERR Protocol error")], [])
            assert (replies[len(expect) :] == []) == (b"\x00" in wire)
            replies = replies[: len(expect)]
            break
        name = f.args[0].upper()
        if name == b"ECHO":
            expect.append(("BULK", f.args[1][:20]) if len(f.args) == 2 else ("ERROR", b"ERR wrong number o"))
        elif name == b"PING":
            expect.append(("SIMPLE", b"PONG"))
        elif name == b"QUIT":
            expect.append(("SIMPLE", b"OK"))
    assert replies == expect


@pytest.mark.parametrize("direction", ["request", "reply"])
def test_chunking_never_changes_frames_even_with_garbage(direction: str) -> None:
    """Random mixes of valid messages and corrupted bytes: the frames do not
    depend on where the chunks are cut, and every byte is accounted for."""
    rnd = random.Random(5)
    if direction == "request":
        dec_cls = RequestDecoder
        pieces = [w for w, *_ in REQUESTS] + IGNORED + [b for b, _ in BAD_REQUESTS if len(b) < 1000]
    else:
        dec_cls = ReplyDecoder
        pieces = [w for w, _ in REPLIES] + [b for b, _ in BAD_REPLIES if len(b) < 1000]
    alphabet = b"*$+-:_#,(!=%~|>.;?\r\n0123456789abc\x00 "
    for _ in range(400):
        parts = [rnd.choice(pieces) for _ in range(rnd.randint(1, 8))]
        data = bytearray(b"".join(parts))
        for _ in range(rnd.randint(0, 4)):  # corrupt: insert, overwrite or delete a few bytes
            p = rnd.randrange(len(data) + 1)
            op = rnd.randrange(3)
            junk = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 6)))
            if op == 0:
                data[p:p] = junk
            elif op == 1:
                data[p : p + len(junk)] = junk
            else:
                del data[p : p + len(junk)]
        data = bytes(data)
        d = dec_cls()
        whole = feed_chunks(d, [data])
        ignored = d.ignored_bytes if direction == "request" else 0
        assert sum(f.nbytes for f in whole) + ignored == len(data)
        want = [key(f) for f in whole]
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(1, 30)))) if len(data) > 1 else []
        assert [key(f) for f in feed_chunks(dec_cls(), split_at(data, *cuts))] == want, (data, cuts)
        if len(data) < 600:
            assert [key(f) for f in feed_chunks(dec_cls(), [data[i : i + 1] for i in range(len(data))])] == want, data


# After a gap or garbage the decoders keep a short tail while they look for the next frame; it may hold
# bytes of several reads (the line start a gap implies, small reads). A frame that starts in it has the
# time of the read that brought its first byte, not of the tail's first byte.
REQ_AFTER_RESYNC = [
    (["gap", (b"ail\r\n*1", 300), (b"\r\n$4\r\nPING\r\n", 400)], 300),
    ([(b"\x00garbage\r", 100), (b"\n", 200), (b"*", 300), (b"1\r", 400), (b"\n$4\r\nPING\r\n", 500)], 300),
    (["gap", (b"tail\r\n", 300), (b"*1\r\n$4\r\nPING\r\n", 400)], 400),
    ([(b"\x00garbage\r\n*1", 300), (b"\r\n$4\r\nPING\r\n", 400)], 300),
]
REPLY_AFTER_RESYNC = [
    (["gap", (b"+O", 300), (b"K\r\n", 400)], 300),
    ([(b"\x00garb", 100), (b"\r\n+O", 300), (b"K\r\n", 400)], 300),
    (["gap", (b"garbage\r", 300), (b"\n+OK\r\n", 400)], 400),
]


@pytest.mark.parametrize(
    ("decoder", "steps", "want"),
    [(RequestDecoder, s, w) for s, w in REQ_AFTER_RESYNC] + [(ReplyDecoder, s, w) for s, w in REPLY_AFTER_RESYNC],
)
def test_frame_after_a_resync_has_the_time_of_its_first_byte(decoder: type, steps: list, want: int) -> None:
    d = decoder()
    out: list = []
    for step in steps:
        out += d.gap(10, 250) if step == "gap" else d.feed(*step)
    frames = [f for f in out if type(f) in (Request, Reply)]
    assert [f.ts_ns for f in frames] == [want]


# ----------------------------------------------------------------- replication links (SYNC / PSYNC)

_RDB = b"REDIS0010\xfa\tredis-ver\x067.0.15\xff" + bytes(range(256)) * 3 + b"\r\n\x00tail"
_MARK = b"0123456789abcdef0123456789abcdef01234567"
_STREAM = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"


@pytest.mark.parametrize(
    "wire",
    [
        b"\n\n+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n$%d\r\n%s" % (len(_RDB), _RDB) + _STREAM,
        b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n$EOF:" + _MARK + b"\r\n" + _RDB + _MARK + _STREAM,
        b"$%d\r\n%s" % (len(_RDB), _RDB) + _STREAM,  # SYNC: the RDB file is the reply
    ],
    ids=["psync", "psync-diskless", "sync"],
)
def test_an_rdb_file_on_a_replication_link_is_one_reply_at_any_split(wire: bytes) -> None:
    """Redis sends the RDB file without the final CRLF of a bulk string, or, for diskless replication, as
    "$EOF:<40-byte mark>\\r\\n" + file + mark; the propagated writes follow. Any split of the bytes gives the
    same replies, with every byte counted."""
    whole = ReplyDecoder().feed(wire, 1)
    assert all(isinstance(r, Reply) for r in whole), whole
    assert sum(r.nbytes for r in whole) == len(wire)
    assert [r.kind for r in whole][-2:] == [RespType.ARRAY, RespType.ARRAY]
    rdb = whole[-3]
    assert rdb.kind is RespType.BULK and rdb.nbytes == len(wire) - len(_STREAM) - wire.index(b"$")
    for cut in range(1, len(wire)):
        for cut2 in (cut, min(len(wire), cut + 7)):
            d = ReplyDecoder()
            got = d.feed(wire[:cut], 1) + d.feed(wire[cut:cut2], 2) + d.feed(wire[cut2:], 3)
            assert [(r.kind, r.nbytes) for r in got] == [(r.kind, r.nbytes) for r in whole], cut
            assert d.idle


def test_an_rdb_file_that_ends_the_stream_is_a_reply() -> None:
    """A SYNC client that hangs up once it has the file: the last bytes were the file's, nothing is missing."""
    wire = b"$%d\r\n%s" % (len(_RDB), _RDB)
    d = ReplyDecoder()
    got = d.feed(wire, 1) + d.finish(2)
    assert [(r.kind, r.nbytes) for r in got] == [(RespType.BULK, len(wire))]
    d = ReplyDecoder()
    got = d.feed(wire[:-1], 1) + d.finish(2)  # cut inside the file: truncated
    assert [type(r) for r in got] == [ParseError]


def test_a_bulk_string_that_starts_like_an_rdb_file_keeps_its_crlf() -> None:
    wire = b"$9\r\nREDIS0010\r\n:1\r\n"
    for cut in range(1, len(wire)):
        d = ReplyDecoder()
        got = d.feed(wire[:cut], 1) + d.feed(wire[cut:], 2)
        assert [(r.kind, r.value, r.nbytes) for r in got] == [
            (RespType.BULK, b"REDIS0010", 15),
            (RespType.INTEGER, 1, 4),
        ], cut


# A TLS connection seen from the traffic (replay, sniff): its first bytes are a TLS record header; every byte of the
# direction is then counted in one ParseError at the end, none is parsed (random ciphertext would otherwise resync
# onto look-alike frames), gaps included.
CLIENT_HELLO = bytes.fromhex("160301020001") + bytes(range(256)) * 2
SERVER_HELLO = bytes.fromhex("160303007a02") + b"*1\r\n$4\r\nPING\r\n+OK\r\n" * 20


@pytest.mark.parametrize("decoder", [RequestDecoder, ReplyDecoder])
def test_tls_streams_are_one_counted_error(decoder) -> None:
    d = decoder()
    data = CLIENT_HELLO if decoder is RequestDecoder else SERVER_HELLO
    assert d.feed(data[:5], 1) == [] and d.feed(data[5:], 2) == []
    assert d.gap(100, 3) == [] and d.feed(b"*1\r\n$4\r\nPING\r\n", 4) == []  # looks like RESP: still ciphertext
    (err,) = d.finish(5)
    assert isinstance(err, ParseError) and err.reason.startswith("TLS: encrypted")
    assert (err.ts_ns, err.nbytes) == (1, len(data) + 100 + 14)


def test_tls_header_only_at_the_stream_start() -> None:
    d = RequestDecoder()
    out = d.feed(b"*1\r\n$4\r\nPING\r\n", 1) + d.feed(CLIENT_HELLO[:3] + b"\r\n", 2)
    assert isinstance(out[0], Request) and not any("TLS" in getattr(f, "reason", "") for f in out + d.finish(3))

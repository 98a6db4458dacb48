"""Types that cross stage boundaries, in the order of the data flow.

source --Chunk/ConnOpen/ConnClose/Loss--> stream --Segment/Gap--> resp
--Request/Reply/ParseError--> session --Exchange--> redact --Row--> sink

Nothing that holds payload bytes prints them: every ``__repr__`` here shows
lengths only (DESIGN.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import NamedTuple


class Direction(IntEnum):
    """Which way bytes flow, decided by the connection's role, never by content."""

    TO_SERVER = 0
    TO_CLIENT = 1


class Source(StrEnum):
    EBPF = "ebpf"
    SNIFF = "sniff"
    PCAP = "pcap"


# ----------------------------------------------------------------------------
# source -> stream
# ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnMeta:
    """What is known about a connection when it is first seen."""

    source: Source
    client_addr: str | None = None  # "unix:/path" for Unix sockets
    client_port: int | None = None
    server_addr: str | None = None
    server_port: int | None = None
    server_pid: int | None = None
    server_uid: int | None = None
    server_comm: str | None = None
    client_pid: int | None = None
    client_uid: int | None = None
    client_comm: str | None = None


@dataclass(frozen=True, slots=True)
class ConnOpen:
    """A connection starts. ``mid_stream``: its start was not seen (no SYN /
    not accepted while attached), so user, db and RESP version are unknown."""

    conn: str
    ts_ns: int
    meta: ConnMeta
    mid_stream: bool = False


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of one direction of a connection.

    ``pos`` is the offset of ``data[0]`` in that direction's byte stream.
    ``orig_len > len(data)`` means the bytes after ``data`` (up to
    ``pos + orig_len``) were not captured: the stream turns them into a gap.
    """

    conn: str
    direction: Direction
    pos: int
    ts_ns: int
    data: bytes
    orig_len: int

    def __repr__(self) -> str:
        return (
            f"Chunk(conn={self.conn!r}, dir={self.direction.name}, pos={self.pos}, "
            f"ts_ns={self.ts_ns}, len={len(self.data)}, orig_len={self.orig_len})"
        )


# Chunk's slot descriptors in field order: the C loops (pcapwalk.c, ringdrain.c, lane.c's Feeder) read and
# fill Chunks by slot offset through them. Empty if the fields ever change: those C paths then stay off.
CHUNK_FIELDS = ("conn", "direction", "pos", "ts_ns", "data", "orig_len")
CHUNK_SLOTS = (
    tuple(Chunk.__dict__[f] for f in CHUNK_FIELDS)
    if tuple(Chunk.__dataclass_fields__) == CHUNK_FIELDS
    and all(hasattr(Chunk.__dict__.get(f), "__set__") for f in CHUNK_FIELDS)
    else ()
)


@dataclass(frozen=True, slots=True)
class ConnClose:
    """A connection ends: reason is fin, rst, close, eof, idle or evicted."""

    conn: str
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class Loss:
    """Events or bytes the source could not deliver (kernel ring buffer full,
    packets dropped by the kernel, truncated file). ``conn`` is None when the
    loss cannot be attributed to one connection. ``nbytes`` 0: nothing is missing from the connection's byte
    stream (a TLS connection's ciphertext), so its parsers go on without a resync."""

    conn: str | None
    ts_ns: int
    reason: str
    count: int = 1
    nbytes: int | None = None
    direction: Direction | None = None


@dataclass(frozen=True, slots=True)
class Acked:
    """The peer acknowledged ``direction``'s bytes before ``pos`` (a TCP ACK, from packet sources): a hole before
    ``pos`` will never be filled, since what was received is not sent again. Only sent for connections with a
    hole (``TcpTracker.holes``), so that the bytes buffered behind it are parsed before the peer's answer."""

    conn: str
    direction: Direction
    pos: int
    ts_ns: int


SourceEvent = ConnOpen | Chunk | ConnClose | Loss | Acked


# ----------------------------------------------------------------------------
# stream -> resp
# ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing bytes in one direction. ``nbytes`` None: size unknown."""

    ts_ns: int
    nbytes: int | None
    reason: str = "missing"


# ----------------------------------------------------------------------------
# resp -> session
# ----------------------------------------------------------------------------


class RespType(StrEnum):
    """RESP2/RESP3 type bytes (plus INLINE for inline commands)."""

    SIMPLE = "+"
    ERROR = "-"
    INTEGER = ":"
    BULK = "$"
    ARRAY = "*"
    NULL = "_"
    BOOLEAN = "#"
    DOUBLE = ","
    BIGNUM = "("
    BLOB_ERROR = "!"
    VERBATIM = "="
    MAP = "%"
    SET = "~"
    ATTRIBUTE = "|"
    PUSH = ">"
    INLINE = "inline"


class Request:
    """A client command: its arguments (each at most MAX_ARG_KEEP bytes kept).

    ``lens`` holds the true length of every argument when any was truncated
    (or had a gap inside it); otherwise None and ``len(args[i])`` is true.
    ``gap_bytes`` counts bytes inside arguments that were never captured.
    """

    __slots__ = ("args", "lens", "ts_ns", "nbytes", "inline", "gap_bytes")

    def __init__(
        self,
        args: list[bytes],
        ts_ns: int,
        nbytes: int,
        inline: bool = False,
        lens: list[int] | None = None,
        gap_bytes: int = 0,
    ) -> None:
        self.args = args
        self.ts_ns = ts_ns
        self.nbytes = nbytes
        self.inline = inline
        self.lens = lens
        self.gap_bytes = gap_bytes

    def arg_len(self, i: int) -> int:
        return self.lens[i] if self.lens is not None else len(self.args[i])

    def __repr__(self) -> str:
        lens = [self.arg_len(i) for i in range(len(self.args))]
        return f"Request(nargs={len(self.args)}, lens={lens}, nbytes={self.nbytes}, ts_ns={self.ts_ns})"


class Reply:
    """A server reply or push. ``value``: int for INTEGER, bool for BOOLEAN,
    the first MAX_REPLY_KEEP bytes for other scalars (never stored in the
    trail; used for errors and pub/sub markers), None for NULL/aggregates.
    ``children``: elements of an aggregate (map: keys and values alternate),
    at most MAX_REPLY_CHILDREN kept; ``count`` is the declared element count
    (-1 for a RESP2 null array/bulk)."""

    __slots__ = ("kind", "value", "children", "count", "ts_ns", "nbytes", "gap_bytes")

    def __init__(
        self,
        kind: RespType,
        value: bytes | int | bool | None,
        ts_ns: int,
        nbytes: int,
        children: list[Reply] | None = None,
        count: int = 0,
        gap_bytes: int = 0,
    ) -> None:
        self.kind = kind
        self.value = value
        self.children = children
        self.count = count
        self.ts_ns = ts_ns
        self.nbytes = nbytes
        self.gap_bytes = gap_bytes

    @property
    def is_error(self) -> bool:
        return self.kind is RespType.ERROR or self.kind is RespType.BLOB_ERROR

    def __repr__(self) -> str:
        v = self.value if isinstance(self.value, (int, bool)) or self.value is None else f"<{len(self.value)} bytes>"
        n = None if self.children is None else len(self.children)
        return f"Reply(kind={self.kind.name}, value={v}, children={n}, count={self.count}, nbytes={self.nbytes})"


@dataclass(frozen=True, slots=True)
class ParseError:
    """Bytes that are not RESP: skipped (``nbytes``) up to the next point the
    parser could resync at. ``reason`` never contains payload bytes."""

    ts_ns: int
    nbytes: int
    reason: str


Frame = Request | Reply | ParseError | Gap


# ----------------------------------------------------------------------------
# session -> redact -> sink
# ----------------------------------------------------------------------------


class Event(StrEnum):
    COMMAND = "command"
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    GAP = "gap"
    PARSE_ERROR = "parse_error"
    AUDITOR_START = "auditor_start"
    AUDITOR_STOP = "auditor_stop"


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    NO_REPLY = "no_reply"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Exchange:
    """One audit event before redaction: a paired command, or a lifecycle /
    loss event. Holds raw request bytes: it must go through redact before any
    sink (sinks accept only ``Row``)."""

    event: Event
    conn: str
    ts_ns: int
    meta: ConnMeta | None
    seq: int | None = None
    user: str | None = None
    db: int | None = None
    resp: int | None = None
    request: Request | None = None
    status: Status | None = None
    error: bytes | None = None
    reply_ts_ns: int | None = None
    reply_bytes: int | None = None
    reply_type: str | None = None
    reply_int: int | None = None
    tx: str | None = None
    detail: str | None = None
    lost_bytes: int | None = None
    lost_events: int | None = None

    def __repr__(self) -> str:
        return (
            f"Exchange(event={self.event}, conn={self.conn!r}, seq={self.seq}, "
            f"status={self.status}, request={self.request!r})"
        )


class Row(NamedTuple):
    """One redacted audit row: exactly the columns written (docs/schema.md).
    A tuple, so the sink buffers it as it is."""

    ts_ns: int
    event: str
    source: str
    conn_id: str
    seq: int | None = None
    client_addr: str | None = None
    client_port: int | None = None
    server_addr: str | None = None
    server_port: int | None = None
    server_pid: int | None = None
    server_uid: int | None = None
    client_pid: int | None = None
    client_uid: int | None = None
    client_comm: str | None = None
    user: str | None = None
    db: int | None = None
    command: str | None = None
    subcommand: str | None = None
    keys: list[str] | None = None
    args: list[str] | None = None
    status: str | None = None
    error: str | None = None
    latency_us: float | None = None
    request_bytes: int | None = None
    reply_bytes: int | None = None
    reply_type: str | None = None
    resp: int | None = None
    tx: str | None = None
    acl_categories: list[str] | None = None
    detail: str | None = None
    lost_bytes: int | None = None
    lost_events: int | None = None

"""resp, client side: to_server bytes (and gaps) -> ``Request`` / ``ParseError`` / ``Gap``.

Mirrors what redis-server accepts (networking.c ``processMultibulkBuffer`` /
``processInlineBuffer``), so that a client cannot hide a command from the
audit by sending something Redis runs and we would not parse:

- a request starting with ``*`` is multibulk: ``*N`` then N x ``$len`` + payload.
  Like Redis, a header line ends at its first ``\\r`` plus one byte that is not
  checked, and the two bytes after a payload are skipped unchecked; ``*0`` and
  negative counts are consumed and ignored;
- anything else is an inline command: a line up to ``\\n`` split like
  ``sdssplitargs`` (quotes, ``\\xHH`` escapes); empty lines are skipped; a
  NUL before the newline is an error (Redis's strchr never finds that newline).

What Redis answers with "Protocol error" becomes a ``ParseError`` whose reason
is a fixed text (never payload bytes), followed by a resync to the next
``\\n*<digits>\\r\\n$``: skipped bytes are counted in that ``ParseError``.

The decoder is incremental and bounded: whole frames are parsed straight from
the fed chunk with ``find``/``int``/slices; a frame cut by a chunk boundary
keeps only its unfinished header line (``_stash``) or, inside a payload, the
kept prefix (``MAX_ARG_KEEP``) and a count of the bytes still expected, so a
512 MB value streams through in constant memory and a gap inside it is
absorbed without losing sync.
"""

from __future__ import annotations

import re
from enum import Enum

from auditor import limits
from auditor.types import Gap, ParseError, Request

__all__ = ["RequestDecoder", "State", "parse_ll", "parse_request", "split_inline"]


class State(Enum):
    """Outcome of a stateless parse: a frame, not enough bytes yet, or not RESP."""

    OK = "ok"
    NEED_MORE = "need_more"
    INVALID = "invalid"


_KEEP = limits.MAX_ARG_KEEP
_MAXBULK = limits.MAX_BULK_LEN
_MAXARR = limits.MAX_ARRAY_LEN
# A '*'/'$' header line: its '\r' must come within this many bytes of the type
# byte (MAX_LENGTH_DIGITS digits), or it is invalid without waiting for more.
_HDR = limits.MAX_LENGTH_DIGITS + 2
# An inline line: its '\n' must come within this many bytes.
_INLW = limits.MAX_INLINE_LEN + 2
_INT64_MAX = (1 << 63) - 1
# Fast path: header lines of common sizes, already validated (type byte,
# digits, no leading zero), looked up whole instead of parsed. Anything not in
# these tables goes through the careful parser.
_BULK_HDR = {b"$%d" % i: i for i in range(_KEEP + 1)}
_MB_HDR = {b"*%d" % i: i for i in range(1, 1025)}

# Resync point after invalid input: a line starting a multibulk request whose
# first argument header follows (``\n*N\r\n$``). Longest match, minus one, is
# what must be kept across chunks.
_SYNC = re.compile(rb"\n(?=\*[1-9][0-9]{0,9}\r\n\$)")
_SYNC_TAIL = 15

R_MULTIBULK = "invalid multibulk length"
R_BULK = "invalid bulk length"
R_DOLLAR = "expected '$'"
R_INLINE = "too big inline request"
R_QUOTES = "unbalanced quotes in request"
R_NUL = "NUL in inline request"
R_TRUNCATED = "truncated at end of stream"
R_AFTER_GAP = "resync after gap"
R_TLS = "TLS: encrypted, not readable from the traffic"
# _rs (resync) value of a stream whose first bytes are a TLS record: every byte is counted, none is parsed
_TLS_RS = 2


def is_tls_record(data: bytes) -> bool:
    """The bytes start with a TLS record header (handshake, alert, change-cipher-spec or application data, version
    3.x): what a TLS connection's first bytes are, and never a RESP frame or a command Redis would run."""
    return len(data) >= 3 and 0x14 <= data[0] <= 0x17 and data[1] == 3 and data[2] <= 4


Segs = list[tuple[int, int]]  # (offset, read time) of the pieces of a buffer, in order; the first at offset 0


def _ts_at(segs: Segs, pos: int) -> int:
    """When the byte at ``pos`` was read."""
    when = segs[0][1]
    for off, t in segs:
        if off > pos:
            break
        when = t
    return when


def _segs_from(segs: Segs, t: int, end: int) -> Segs:
    """The pieces of ``buf[t:end]`` (a resync tail) given those of ``buf``."""
    return [(0, _ts_at(segs, t))] + [(off - t, when) for off, when in segs if t < off < end]


def _two_segs(split: int, ts0: int, ts: int) -> Segs:
    """The pieces of a buffer whose bytes before ``split`` were read at ``ts0``, the rest at ``ts``."""
    return [(0, ts0), (split, ts)] if split else [(0, ts)]


def _join_segs(tail_segs: Segs, sp: int, ts: int, data: bytes) -> Segs:
    """The pieces of ``tail + data`` (``sp``: the tail's length; ``data`` read at ``ts``)."""
    return [*tail_segs, (sp, ts)] if data else tail_segs


def parse_ll(s: bytes) -> int | None:
    """Redis ``string2ll``: optional '-', digits, no leading zero, no '+',
    no spaces, at most 20 characters, within int64. None if invalid."""
    n = len(s)
    if n == 0 or n > limits.MAX_LENGTH_DIGITS:
        return None
    if s.isdigit():
        if s[0] == 48 and n > 1:
            return None
        v = int(s)
        return v if v <= _INT64_MAX else None
    if n > 1 and s[0] == 45 and s[1] != 48 and s[1:].isdigit():
        v = -int(s[1:])
        return v if v >= -_INT64_MAX - 1 else None
    return None


# Bytes that make ``bytes.split()`` differ from sdssplitargs.
_SPECIAL = re.compile(b"[\"'\x00\x0b\x0c]")
_SPACE = frozenset(b" \t\n\r\x0b\x0c")  # C isspace()
_ESC = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes] | None:
    """Split an inline command line like Redis's sdssplitargs; None when the
    quotes are unbalanced (Redis: "Protocol error: unbalanced quotes")."""
    if _SPECIAL.search(line) is None:
        return line.split()
    z = line.find(b"\x00")  # a C string: the line ends at NUL
    if z >= 0:
        line = line[:z]
    n = len(line)
    i = 0
    out: list[bytes] = []
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return out
        cur = bytearray()
        inq = insq = False
        while True:
            c = line[i] if i < n else 0
            if inq:
                if c == 92 and i + 3 < n and line[i + 1] == 120 and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(_ESC.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    cur.append(c)
            elif insq:
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    cur.append(c)
            elif i >= n or c in (32, 10, 13, 9):
                if i < n:
                    i += 1
                break
            elif c == 34:
                inq = True
            elif c == 39:
                insq = True
            else:
                cur.append(c)
            i += 1
        out.append(bytes(cur))


class _Bad(Exception):
    """Internal: invalid input at ``epos`` of the buffer being parsed, inside a
    frame that started at stream offset ``fstart`` (read at ``fts``)."""

    def __init__(self, epos: int, fstart: int, fts: int, reason: str) -> None:
        self.epos, self.fstart, self.fts, self.reason = epos, fstart, fts, reason


class RequestDecoder:
    """Incremental decoder of one connection's client -> server bytes.

    ``feed(data, ts_ns)`` returns the frames completed by ``data`` in wire
    order; ``gap(nbytes, ts_ns)`` says bytes were not captured; ``finish`` ends
    the stream (an unfinished frame becomes a counted ``ParseError``). A
    frame's ``ts_ns`` is that of the chunk holding its first byte and its
    ``nbytes`` its exact size on the wire (bytes lost in an absorbed gap
    included).
    """

    __slots__ = (
        "_alen",
        "_args",
        "_err_n",
        "_err_reason",
        "_err_ts",
        "_fstart",
        "_fts",
        "_gapb",
        "_ignored",
        "_keep",
        "_kgap",
        "_lens",
        "_left",
        "_one",
        "_one_pos",
        "_pos",
        "_rem",
        "_rs",
        "_stash",
        "_stash_abs",
        "_stash_ts",
        "_tail",
        "_tail_segs",
        "_virt",
    )

    def __init__(self) -> None:
        self._pos = 0  # stream offset of the next byte fed (gaps of known size included)
        self._ignored = 0  # bytes Redis ignores: empty inline lines, "*0", "*-1"
        # the multibulk request in progress (left > 0)
        self._left = 0
        self._args: list[bytes] | None = None
        self._lens: list[int] | None = None
        self._fstart = 0
        self._fts = 0
        self._gapb = 0
        # the argument payload in progress (rem > 0): bytes expected incl. the 2-byte trailer
        self._rem = 0
        self._alen = 0
        self._keep: bytearray | None = None
        self._kgap = False
        # an unfinished line at a token boundary
        self._stash = bytearray()
        self._stash_ts = 0
        self._stash_abs = 0
        # resync after invalid input or a gap: pending error and a kept tail
        self._rs = False
        self._tail = b""
        self._tail_segs: Segs = []  # (offset in the tail, when its bytes were read)
        self._virt = 0
        self._err_ts = 0
        self._err_n = 0
        self._err_reason = ""
        # stateless mode (parse_request): stop after the first event
        self._one = False
        self._one_pos = -1

    @property
    def ignored_bytes(self) -> int:
        """Bytes Redis itself skips without a command or an error (empty inline
        lines, ``*0``, ``*-1``): not a loss, counted so every byte is accounted for."""
        return self._ignored

    @property
    def buffered(self) -> int:
        """Bytes held for unfinished frames (header line, resync tail, kept prefix)."""
        return len(self._stash) + len(self._tail) + (len(self._keep) if self._keep is not None else 0)

    @property
    def idle(self) -> bool:
        """At a frame boundary with nothing held (the fast lane may take the stream)."""
        return not (self._left or self._rem or self._stash or self._rs or self._tail or self._virt)

    def advance(self, nbytes: int) -> None:
        """``nbytes`` of the stream were read by the fast lane instead."""
        self._pos += nbytes

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes, ts_ns: int) -> list[Request | ParseError]:
        out: list = []
        n = len(data)
        if not n:
            return out
        abs0 = self._pos
        self._pos = abs0 + n
        if self._rs:
            self._resync(data, ts_ns, abs0, out)
            return out
        if not abs0 and is_tls_record(data):
            self._rs = _TLS_RS
            self._err_ts, self._err_n, self._err_reason = ts_ns, n, R_TLS
            return out
        pos = 0
        if self._rem:
            pos = self._payload(data, abs0, out)
            if pos >= n:
                return out
        stash = self._stash
        if stash:
            cap = _HDR if (self._left or stash[0] == 42) else _INLW
            if stash[-1] != 13 and b"\n" not in data and b"\r" not in data and len(stash) + n <= cap:
                stash += data
                return out
            sp = len(stash)
            buf = b"".join((stash, data))
            self._stash = bytearray()
            self._run(buf, 0, ts_ns, sp, self._stash_ts, abs0 - sp, out)
        else:
            self._run(data, pos, ts_ns, 0, ts_ns, abs0, out)
        return out

    def gap(self, nbytes: int | None, ts_ns: int, reason: str = "missing") -> list[Request | ParseError | Gap]:
        """``nbytes`` (None: unknown) of the stream were not captured. Inside a
        payload that still expects at least that many bytes the gap is absorbed
        (the request completes with ``gap_bytes`` and ``lens`` set); otherwise
        the unfinished frame is dropped, a ``Gap`` is returned and the decoder
        resyncs (dropped and skipped bytes go in a following ``ParseError``)."""
        out: list = []
        if nbytes is not None and nbytes <= 0:
            return out
        if self._rs == _TLS_RS:  # unreadable either way: counted with the rest
            self._err_n += nbytes or 0
            self._pos += nbytes or 0
            return out
        if nbytes is not None and nbytes <= self._rem:
            self._rem -= nbytes
            self._gapb += nbytes
            self._kgap = True
            self._pos += nbytes
            if not self._rem:
                self._arg_done(self._pos, out)
            return out
        dropped = 0
        if self._rs:
            self._flush_error(out)
        elif self._left:
            dropped = self._pos - self._fstart
        elif self._stash:
            dropped = self._pos - self._stash_abs
        self._reset()
        out.append(Gap(ts_ns, nbytes, reason))
        if nbytes is not None:
            self._pos += nbytes
        self._rs = True
        self._tail, self._virt, self._tail_segs = b"\n", 1, [(0, ts_ns)]  # the data after a gap starts a line
        self._err_ts, self._err_n, self._err_reason = ts_ns, dropped, R_AFTER_GAP
        return out

    def finish(self, ts_ns: int) -> list[Request | ParseError | Gap]:
        """End of stream: an unfinished frame (or resync) becomes a ParseError."""
        out: list = []
        if self._rs:
            self._flush_error(out)
        elif self._left:
            out.append(ParseError(self._fts, self._pos - self._fstart, R_TRUNCATED))
        elif self._stash:
            out.append(ParseError(self._stash_ts, self._pos - self._stash_abs, R_TRUNCATED))
        self._reset()
        return out

    # --------------------------------------------------------------- internals
    def _reset(self) -> None:
        self._left = self._rem = self._gapb = 0
        self._args = self._lens = self._keep = None
        self._kgap = False
        self._stash = bytearray()
        self._rs = False
        self._tail = b""
        self._virt = 0

    def _flush_error(self, out: list) -> None:
        n = self._err_n + len(self._tail) - self._virt
        if n > 0:
            out.append(ParseError(self._err_ts, n, self._err_reason))
        self._rs = False
        self._tail = b""
        self._virt = 0

    def _payload(self, data: bytes, abs0: int, out: list) -> int:
        """Continue the argument payload in progress; returns bytes consumed."""
        rem = self._rem
        take = rem if rem <= len(data) else len(data)
        keep = self._keep
        if not self._kgap and keep is not None:
            room = _KEEP - len(keep)
            pay = rem - 2
            if room > 0 and pay > 0:
                keep += data[: min(take, pay, room)]
        rem -= take
        self._rem = rem
        if not rem:
            self._arg_done(abs0 + take, out)
        return take

    def _arg_done(self, end_abs: int, out: list) -> None:
        args = self._args
        lens = self._lens
        alen = self._alen
        if alen > _KEEP or self._kgap or lens is not None:
            if lens is None:
                lens = self._lens = [len(a) for a in args]
            lens.append(alen)
        args.append(bytes(self._keep))
        self._keep = None
        self._kgap = False
        self._left -= 1
        if not self._left:
            out.append(Request(args, self._fts, end_abs - self._fstart, False, lens, self._gapb))
            self._args = self._lens = None
            self._gapb = 0

    def _resync(self, data: bytes, ts: int, abs0: int, out: list) -> None:
        if self._rs == _TLS_RS:
            self._err_n += len(data)
            return
        tail = self._tail
        if tail:
            # the tail may hold bytes of several reads (small reads, or the line start after a gap)
            sp = len(tail)
            buf = tail + data
            segs = _join_segs(self._tail_segs, sp, ts, data)
        else:
            sp, buf, segs = 0, data, [(0, ts)]
        virt = self._virt
        self._tail = b""
        self._virt = 0
        pos = self._sync(buf, 0, virt, segs, out)
        if pos >= 0 and self._one_pos < 0:
            # a frame that starts in the tail has the time of the read that brought its first byte
            self._run(buf, pos, ts, sp, _ts_at(segs, pos), abs0 - sp, out)

    def _sync(self, buf: bytes, pos: int, virt: int, segs: Segs, out: list) -> int:
        """Search a resync point from ``pos``: returns where the next frame
        starts (the pending error emitted), or -1 with a tail kept. ``virt``:
        leading bytes of ``buf`` that are not real (a line start after a gap);
        ``segs``: (offset, read time) of the pieces of ``buf``."""
        m = _SYNC.search(buf, pos)
        if m is not None:
            i = m.start() + 1
            self._err_n += i - pos - virt
            if self._err_n > 0:
                out.append(ParseError(self._err_ts, self._err_n, self._err_reason))
                if self._one:
                    self._one_pos = i
            self._rs = False
            return i
        t = max(len(buf) - _SYNC_TAIL, pos)
        real = t - pos - min(virt, t - pos)
        self._err_n += real
        self._tail = buf[t:]
        self._virt = max(virt - (t - pos), 0)
        self._tail_segs = _segs_from(segs, t, len(buf))
        self._rs = True
        return -1

    def _run(self, buf: bytes, pos: int, ts: int, split: int, ts0: int, base: int, out: list) -> None:
        """Parse ``buf[pos:]``; bytes before ``split`` were read at ``ts0``, the
        rest at ``ts``; ``base`` is the stream offset of ``buf[0]``."""
        while True:
            try:
                self._loop(buf, pos, ts, split, ts0, base, out)
                return
            except _Bad as e:
                self._reset()
                self._rs = True
                self._err_ts, self._err_n, self._err_reason = e.fts, base + e.epos - e.fstart, e.reason
                pos = self._sync(buf, e.epos, 0, _two_segs(split, ts0, ts), out)
                if pos < 0 or self._one_pos >= 0:
                    return

    def _loop(self, buf: bytes, pos: int, ts: int, split: int, ts0: int, base: int, out: list) -> None:
        end = len(buf)
        find = buf.find
        one = self._one
        left = self._left
        args = self._args
        lens = self._lens
        fstart = self._fstart
        fts = self._fts
        gapb = self._gapb
        while pos < end:
            if not left:
                t = ts if pos >= split else ts0
                c = buf[pos]
                if c != 42:
                    nxt = self._inline(buf, pos, end, t, base, out)
                    if nxt < 0:
                        break
                    pos = nxt
                    if one:
                        self._one_pos = pos
                        break
                    continue
                try:  # fast path: "*N\r" with N of 1 or 2 digits
                    cr = pos + 2 if buf[pos + 2] == 13 else pos + 3 if buf[pos + 3] == 13 else -1
                except IndexError:
                    cr = -1
                n = _MB_HDR.get(buf[pos:cr]) if cr > 0 else None
                if n is None:
                    cr = find(b"\r", pos + 1, pos + _HDR)
                    if cr < 0 or cr + 1 >= end:
                        if cr < 0 and end - pos >= _HDR:
                            raise _Bad(pos, base + pos, t, R_MULTIBULK)
                        self._stash_at(buf, pos, t, base)
                        break
                    n = parse_ll(buf[pos + 1 : cr])
                    if n is None or n > _MAXARR:
                        raise _Bad(pos, base + pos, t, R_MULTIBULK)
                    if n <= 0:  # Redis ignores "*0" and "*-1"
                        self._ignored += cr + 2 - pos
                        pos = cr + 2
                        if one:
                            self._one_pos = pos
                            break
                        continue
                elif cr + 1 >= end:
                    self._stash_at(buf, pos, t, base)
                    break
                fstart = base + pos
                fts = t
                args = []
                lens = None
                gapb = 0
                left = n
                pos = cr + 2
                if pos >= end:
                    break
            # one argument: "$len\r?" + payload + 2 bytes
            try:  # fast path: "$len\r" with len of 1 or 2 digits
                cr = pos + 2 if buf[pos + 2] == 13 else pos + 3 if buf[pos + 3] == 13 else -1
            except IndexError:
                cr = -1
            ln = _BULK_HDR.get(buf[pos:cr]) if cr > 0 else None
            if ln is None:
                if buf[pos] != 36:
                    raise _Bad(pos, fstart, fts, R_DOLLAR)
                cr = find(b"\r", pos + 1, pos + _HDR)
                if cr < 0 or cr + 1 >= end:
                    if cr < 0 and end - pos >= _HDR:
                        raise _Bad(pos, fstart, fts, R_BULK)
                    self._stash_at(buf, pos, ts if pos >= split else ts0, base)
                    break
                s = buf[pos + 1 : cr]
                if not s.isdigit() or (s[0] == 48 and cr - pos != 2) or len(s) > limits.MAX_LENGTH_DIGITS:
                    raise _Bad(pos, fstart, fts, R_BULK)
                ln = int(s)
                if ln > _MAXBULK:
                    raise _Bad(pos, fstart, fts, R_BULK)
            p = cr + 2
            q = p + ln
            if q + 2 > end:  # the payload continues in later chunks: stream it
                if cr + 1 >= end:
                    self._stash_at(buf, pos, ts if pos >= split else ts0, base)
                    break
                self._alen = ln
                self._rem = q + 2 - end
                self._keep = bytearray(buf[p : min(q, p + _KEEP)])
                self._kgap = False
                pos = end
                break
            if ln <= _KEEP:
                args.append(buf[p:q])
                if lens is not None:
                    lens.append(ln)
            else:
                if lens is None:
                    lens = [len(a) for a in args]
                args.append(buf[p : p + _KEEP])
                lens.append(ln)
            pos = q + 2
            left -= 1
            if not left:
                out.append(Request(args, fts, base + pos - fstart, False, lens, gapb))
                if one:
                    self._one_pos = pos
                    break
        self._left = left
        if left:
            self._args, self._lens, self._fstart, self._fts, self._gapb = args, lens, fstart, fts, gapb
        else:
            self._args = self._lens = None
            self._gapb = 0

    def _stash_at(self, buf: bytes, pos: int, t: int, base: int) -> None:
        self._stash = bytearray(buf[pos:])
        self._stash_ts = t
        self._stash_abs = base + pos

    def _inline(self, buf: bytes, pos: int, end: int, t: int, base: int, out: list) -> int:
        """An inline command line at ``pos``: returns the offset after it, or
        -1 when it is unfinished (stashed)."""
        nl = buf.find(b"\n", pos, pos + _INLW)
        if nl < 0:
            if end - pos >= _INLW:
                raise _Bad(pos, base + pos, t, R_INLINE)
            self._stash_at(buf, pos, t, base)
            return -1
        if buf.find(b"\x00", pos, nl) >= 0:
            # Redis looks for the newline with strchr(), which stops at a NUL: it
            # never sees this line end and runs nothing more on the connection.
            raise _Bad(pos, base + pos, t, R_NUL)
        e = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        nxt = nl + 1
        if e == pos:
            self._ignored += nxt - pos
            return nxt
        line = buf[pos:e]
        args = split_inline(line)
        if args is None:
            out.append(ParseError(t, nxt - pos, R_QUOTES))
        elif not args:
            self._ignored += nxt - pos
        else:
            lens = None
            if e - pos > _KEEP and max(map(len, args)) > _KEEP:
                lens = [len(a) for a in args]
                args = [a[:_KEEP] for a in args]
            out.append(Request(args, t, nxt - pos, True, lens))
        return nxt


def parse_request(buf: bytes) -> tuple[State, Request | ParseError | None, int]:
    """Stateless: the first frame at the start of ``buf``.

    Returns ``(OK, Request, consumed)``; ``(OK, None, consumed)`` for bytes
    Redis skips (an empty line, ``*0``); ``(NEED_MORE, None, 0)`` when ``buf``
    ends inside a frame; ``(INVALID, ParseError, consumed)`` for invalid input,
    consumed up to the next resync point (or the whole buffer).
    """
    d = RequestDecoder()
    d._one = True
    buf = bytes(buf)
    out = d.feed(buf, 0)
    if d._one_pos >= 0:
        f = out[0] if out else None
        return (State.INVALID if type(f) is ParseError else State.OK), f, d._one_pos
    if d._rs:
        out = d.finish(0)
        return State.INVALID, out[0], len(buf)
    return State.NEED_MORE, None, 0

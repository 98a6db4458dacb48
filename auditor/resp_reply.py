"""resp, server side: to_client bytes (and gaps) -> ``Reply`` / ``ParseError`` / ``Gap``.

RESP2 and RESP3: ``+ - : $ * _ # , ( ! = % ~ | >``, null bulk/array
(``$-1``/``*-1``: value None, count -1), streamed strings (``$?`` + ``;N``
chunks) and streamed aggregates (``*? %? ~? >?`` ended by ``.``). Attributes
(``|N``) are parsed and dropped; their bytes count in the reply they precede.

Nesting uses an explicit stack (at most ``MAX_NESTING`` deep, never
recursion). Only what the session reads is built: the top-level reply, its
children and their children (``_KEEP_DEPTH``), at most ``MAX_REPLY_CHILDREN``
per aggregate and ``MAX_REPLY_GRANDCHILDREN`` grandchildren per reply; deeper
elements are only counted. Scalars keep ``MAX_REPLY_KEEP`` bytes; payloads
stream (a gap inside one is absorbed). Invalid input is a ``ParseError``
(fixed reason text) and a resync to the next line that parses as a reply.
"""

from __future__ import annotations

import re

from auditor import limits
from auditor.resp_request import (
    _TLS_RS,
    R_AFTER_GAP,
    R_TLS,
    R_TRUNCATED,
    Segs,
    State,
    _Bad,
    _join_segs,
    _segs_from,
    _ts_at,
    _two_segs,
    is_tls_record,
    parse_ll,
)
from auditor.types import Gap, ParseError, Reply, RespType

__all__ = ["ReplyDecoder", "parse_reply"]

_RKEEP = limits.MAX_REPLY_KEEP
_MAXC = limits.MAX_REPLY_CHILDREN
_BUDGET = limits.MAX_REPLY_GRANDCHILDREN
_MAXBULK = limits.MAX_BULK_LEN
_MAXARR = limits.MAX_ARRAY_LEN
_MAXNEST = limits.MAX_NESTING
# A reply line (type byte, text, "\r\n") must end within this many bytes.
_LW = limits.MAX_LINE_LEN + 3
_CRLF = b"\r\n"
_BULK_HDR = {b"$%d" % i: i for i in range(1025)}  # validated header lines (fast path)

R_TYPE = "unknown type byte"
R_LEN = "invalid length"
R_INT = "invalid integer"
R_BOOL = "invalid boolean"
R_NULL = "invalid null"
R_DOUBLE = "invalid double"
R_TERM = "bad bulk terminator"
R_DEEP = "nesting too deep"
R_LINE = "line too long"
R_END = "unexpected end of streamed aggregate"
R_CHUNK = "unexpected streamed string chunk"

BULK, VERBATIM, BLOB_ERROR = RespType.BULK, RespType.VERBATIM, RespType.BLOB_ERROR
SIMPLE, ERROR, INTEGER, NULL = RespType.SIMPLE, RespType.ERROR, RespType.INTEGER, RespType.NULL
ARRAY, MAP, ATTRIBUTE = RespType.ARRAY, RespType.MAP, RespType.ATTRIBUTE
_PAYLOAD_KIND = {36: BULK, 61: VERBATIM, 33: BLOB_ERROR}
_RDB_MAGIC = b"REDIS"  # an RDB file's first bytes (the SYNC / PSYNC payload)
_AGG_KIND = {42: ARRAY, 37: MAP, 126: RespType.SET, 62: RespType.PUSH, 124: ATTRIBUTE}
_SSTR = "sstr"  # stack level of a streamed string ("$?")
_CHUNK = "chunk"  # payload kind of one ";N" chunk of it
_NO = object()  # "no element to attach"

# Stack level: [kind, children|None, count, left, start, ts, build, gap_bytes]
# left < 0: streamed (ends with "."); build: make a Reply when it completes.

# Resync point: "\r\n" followed by a line that parses as the start of a reply.
_N = str(limits.MAX_LINE_LEN).encode()
_LINE = (
    rb"(?:[$*%~>=!|](?:0|[1-9][0-9]{0,19})|[$*]-1|[$*%~>]\?|:[-+]?(?:0|[1-9][0-9]{0,19})"
    rb"|[+\-][^\r\n]{0," + _N + rb"}|_|#[tf]|,[^\r\n]{1," + _N + rb"}|\([-+]?[0-9]{1," + _N + rb"})\r\n"
)
_SYNC = re.compile(rb"\r\n(?=" + _LINE + rb")")


def _int(s: bytes) -> int | None:
    if s[:1] == b"+":
        s = s[1:]
        if s[:1] == b"-":
            return None
    return parse_ll(s)


class ReplyDecoder:
    """Incremental decoder of one connection's server -> client bytes; same
    API as ``RequestDecoder`` (``feed``, ``gap``, ``finish``, ``buffered``)."""

    __slots__ = (
        "_budget",
        "_err_n",
        "_err_reason",
        "_eof",
        "_eof_start",
        "_eof_tail",
        "_eof_ts",
        "_err_ts",
        "_one",
        "_one_pos",
        "_pbuild",
        "_pend",
        "_pend_ts",
        "_pfrozen",
        "_pgap",
        "_pkeep",
        "_pkind",
        "_pos",
        "_pstart",
        "_pts",
        "_rem",
        "_rs",
        "_skeep",
        "_stack",
        "_stash",
        "_stash_abs",
        "_stash_ts",
        "_tail",
        "_tail_segs",
        "_virt",
    )

    def __init__(self) -> None:
        self._pos = 0  # stream offset of the next byte fed
        self._stack: list[list] = []
        self._pend = -1  # stream offset of a completed attribute awaiting its reply
        self._pend_ts = 0
        self._budget = _BUDGET
        self._skeep: bytearray | None = None  # kept bytes of the streamed string in progress
        # the payload in progress (rem > 0: bytes expected incl. "\r\n")
        self._rem = 0
        self._pkind: object = None
        self._pstart = 0
        self._pts = 0
        self._pbuild = False
        self._pkeep: bytearray | None = None
        self._pgap = 0
        self._pfrozen = False  # a gap hit the payload: stop keeping bytes
        # unfinished line at a token boundary
        self._stash = bytearray()
        self._stash_ts = 0
        self._stash_abs = 0
        # resync
        self._rs = False
        self._tail = b""
        self._tail_segs: Segs = []  # (offset in the tail, when its bytes were read)
        self._virt = 0
        self._err_ts = 0
        self._err_n = 0
        self._err_reason = ""
        self._one = False
        self._one_pos = -1
        # an RDB file sent "$EOF:<40-byte mark>\r\n...<mark>" (diskless replication): the mark
        self._eof = b""
        self._eof_start = 0
        self._eof_ts = 0
        self._eof_tail = b""  # the last bytes read, where the mark may begin

    @property
    def idle(self) -> bool:
        """At a frame boundary with nothing held (the fast lane may take the stream)."""
        busy = self._stack or self._pend >= 0 or self._rem or self._stash or self._rs or self._tail or self._virt
        return not (busy or self._eof)

    def advance(self, nbytes: int) -> None:
        """``nbytes`` of the stream were read by the fast lane instead."""
        self._pos += nbytes

    @property
    def buffered(self) -> int:
        """Bytes held for unfinished frames (line, resync tail, kept prefixes)."""
        n = len(self._stash) + len(self._tail)
        if self._pkeep is not None:
            n += len(self._pkeep)
        if self._skeep is not None:
            n += len(self._skeep)
        return n

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes, ts_ns: int) -> list[Reply | ParseError]:
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
        if self._rem:
            self._payload(data, ts_ns, abs0, out)
            return out
        if self._eof:
            self._eof_payload(data, ts_ns, abs0, out)
            return out
        stash = self._stash
        if stash:
            if b"\n" not in data and len(stash) + n < _LW:
                stash += data
                return out
            sp = len(stash)
            buf = b"".join((stash, data))
            self._stash = bytearray()
            self._run(buf, 0, ts_ns, sp, self._stash_ts, abs0 - sp, out, _NO)
        else:
            self._run(data, 0, ts_ns, 0, ts_ns, abs0, out, _NO)
        return out

    def gap(self, nbytes: int | None, ts_ns: int, reason: str = "missing") -> list[Reply | ParseError | Gap]:
        """Same contract as ``RequestDecoder.gap``."""
        out: list = []
        if nbytes is not None and nbytes <= 0:
            return out
        if self._rs == _TLS_RS:
            self._err_n += nbytes or 0
            self._pos += nbytes or 0
            return out
        if nbytes is not None and nbytes <= self._rem:
            self._rem -= nbytes
            self._pgap += nbytes
            for lv in self._stack:
                lv[7] += nbytes
            self._pos += nbytes
            self._pfrozen = True
            if not self._rem:
                r = self._payload_done(self._pos)
                self._run(b"", 0, ts_ns, 0, ts_ns, self._pos, out, r)
            return out
        dropped = 0
        if self._rs:
            self._flush_error(out)
        else:
            start = self._frame_start()
            if start is not None:
                dropped = self._pos - start[0]
        self._reset()
        out.append(Gap(ts_ns, nbytes, reason))
        if nbytes is not None:
            self._pos += nbytes
        self._rs = True
        self._tail, self._virt, self._tail_segs = _CRLF, 2, [(0, ts_ns)]
        self._err_ts, self._err_n, self._err_reason = ts_ns, dropped, R_AFTER_GAP
        return out

    def finish(self, ts_ns: int) -> list[Reply | ParseError | Gap]:
        """End of stream: an unfinished reply (or resync) becomes a ParseError."""
        out: list = []
        if self._rs:
            self._flush_error(out)
        elif self._rem == 2 and self._rdb():  # an RDB file (SYNC) read whole: no "\r\n" was to come
            r = self._payload_done(self._pos)
            if isinstance(r, Reply):
                out.append(r)
        else:
            start = self._frame_start()
            if start is not None:
                out.append(ParseError(start[1], self._pos - start[0], R_TRUNCATED))
        self._reset()
        return out

    # --------------------------------------------------------------- internals
    def _frame_start(self) -> tuple[int, int] | None:
        """(stream offset, ts) of the unfinished reply, if any."""
        if self._stack:
            return self._stack[0][4], self._stack[0][5]
        if self._pend >= 0:
            return self._pend, self._pend_ts
        if self._rem:
            return self._pstart, self._pts
        if self._stash:
            return self._stash_abs, self._stash_ts
        if self._eof:
            return self._eof_start, self._eof_ts
        return None

    def _reset(self) -> None:
        self._stack.clear()
        self._pend = -1
        self._budget = _BUDGET
        self._skeep = self._pkeep = None
        self._rem = self._pgap = 0
        self._pfrozen = False
        self._stash = bytearray()
        self._rs = False
        self._tail = b""
        self._virt = 0
        self._eof = self._eof_tail = b""

    def _flush_error(self, out: list) -> None:
        n = self._err_n + len(self._tail) - self._virt
        if n > 0:
            out.append(ParseError(self._err_ts, n, self._err_reason))
        self._rs = False
        self._tail = b""
        self._virt = 0

    def _payload(self, data: bytes, ts: int, abs0: int, out: list) -> None:
        """Continue the payload in progress, then parse what follows."""
        rem = self._rem
        take = rem if rem <= len(data) else len(data)
        pay = rem - 2
        keep = self._pkeep
        if pay > 0 and not self._pfrozen:
            if self._pkind is _CHUNK:
                keep = self._skeep
            if keep is not None:
                room = _RKEEP - len(keep)
                if room > 0:
                    keep += data[: min(take, pay, room)]
        j = pay if pay > 0 else 0
        while j < take:  # the "\r\n" after the payload
            if data[j] != _CRLF[j - pay]:
                if j == pay and self._rdb():  # an RDB file: no "\r\n" after it
                    self._rem = 0
                    r = self._payload_done(abs0 + j)
                    self._run(data, j, ts, 0, ts, abs0, out, r)
                    return
                e = _Bad(j, *self._start_or(abs0 + j, ts), R_TERM)
                self._run_bad(data, e, ts, abs0, out)
                return
            j += 1
        rem -= take
        self._rem = rem
        if rem:
            return
        r = self._payload_done(abs0 + take)
        self._run(data, take, ts, 0, ts, abs0, out, r)

    def _rdb(self) -> bool:
        """The payload in progress is an RDB file a replication link sends (SYNC, PSYNC): a top-level bulk
        string that starts with the RDB magic; Redis sends it without the final "\r\n"."""
        keep = self._pkeep
        return not self._stack and self._pkind is BULK and keep is not None and keep[:5] == _RDB_MAGIC

    def _eof_payload(self, data: bytes, ts: int, abs0: int, out: list) -> None:
        """Continue an RDB file sent as "$EOF:<mark>\r\n...<mark>": it ends with the mark."""
        tail = self._eof_tail
        buf = tail + data
        i = buf.find(self._eof)
        if i < 0:
            self._eof_tail = buf[-(len(self._eof) - 1) :]
            return
        end = i + len(self._eof) - len(tail)  # offset in data just after the mark
        r = Reply(BULK, None, self._eof_ts, abs0 + end - self._eof_start)
        self._eof = self._eof_tail = b""
        self._run(data, end, ts, 0, ts, abs0, out, r)

    def _start_or(self, default: int, ts: int) -> tuple[int, int]:
        start = self._frame_start()
        return start if start is not None else (default, ts)

    def _payload_done(self, end_abs: int) -> object:
        """The payload just completed: the element to attach (or _NO for a chunk)."""
        kind = self._pkind
        gap = self._pgap
        self._rem = 0
        self._pfrozen = False
        if kind is _CHUNK:
            return _NO
        keep = self._pkeep
        self._pkeep = None
        self._pgap = 0
        if not self._pbuild:
            return None
        return Reply(kind, bytes(keep), self._pts, end_abs - self._pstart, None, 0, gap)

    def _resync(self, data: bytes, ts: int, abs0: int, out: list) -> None:
        if self._rs == _TLS_RS:
            self._err_n += len(data)
            return
        tail = self._tail
        if tail:
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
            self._run(buf, pos, ts, sp, _ts_at(segs, pos), abs0 - sp, out, _NO)

    def _sync(self, buf: bytes, pos: int, virt: int, segs: Segs, out: list) -> int:
        """Like ``RequestDecoder._sync``, for reply lines."""
        m = _SYNC.search(buf, pos)
        if m is not None:
            i = m.start() + 2
            self._err_n += i - pos - virt
            if self._err_n > 0:
                out.append(ParseError(self._err_ts, self._err_n, self._err_reason))
                if self._one:
                    self._one_pos = i
            self._rs = False
            return i
        # keep what could start a candidate: the last "\r\n" if no line break
        # follows it (but a final '\r'), else a final '\r'
        end = len(buf)
        t = end
        r = buf.rfind(_CRLF, pos)
        if r >= 0 and end - r <= _LW + 2:
            e = end - 1 if buf[end - 1] == 13 else end
            if buf.find(b"\r", r + 2, e) < 0 and buf.find(b"\n", r + 2, e) < 0:
                t = r
        if t == end and end > pos and buf[end - 1] == 13:
            t = end - 1
        real = t - pos - min(virt, t - pos)
        self._err_n += real
        self._tail = buf[t:]
        self._virt = max(virt - (t - pos), 0)
        self._tail_segs = _segs_from(segs, t, end)
        self._rs = True
        return -1

    def _run(self, buf: bytes, pos: int, ts: int, split: int, ts0: int, base: int, out: list, r: object) -> None:
        """Parse ``buf[pos:]`` after attaching ``r`` (an element completed by a
        payload continuation, or _NO); see ``RequestDecoder._run``."""
        try:
            self._loop(buf, pos, ts, split, ts0, base, out, r)
        except _Bad as e:
            self._run_bad(buf, e, ts, base, out, split, ts0)

    def _run_bad(
        self, buf: bytes, e: _Bad, ts: int, base: int, out: list, split: int = 0, ts0: int | None = None
    ) -> None:
        if ts0 is None:
            ts0 = ts
        while True:
            self._reset()
            self._rs = True
            self._err_ts, self._err_n, self._err_reason = e.fts, base + e.epos - e.fstart, e.reason
            pos = self._sync(buf, e.epos, 0, _two_segs(split, ts0, ts), out)
            if pos < 0 or self._one_pos >= 0:
                return
            try:
                self._loop(buf, pos, ts, split, ts0, base, out, _NO)
                return
            except _Bad as e2:
                e = e2

    def _loop(self, buf: bytes, pos: int, ts: int, split: int, ts0: int, base: int, out: list, r: object) -> None:
        end = len(buf)
        find = buf.find
        one = self._one
        stack = self._stack
        pend = self._pend
        pend_ts = self._pend_ts
        budget = self._budget
        while True:
            if r is _NO:
                if pos >= end:
                    break
                tpos = pos
                if pend < 0:
                    s0 = base + pos
                    t = ts if pos >= split else ts0
                else:
                    s0, t, pend = pend, pend_ts, -1
                c = buf[pos]
                ln = None
                if c == 36:  # fast path: "$len\r\n" with len of 1 or 2 digits
                    try:
                        nl = pos + 2 if buf[pos + 2] == 13 else pos + 3 if buf[pos + 3] == 13 else -1
                        if nl > 0 and buf[nl + 1] == 10:
                            ln = _BULK_HDR.get(buf[pos:nl])
                    except IndexError:
                        pass
                if ln is None:
                    nl = find(b"\r\n", pos + 1, pos + _LW)
                if nl < 0:
                    if end - pos >= _LW:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_LINE)
                    self._stash = bytearray(buf[pos:])
                    self._stash_ts = ts if pos >= split else ts0
                    self._stash_abs = base + pos
                    if s0 != base + pos:  # keep the attribute before it
                        pend, pend_ts = s0, t
                    break
                if stack:
                    top = stack[-1]
                    ch = top[1]
                    build = ch is not None and len(ch) < _MAXC and (budget > 0 or len(stack) == 1)
                    if top[0] is _SSTR and c != 59:
                        raise _Bad(pos, stack[0][4], stack[0][5], R_CHUNK)
                else:
                    build = True
                if c == 36 or c == 61 or c == 33:  # $ = !  (payload)
                    if ln is not None:
                        pass
                    elif (s := buf[pos + 1 : nl]).isdigit() and (s[0] != 48 or nl - pos == 2):
                        ln = int(s)
                        if ln > _MAXBULK:
                            raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_LEN)
                    elif c == 36 and s == b"-1":
                        pos = nl + 2
                        r = Reply(BULK, None, t, base + pos - s0, None, -1) if build else None
                        ln = -1
                    elif c == 36 and not stack and len(s) == 44 and s[:4] == b"EOF:":
                        # an RDB file of unknown length (diskless replication), ended by this mark
                        self._eof, self._eof_start, self._eof_ts, self._eof_tail = s[4:], s0, t, b""
                        self._eof_payload(buf[nl + 2 :], ts if nl + 2 >= split else ts0, base + nl + 2, out)
                        return
                    elif c == 36 and s == b"?":
                        if len(stack) >= _MAXNEST:
                            raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_DEEP)
                        stack.append([_SSTR, None, 0, -1, s0, t, build, 0])
                        self._skeep = bytearray()
                        pos = nl + 2
                        continue
                    else:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_LEN)
                    if ln >= 0:
                        p = nl + 2
                        q = p + ln
                        kind = _PAYLOAD_KIND[c]
                        if q + 2 <= end and buf[q] == 13 and buf[q + 1] == 10:
                            pos = q + 2
                        elif (q < end and buf[q] != 13) or q + 2 <= end:  # a bad terminator
                            if stack or c != 36 or buf[q] == 13 or buf[p : p + 5] != _RDB_MAGIC:
                                raise _Bad(q, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_TERM)
                            pos = q  # an RDB file (replication link): Redis sends no "\r\n" after it
                        else:  # stream the payload
                            self._rem = q + 2 - end
                            self._pkind = kind
                            self._pstart = s0
                            self._pts = t
                            self._pbuild = build
                            self._pkeep = bytearray(buf[p : min(q, p + _RKEEP)]) if build else None
                            self._pgap = 0
                            pos = end
                            break
                        if build:
                            r = Reply(kind, buf[p:q] if ln <= _RKEEP else buf[p : p + _RKEEP], t, base + pos - s0)
                        else:
                            r = None
                elif c == 43 or c == 45:  # + -
                    pos = nl + 2
                    if build:
                        v = buf[tpos + 1 : nl] if nl - tpos <= _RKEEP else buf[tpos + 1 : tpos + 1 + _RKEEP]
                        r = Reply(SIMPLE if c == 43 else ERROR, v, t, base + pos - s0)
                    else:
                        r = None
                elif c == 58:  # :
                    s = buf[pos + 1 : nl]
                    v = int(s) if s.isdigit() and (s[0] != 48 or nl - pos == 2) and nl - pos < 20 else _int(s)
                    if v is None:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_INT)
                    pos = nl + 2
                    r = Reply(INTEGER, v, t, base + pos - s0) if build else None
                elif c == 42 or c == 37 or c == 126 or c == 62 or c == 124:  # * % ~ > |
                    s = buf[pos + 1 : nl]
                    kind = _AGG_KIND[c]
                    if s.isdigit() and (s[0] != 48 or nl - pos == 2):
                        n = int(s)
                        if n > _MAXARR:
                            raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_LEN)
                    elif s == b"-1" and c == 42:
                        n = -2
                    elif s == b"?" and c != 124:
                        n = -1
                    else:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_LEN)
                    pos = nl + 2
                    if n == -2:
                        r = Reply(ARRAY, None, t, base + pos - s0, None, -1) if build else None
                    elif c == 124:
                        if n == 0:
                            pend, pend_ts = s0, t
                            continue
                        if len(stack) >= _MAXNEST:
                            raise _Bad(tpos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_DEEP)
                        stack.append([ATTRIBUTE, None, n, 2 * n, s0, t, False, 0])
                        continue
                    elif n == 0:
                        r = Reply(kind, None, t, base + pos - s0, [] if len(stack) < 2 else None, 0) if build else None
                    else:
                        if len(stack) >= _MAXNEST:
                            raise _Bad(tpos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_DEEP)
                        keep = [] if build and len(stack) < 2 else None
                        if n < 0:
                            stack.append([kind, keep, 0, -1, s0, t, build, 0])
                            continue
                        left = 2 * n if c == 37 else n
                        if stack or keep is None:
                            stack.append([kind, keep, n, left, s0, t, build, 0])
                            continue
                        # fast path for a top-level aggregate (MGET, LRANGE, HGETALL, a
                        # pub/sub message): its children that are short bulk strings
                        # whole in the buffer; anything else goes to the general path
                        m = left if left < _MAXC else _MAXC
                        while m:
                            try:
                                nl = pos + 2 if buf[pos + 2] == 13 else pos + 3 if buf[pos + 3] == 13 else 0
                                ln = _BULK_HDR.get(buf[pos:nl]) if nl and buf[nl + 1] == 10 else None
                            except IndexError:
                                break
                            if ln is None:
                                break
                            p = nl + 2
                            q = p + ln
                            if q + 2 > end or buf[q] != 13 or buf[q + 1] != 10:
                                break
                            v = buf[p:q] if ln <= _RKEEP else buf[p : p + _RKEEP]
                            keep.append(Reply(BULK, v, ts if pos >= split else ts0, q + 2 - pos))
                            pos = q + 2
                            m -= 1
                            left -= 1
                        if left:
                            stack.append([kind, keep, n, left, s0, t, build, 0])
                            continue
                        r = Reply(kind, None, t, base + pos - s0, keep, n)
                elif c == 95:  # _
                    if nl != pos + 1:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_NULL)
                    pos = nl + 2
                    r = Reply(NULL, None, t, base + pos - s0) if build else None
                elif c == 35:  # #
                    s = buf[pos + 1 : nl]
                    if s != b"t" and s != b"f":
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_BOOL)
                    pos = nl + 2
                    r = Reply(RespType.BOOLEAN, s == b"t", t, base + pos - s0) if build else None
                elif c == 44 or c == 40:  # , (
                    s = buf[pos + 1 : nl]
                    if not s or (c == 40 and not (s[1:] if s[0] in b"+-" else s).isdigit()):
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_DOUBLE)
                    pos = nl + 2
                    if build:
                        kind = RespType.DOUBLE if c == 44 else RespType.BIGNUM
                        r = Reply(kind, s[:_RKEEP], t, base + pos - s0)
                    else:
                        r = None
                elif c == 46:  # . end of a streamed aggregate
                    if nl != pos + 1 or not stack or stack[-1][3] >= 0 or stack[-1][0] is _SSTR:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_END)
                    top = stack[-1]
                    elems = -1 - top[3]
                    if top[0] is MAP and elems & 1:
                        raise _Bad(pos, stack[0][4], stack[0][5], R_END)
                    stack.pop()
                    pos = nl + 2
                    if top[6]:
                        cnt = elems // 2 if top[0] is MAP else elems
                        r = Reply(top[0], None, top[5], base + pos - top[4], top[1], cnt, top[7])
                    else:
                        r = None
                elif c == 59:  # ; chunk of a streamed string
                    if not stack or stack[-1][0] is not _SSTR:
                        raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_CHUNK)
                    s = buf[pos + 1 : nl]
                    if not s.isdigit() or (s[0] == 48 and nl - pos != 2) or int(s) > _MAXBULK:
                        raise _Bad(pos, stack[0][4], stack[0][5], R_LEN)
                    ln = int(s)
                    p = nl + 2
                    if ln == 0:
                        top = stack.pop()
                        pos = p
                        skeep = self._skeep
                        self._skeep = None
                        r = Reply(BULK, bytes(skeep), top[5], base + pos - top[4], None, 0, top[7]) if top[6] else None
                    else:
                        q = p + ln
                        skeep = self._skeep
                        room = _RKEEP - len(skeep)
                        if q + 2 > end:
                            if end > q and buf[q] != 13:
                                raise _Bad(q, stack[0][4], stack[0][5], R_TERM)
                            if room > 0:
                                skeep += buf[p : min(q, p + room)]
                            self._rem = q + 2 - end
                            self._pkind = _CHUNK
                            self._pgap = 0
                            pos = end
                            break
                        if buf[q] != 13 or buf[q + 1] != 10:
                            raise _Bad(q, stack[0][4], stack[0][5], R_TERM)
                        if room > 0:
                            skeep += buf[p : min(q, p + room)]
                        pos = q + 2
                        continue
                elif c == 10 and not stack:  # a replication link's keep-alive: counted with the next reply
                    pend, pend_ts = s0, t
                    pos += 1
                    continue
                else:
                    raise _Bad(pos, *((stack[0][4], stack[0][5]) if stack else (s0, t)), R_TYPE)
            # attach r, an element that ended at pos, to its parent (or emit it)
            while stack:
                top = stack[-1]
                if r is not None:
                    top[1].append(r)
                    if len(stack) > 1:
                        budget -= 1
                left = top[3] - 1
                top[3] = left
                if left:
                    break
                stack.pop()
                if top[0] is ATTRIBUTE:
                    pend, pend_ts = top[4], top[5]
                    break
                r = Reply(top[0], None, top[5], base + pos - top[4], top[1], top[2], top[7]) if top[6] else None
            else:
                out.append(r)
                budget = _BUDGET
                if one:
                    self._one_pos = pos
                    r = _NO
                    break
            r = _NO
        self._pend = pend
        self._pend_ts = pend_ts
        self._budget = budget


def parse_reply(buf: bytes) -> tuple[State, Reply | ParseError | None, int]:
    """Stateless: the first reply at the start of ``buf`` (attributes before it
    included). ``(OK, Reply, consumed)``, ``(NEED_MORE, None, 0)`` or
    ``(INVALID, ParseError, consumed)`` as for ``parse_request``."""
    d = ReplyDecoder()
    d._one = True
    buf = bytes(buf)
    out = d.feed(buf, 0)
    if d._one_pos >= 0:
        f = out[0]
        return (State.INVALID if type(f) is ParseError else State.OK), f, d._one_pos
    if d._rs:
        out = d.finish(0)
        return State.INVALID, out[0], len(buf)
    return State.NEED_MORE, None, 0

"""pipeline: SourceEvents -> Rows in the sink; the one place the stages meet.

For each connection: two Streams (reassembly), a RequestDecoder and a
ReplyDecoder (RESP), and a Session (pairing). Sessions emit Exchanges, the
Redactor turns them into Rows, the sink writes them. Every source (pcap file,
live sniff, eBPF) feeds this same object, so what is tested on pcaps holds live.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from auditor import fastlane, limits
from auditor.redact import Redactor
from auditor.resp import ReplyDecoder, RequestDecoder
from auditor.resp_request import parse_request
from auditor.session import Session
from auditor.stream import Stream
from auditor.types import (
    Acked,
    Chunk,
    ConnClose,
    ConnMeta,
    ConnOpen,
    Direction,
    Event,
    Exchange,
    Gap,
    Loss,
    ParseError,
    Reply,
    Request,
    Row,
    Source,
    SourceEvent,
    Status,
)


@dataclass(slots=True)
class Totals:
    """What the CLI summary shows; every loss has a counter here."""

    connections: int = 0
    mid_stream: int = 0
    commands: int = 0
    errors: int = 0
    no_reply: int = 0
    unknown: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    truncated: int = 0  # command rows whose request or reply was not captured whole (lost_bytes)
    truncated_bytes: int = 0
    parse_errors: int = 0
    unmatched_replies: int = 0
    pushes: int = 0
    evicted: int = 0
    lost_events: int = 0
    rows: int = 0
    by_command: dict[str, int] = field(default_factory=dict)
    by_user: dict[str, int] = field(default_factory=dict)


class _Conn:
    __slots__ = ("fast", "lane", "rep_dec", "rep_stream", "req_dec", "req_stream", "session")

    def __init__(self, session: Session, lane: object | None) -> None:
        self.session = session
        self.req_stream = Stream()
        self.rep_stream = Stream()
        self.req_dec = RequestDecoder()
        self.rep_dec = ReplyDecoder()
        # the C fast lane (auditor/fastlane.py): with fast set, requests go to
        # it; while it is busy (requests waiting for replies), replies do
        self.lane: Any = lane
        self.fast = False


def tune_gc() -> None:
    """Collector thresholds for a process whose work is a pipeline (see limits.GC_THRESHOLD); objects made
    at start-up (modules, the command table) are frozen out of every collection."""
    gc.freeze()
    gc.set_threshold(*limits.GC_THRESHOLD)


class Pipeline:
    """Feed SourceEvents in capture order; rows go to ``write`` (the sink),
    which must copy the list it is given (it is reused).

    ``fast``: use the C fast lane for connections in a plain state (default:
    when it is built, see ``fastlane.available``); rows are equal either way."""

    def __init__(
        self, redactor: Redactor, write: Callable[[list[Row]], None], source: Source, fast: bool | None = None
    ) -> None:
        self.redactor = redactor
        self.write = write
        self.source = source
        self._totals = Totals()
        self.tally = False  # count rows per command and user (the live view)
        self._conns: dict[str, _Conn] = {}
        if fast is None:
            fast = fastlane.available()
        self._lane_cfg: Any = fastlane.make_config(redactor) if fast else None
        self._fast_out: list[Row] = []  # rows the lanes made, not yet written
        # the hot path of feed_many in C (reads self._conns and the _Conn / Stream slots)
        self.feeder: Any = fastlane.new_feeder(self._conns, _Conn, Stream) if fast else None

    @property
    def totals(self) -> Totals:
        cfg = self._lane_cfg
        if cfg is not None and cfg.commands:
            t = self._totals
            t.commands += cfg.commands
            t.errors += cfg.errors
            cfg.commands = cfg.errors = 0
        return self._totals

    @property
    def lane_stats(self) -> dict[str, int] | None:
        """How much the fast lane did (None: not in use)."""
        cfg = self._lane_cfg
        if cfg is None:
            return None
        return {"fallbacks": cfg.fallbacks, "handovers": cfg.handovers, "surrenders": cfg.surrenders}

    # ------------------------------------------------------------------ input
    def feed(self, ev: SourceEvent) -> None:
        self.feed_many((ev,))

    def feed_many(self, events: Iterable[SourceEvent]) -> None:
        feeder = self.feeder
        if feeder is None:
            self._feed(events)
            return
        evs = events if type(events) is list else list(events)
        i, n = 0, len(evs)
        feed, one = feeder.feed, self._feed
        while i < n:
            i, hot = feed(evs, i)  # the chunks of connections in their lane, in C
            if hot is not None:
                self.hot(*hot)
            elif i < n:
                one((evs[i],))  # one event the lane does not take
                i += 1
        if len(self._fast_out) >= 256:
            self._flush_fast()

    def hot(self, c: _Conn, to_client: bool, r: Any) -> None:
        """Finish a chunk the feeder gave to a lane that gave bytes back (what the
        hot path in ``_feed`` does after ``Lane.requests`` / ``Lane.replies``)."""
        if to_client:
            self._lane_replied(c, r)
        else:
            self._surrender(c, r)
        self._settled(c)

    def _settled(self, c: _Conn) -> None:
        """After a connection's bytes went through: its rows out, and back to its lane if it may."""
        s = c.session
        if s._out:
            self._rows(s.drain())
        if c.lane is not None and not c.fast and not s._pending:
            self._maybe_enter(c)

    def _feed(self, events: Iterable[SourceEvent]) -> None:
        conns_get = self._conns.get  # (locals: the loop runs once per chunk)
        fast_out = self._fast_out
        to_server = Direction.TO_SERVER
        chunk_t = Chunk
        for ev in events:
            if type(ev) is chunk_t:  # the hot path: written out flat
                c = conns_get(ev.conn)
                if c is None:
                    c = self._open(ConnOpen(ev.conn, ev.ts_ns, ConnMeta(self.source), mid_stream=True))
                s = c.session
                lane = c.lane
                if ev.direction is to_server:
                    if c.fast:
                        st = c.req_stream
                        data = ev.data
                        if ev.pos == st.expected and not st._segs and ev.orig_len <= len(data):
                            # in order, whole: Stream.push's own fast path, inlined (most chunks)
                            st.expected += len(data)
                            if data:
                                rest = lane.requests(data, ev.ts_ns)
                                if rest is not None:
                                    self._surrender(c, rest)
                        else:
                            self._fast_requests(c, st.push(ev))
                    else:
                        dec = c.req_dec
                        st = c.req_stream
                        for p in st.push(ev):
                            for f in dec.feed(p[1], p[0]) if type(p) is tuple else dec.gap(p.nbytes, p.ts_ns, p.reason):
                                if type(f) is Request:
                                    s.request(f)
                                else:
                                    self._route_request(s, f)
                elif c.fast or (lane is not None and lane.busy):
                    st = c.rep_stream
                    data = ev.data
                    if ev.pos == st.expected and not st._segs and ev.orig_len <= len(data) and lane.busy:
                        st.expected += len(data)  # (as above)
                        r = lane.replies(data, ev.ts_ns) if data else None
                        if r is not None:
                            self._lane_replied(c, r)
                    else:
                        self._fast_replies(c, st.push(ev))
                else:
                    rdec = c.rep_dec
                    st = c.rep_stream
                    for p in st.push(ev):
                        for g in rdec.feed(p[1], p[0]) if type(p) is tuple else rdec.gap(p.nbytes, p.ts_ns, p.reason):
                            if type(g) is Reply:
                                s.reply(g)
                            else:
                                self._route_reply(s, g)
                if s._out:
                    self._rows(s.drain())
                if len(fast_out) >= 256:
                    self._flush_fast()
                if lane is not None and not c.fast and not s._pending:
                    self._maybe_enter(c)
            elif type(ev) is ConnOpen:
                old = self._conns.get(ev.conn)
                if old is not None:
                    self._close(ev.conn, ConnClose(ev.conn, ev.ts_ns, "reopened"))
                self._open(ev)
            elif type(ev) is ConnClose:
                self._close(ev.conn, ev)
            elif type(ev) is Loss:
                self._loss(ev)
            elif type(ev) is Acked:
                self._acked(ev)

    def close(self, ts_ns: int, reason: str = "eof") -> None:
        """End of input: flush every connection (pending requests -> no_reply)."""
        for conn in list(self._conns):
            self._close(conn, ConnClose(conn, ts_ns, reason))
        self.flush()

    def flush(self) -> None:
        """Hand every finished row to ``write`` (the lanes' rows are batched)
        and bring ``totals`` up to date."""
        if self._fast_out:
            self._flush_fast()
        self.totals  # noqa: B018 (folds the lanes' counters in)

    def lifecycle(self, event: Event, ts_ns: int, detail: str) -> None:
        """auditor_start / auditor_stop rows (PCI DSS 10.2.6)."""
        ex = Exchange(event, "", ts_ns, ConnMeta(self.source), detail=detail)
        self._rows([ex])

    # ------------------------------------------------------------- fast lane
    def _maybe_enter(self, c: _Conn) -> None:
        """Give the connection to its lane when nothing is in flight and no mode is on."""
        s = c.session
        lane = c.lane
        if s.plain and not lane.busy and not lane.held and c.req_dec.idle and c.rep_dec.idle:
            st = s._st
            lane.enter(st.user, st.db, st.resp, s._seq)
            c.fast = True

    def _fast_requests(self, c: _Conn, pieces: list) -> None:
        """Request pieces (from the stream: reordering, gaps) of a connection in its lane."""
        lane = c.lane
        for p in pieces:
            if not c.fast:
                self._requests(c, [p])
            elif type(p) is tuple:
                rest = lane.requests(p[1], p[0])
                if rest is not None:
                    self._surrender(c, rest)
            else:
                self._surrender(c, [p])

    def _fast_replies(self, c: _Conn, pieces: list) -> None:
        """Reply pieces (from the stream) while the lane has requests or the connection."""
        lane = c.lane
        for p in pieces:
            if not lane.busy:  # a reply no request in the lane waits for
                self._requests(c, self._to_python(c))
                self._replies(c, [p])
            elif type(p) is tuple:
                r = lane.replies(p[1], p[0])
                if r is not None:
                    self._lane_replied(c, r)
            else:
                self._surrender(c)
                self._replies(c, [p])

    def _lane_replied(self, c: _Conn, r: list | bool) -> None:
        """What ``Lane.replies`` returned when it did not take every byte: False, it cannot go on
        (everything to Python); else the bytes after its last request's reply, for Python."""
        if r is False:
            self._surrender(c)
        else:
            self._requests(c, self._to_python(c))
            self._replies(c, r)  # type: ignore[arg-type]

    def _to_python(self, c: _Conn) -> list:
        """Requests go to the Python stages from now on (replies follow once the
        lane's requests are answered). Returns the request bytes the lane held."""
        lane = c.lane
        held = lane.release_requests()
        if c.fast:
            c.fast = False
            s = c.session
            s._seq = lane.seq
            n = lane.take_commands()
            if n:
                s.stats.commands += n
                s._unmatched_since_req = 0  # the lane saw requests since any reply the session found unmatched
        req_n, rep_n = lane.take_consumed()
        c.req_dec.advance(req_n)
        c.rep_dec.advance(rep_n)
        return held

    def _surrender(self, c: _Conn, rest: list | tuple = ()) -> None:
        """Everything the lane holds goes to the Python stages: its unanswered
        requests (re-parsed from their frames) and the bytes it did not take,
        then ``rest`` (request pieces the lane gave back). The session then
        holds every request in flight, exactly as without the lane."""
        held = self._to_python(c)
        held += rest
        reqs, rest = c.lane.surrender()
        self._flush_fast()
        if reqs:
            adopted = []
            for raw, ts, seq in reqs:
                req = parse_request(raw)[1]
                assert type(req) is Request  # the lane parsed this very frame
                req.ts_ns = ts
                adopted.append((req, seq))
            c.session.adopt(adopted)
        self._requests(c, held)
        self._replies(c, rest)

    def _tally(self, rows: list[Row]) -> None:
        """Rows per command and per user (the live view)."""
        t = self._totals
        bc, bu = t.by_command, t.by_user
        for r in rows:
            if r.event == "command":
                bc[r.command or ""] = bc.get(r.command or "", 0) + 1
                bu[r.user or "?"] = bu.get(r.user or "?", 0) + 1

    def _flush_fast(self) -> None:
        out = self._fast_out
        self._totals.rows += len(out)
        if self.tally:
            self._tally(out)
        self.write(out)
        out.clear()

    # --------------------------------------------------------------- plumbing
    def _open(self, ev: ConnOpen) -> _Conn:
        s = Session(ev.conn, ev.meta, mid_stream=ev.mid_stream)
        cfg = self._lane_cfg
        c = _Conn(s, None if cfg is None else fastlane.new_lane(cfg, s, self._fast_out))
        self._conns[ev.conn] = c
        t = self._totals
        t.connections += 1
        t.mid_stream += ev.mid_stream
        ex = Exchange(Event.CONNECT, ev.conn, ev.ts_ns, ev.meta, detail="mid_stream" if ev.mid_stream else None)
        if not ev.mid_stream:
            ex.user, ex.db, ex.resp = "default", 0, 2
        self._rows([ex])
        if c.lane is not None:
            self._maybe_enter(c)
        return c

    def _requests(self, c: _Conn, pieces: list) -> None:
        dec, s = c.req_dec, c.session
        for p in pieces:
            for f in dec.feed(p[1], p[0]) if type(p) is tuple else dec.gap(p.nbytes, p.ts_ns, p.reason):
                self._route_request(s, f)

    def _replies(self, c: _Conn, pieces: list) -> None:
        dec, s = c.rep_dec, c.session
        for p in pieces:
            for f in dec.feed(p[1], p[0]) if type(p) is tuple else dec.gap(p.nbytes, p.ts_ns, p.reason):
                self._route_reply(s, f)

    def _emit(self, s: Session) -> None:
        if s._out:
            self._rows(s.drain())

    def _close(self, conn: str, ev: ConnClose) -> None:
        c = self._conns.pop(conn, None)
        if c is None:
            return
        if c.lane is not None:
            self._surrender(c)
        self._requests(c, c.req_stream.flush(ev.ts_ns, ev.reason))
        for f in c.req_dec.finish(ev.ts_ns):
            self._route_request(c.session, f)
        self._replies(c, c.rep_stream.flush(ev.ts_ns, ev.reason))
        for f in c.rep_dec.finish(ev.ts_ns):
            self._route_reply(c.session, f)
        s = c.session
        s.close(ev.ts_ns, ev.reason)
        t = self._totals
        st = s.stats
        t.unmatched_replies += st.unmatched_replies
        t.pushes += st.pushes
        t.evicted += st.evicted
        self._emit(s)

    @staticmethod
    def _route_request(s: Session, f: object) -> None:
        if type(f) is Request:
            s.request(f)
        elif type(f) is Gap:
            s.request_gap(f)
        elif type(f) is ParseError:
            s.request_error(f)

    @staticmethod
    def _route_reply(s: Session, f: object) -> None:
        if type(f) is Reply:
            s.reply(f)
        elif type(f) is Gap:
            s.reply_gap(f)
        elif type(f) is ParseError:
            s.reply_error(f)

    def _acked(self, ev: Acked) -> None:
        """The peer acknowledged a direction's bytes up to ev.pos: a hole before that is skipped (a Gap) and the
        bytes buffered behind it go on, before the segment that carried the ACK (the peer's answer to them)."""
        c = self._conns.get(ev.conn)
        if c is None:
            return
        lane = c.lane
        if ev.direction is Direction.TO_SERVER:
            pieces = c.req_stream.acked(ev.pos, ev.ts_ns)
            if pieces:
                if c.fast:
                    self._fast_requests(c, pieces)
                else:
                    self._requests(c, pieces)
        else:
            pieces = c.rep_stream.acked(ev.pos, ev.ts_ns)
            if pieces:
                if c.fast or (lane is not None and lane.busy):
                    self._fast_replies(c, pieces)
                else:
                    self._replies(c, pieces)
        self._settled(c)

    def _loss(self, ev: Loss) -> None:
        """Events/bytes the source could not deliver: a gap row, and the
        affected decoders resync (their byte stream has a hole of unknown size)."""
        self._totals.lost_events += ev.count
        c = self._conns.get(ev.conn) if ev.conn is not None else None
        if c is not None and ev.nbytes != 0:  # (0: nothing is missing from the byte stream, no resync)
            if c.lane is not None:
                self._surrender(c)
            if ev.direction in (None, Direction.TO_SERVER):
                for f in c.req_dec.gap(ev.nbytes if ev.direction is not None else None, ev.ts_ns):
                    self._route_request(c.session, f)
            if ev.direction in (None, Direction.TO_CLIENT):
                for f in c.rep_dec.gap(ev.nbytes if ev.direction is not None else None, ev.ts_ns):
                    self._route_reply(c.session, f)
            self._emit(c.session)
        meta = c.session.meta if c is not None else ConnMeta(self.source)
        ex = Exchange(Event.GAP, ev.conn or "", ev.ts_ns, meta, detail=f"source: {ev.reason}")
        ex.lost_events, ex.lost_bytes = ev.count, ev.nbytes
        self._rows([ex])

    def _rows(self, exchanges: list[Exchange]) -> None:
        if self._fast_out:  # (rows in the order they were made)
            self._flush_fast()
        t = self._totals
        row = self.redactor.row
        rows = []
        for ex in exchanges:
            ev = ex.event
            if ev is Event.COMMAND:
                t.commands += 1
                if ex.lost_bytes:
                    t.truncated += 1
                    t.truncated_bytes += ex.lost_bytes
                st = ex.status
                if st is not Status.OK:
                    if st is Status.ERROR:
                        t.errors += 1
                    elif st is Status.NO_REPLY:
                        t.no_reply += 1
                    elif st is Status.UNKNOWN:
                        t.unknown += 1
            elif ev is Event.GAP:
                t.gaps += 1
                t.gap_bytes += ex.lost_bytes or 0
            elif ev is Event.PARSE_ERROR:
                t.parse_errors += 1
            rows.append(row(ex))
        if self.tally:
            self._tally(rows)
        t.rows += len(rows)
        self.write(rows)

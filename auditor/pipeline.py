"""pipeline: SourceEvents -> Rows in the sink; the one place the stages meet.

For each connection: two Streams (reassembly), a RequestDecoder and a
ReplyDecoder (RESP), and a Session (pairing). Sessions emit Exchanges, the
Redactor turns them into Rows, the sink writes them. Every source (pcap file,
live sniff, eBPF) feeds this same object, so what is tested on pcaps holds live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from auditor.redact import Redactor
from auditor.resp import ReplyDecoder, RequestDecoder
from auditor.session import Session
from auditor.stream import Stream
from auditor.types import (
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
    parse_errors: int = 0
    unmatched_replies: int = 0
    pushes: int = 0
    evicted: int = 0
    lost_events: int = 0
    rows: int = 0
    by_command: dict[str, int] = field(default_factory=dict)
    by_user: dict[str, int] = field(default_factory=dict)


class _Conn:
    __slots__ = ("req_dec", "req_stream", "rep_dec", "rep_stream", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.req_stream = Stream()
        self.rep_stream = Stream()
        self.req_dec = RequestDecoder()
        self.rep_dec = ReplyDecoder()


class Pipeline:
    """Feed SourceEvents in capture order; rows go to ``write`` (the sink)."""

    def __init__(self, redactor: Redactor, write: Callable[[list[Row]], None], source: Source) -> None:
        self.redactor = redactor
        self.write = write
        self.source = source
        self.totals = Totals()
        self.tally = False  # count rows per command and user (the live view)
        self._conns: dict[str, _Conn] = {}

    # ------------------------------------------------------------------ input
    def feed_many(self, events: Iterable[SourceEvent]) -> None:
        for ev in events:
            self.feed(ev)

    def feed(self, ev: SourceEvent) -> None:
        if type(ev) is Chunk:  # the hot path: written out flat
            c = self._conns.get(ev.conn)
            if c is None:
                c = self._open(ConnOpen(ev.conn, ev.ts_ns, ConnMeta(self.source), mid_stream=True))
            s = c.session
            if ev.direction is Direction.TO_SERVER:
                dec = c.req_dec
                for p in c.req_stream.push(ev):
                    for f in dec.feed(p[1], p[0]) if type(p) is tuple else dec.gap(p.nbytes, p.ts_ns, p.reason):
                        if type(f) is Request:
                            s.request(f)
                        else:
                            self._route_request(s, f)
            else:
                rdec = c.rep_dec
                for p in c.rep_stream.push(ev):
                    for g in rdec.feed(p[1], p[0]) if type(p) is tuple else rdec.gap(p.nbytes, p.ts_ns, p.reason):
                        if type(g) is Reply:
                            s.reply(g)
                        else:
                            self._route_reply(s, g)
            if s._out:
                self._rows(s.drain())
        elif type(ev) is ConnOpen:
            old = self._conns.get(ev.conn)
            if old is not None:
                self._close(ev.conn, ConnClose(ev.conn, ev.ts_ns, "reopened"))
            self._open(ev)
        elif type(ev) is ConnClose:
            self._close(ev.conn, ev)
        elif type(ev) is Loss:
            self._loss(ev)

    def close(self, ts_ns: int, reason: str = "eof") -> None:
        """End of input: flush every connection (pending requests -> no_reply)."""
        for conn in list(self._conns):
            self._close(conn, ConnClose(conn, ts_ns, reason))

    def lifecycle(self, event: Event, ts_ns: int, detail: str) -> None:
        """auditor_start / auditor_stop rows (PCI DSS 10.2.6)."""
        ex = Exchange(event, "", ts_ns, ConnMeta(self.source), detail=detail)
        self._rows([ex])

    # --------------------------------------------------------------- plumbing
    def _open(self, ev: ConnOpen) -> _Conn:
        c = _Conn(Session(ev.conn, ev.meta, mid_stream=ev.mid_stream))
        self._conns[ev.conn] = c
        t = self.totals
        t.connections += 1
        t.mid_stream += ev.mid_stream
        ex = Exchange(Event.CONNECT, ev.conn, ev.ts_ns, ev.meta, detail="mid_stream" if ev.mid_stream else None)
        if not ev.mid_stream:
            ex.user, ex.db, ex.resp = "default", 0, 2
        self._rows([ex])
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
        self._requests(c, c.req_stream.flush(ev.ts_ns, ev.reason))
        for f in c.req_dec.finish(ev.ts_ns):
            self._route_request(c.session, f)
        self._replies(c, c.rep_stream.flush(ev.ts_ns, ev.reason))
        for f in c.rep_dec.finish(ev.ts_ns):
            self._route_reply(c.session, f)
        s = c.session
        s.close(ev.ts_ns, ev.reason)
        t = self.totals
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

    def _loss(self, ev: Loss) -> None:
        """Events/bytes the source could not deliver: a gap row, and the
        affected decoders resync (their byte stream has a hole of unknown size)."""
        self.totals.lost_events += ev.count
        c = self._conns.get(ev.conn) if ev.conn is not None else None
        if c is not None:
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
        t = self.totals
        row = self.redactor.row
        rows = []
        for ex in exchanges:
            ev = ex.event
            if ev is Event.COMMAND:
                t.commands += 1
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
            bc, bu = t.by_command, t.by_user
            for r in rows:
                if r.event == "command":
                    bc[r.command or ""] = bc.get(r.command or "", 0) + 1
                    bu[r.user or "?"] = bu.get(r.user or "?", 0) + 1
        t.rows += len(rows)
        self.write(rows)

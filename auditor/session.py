"""session: Request/Reply frames of one connection -> Exchanges, in order.

Pairs each request with its reply by sequence (FIFO), never by timestamps,
and tracks what changes the meaning of later commands: the ACL user (set only
after AUTH / HELLO AUTH succeeded), the db (SELECT, also inside MULTI, applied
when EXEC runs it), MULTI/EXEC/DISCARD, the RESP version (HELLO), CLIENT REPLY
OFF|ON|SKIP, subscribe mode and RESP3 pushes, MONITOR, QUIT and RESET.

Timestamps are used for one thing only: a reply read before the request at
the head of the queue was sent cannot answer it (capture started mid-stream,
or the request was lost in a gap); such replies are counted as unmatched.

Every exchange is emitted in ``seq`` order once its outcome is known; what is
still pending at close is flushed as ``no_reply``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from auditor import limits
from auditor.types import (
    ConnMeta,
    Event,
    Exchange,
    Gap,
    ParseError,
    Reply,
    Request,
    RespType,
    Status,
)

SUBSCRIBE = frozenset({b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"})
UNSUBSCRIBE = frozenset({b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"})
# Push kinds that are not answers to a command (pub/sub deliveries, tracking).
DELIVERIES = frozenset({b"message", b"pmessage", b"smessage", b"invalidate"})
CONFIRMATIONS = frozenset(
    {b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe", b"sunsubscribe"}
)
# A replica (or a client dumping the dataset) asks for a full or partial copy: once
# answered, the server sends the RDB file and then every write it propagates, and
# the replica's own requests (REPLCONF ACK) get no reply.
REPLICATION = frozenset({b"SYNC", b"PSYNC"})
# Commands whose handling differs from "one request, one reply".
SPECIAL = frozenset(
    {b"AUTH", b"HELLO", b"SELECT", b"MULTI", b"EXEC", b"DISCARD", b"CLIENT", b"MONITOR", b"QUIT", b"RESET"}
    | REPLICATION
    | SUBSCRIBE
    | UNSUBSCRIBE
)
VARIABLE = -1  # expect: consume confirmations until the next other reply
# Sent inside MULTI but run at once (not QUEUED).
NOT_QUEUED = frozenset({b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"})
_KIND = {k: k.value for k in RespType}

DISCARDED = b"DISCARD: transaction discarded, command not executed"
WATCH_FAILED = b"EXEC aborted: a WATCHed key was modified, command not executed"
PROTOCOL_ERROR = b"ERR Protocol error"


@dataclass(slots=True)
class SessionStats:
    commands: int = 0
    unmatched_replies: int = 0
    pushes: int = 0
    monitor_lines: int = 0
    replicated: int = 0  # RDB transfers and propagated writes sent on a replication link
    evicted: int = 0
    gaps: int = 0
    parse_errors: int = 0


class _Pending:
    """A request waiting for its reply (or replies, for SUBSCRIBE ch1 ch2)."""

    __slots__ = ("ex", "cmd", "expect", "got", "queued", "optional", "blind")

    def __init__(self, ex: Exchange, cmd: bytes, expect: int, queued: bool = False, optional: bool = False) -> None:
        self.ex = ex
        self.cmd = cmd
        self.expect = expect
        self.got = 0
        self.queued = queued  # sent inside MULTI: the reply is QUEUED, the result comes with EXEC
        self.optional = optional  # a parse error Redis may (or may not) answer
        self.blind = False  # sent after a request gap, before pairing was known to be right again


@dataclass(slots=True)
class _State:
    user: str | None
    db: int | None
    resp: int | None


BLIND = "after a request gap: its reply may answer a lost request"


def _is_monitor_line(rep: Reply) -> bool:
    """MONITOR output: +<unix time>.<micros> [<db> <client>] "CMD" ..."""
    v = rep.value
    if rep.kind is not RespType.SIMPLE or not isinstance(v, bytes):
        return False
    head, _, rest = v.partition(b" ")
    return rest.startswith(b"[") and head.replace(b".", b"", 1).isdigit()


def _is_protocol_error(rep: Reply) -> bool:
    return rep.is_error and isinstance(rep.value, bytes) and rep.value.startswith(PROTOCOL_ERROR)


def _int(b: bytes) -> int | None:
    try:
        return int(b)
    except ValueError:
        return None


def _str(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


@dataclass(slots=True)
class Session:
    """State of one connection. Feed frames in the order the stream delivered
    them (per direction); collect emitted exchanges with ``drain()``."""

    conn: str
    meta: ConnMeta
    mid_stream: bool = False
    stats: SessionStats = field(default_factory=SessionStats)
    _out: list[Exchange] = field(default_factory=list)
    _pending: deque[_Pending] = field(default_factory=deque)
    _held: list[_Pending] = field(default_factory=list)  # QUEUED inside MULTI, waiting for EXEC
    _seq: int = 0
    _st: _State = field(default_factory=lambda: _State(None, None, None))
    _reply_off: bool = False
    _skip_next: bool = False
    _in_multi: bool = False
    _subs: int = 0  # channel + pattern + shard subscriptions (from confirmations)
    _monitor: bool = False
    _replica: bool = False  # a SYNC / PSYNC was answered: a replication link from now on
    _proto_reply: Reply | None = None  # "ERR Protocol error" that came before its parse error
    _owed: int = 0  # replies still to come for evicted requests: skipped, so that later ones pair right
    # requests were lost (a request gap): until a reply comes with nothing pending (a lost request's answer),
    # a reply may answer a lost request rather than the next one seen
    _blind: bool = False
    # replies that came with nothing pending since the last request seen: a request-response client's lost
    # request was answered before the gap was known (its next request shows the hole), so pairing is right
    _unmatched_since_req: int = 0

    def __post_init__(self) -> None:
        if not self.mid_stream:
            self._st = _State("default", 0, 2)

    # ------------------------------------------------------------------ output
    def drain(self) -> list[Exchange]:
        out = self._out
        self._out = []
        return out

    def _event(self, event: Event, ts_ns: int, **kw: object) -> None:
        self._out.append(Exchange(event, self.conn, ts_ns, self.meta, **kw))  # type: ignore[arg-type]

    # ---------------------------------------------------------------- requests
    def request(self, req: Request) -> None:
        """A client command, in stream order."""
        self._unmatched_since_req = 0
        self._seq += 1
        self.stats.commands += 1
        ex = Exchange(Event.COMMAND, self.conn, req.ts_ns, self.meta, self._seq, None, None, None, req)
        if req.gap_bytes:  # argument bytes not captured (a value beyond the copy limit, a capture hole)
            ex.lost_bytes = req.gap_bytes
        args = req.args
        cmd = args[0].upper() if args else b""
        expect = 1
        if cmd == b"RESET":  # answered even after CLIENT REPLY OFF, and turns replies back on
            self._reply_off = self._skip_next = False
        elif self._reply_off:
            if cmd == b"CLIENT" and len(args) > 2 and args[1].upper() == b"REPLY" and args[2].upper() == b"ON":
                self._reply_off = False
            else:
                expect = 0
        elif self._skip_next:
            self._skip_next = False
            expect = 0
        if self._replica:  # REPLCONF ACK <offset>: the server never answers on a replication link
            expect = 0
        if cmd in SPECIAL:
            expect = self._special_request(cmd, args, expect)
        queued = self._in_multi and cmd not in NOT_QUEUED
        if queued:
            ex.tx = "queued"
        self._push(_Pending(ex, cmd, expect, queued, False))
        if expect == 0 and len(self._pending) == 1:
            self._settle(req.ts_ns)

    def _special_request(self, cmd: bytes, args: list[bytes], expect: int) -> int:
        if cmd == b"CLIENT" and len(args) > 2 and args[1].upper() == b"REPLY":
            mode = args[2].upper()
            if mode == b"OFF":
                self._reply_off = True
                return 0
            if mode == b"SKIP":
                self._skip_next = True
                return 0
            return expect
        if expect == 0:
            return 0
        if cmd in SUBSCRIBE:
            return max(1, len(args) - 1)
        if cmd in UNSUBSCRIBE:
            return len(args) - 1 if len(args) > 1 else VARIABLE
        if cmd == b"MULTI":
            self._in_multi = True
        elif cmd in (b"EXEC", b"DISCARD", b"RESET"):
            self._in_multi = False
        return expect

    def _push(self, p: _Pending) -> None:
        if self._blind:
            p.blind = True
        self._pending.append(p)
        if len(self._pending) > limits.MAX_PENDING_REQUESTS:
            self._evict()

    def _evict(self) -> None:
        """The oldest pending request goes out as ``unknown``; the replies it still expects will come first,
        and are skipped (a deep pipeline of N requests, then N replies, stays paired)."""
        old = self._pending.popleft()
        self.stats.evicted += 1
        if old.expect > old.got and not old.optional:
            self._owed += old.expect - old.got
        self._finish(old, Status.UNKNOWN, detail="evicted: too many pending requests")

    @property
    def plain(self) -> bool:
        """Nothing pending and no mode that changes pairing: the fast lane may take the connection."""
        return not (
            self._pending
            or self._held
            or self._in_multi
            or self._reply_off
            or self._skip_next
            or self._subs
            or self._monitor
            or self._replica
            or self._proto_reply is not None
            or self._out
            or self._owed
            or self._blind
        )

    def adopt(self, items: list[tuple[Request, int]]) -> None:
        """Requests the fast lane took (with their seq, oldest first) and hands
        back unanswered: they go ahead of everything queued here."""
        new = []
        if items:  # (an unmatched reply came before them: the lane pairs any later one)
            self._unmatched_since_req = 0
        for req, seq in items:
            ex = Exchange(Event.COMMAND, self.conn, req.ts_ns, self.meta, seq, None, None, None, req)
            new.append(_Pending(ex, req.args[0].upper(), 1))
        self._pending.extendleft(reversed(new))
        while len(self._pending) > limits.MAX_PENDING_REQUESTS:
            self._evict()

    # ----------------------------------------------------------------- replies
    def reply(self, rep: Reply) -> None:
        """A server reply or push, in stream order."""
        if self._owed and rep.kind is not RespType.PUSH:
            self._owed -= 1  # an evicted request's
            return
        pending = self._pending
        if pending and not self._subs and not self._monitor:
            # Fast path, most replies: the head expects exactly this one ordinary reply.
            head = pending[0]
            kind = rep.kind
            if (
                head.expect == 1
                and not head.queued
                and not head.optional
                and kind is not RespType.PUSH
                and head.cmd not in SPECIAL
                and rep.ts_ns >= head.ex.ts_ns
                and not head.blind
            ):
                pending.popleft()
                ex = head.ex
                ex.reply_ts_ns = rep.ts_ns
                ex.reply_bytes = rep.nbytes
                ex.reply_type = _KIND[kind]
                # _finish for an ordinary command, inlined: this is most replies.
                st = self._st
                ex.user, ex.db, ex.resp = st.user, st.db, st.resp
                if kind is RespType.ERROR or kind is RespType.BLOB_ERROR:
                    ex.status = Status.ERROR
                    ex.error = rep.value if isinstance(rep.value, bytes) else b""
                else:
                    ex.status = Status.OK
                    if kind is RespType.INTEGER:
                        ex.reply_int = rep.value  # type: ignore[assignment]
                self._out.append(ex)
                if pending and pending[0].expect == 0:
                    self._settle(rep.ts_ns)
                return
        if self._replica:  # (its requests expect no reply: nothing is pending for the fast path above)
            self.stats.replicated += 1
            return
        if self._monitor and _is_monitor_line(rep):
            self.stats.monitor_lines += 1
            return
        self._settle(rep.ts_ns)
        kind = rep.kind
        marker = None
        if (kind is RespType.PUSH or kind is RespType.ARRAY) and rep.children:
            first = rep.children[0].value
            if isinstance(first, bytes):
                marker = first.lower()
        sub_head = self._head_is_sub()
        if kind is RespType.PUSH:
            if marker in CONFIRMATIONS and sub_head:
                self._answer(rep, marker)
            else:
                self.stats.pushes += 1  # RESP3 pushes are never answers
            return
        if marker is not None and (sub_head or self._subs > 0):
            if marker in DELIVERIES:
                self.stats.pushes += 1
                return
            if marker in CONFIRMATIONS:
                self._answer(rep, marker)
                return
        self._answer(rep, None)

    def _head_is_sub(self) -> bool:
        if not self._pending:
            return False
        cmd = self._pending[0].cmd
        return cmd in SUBSCRIBE or cmd in UNSUBSCRIBE

    def _answer(self, rep: Reply, confirmation: bytes | None) -> None:
        pending = self._pending
        while True:
            self._settle(rep.ts_ns)
            if not pending:
                if _is_protocol_error(rep) and self._proto_reply is None:
                    self._proto_reply = rep  # the decoder reports the bad request once it has resynced
                else:
                    self.stats.unmatched_replies += 1
                    self._unmatched_since_req += 1
                    self._blind = False  # a lost request's answer: the next request seen gets the next reply
                return
            head = pending[0]
            if head.expect == VARIABLE and head.got > 0 and confirmation != head.cmd.lower():
                pending.popleft()
                self._finish(head, Status.OK)
                continue
            if head.optional and not _is_protocol_error(rep):
                pending.popleft()
                self._finish(head, None)
                continue
            break
        if rep.ts_ns < head.ex.ts_ns:
            # Read before its supposed request was sent: answers a request we never saw.
            self.stats.unmatched_replies += 1
            self._unmatched_since_req += 1
            return
        if head.blind and confirmation is None:
            # after a request gap this reply may answer a lost request: the outcome is not known
            pending.popleft()
            if head.cmd == b"EXEC":  # nor that of the commands it would have run
                held, self._held = self._held, []
                for h in held:
                    self._finish(h, Status.UNKNOWN, detail=BLIND)
            self._finish(head, Status.UNKNOWN, detail=BLIND)
            self._settle(rep.ts_ns)
            return
        ex = head.ex
        if head.got == 0:
            ex.reply_ts_ns = rep.ts_ns
            ex.reply_bytes = rep.nbytes
            ex.reply_type = _KIND[rep.kind]
        else:
            ex.reply_bytes = (ex.reply_bytes or 0) + rep.nbytes
        head.got += 1
        if rep.is_error:
            pending.popleft()
            self._finish(head, Status.ERROR, rep)
            return
        if confirmation is not None:
            self._confirmation(rep)
            if head.expect == VARIABLE:
                if self._subs == 0:
                    pending.popleft()
                    self._finish(head, Status.OK)
                    self._settle(rep.ts_ns)
                return
        if head.expect != VARIABLE and head.got >= head.expect:
            pending.popleft()
            if head.queued and rep.kind is RespType.SIMPLE and rep.value == b"QUEUED":
                self._held.append(head)
            else:
                self._finish(head, Status.OK, rep)
        self._settle(rep.ts_ns)

    def _confirmation(self, rep: Reply) -> None:
        children = rep.children or []
        if len(children) >= 3 and isinstance(children[2].value, int):
            self._subs = children[2].value

    def _settle(self, ts_ns: int) -> None:
        """Complete requests at the head that expect no reply."""
        pending = self._pending
        while pending and pending[0].expect == 0:
            self._finish(pending.popleft(), Status.NO_REPLY)

    # -------------------------------------------------------------- completion
    def _finish(self, p: _Pending, status: Status | None, rep: Reply | None = None, detail: str | None = None) -> None:
        ex = p.ex
        ex.status = status
        if detail:
            ex.detail = detail
        st = self._st
        ex.user, ex.db, ex.resp = st.user, st.db, st.resp
        if p.optional:  # a request Redis could not parse: a parse_error row
            if rep is not None and rep.is_error:
                ex.status = Status.ERROR
                ex.error = rep.value if isinstance(rep.value, bytes) else None
            self._out.append(ex)
            return
        if rep is not None:
            if rep.gap_bytes:
                ex.lost_bytes = (ex.lost_bytes or 0) + rep.gap_bytes
            if rep.is_error:
                ex.error = rep.value if isinstance(rep.value, bytes) else b""
            elif rep.kind is RespType.INTEGER and isinstance(rep.value, int):
                ex.reply_int = rep.value
        if p.cmd in SPECIAL and status is Status.OK:
            self._apply(p, rep)
        elif p.cmd == b"EXEC" and status is Status.ERROR:
            self._resolve_tx(ex, None, rep)
        self._out.append(ex)

    def _apply(self, p: _Pending, rep: Reply | None) -> None:
        """State changes of a command that succeeded (outside MULTI, or run by EXEC)."""
        ex, cmd = p.ex, p.cmd
        args = ex.request.args if ex.request is not None else []
        st = self._st
        if cmd == b"AUTH":
            st.user = _str(args[1]) if len(args) > 2 else "default"
            ex.user = st.user
        elif cmd == b"HELLO":
            if len(args) > 1:
                v = _int(args[1])
                if v is not None:
                    st.resp = v
            for i in range(2, len(args) - 2):
                if args[i].upper() == b"AUTH":
                    st.user = _str(args[i + 1])
                    ex.user = st.user
                    break
        elif cmd == b"SELECT":
            if len(args) > 1:
                st.db = _int(args[1])
        elif cmd == b"MONITOR":
            self._monitor = True
        elif cmd in REPLICATION:
            self._replica = True
        elif cmd == b"RESET":
            self._st = _State("default", 0, 2)
            self._reply_off = self._skip_next = self._in_multi = False
            self._subs = 0
            self._monitor = False
            self._discard_held("discarded by RESET")
        elif cmd == b"EXEC":
            self._resolve_tx(ex, rep, None)
        elif cmd == b"DISCARD":
            self._discard_held(None)

    def _discard_held(self, detail: str | None) -> None:
        held, self._held = self._held, []
        for h in held:
            h.ex.tx = "discarded"
            self._finish(h, Status.ERROR, detail=detail)
            h.ex.error = DISCARDED

    def _resolve_tx(self, exec_ex: Exchange, result: Reply | None, error: Reply | None) -> None:
        """EXEC's reply decides the fate of every QUEUED command, run in order
        (their rows are emitted before the EXEC row: seq order)."""
        held, self._held = self._held, []
        if held or (result is not None and result.kind is not RespType.NULL):
            exec_ex.tx = "exec"
        children = None
        if result is not None and result.kind is not RespType.NULL and result.count != -1:
            children = result.children or []
        elif error is None:
            exec_ex.detail = "transaction aborted: a WATCHed key was modified"
        for i, h in enumerate(held):
            h.ex.tx = "exec"
            if children is None:
                h.ex.tx = "aborted"
                self._finish(h, Status.ERROR)
                h.ex.error = error.value if error is not None and isinstance(error.value, bytes) else WATCH_FAILED
            elif i < len(children):
                r = children[i]
                self._finish(h, Status.ERROR if r.is_error else Status.OK, r)
            else:
                self._finish(h, Status.UNKNOWN, detail="result not captured")
        st = self._st
        exec_ex.user, exec_ex.db, exec_ex.resp = st.user, st.db, st.resp

    # ------------------------------------------------------- losses and errors
    def request_gap(self, gap: Gap) -> None:
        """Client bytes were lost: an unknown number of commands, whose replies will come before those of the
        requests seen next; those are ``unknown`` until a reply comes with nothing pending (unless such a
        reply already came after the last request seen: a client that waits for each reply)."""
        if not self._unmatched_since_req:
            self._blind = True
        self.stats.gaps += 1
        self._event(Event.GAP, gap.ts_ns, detail=f"to_server: {gap.reason}", lost_bytes=gap.nbytes)

    def reply_gap(self, gap: Gap) -> None:
        """Server bytes were lost: requests sent before the hole may have been
        answered inside it; their outcome is unknown."""
        self.stats.gaps += 1
        self._event(Event.GAP, gap.ts_ns, detail=f"to_client: {gap.reason}", lost_bytes=gap.nbytes)
        self._owed = 0  # (evicted requests are older than any pending one: their replies count as lost too)
        self._flush_before(gap.ts_ns, "reply lost in a capture gap")

    def request_error(self, err: ParseError) -> None:
        """Bytes from the client that are not a command. Redis answers them with
        a protocol error (and closes), which pairs with this row when it comes."""
        self.stats.parse_errors += 1
        ex = Exchange(Event.PARSE_ERROR, self.conn, err.ts_ns, self.meta, detail=f"to_server: {err.reason}")
        ex.lost_bytes = err.nbytes
        ex.status = Status.NO_REPLY
        p = _Pending(ex, b"", 1, optional=True)
        rep, self._proto_reply = self._proto_reply, None
        if rep is not None and not self._pending:
            ex.reply_ts_ns, ex.reply_bytes, ex.reply_type = rep.ts_ns, rep.nbytes, rep.kind.value
            self._finish(p, Status.ERROR, rep)
        else:
            if rep is not None:
                self.stats.unmatched_replies += 1
            self._push(p)

    def reply_error(self, err: ParseError) -> None:
        self.stats.parse_errors += 1
        detail = f"to_client: {err.reason}"
        self._event(Event.PARSE_ERROR, err.ts_ns, detail=detail, lost_bytes=err.nbytes, status=Status.UNKNOWN)
        self._owed = 0
        self._flush_before(err.ts_ns, "reply unreadable (parse error)")

    def _flush_before(self, ts_ns: int, why: str) -> None:
        pending = self._pending
        while pending and pending[0].ex.ts_ns <= ts_ns:
            p = pending.popleft()
            self._finish(p, Status.UNKNOWN, detail=p.ex.detail or why)  # (a parse_error row keeps its reason)

    def close(self, ts_ns: int, reason: str) -> None:
        """Connection ended: flush what never got a reply."""
        self._settle(ts_ns)
        if self._proto_reply is not None:
            self._proto_reply = None
            self.stats.unmatched_replies += 1
        while self._pending:
            p = self._pending.popleft()
            if p.expect == VARIABLE and p.got > 0:
                self._finish(p, Status.OK)
            else:
                self._finish(p, Status.NO_REPLY)
        for h in self._held:
            self._finish(h, Status.NO_REPLY, detail="queued in MULTI, no EXEC before close")
        self._held.clear()
        s = self.stats
        self._event(
            Event.DISCONNECT,
            ts_ns,
            detail=(
                f"{reason}; commands={s.commands} unmatched_replies={s.unmatched_replies} "
                f"pushes={s.pushes} gaps={s.gaps} parse_errors={s.parse_errors} evicted={s.evicted}"
                + (f" replicated={s.replicated}" if s.replicated else "")
            ),
        )

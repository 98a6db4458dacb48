"""Pairing tests built from frames: session state without any parser."""

from __future__ import annotations

from auditor.session import Session
from auditor.types import ConnMeta, Event, Gap, ParseError, Reply, Request, RespType, Source, Status

META = ConnMeta(Source.PCAP, "192.0.2.1", 50000, "192.0.2.2", 6379)
T = 1_700_000_000_000_000_000


class Conv:
    """Drive a session with a running clock."""

    def __init__(self, mid_stream: bool = False) -> None:
        self.s = Session("c1", META, mid_stream=mid_stream)
        self.t = T
        self.out: list = []

    def tick(self) -> int:
        self.t += 1000
        return self.t

    def req(self, *args: str | bytes) -> Conv:
        a = [x.encode() if isinstance(x, str) else x for x in args]
        self.s.request(Request(a, self.tick(), 10))
        self.out += self.s.drain()
        return self

    def rep(self, kind: str, value=None, children=None, count=0) -> Conv:
        kids = None
        if children is not None:
            kids = [c if isinstance(c, Reply) else scalar(c) for c in children]
            count = count or len(kids)
        self.s.reply(Reply(RespType(kind), value, self.tick(), 5, kids, count))
        self.out += self.s.drain()
        return self

    def ok(self) -> Conv:
        return self.rep("+", b"OK")

    def close(self) -> list:
        self.s.close(self.tick(), "fin")
        self.out += self.s.drain()
        return [e for e in self.out if e.event is Event.COMMAND]


def scalar(v) -> Reply:
    if isinstance(v, int):
        return Reply(RespType.INTEGER, v, T, 4)
    if isinstance(v, Reply):
        return v
    return Reply(RespType.BULK, v if isinstance(v, bytes) else str(v).encode(), T, 8)


def cmds(rows) -> list[tuple]:
    return [(e.request.args[0].decode().upper(), e.status.value, e.user, e.db) for e in rows]


def test_simple_pairing_in_order_with_pipelining():
    c = Conv()
    c.req("SET", "k", "v").req("GET", "k").req("INCR", "n")
    c.ok().rep("$", b"v").rep(":", 1)
    rows = c.close()
    assert [r.seq for r in rows] == [1, 2, 3]
    assert cmds(rows) == [("SET", "ok", "default", 0), ("GET", "ok", "default", 0), ("INCR", "ok", "default", 0)]
    assert rows[2].reply_int == 1
    assert all(r.reply_ts_ns > r.ts_ns for r in rows)


def test_error_reply_and_no_reply_at_close():
    c = Conv()
    c.req("LPUSH", "k", "v").rep("-", b"WRONGTYPE Operation against a key holding the wrong kind of value")
    c.req("GET", "x")
    rows = c.close()
    assert rows[0].status is Status.ERROR and rows[0].error.startswith(b"WRONGTYPE")
    assert rows[1].status is Status.NO_REPLY and rows[1].reply_ts_ns is None


def test_auth_sets_user_only_on_success():
    c = Conv()
    c.req("AUTH", "alice", "bad").rep("-", b"WRONGPASS invalid username-password pair or user is disabled.")
    c.req("GET", "a").rep("-", b"NOAUTH Authentication required.")
    c.req("AUTH", "alice", "good").ok()
    c.req("GET", "a").rep("$", b"1")
    c.req("AUTH", "pw").ok()
    c.req("PING").rep("+", b"PONG")
    rows = c.close()
    assert [(r.status.value, r.user) for r in rows] == [
        ("error", "default"),
        ("error", "default"),
        ("ok", "alice"),
        ("ok", "alice"),
        ("ok", "default"),
        ("ok", "default"),
    ]


def test_pipelined_after_auth_gets_new_user():
    c = Conv()
    c.req("AUTH", "bob", "pw").req("SET", "k", "v")
    c.ok().ok()
    rows = c.close()
    assert [r.user for r in rows] == ["bob", "bob"]


def test_hello_auth_and_resp3():
    c = Conv()
    c.req("HELLO", "3", "AUTH", "carol", "pw", "SETNAME", "x").rep("%", None, [b"server", b"redis", b"proto", 3])
    c.req("GET", "k").rep("_")
    rows = c.close()
    assert rows[0].user == "carol" and rows[1].user == "carol"
    assert rows[1].resp == 3


def test_select_and_select_inside_multi():
    c = Conv()
    c.req("SELECT", "2").ok()
    c.req("SET", "a", "1").ok()
    c.req("MULTI").ok()
    c.req("SELECT", "5").rep("+", b"QUEUED")
    c.req("SET", "b", "2").rep("+", b"QUEUED")
    c.req("EXEC").rep("*", None, [Reply(RespType.SIMPLE, b"OK", T, 5), Reply(RespType.SIMPLE, b"OK", T, 5)])
    c.req("GET", "b").rep("$", b"2")
    c.req("SELECT", "99").rep("-", b"ERR DB index is out of range")
    c.req("PING").rep("+", b"PONG")
    rows = c.close()
    assert [(r.request.args[0].decode(), r.db, r.tx) for r in rows] == [
        ("SELECT", 0, None),
        ("SET", 2, None),
        ("MULTI", 2, None),
        ("SELECT", 2, "exec"),
        ("SET", 5, "exec"),
        ("EXEC", 5, "exec"),
        ("GET", 5, None),
        ("SELECT", 5, None),
        ("PING", 5, None),
    ]
    assert [r.seq for r in rows] == list(range(1, 10))


def test_exec_results_per_command_and_execabort_and_discard():
    c = Conv()
    c.req("MULTI").ok()
    c.req("SET", "a", "1").rep("+", b"QUEUED")
    c.req("LPUSH", "a", "x").rep("+", b"QUEUED")
    c.req("EXEC").rep(
        "*", None, [Reply(RespType.SIMPLE, b"OK", T, 5), Reply(RespType.ERROR, b"WRONGTYPE Operation", T, 5)]
    )
    c.req("MULTI").ok()
    c.req("SET", "a").rep("-", b"ERR wrong number of arguments for 'set' command")
    c.req("INCR", "n").rep("+", b"QUEUED")
    c.req("EXEC").rep("-", b"EXECABORT Transaction discarded because of previous errors.")
    c.req("MULTI").ok()
    c.req("INCR", "n").rep("+", b"QUEUED")
    c.req("DISCARD").ok()
    c.req("MULTI").ok()
    c.req("INCR", "n").rep("+", b"QUEUED")
    c.req("EXEC").rep("*", None, None, count=-1)
    rows = c.close()
    got = [(r.request.args[0].decode(), r.status.value, r.tx) for r in rows]
    assert got == [
        ("MULTI", "ok", None),
        ("SET", "ok", "exec"),
        ("LPUSH", "error", "exec"),
        ("EXEC", "ok", "exec"),
        ("MULTI", "ok", None),
        ("SET", "error", "queued"),
        ("INCR", "error", "aborted"),
        ("EXEC", "error", "exec"),
        ("MULTI", "ok", None),
        ("INCR", "error", "discarded"),
        ("DISCARD", "ok", None),
        ("MULTI", "ok", None),
        ("INCR", "error", "aborted"),
        ("EXEC", "ok", "exec"),
    ]
    assert rows[6].error.startswith(b"EXECABORT")
    assert b"WATCH" in rows[12].error


def test_client_reply_off_on_skip():
    c = Conv()
    c.req("CLIENT", "REPLY", "OFF").req("SET", "a", "1").req("SET", "b", "2")
    c.req("CLIENT", "REPLY", "ON").ok()
    c.req("CLIENT", "REPLY", "SKIP").req("SET", "c", "3").req("GET", "c").rep("$", b"3")
    rows = c.close()
    assert [(r.request.args[-1].decode(), r.status.value) for r in rows] == [
        ("OFF", "no_reply"),
        ("1", "no_reply"),
        ("2", "no_reply"),
        ("ON", "ok"),
        ("SKIP", "no_reply"),
        ("3", "no_reply"),
        ("c", "ok"),
    ]
    assert rows[6].reply_type == "$"


def test_pubsub_resp2_confirmations_messages_and_ping():
    c = Conv()
    c.req("SUBSCRIBE", "a", "b")
    c.rep("*", None, [b"subscribe", b"a", 1]).rep("*", None, [b"subscribe", b"b", 2])
    c.rep("*", None, [b"message", b"a", b"hello"])
    c.req("PSUBSCRIBE", "n*").rep("*", None, [b"psubscribe", b"n*", 3])
    c.rep("*", None, [b"pmessage", b"n*", b"news", b"x"])
    c.req("PING").rep("*", None, [b"pong", b""])
    c.req("UNSUBSCRIBE")
    c.rep("*", None, [b"unsubscribe", b"a", 2]).rep("*", None, [b"unsubscribe", b"b", 1])
    c.req("PUNSUBSCRIBE").rep("*", None, [b"punsubscribe", b"n*", 0])
    c.req("GET", "k").rep("$", b"v")
    rows = c.close()
    assert [(r.request.args[0].decode(), r.status.value) for r in rows] == [
        ("SUBSCRIBE", "ok"),
        ("PSUBSCRIBE", "ok"),
        ("PING", "ok"),
        ("UNSUBSCRIBE", "ok"),
        ("PUNSUBSCRIBE", "ok"),
        ("GET", "ok"),
    ]
    assert c.s.stats.pushes == 2 and c.s.stats.unmatched_replies == 0


def test_resp3_pushes_are_not_answers():
    c = Conv()
    c.req("HELLO", "3").rep("%", None, [b"proto", 3])
    c.req("SUBSCRIBE", "a").rep(">", None, [b"subscribe", b"a", 1])
    c.rep(">", None, [b"message", b"a", b"m1"])
    c.req("GET", "k")
    c.rep(">", None, [b"invalidate", Reply(RespType.ARRAY, None, T, 3, [], 1)])
    c.rep("$", b"v")
    rows = c.close()
    assert [(r.request.args[0].decode(), r.status.value) for r in rows] == [
        ("HELLO", "ok"),
        ("SUBSCRIBE", "ok"),
        ("GET", "ok"),
    ]
    assert rows[2].reply_type == "$" and c.s.stats.pushes == 2


def test_array_starting_with_message_is_a_reply_when_not_subscribed():
    c = Conv()
    c.req("LRANGE", "l", "0", "-1").rep("*", None, [b"message", b"x", b"y"])
    rows = c.close()
    assert rows[0].status is Status.OK and c.s.stats.pushes == 0


def test_monitor_lines_are_not_replies_and_reset_ends_monitor():
    c = Conv()
    c.req("MONITOR").ok()
    c.rep("+", b'1700000000.123456 [0 127.0.0.1:1] "GET" "k"').rep("+", b'1700000000.2 [0 unix:/s] "PING"')
    c.req("RESET")
    c.rep("+", b'1700000000.3 [0 127.0.0.1:1] "SET" "k" "v"').rep("+", b"RESET")
    c.req("PING").rep("+", b"PONG")
    c.req("QUIT").ok()
    rows = c.close()
    assert [(r.request.args[0].decode(), r.status.value) for r in rows] == [
        ("MONITOR", "ok"),
        ("RESET", "ok"),
        ("PING", "ok"),
        ("QUIT", "ok"),
    ]
    assert c.s.stats.monitor_lines == 3 and c.s.stats.unmatched_replies == 0


def test_reset_is_answered_after_client_reply_off():
    c = Conv()
    c.req("CLIENT", "REPLY", "OFF").req("SET", "a", "1")
    c.req("RESET").rep("+", b"RESET")
    c.req("GET", "a").rep("$", b"1")
    rows = c.close()
    assert [r.status.value for r in rows] == ["no_reply", "no_reply", "ok", "ok"]
    assert c.s.stats.unmatched_replies == 0


def test_reset_restores_defaults():
    c = Conv()
    c.req("AUTH", "u", "p").ok().req("SELECT", "3").ok()
    c.req("RESET").rep("+", b"RESET")
    c.req("GET", "k").rep("_")
    rows = c.close()
    assert (rows[-1].user, rows[-1].db, rows[-1].resp) == ("default", 0, 2)


def test_mid_stream_unknown_user_and_early_reply_unmatched():
    c = Conv(mid_stream=True)
    c.rep("+", b"OK")  # reply to a request sent before the capture started
    c.req("GET", "k").rep("$", b"v")
    rows = c.close()
    assert len(rows) == 1 and rows[0].status is Status.OK
    assert rows[0].user is None and rows[0].db is None
    assert c.s.stats.unmatched_replies == 1


def test_reply_gap_marks_earlier_requests_unknown():
    c = Conv()
    c.req("GET", "a").req("GET", "b")
    c.s.reply_gap(Gap(c.tick(), 100))
    c.req("GET", "c").rep("$", b"c")
    out = c.close()
    assert [(r.request.args[1].decode(), r.status.value) for r in out] == [
        ("a", "unknown"),
        ("b", "unknown"),
        ("c", "ok"),
    ]
    assert any(e.event is Event.GAP for e in c.out)


def test_after_a_request_gap_pipelined_requests_are_unknown_until_realigned():
    """GET b was lost: its reply comes before INCR's, so INCR cannot be paired; the reply that then comes with
    nothing pending (INCR's own) shows the alignment is back."""
    c = Conv()
    c.req("GET", "a")
    c.s.request_gap(Gap(c.tick(), 23, "not captured (acknowledged)"))
    c.req("INCR", "n").req("GET", "c")
    c.rep("$", b"a").rep("$", b"b").rep(":", 1).rep("$", b"c")  # GET c's reply comes with nothing pending
    c.req("GET", "d").rep("$", b"d")
    out = c.close()
    assert [(r.request.args[0].decode(), r.status.value, r.reply_type) for r in out] == [
        ("GET", "ok", "$"),
        ("INCR", "unknown", None),
        ("GET", "unknown", None),
        ("GET", "ok", "$"),
    ]
    assert "request gap" in (out[1].detail or "") and c.s.stats.unmatched_replies == 1


def test_a_transaction_after_a_request_gap_is_unknown_too():
    """EXEC came after the gap: its reply may be a lost request's, so the queued commands' fate is unknown."""
    c = Conv()
    c.req("MULTI").req("INCR", "n").ok().rep("+", b"QUEUED")
    c.s.request_gap(Gap(c.tick(), 23, "not captured (acknowledged)"))
    c.req("EXEC").rep("$", b"lost").rep("*", children=[1])  # the lost request's reply, then EXEC's
    out = c.close()
    assert [(r.request.args[0].decode(), r.status.value) for r in out] == [
        ("MULTI", "ok"),
        ("INCR", "unknown"),
        ("EXEC", "unknown"),
    ]
    assert c.s.stats.unmatched_replies == 1 and not c.s._held


def test_a_request_gap_after_the_lost_requests_answer_keeps_pairing():
    """A client that waits for each reply: the lost request's answer came (unmatched) before the next request
    showed the hole, so the requests after the gap pair as usual."""
    c = Conv()
    c.req("GET", "a").rep("$", b"a")
    c.rep("-", b"WRONGTYPE Operation against a key holding the wrong kind of value")  # the lost LPOP's
    c.s.request_gap(Gap(c.tick(), 23, "not captured (acknowledged)"))
    c.req("INCR", "n").rep(":", 1)
    out = c.close()
    assert [(r.request.args[0].decode(), r.status.value) for r in out] == [("GET", "ok"), ("INCR", "ok")]
    assert c.s.stats.unmatched_replies == 1 and c.s.plain


def test_request_parse_error_pairs_with_protocol_error():
    c = Conv()
    c.s.request_error(ParseError(c.tick(), 12, "expected '$'"))
    c.rep("-", b"ERR Protocol error: expected '$', got 'x'")
    c.close()
    pe = [e for e in c.out if e.event is Event.PARSE_ERROR]
    assert len(pe) == 1 and pe[0].status is Status.ERROR and pe[0].error.startswith(b"ERR Protocol error")
    assert c.s.stats.unmatched_replies == 0


def test_request_parse_error_without_reply_does_not_shift_pairing():
    c = Conv()
    c.s.request_error(ParseError(c.tick(), 3, "garbage"))
    c.req("GET", "k").rep("$", b"v")
    rows = c.close()
    assert rows[0].status is Status.OK


def test_pending_is_bounded(monkeypatch):
    from auditor import limits

    monkeypatch.setattr(limits, "MAX_PENDING_REQUESTS", 10)
    c = Conv()
    for i in range(25):
        c.req("SET", f"k{i}", "v")
    rows = c.close()
    assert len(rows) == 25
    assert sum(r.status is Status.UNKNOWN for r in rows) == 15 and c.s.stats.evicted == 15
    assert [r.seq for r in rows] == list(range(1, 26))


def test_replies_of_evicted_requests_are_skipped(monkeypatch):
    """A pipeline deeper than the bound, then its replies: the evicted requests' replies come first and must
    not be paired with the requests still pending (each INCR's reply is its own number here)."""
    from auditor import limits

    monkeypatch.setattr(limits, "MAX_PENDING_REQUESTS", 10)
    c = Conv()
    for i in range(25):
        c.req("INCRBY", "n", str(i))
    for i in range(25):
        c.rep(":", i) if i != 20 else c.rep("-", b"ERR not an integer")
    c.rep("$", b"stray")  # one more than was asked for: unmatched
    rows = c.close()
    assert [r.status for r in rows[:15]] == [Status.UNKNOWN] * 15
    assert [r.reply_int for r in rows[15:] if r.status is Status.OK] == [i for i in range(15, 25) if i != 20]
    assert rows[20].status is Status.ERROR
    assert c.s.stats.evicted == 15 and c.s.stats.unmatched_replies == 1


def test_evicted_replies_lost_in_a_gap_are_not_owed(monkeypatch):
    from auditor import limits

    monkeypatch.setattr(limits, "MAX_PENDING_REQUESTS", 2)
    c = Conv()
    for i in range(4):
        c.req("INCRBY", "n", str(i))
    c.s.reply_gap(Gap(c.tick(), 100, "capture gap"))  # the replies of all four were in the hole
    c.req("GET", "k").rep("$", b"v")
    rows = c.close()
    assert [r.status for r in rows if r.event is Event.COMMAND] == [Status.UNKNOWN] * 4 + [Status.OK]

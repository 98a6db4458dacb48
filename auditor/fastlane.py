"""fastlane: the C fast lane's Python side (``auditor._lane``, built from
``auditor/_native/lane.c``).

While a connection is in a plain state, the pipeline gives its bytes to a
``Lane``, which parses, pairs and renders ordinary commands in C (about a tenth
of the Python cost), with the rules of this package: what a row holds comes
from the redactor's own plans (``plan``), and whatever the lane is not sure of
goes back to the Python stages (``RequestDecoder`` / ``Session`` /
``Redactor``), byte for byte. Rows are equal either way: tests replay every
capture both ways and compare.

Without the compiled module (``REDIS_AUDIT_PURE=1``, or a build without a C
compiler) the pipeline runs the Python stages alone.
"""

from __future__ import annotations

from typing import Any

from auditor import limits, native_enabled
from auditor.commands import lookup
from auditor.redact import (
    _BY_NAME,
    _CLASS_OF,
    _MASK_NOOP,
    _MASK_NOOP_MAX_LEN,
    _REDACTED,
    KeysPolicy,
    Redactor,
    _build,
    _find_plans,
    _Shape,
)
from auditor.resp_request import parse_request
from auditor.session import SPECIAL, Session
from auditor.types import CHUNK_SLOTS, Chunk, Direction, Event, Exchange, Request, RespType, Row, Status

try:
    from auditor import _lane
except ImportError:  # pragma: no cover - exercised by REDIS_AUDIT_PURE / a build without C
    _lane = None  # type: ignore[assignment]

# C plans: (command, subcommand, acl, key positions, acts, probe, tokens, sizes)
_CPLANS: dict[_Shape, tuple | None] = {}
_MAX_CPLANS = 16384
_POLICY = {KeysPolicy.PLAIN: 0, KeysPolicy.MASK: 1, KeysPolicy.HASH: 2, KeysPolicy.DROP: 3}
# the lane's own bounds (beyond them it hands the connection back to Python): see limits
MAX_FRAME = limits.LANE_MAX_FRAME
MAX_REPLY = limits.LANE_MAX_REPLY
MAX_PENDING_BYTES = limits.LANE_MAX_PENDING_BYTES


def available() -> bool:
    return _lane is not None and native_enabled()


def _cplan(sh: _Shape) -> tuple | None:
    """A static plan in the lane's form; None when an argument needs a check
    (identifiers): such requests are rendered by the redactor itself."""
    cp = _CPLANS.get(sh, False)
    if cp is False:
        if any(a.__class__ is tuple for a in sh.acts):
            cp = None
        else:
            cp = (
                sh.command,
                sh.subcommand,
                sh.acl,
                tuple(sh.keys),
                tuple(sh.acts),
                tuple(sh.probe),
                frozenset(sh.tokens),
                frozenset(sh.sizes),
            )
        if len(_CPLANS) >= _MAX_CPLANS:
            _CPLANS.clear()
        _CPLANS[sh] = cp
    return cp  # type: ignore[return-value]


def _shape(args: list[bytes]) -> _Shape | None:
    """The redactor's static plan for this request (as ``Redactor.row`` finds it)."""
    n = len(args)
    if n > 32:
        return None
    plans = _BY_NAME.get(args[0])
    if plans is None:
        plans = _find_plans(args)
        if plans is None:
            return None
    found = plans[n]
    if found is None:
        info = lookup(args)
        if info is None:
            return None
        found = _build(plans, info, n)
    return found if found.__class__ is _Shape else None  # type: ignore[return-value]


def plan(args: list[bytes]) -> tuple[bool, Any]:
    """(container, plan) for a request seen by a lane: plan False when the
    session must see the command (AUTH, SELECT, MULTI, ...), None when the
    redactor renders it (no static plan), else the lane's plan. ``container``:
    plans differ by subcommand, so the lane keys them by ``args[1]`` too."""
    if args[0].upper() in SPECIAL:
        return False, False
    info0 = lookup(args[:1])
    container = info0 is not None and info0.subcommand is None and bool(info0.subcommands)
    sh = _shape(args)
    return container, None if sh is None else _cplan(sh)


def variant(args: list[bytes]) -> tuple | None:
    """The plan of a request in which a probed argument is a word of its
    command (SET k v EX 10)."""
    sh = _shape(args)
    if sh is None:
        return None
    v = sh.with_words(args)
    return None if v is False else _cplan(v)


def make_config(redactor: Redactor) -> Any:
    """The state every lane of one pipeline shares."""
    row = redactor.row

    def render(s: Session, raw: bytes, ts: int, seq: int, err: bytes | None, rts: int, rbytes: int, rtype: str) -> Row:
        req = parse_request(raw)[1]
        assert type(req) is Request  # the lane parsed this very frame
        req.ts_ns = ts
        st = s._st
        ex = Exchange(Event.COMMAND, s.conn, ts, s.meta, seq, st.user, st.db, st.resp, req)
        ex.status = Status.OK if err is None else Status.ERROR
        ex.error = err
        ex.reply_ts_ns, ex.reply_bytes, ex.reply_type = rts, rbytes, rtype
        return row(ex)

    return _lane.Config(
        row_type=Row,
        kinds={ord(k.value): k.value for k in RespType if len(k.value) == 1},
        redacted=list(_REDACTED),
        key1=redactor._key1,
        policy=_POLICY[redactor.keys],
        mask_noop=_MASK_NOOP,
        class_of=_CLASS_OF,
        mask_max_len=_MASK_NOOP_MAX_LEN,
        max_key_chars=limits.MAX_KEY_CHARS,
        arg_keep=limits.MAX_ARG_KEEP,
        plan_fn=plan,
        variant_fn=variant,
        render_fn=render,
        max_pending=limits.MAX_PENDING_REQUESTS,
        max_frame=MAX_FRAME,
        max_reply=MAX_REPLY,
        max_names=4096,
        reply_keep=limits.MAX_REPLY_KEEP,
        max_pending_bytes=MAX_PENDING_BYTES,
        max_line=limits.MAX_LINE_LEN,
    )


def new_feeder(conns: dict[str, Any], conn_type: type, stream_type: type) -> Any:
    """The pipeline's hot path in C (``_lane.Feeder``): it reads the pipeline's
    connections (``conns``: name -> ``conn_type``, with the slots fast, lane,
    req_stream and rep_stream) and their streams (slots expected and _segs).
    None if Chunk's slots cannot be read by offset (``CHUNK_SLOTS``)."""
    if not CHUNK_SLOTS:
        return None
    return _lane.Feeder(
        conns=conns,
        conn_type=conn_type,
        conn_slots=tuple(conn_type.__dict__[f] for f in ("fast", "lane", "req_stream", "rep_stream")),
        stream_type=stream_type,
        stream_slots=(stream_type.__dict__["expected"], stream_type.__dict__["_segs"]),
        chunk_type=Chunk,
        chunk_slots=CHUNK_SLOTS,
        to_server=Direction.TO_SERVER,
        to_client=Direction.TO_CLIENT,
    )


def new_lane(config: Any, session: Session, out: list[Row]) -> Any:
    m = session.meta
    prefix = (
        m.source.value,
        session.conn,
        m.client_addr,
        m.client_port,
        m.server_addr,
        m.server_port,
        m.server_pid,
        m.server_uid,
        m.client_pid,
        m.client_uid,
        m.client_comm,
    )
    return _lane.Lane(config, session, out, prefix)

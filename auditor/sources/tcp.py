"""TCP segments -> source events (``ConnOpen`` / ``Chunk`` / ``ConnClose``), shared by pcap replay and the
live packet sniffer.

Input: one call per TCP segment with addresses, ports, sequence number, flags and payload (the caller parsed the
link and IP headers). Output: source events. No reassembly here: chunks carry their stream position and the
stream stage orders them.

- Direction comes from the port: ``dport`` in ``server_ports`` -> TO_SERVER, else ``sport`` -> TO_CLIENT, else
  the segment is ignored (counted in ``other_port``).
- ``Chunk.pos`` is the offset since ISN+1 when the SYN (or SYN-ACK) of that direction was seen, else since the
  first data segment seen in that direction (``mid_stream``: no SYN seen at all), unwrapped across 2**32.
  Bytes before a mid-stream base are dropped (counted in ``before_start_bytes``).
- A connection closes when both directions sent a FIN (``fin``: a half-closed connection keeps receiving the
  other direction's data, e.g. the reply to ``QUIT``), on a RST (``rst``), when a SYN with a new ISN reuses its
  tuple (``close``), when the table is full (``evicted``), after ``limits.IDLE_TIMEOUT_NS`` without packets
  (``expire``, ``idle``) or at the end (``finish``, ``eof``).
- A closed tuple is remembered for ``limits.TCP_CLOSED_LINGER_NS``: late packets (last ACK, retransmitted FIN)
  don't open a phantom connection; a SYN always starts a new one.
- The table holds at most ``max_connections``; beyond, the least recently active connection is evicted
  (second-chance approximation of LRU: amortised O(1), no per-packet bookkeeping).
- A direction whose data jumped ahead of the highest byte seen (``hi``) has a hole: its connection is in
  ``holes`` until the peer acknowledges everything seen, and gets ``Acked`` events, before the segment's own
  data: the position up to which the segment's ACK number acknowledges the other direction. Bytes the peer
  acknowledged are never sent again, so such a hole is a loss of the capture (tcpdump's "packets dropped by
  kernel"), not a reordering: the stream skips it at once instead of holding every later request until its
  reorder limit, while their replies go by unmatched.
- Connection ids are a hash of source, 4-tuple, client ISN and first timestamp: the same capture gives the same
  ids on every replay.

Segments of a known connection without SYN/FIN/RST take a fast path (one dict lookup, no allocation besides
the ``Chunk``): pcap replay's throughput depends on it.
"""

from __future__ import annotations

import hashlib
import socket
from collections import OrderedDict
from collections.abc import Callable

from auditor import limits, native_enabled
from auditor.types import CHUNK_SLOTS, Acked, Chunk, ConnClose, ConnMeta, ConnOpen, Direction, Source, SourceEvent

FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10

# -- a cheaper Chunk constructor ------------------------------------------------------------------------------
# ``Chunk`` is a frozen slots dataclass: its generated ``__init__`` goes through ``object.__setattr__`` per field
# (~1 us, half the per-packet budget of pcap replay). Setting the slots through their descriptors builds an
# identical (equal) object in ~0.55 us. Guarded: if the fields change, fall back to the regular constructor.
_FAST_CHUNK = bool(CHUNK_SLOTS)
_new = object.__new__
if _FAST_CHUNK:
    _set_conn, _set_dir, _set_pos, _set_ts, _set_data, _set_len = (d.__set__ for d in CHUNK_SLOTS)

    def make_chunk(conn: str, direction: Direction, pos: int, ts_ns: int, data: bytes, orig_len: int) -> Chunk:
        """Same as ``Chunk(...)``, about twice as fast."""
        c = _new(Chunk)
        _set_conn(c, conn)
        _set_dir(c, direction)
        _set_pos(c, pos)
        _set_ts(c, ts_ns)
        _set_data(c, data)
        _set_len(c, orig_len)
        return c

else:  # pragma: no cover - only if types.Chunk changes shape
    make_chunk = Chunk


def _addr(a: str | bytes) -> str:
    if isinstance(a, str):
        return a
    return socket.inet_ntop(socket.AF_INET if len(a) == 4 else socket.AF_INET6, a)


class _Flow:
    """One direction of a connection: ``ref_seq`` is a raw sequence number whose stream position is ``ref_pos``
    (None until the base is known: SYN seen, or first data)."""

    __slots__ = ("acked", "conn", "d", "direction", "fin", "hi", "hole", "ref_pos", "ref_seq")

    def __init__(self, conn: _Conn, d: int) -> None:
        self.conn = conn
        self.d = d
        self.direction = Direction(d)
        self.ref_seq: int | None = None
        self.ref_pos = 0
        self.fin = False
        self.hi = 0  # the end of the highest bytes seen
        self.hole = False  # data came after a hole, not yet all acknowledged
        self.acked = 0  # the last position an Acked event was sent for


class _Conn:
    __slots__ = ("client_isn", "flows", "id", "key", "last_ts", "stamp")

    def __init__(self, conn_id: str, key: tuple, ts_ns: int, client_isn: int | None) -> None:
        self.id = conn_id
        self.key = key  # (client addr, client port, server addr, server port), addresses as given
        self.last_ts = ts_ns  # last packet
        self.stamp = ts_ns  # last_ts when it was (re)queued in the LRU order
        self.client_isn = client_isn
        self.flows = (_Flow(self, 0), _Flow(self, 1))


class TcpTracker:
    """Tracks TCP connections to ``server_ports`` and turns their segments into source events.

    ``src_ip`` / ``dst_ip`` may be text or packed (4 or 16 bytes, converted only when a connection opens); use
    one form consistently.

    Counters: ``packets`` (segments given), ``other_port`` (neither port is a server port), ``connections``,
    ``mid_stream`` (connections whose SYN was not seen), ``closed_fin`` / ``closed_rst`` / ``reused`` /
    ``evicted`` / ``idle`` (how connections ended before the end of input), ``after_close`` (segments with
    data for a connection already closed: dropped), ``before_start_bytes`` (bytes before a mid-stream base:
    dropped).
    """

    def __init__(
        self,
        server_ports: set[int] | frozenset[int],
        source: Source,
        max_connections: int = limits.MAX_CONNECTIONS,
        shard: tuple[int, int] | None = None,
    ) -> None:
        """``shard=(k, n)``: track only connections whose client port % n == k (parallel replay: n
        workers each take one share of the connections, whole)."""
        self.server_ports = frozenset(server_ports)
        if shard is not None and shard[1] > 1:
            self._shard = shard
            self.feed = self._feed_shard  # type: ignore[method-assign]
        self.source = source
        self.max_connections = max(1, max_connections)
        self._flows: dict[tuple, _Flow] = {}  # (src, sport, dst, dport) -> direction of an open connection
        self._conns: OrderedDict[tuple, _Conn] = OrderedDict()  # open connections, roughly LRU first
        self._closed: OrderedDict[tuple, int] = OrderedDict()  # recently closed tuples -> close time
        self.packets = 0
        self.other_port = 0
        self.connections = 0
        self.mid_stream = 0
        self.closed_fin = 0
        self.closed_rst = 0
        self.reused = 0
        self.evicted = 0
        self.idle = 0
        self.after_close = 0
        self.before_start_bytes = 0
        self.holes: set[str] = set()  # ids of connections with a flow whose hole is not all acknowledged

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def packet(
        self,
        ts_ns: int,
        src_ip: str | bytes,
        sport: int,
        dst_ip: str | bytes,
        dport: int,
        seq: int,
        flags: int,
        payload: bytes,
        orig_payload_len: int,
        ack: int = 0,
    ) -> list[SourceEvent]:
        """One TCP segment -> its events. ``orig_payload_len`` > ``len(payload)``: the rest was not captured.
        ``ack``: the acknowledgment number (used when the ACK flag is set)."""
        out: list[SourceEvent] = []
        self.feed(out, ts_ns, src_ip, sport, dst_ip, dport, seq, flags, payload, orig_payload_len, ack)
        return out

    def _feed_shard(
        self,
        out: list[SourceEvent],
        ts_ns: int,
        src_ip: str | bytes,
        sport: int,
        dst_ip: str | bytes,
        dport: int,
        seq: int,
        flags: int,
        payload: bytes,
        orig_payload_len: int,
        ack: int = 0,
    ) -> None:
        k, n = self._shard
        # Mix the client port first: Linux gives connect() even ports, so port % 2 would not split.
        if (((sport if dport in self.server_ports else dport) * 0x9E3779B1) >> 12) % n == k:
            TcpTracker.feed(self, out, ts_ns, src_ip, sport, dst_ip, dport, seq, flags, payload, orig_payload_len, ack)

    def feed(
        self,
        out: list[SourceEvent],
        ts_ns: int,
        src_ip: str | bytes,
        sport: int,
        dst_ip: str | bytes,
        dport: int,
        seq: int,
        flags: int,
        payload: bytes,
        orig_payload_len: int,
        ack: int = 0,
    ) -> None:
        """Like ``packet`` but appends the events to ``out`` (no list per segment: the pcap reader's path)."""
        self.packets += 1
        flow = self._flows.get((src_ip, sport, dst_ip, dport))
        if flow is None or flags & 0x07:  # SYN, FIN, RST or an unknown tuple
            self._control(out, ts_ns, flow, src_ip, sport, dst_ip, dport, seq, flags, payload, orig_payload_len, ack)
            return
        conn = flow.conn
        conn.last_ts = ts_ns
        if self.holes and flags & ACK and conn.id in self.holes:
            self._acked(out, conn.flows[1 - flow.d], ack, ts_ns)
        n = len(payload)
        if not n and orig_payload_len <= 0:
            return
        ref = flow.ref_seq
        if ref is not None:
            delta = ((seq - ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            pos = flow.ref_pos + delta
            if delta > 0:
                flow.ref_seq = seq
                flow.ref_pos = pos
            ln = orig_payload_len if orig_payload_len > n else n
            if pos + ln > flow.hi:
                if pos > flow.hi:
                    self._hole(flow)
                flow.hi = pos + ln
            if pos >= 0 and _FAST_CHUNK:  # make_chunk inlined: this is the per-packet hot path
                c = _new(Chunk)
                _set_conn(c, conn.id)
                _set_dir(c, flow.direction)
                _set_pos(c, pos)
                _set_ts(c, ts_ns)
                _set_data(c, payload)
                _set_len(c, ln)
                out.append(c)
                return
        self._data(out, flow, ts_ns, seq, payload, orig_payload_len)

    def finish(self, ts_ns: int) -> list[SourceEvent]:
        """End of input: close every open connection with reason ``eof``."""
        out: list[SourceEvent] = [ConnClose(c.id, ts_ns, "eof") for c in self._conns.values()]
        self._conns.clear()
        self._flows.clear()
        self._closed.clear()
        self.holes.clear()
        return out

    def expire(self, ts_ns: int, idle_ns: int = limits.IDLE_TIMEOUT_NS) -> list[SourceEvent]:
        """Live captures, every few seconds: close connections without a packet for ``idle_ns`` (``idle``) and
        forget closed tuples older than the linger time. O(open connections)."""
        out: list[SourceEvent] = []
        for conn in [c for c in self._conns.values() if ts_ns - c.last_ts >= idle_ns]:
            self.idle += 1
            self._drop(conn)
            out.append(ConnClose(conn.id, ts_ns, "idle"))
        closed = self._closed
        while closed:
            key, t = next(iter(closed.items()))
            if ts_ns - t < limits.TCP_CLOSED_LINGER_NS:
                break
            del closed[key]
        return out

    # -- internals ---------------------------------------------------------------------------------------

    def _hole(self, flow: _Flow) -> None:
        flow.hole = True
        self.holes.add(flow.conn.id)

    def _acked(self, out: list[SourceEvent], flow: _Flow, ack: int, ts_ns: int) -> None:
        """``flow``'s bytes up to ``ack`` were acknowledged by its peer: an ``Acked`` event when ``flow`` has a
        hole and that is further than the last one sent; everything seen acknowledged ends the hole."""
        ref = flow.ref_seq
        if not flow.hole or ref is None:
            return
        pos = flow.ref_pos + (((ack - ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
        if pos > flow.acked:
            flow.acked = pos
            out.append(Acked(flow.conn.id, flow.direction, pos, ts_ns))
        if pos >= flow.hi:
            flow.hole = False
            conn = flow.conn
            if not conn.flows[1 - flow.d].hole:
                self.holes.discard(conn.id)

    def _data(self, out: list[SourceEvent], flow: _Flow, ts_ns: int, seq: int, payload: bytes, orig_len: int) -> None:
        """Data of a segment, general case: base not known yet, or position before the base."""
        ref = flow.ref_seq
        if ref is None:  # first data of a direction whose SYN was not seen: it is position 0
            flow.ref_seq = seq
            flow.ref_pos = pos = 0
        else:
            delta = ((seq - ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            pos = flow.ref_pos + delta
            if delta > 0:
                flow.ref_seq = seq
                flow.ref_pos = pos
        n = len(payload)
        if orig_len < n:
            orig_len = n
        if pos + orig_len > flow.hi:
            if pos > flow.hi:
                self._hole(flow)
            flow.hi = pos + orig_len
        if pos < 0:  # before the mid-stream base: never part of the stream we deliver
            if pos + orig_len <= 0:
                self.before_start_bytes += orig_len
                return
            self.before_start_bytes += -pos
            payload = payload[-pos:]
            orig_len += pos
            pos = 0
        out.append(make_chunk(flow.conn.id, flow.direction, pos, ts_ns, payload, orig_len))

    def _control(
        self,
        out: list[SourceEvent],
        ts_ns: int,
        flow: _Flow | None,
        src_ip: str | bytes,
        sport: int,
        dst_ip: str | bytes,
        dport: int,
        seq: int,
        flags: int,
        payload: bytes,
        orig_len: int,
        ack: int = 0,
    ) -> None:
        """Segments with SYN, FIN or RST, and the first segment of an unknown tuple."""
        if flow is not None:
            conn: _Conn | None = flow.conn
            d = flow.d
            key = flow.conn.key
        else:
            conn = None
            if dport in self.server_ports:
                d = 0
                key = (src_ip, sport, dst_ip, dport)
            elif sport in self.server_ports:
                d = 1
                key = (dst_ip, dport, src_ip, sport)
            else:
                self.other_port += 1
                return
        if flags & RST:  # the payload of a RST is diagnostic text, not stream data
            if conn is not None:
                self.closed_rst += 1
                self._close(conn, ts_ns, "rst", out)
            return
        if flags & SYN:
            if d == 0 and not flags & ACK:  # client SYN: a new connection unless it is a retransmission
                if conn is not None:
                    if conn.client_isn == seq:
                        return
                    self.reused += 1
                    self._close(conn, ts_ns, "close", out)
                conn = self._open(ts_ns, key, seq, False, out)
                conn.flows[0].ref_seq = (seq + 1) & 0xFFFFFFFF
            elif d == 1 and flags & ACK:  # SYN-ACK: the server's ISN
                if conn is None:
                    conn = self._open(ts_ns, key, None, False, out)
                if conn.flows[1].ref_seq is None:
                    conn.flows[1].ref_seq = (seq + 1) & 0xFFFFFFFF
            seq = (seq + 1) & 0xFFFFFFFF  # the SYN takes one sequence number; data (TCP Fast Open) follows
        if conn is None:
            closed_at = self._closed.get(key)
            if closed_at is not None and ts_ns - closed_at < limits.TCP_CLOSED_LINGER_NS:
                if payload or orig_len > 0:
                    self.after_close += 1
                return
            conn = self._open(ts_ns, key, None, True, out)
        conn.last_ts = ts_ns
        f = conn.flows[d]
        if self.holes and flags & ACK and conn.id in self.holes:
            self._acked(out, conn.flows[1 - d], ack, ts_ns)
        if payload or orig_len > 0:
            self._data(out, f, ts_ns, seq, payload, orig_len)
        if flags & FIN:
            f.fin = True
            if conn.flows[1 - d].fin:
                self.closed_fin += 1
                self._close(conn, ts_ns, "fin", out)

    def _open(self, ts_ns: int, key: tuple, client_isn: int | None, mid_stream: bool, out: list) -> _Conn:
        caddr, cport, saddr, sport = _addr(key[0]), key[1], _addr(key[2]), key[3]
        ident = f"{self.source.value}|{caddr}|{cport}|{saddr}|{sport}|{client_isn}|{ts_ns}"
        conn = _Conn(hashlib.blake2b(ident.encode(), digest_size=8).hexdigest(), key, ts_ns, client_isn)
        if len(self._conns) >= self.max_connections:
            self._evict(ts_ns, out)
        self._closed.pop(key, None)
        self._conns[key] = conn
        self._flows[key] = conn.flows[0]
        self._flows[(key[2], key[3], key[0], key[1])] = conn.flows[1]
        self.connections += 1
        if mid_stream:
            self.mid_stream += 1
        meta = ConnMeta(self.source, client_addr=caddr, client_port=cport, server_addr=saddr, server_port=sport)
        out.append(ConnOpen(conn.id, ts_ns, meta, mid_stream))
        return conn

    def _evict(self, ts_ns: int, out: list) -> None:
        """Close the least recently active connection (second chance: one active since it was queued goes to
        the back with a fresh stamp)."""
        conns = self._conns
        for _ in range(len(conns)):
            conn = next(iter(conns.values()))
            if conn.last_ts <= conn.stamp:
                break
            conn.stamp = conn.last_ts
            conns.move_to_end(conn.key)
        else:
            conn = next(iter(conns.values()))
        self.evicted += 1
        self._drop(conn)
        out.append(ConnClose(conn.id, ts_ns, "evicted"))

    def _drop(self, conn: _Conn) -> None:
        self.holes.discard(conn.id)
        key = conn.key
        del self._conns[key]
        del self._flows[key]
        del self._flows[(key[2], key[3], key[0], key[1])]

    def _close(self, conn: _Conn, ts_ns: int, reason: str, out: list) -> None:
        self._drop(conn)
        closed = self._closed
        closed[conn.key] = ts_ns
        closed.move_to_end(conn.key)
        if len(closed) > limits.TCP_CLOSED_REMEMBERED:
            closed.popitem(last=False)
        out.append(ConnClose(conn.id, ts_ns, reason))


# -- the pcap reader's loop in C (auditor/_native/pcapwalk.c) ---------------------------------------------------
try:
    from auditor._pcapwalk import walk as _cwalk
except ImportError:  # pragma: no cover - a build without a C compiler
    _cwalk = None

_FLOW_FIELDS = ("conn", "direction", "ref_seq", "ref_pos", "hi")
_CONN_FIELDS = ("id", "last_ts")


def pcap_walker(tracker: TcpTracker) -> Callable[..., tuple] | None:
    """``walk(buf, off, big_endian, frac_ns, link, l3off, max_rec, out)``: classic pcap records from ``off``
    through this tracker's fast path, in C, until one needs the Python path (see pcapwalk.c); None without the
    compiled module (or with REDIS_AUDIT_PURE set)."""
    if _cwalk is None or not _FAST_CHUNK or not native_enabled():
        return None
    k, n = getattr(tracker, "_shard", (0, 1))
    flows, ports, holes = tracker._flows, tracker.server_ports, tracker.holes
    cd = CHUNK_SLOTS
    fd = tuple(_Flow.__dict__[f] for f in _FLOW_FIELDS)
    nd = tuple(_Conn.__dict__[f] for f in _CONN_FIELDS)

    def walk(buf: bytes, off: int, big: bool, frac_ns: int, link: int, l3off: int, max_rec: int, out: list) -> tuple:
        r = _cwalk(buf, off, big, frac_ns, link, l3off, max_rec, flows, k, n, ports, cd, fd, nd, Chunk, out, holes)
        tracker.packets += r[2]
        return r

    return walk

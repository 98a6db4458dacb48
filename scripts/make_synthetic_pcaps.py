#!/usr/bin/env python3
"""Write the synthetic captures in tests/pcaps/synthetic/: what a real network rarely produces.

Each capture is a RESP conversation (AUTH, SET, GET, ...) built with scapy (IP/TCP with real checksums) and
wrapped in a link layer and file format written here byte by byte (pcap and pcapng blocks), then mangled:
reordered, retransmitted, overlapping, missing segments, IPv6 with extension headers, VLAN tags, Linux cooked,
BSD loopback, raw IP, two interfaces, several sections, mid-stream start, sequence wrap-around, port reuse,
truncated and corrupt files, snaplen-truncated packets.

Deterministic: fixed timestamps, ISNs and documentation addresses (192.0.2.0/24, 2001:db8::/32), so running it
twice writes identical files. Beside the captures it writes ``expected.json`` (per file: the connections, and
for each direction the bytes the reassembled stream must contain, with gaps where segments were never
captured; computed from what was sent and which bytes the file really carries) and ``README.md``.

    .venv/bin/python scripts/make_synthetic_pcaps.py            # rewrite tests/pcaps/synthetic/
    .venv/bin/python scripts/make_synthetic_pcaps.py --out DIR  # somewhere else (the tests compare)
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

OUT = Path(__file__).resolve().parent.parent / "tests" / "pcaps" / "synthetic"
T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
STEP = 250_000  # 250 us between packets
C4, S4 = "192.0.2.10", "192.0.2.1"
C6, S6 = "2001:db8::10", "2001:db8::1"
PORT = 6379

ETHER, NULL, RAW, LOOP, SLL, SLL2, RAW12, RAW14, IPV4, IPV6 = 1, 0, 101, 108, 113, 276, 12, 14, 228, 229


def cmd(*args: str | bytes) -> bytes:
    """A RESP2 multibulk request."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


# ---------------------------------------------------------------------------------------------------------
# a TCP conversation and its ground truth


@dataclass
class Pkt:
    """One packet: a TCP segment of a conversation (``conv`` set) or raw L2/L3 bytes (``raw``)."""

    conv: Conv | None = None
    d: int = 0  # 0 client -> server, 1 server -> client
    flags: str = "A"
    start: int = 0  # stream offset of the payload (data segments)
    payload: bytes = b""
    seq: int | None = None  # explicit raw sequence number (SYN / FIN / odd cases)
    ip_options: bool = False  # add a router-alert option (IHL 6)
    v6ext: tuple[str, ...] = ()
    tags: tuple[tuple[int, int], ...] = ()  # VLAN (tpid, vid) outermost first
    null_order: str = "<"  # BSD NULL / LOOP family byte order
    raw: bytes | None = None  # a ready frame (for the link type of the file) or L3 packet
    raw_is_l3: bool = True
    lost: bool = False  # not delivered to the reassembler (IP fragments)
    iface: int = 0  # pcapng interface
    block: str = "epb"  # pcapng block kind: epb, spb, pb
    seq_off: int = field(default=0, init=False)  # stream lengths when the packet was made: its seq / ack
    ack_off: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.conv is not None:
            self.seq_off = len(self.conv.sent[self.d])
            self.ack_off = len(self.conv.sent[1 - self.d])


@dataclass
class Conv:
    client: str
    cport: int
    server: str
    sport: int
    cisn: int
    sisn: int
    close: str = "fin"
    mid_stream: bool = False
    sent: tuple[bytearray, bytearray] = field(default_factory=lambda: (bytearray(), bytearray()))

    @property
    def v6(self) -> bool:
        return ":" in self.client

    def isn(self, d: int) -> int:
        return self.cisn if d == 0 else self.sisn

    def seq_at(self, d: int, offset: int) -> int:
        return (self.isn(d) + 1 + offset) & 0xFFFFFFFF

    def handshake(self) -> list[Pkt]:
        return [
            Pkt(self, 0, "S", seq=self.cisn),
            Pkt(self, 1, "SA", seq=self.sisn),
            Pkt(self, 0, "A"),
        ]

    def send(self, d: int, data: bytes, mss: int = 1000, ack: bool = True) -> list[Pkt]:
        """Data segments for ``data`` (appended to the stream), then an ACK from the peer."""
        buf = self.sent[d]
        out = []
        for i in range(0, len(data), mss):
            out.append(Pkt(self, d, "PA", start=len(buf) + i, payload=data[i : i + mss]))
        buf += data
        if ack:
            out.append(Pkt(self, 1 - d, "A"))
        return out

    def exchange(self, request: bytes, reply: bytes, mss: int = 1000) -> list[Pkt]:
        return self.send(0, request, mss, ack=False) + self.send(1, reply, mss, ack=True)

    def fin(self) -> list[Pkt]:
        fin_c, fin_s = Pkt(self, 0, "FA"), Pkt(self, 1, "FA")
        fin_s.ack_off += 1  # a FIN takes one sequence number
        last = Pkt(self, 0, "A", seq=self.seq_at(0, len(self.sent[0]) + 1))
        last.ack_off += 1
        return [fin_c, fin_s, last]

    def rst(self, d: int = 1) -> list[Pkt]:
        return [Pkt(self, d, "R")]

    def segment(self, d: int, start: int, end: int) -> Pkt:
        """A (re)transmission of stream bytes [start, end) of direction d."""
        return Pkt(self, d, "PA", start=start, payload=bytes(self.sent[d][start:end]))


def l3_bytes(p: Pkt) -> bytes:
    """The IP packet of a conversation segment (scapy computes lengths and checksums)."""
    c = p.conv
    assert c is not None
    src, dst = (c.client, c.server) if p.d == 0 else (c.server, c.client)
    sport, dport = (c.cport, c.sport) if p.d == 0 else (c.sport, c.cport)
    if p.seq is not None:
        seq = p.seq
    elif p.payload:
        seq = c.seq_at(p.d, p.start)
    else:  # pure ACK / FIN / RST: next sequence number of that direction
        seq = c.seq_at(p.d, p.seq_off)
    if p.d == 1 and "S" in p.flags:
        ack = c.seq_at(0, 0)
    elif "S" in p.flags:
        ack = 0
    else:
        ack = c.seq_at(1 - p.d, p.ack_off)
    tcp = TCP(sport=sport, dport=dport, seq=seq, ack=ack & 0xFFFFFFFF, flags=p.flags, window=65535)
    if p.payload:
        tcp = tcp / Raw(p.payload)
    if c.v6:
        ip = IPv6(src=src, dst=dst, hlim=64)
        for ext in p.v6ext:
            ip = (
                ip
                / {
                    "hop": IPv6ExtHdrHopByHop(),
                    "dest": IPv6ExtHdrDestOpt(),
                    "routing": IPv6ExtHdrRouting(addresses=[]),
                    "atomic-frag": IPv6ExtHdrFragment(offset=0, m=0, id=7),
                }[ext]
            )
        return bytes(ip / tcp)
    ip = IP(src=src, dst=dst, ttl=64, id=1, flags="DF")
    if p.ip_options:
        ip.options = [IPOption_Router_Alert()]
    return bytes(ip / tcp)


def expected_streams(pkts: list[Pkt], caplens: dict[int, int]) -> dict[int, dict[str, object]]:
    """Per conversation (by id): what a perfect reassembler makes of the packets the file really carries.

    For each direction: the base is 0 (SYN seen) or the first data segment in file order (mid-stream); a byte
    is data if some delivered packet captured it, else it is part of a gap; the stream ends at the last byte
    any delivered packet announced. ``caplens``: packet index -> payload bytes captured, when cut short."""
    cover: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (conv, d) -> (start, captured end, end)
    base: dict[tuple[int, int], int] = {}
    for i, p in enumerate(pkts):
        if p.conv is None or p.lost or not p.payload:
            continue
        k = (id(p.conv), p.d)
        cap = caplens.get(i, len(p.payload))
        if k not in base:
            base[k] = 0 if not p.conv.mid_stream else p.start
        cover.setdefault(k, []).append((p.start, p.start + cap, p.start + len(p.payload)))
    out: dict[int, dict[str, object]] = {}
    for (cid, d), ranges in cover.items():
        conv = next(p.conv for p in pkts if p.conv is not None and id(p.conv) == cid)
        b = base[(cid, d)]
        end = max(e for _, _, e in ranges)
        have = bytearray(end)  # 1 = captured
        for s, ce, _ in ranges:
            for j in range(max(s, b), ce):
                have[j] = 1
        pieces: list[list[object]] = []
        data = conv.sent[d]
        j = b
        while j < end:
            k = j
            while k < end and have[k] == have[j]:
                k += 1
            pieces.append(["data", data[j:k].decode("latin-1")] if have[j] else ["gap", k - j])
            j = k
        out.setdefault(cid, {})["to_server" if d == 0 else "to_client"] = pieces
    return out


# ---------------------------------------------------------------------------------------------------------
# link layers and file formats


def link_frame(link: int, p: Pkt, l3: bytes) -> bytes:
    v6 = l3[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if link == ETHER:
        head = bytes.fromhex("020000000001020000000002")
        tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in p.tags)
        return head + tags + struct.pack("!H", ethertype) + l3
    if link == SLL:  # packet type, ARPHRD_ETHER, address length, address (8), protocol
        return struct.pack("!HHH8sH", 4 if p.d == 0 else 0, 1, 6, bytes.fromhex("020000000002"), ethertype) + l3
    if link == SLL2:  # protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length, address (8)
        return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 4 if p.d == 0 else 0, 6, bytes.fromhex("020000000002")) + l3
    if link in (NULL, LOOP):  # address family: AF_INET 2; AF_INET6 30 (macOS) / 24 (OpenBSD)
        family = (30 if link == NULL else 24) if v6 else 2
        return struct.pack(p.null_order + "I", family) + l3
    if link in (RAW, RAW12, RAW14, IPV4, IPV6):
        return l3
    raise ValueError(link)


@dataclass
class Record:
    ts_ns: int
    frame: bytes
    wirelen: int
    iface: int = 0
    block: str = "epb"


def build_records(
    pkts: list[Pkt], link: int | dict[int, int], snaplen: int | None = None
) -> tuple[list[Record], dict[int, int]]:
    """Frames with timestamps in file order; returns the records and, per packet index, captured payload bytes
    of packets cut by ``snaplen``."""
    recs = []
    caplens: dict[int, int] = {}
    for i, p in enumerate(pkts):
        ts = T0 + i * STEP
        lt = link[p.iface] if isinstance(link, dict) else link
        if p.raw is not None:
            frame = p.raw
        else:
            l3 = l3_bytes(p)
            frame = link_frame(lt, p, l3)
        cap = frame
        if snaplen is not None and len(frame) > snaplen:
            cap = frame[:snaplen]
            if p.payload:
                caplens[i] = max(0, len(p.payload) - (len(frame) - snaplen))
        recs.append(Record(ts, cap, len(frame), p.iface, p.block))
    return recs, caplens


PCAP_MAGIC = {False: 0xA1B2C3D4, True: 0xA1B23C4D}


def pcap_bytes(recs: list[Record], link: int, order: str = "<", nanos: bool = False, snaplen: int = 262144) -> bytes:
    out = [struct.pack(order + "IHHiIII", PCAP_MAGIC[nanos], 2, 4, 0, 0, snaplen, link)]
    for r in recs:
        sec, frac = divmod(r.ts_ns, 1_000_000_000)
        if not nanos:
            frac //= 1000
        out.append(struct.pack(order + "IIII", sec, frac, len(r.frame), r.wirelen) + r.frame)
    return b"".join(out)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(order: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def ng_option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + _pad4(value)


def ng_shb(order: str) -> bytes:
    opts = ng_option(order, 4, b"make_synthetic_pcaps.py") + ng_option(order, 0, b"")
    return ng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + opts)


@dataclass
class Iface:
    link: int
    tsresol: int | None = None  # if_tsresol byte; None: microseconds
    tsoffset: int = 0  # seconds
    snaplen: int = 0

    def units(self, ts_ns: int) -> int:
        ns = ts_ns - self.tsoffset * 1_000_000_000
        r = 6 if self.tsresol is None else self.tsresol
        if r & 0x80:
            return (ns << (r & 0x7F)) // 1_000_000_000
        return ns * 10**r // 1_000_000_000


def ng_idb(order: str, iface: Iface) -> bytes:
    opts = b""
    if iface.tsresol is not None:
        opts += ng_option(order, 9, bytes([iface.tsresol]))
    if iface.tsoffset:
        opts += ng_option(order, 14, struct.pack(order + "q", iface.tsoffset))
    if opts:
        opts += ng_option(order, 0, b"")
    return ng_block(order, 1, struct.pack(order + "HHI", iface.link, 0, iface.snaplen) + opts)


def ng_packet(order: str, r: Record, iface: Iface) -> bytes:
    u = iface.units(r.ts_ns)
    if r.block == "spb":
        return ng_block(order, 3, struct.pack(order + "I", r.wirelen) + r.frame)
    if r.block == "pb":
        head = struct.pack(order + "HHIIII", r.iface, 0, u >> 32, u & 0xFFFFFFFF, len(r.frame), r.wirelen)
        return ng_block(order, 2, head + r.frame)
    head = struct.pack(order + "IIIII", r.iface, u >> 32, u & 0xFFFFFFFF, len(r.frame), r.wirelen)
    return ng_block(order, 6, head + r.frame)


# ---------------------------------------------------------------------------------------------------------
# scenarios: each returns (file bytes, expected dict)

AUTH = cmd("AUTH", "secret"), b"+OK\r\n"
SET = cmd("SET", "user:1", "hello"), b"+OK\r\n"
GET = cmd("GET", "user:1"), bulk(b"hello")
INCR = cmd("INCR", "counter"), b":1\r\n"
BAD = cmd("NOTACMD"), b"-ERR unknown command 'NOTACMD', with args beginning with: \r\n"
QUIT = cmd("QUIT"), b"+OK\r\n"


def session(conv: Conv, *pairs: tuple[bytes, bytes], mss: int = 1000, close: bool = True) -> list[Pkt]:
    pkts = conv.handshake()
    for req, rep in pairs:
        pkts += conv.exchange(req, rep, mss)
    if close:
        pkts += conv.fin()
    return pkts


@dataclass
class Scenario:
    name: str
    what: str
    data: bytes
    convs: list[Conv]
    pkts: list[Pkt]
    caplens: dict[int, int] = field(default_factory=dict)
    stats: dict[str, object] = field(default_factory=dict)
    losses: list[str] = field(default_factory=list)

    def expected(self) -> dict[str, object]:
        by_conv = expected_streams(self.pkts, self.caplens)
        conns = []
        for c in self.convs:
            s = by_conv.get(id(c), {})
            conns.append(
                {
                    "client": f"{c.client}:{c.cport}",
                    "server": f"{c.server}:{c.sport}",
                    "mid_stream": c.mid_stream,
                    "close": c.close,
                    "to_server": s.get("to_server", []),
                    "to_client": s.get("to_client", []),
                }
            )
        return {"what": self.what, "connections": conns, "stats": self.stats, "losses": self.losses}


def conv4(cport: int = 40000, cisn: int = 1_000_000, sisn: int = 5_000_000, **kw: object) -> Conv:
    return Conv(C4, cport, S4, PORT, cisn, sisn, **kw)  # type: ignore[arg-type]


def conv6(cport: int = 40000, cisn: int = 1_000_000, sisn: int = 5_000_000, **kw: object) -> Conv:
    return Conv(C6, cport, S6, PORT, cisn, sisn, **kw)  # type: ignore[arg-type]


def s_basic() -> Scenario:
    c = conv4()
    pkts = session(c, AUTH, SET, GET, INCR, BAD, QUIT)
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "basic.pcap",
        "clean Ethernet/IPv4 session: AUTH SET GET INCR unknown-command QUIT, FIN both ways",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_reordered() -> Scenario:
    c = conv4()
    pkts = c.handshake()
    pipeline = SET[0] + GET[0] + INCR[0] + BAD[0]
    pkts += c.send(0, pipeline, mss=20, ack=False)  # 8 small segments
    pkts += c.send(1, SET[1] + GET[1] + INCR[1] + BAD[1], mss=16)
    # client segments 2..5 arrive as 5, 3, 2, 4; server segments 0 and 1 swapped
    cl = [i for i, p in enumerate(pkts) if p.payload and p.d == 0]
    sv = [i for i, p in enumerate(pkts) if p.payload and p.d == 1]
    a, b, e, f = cl[2], cl[3], cl[4], cl[5]
    pkts[a], pkts[b], pkts[e], pkts[f] = pkts[f], pkts[b], pkts[a], pkts[e]
    pkts[sv[0]], pkts[sv[1]] = pkts[sv[1]], pkts[sv[0]]
    pkts += c.fin()
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "reordered.pcap",
        "pipelined SET GET INCR in 20-byte segments delivered out of order (both ways)",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_retransmit() -> Scenario:
    c = conv4()
    pkts = c.handshake()
    c.sent[0].extend(AUTH[0] + cmd("SET", "blob", "v" * 120) + GET[0])
    n = len(c.sent[0])
    seg = [(i, min(i + 40, n)) for i in range(0, n, 40)]  # 40-byte segments

    def s0(a: int, b: int) -> Pkt:
        return c.segment(0, a, b)

    pkts += [s0(*seg[0]), s0(*seg[1]), s0(*seg[1])]  # an exact duplicate
    pkts += [s0(seg[2][0] - 20, seg[2][0] + 20)]  # retransmission ahead of the original: half old, half new
    pkts += [s0(*seg[2])]  # the original: its first half is a duplicate now
    pkts += [s0(*seg[4])]  # segment 3 is late: 4 waits
    pkts += [s0(seg[3][0] - 10, seg[4][0] + 10)]  # repacketized: old bytes, the hole, and part of waiting 4
    pkts += [s0(*seg[3])]  # the late original: all duplicate now
    pkts += [s0(*x) for x in seg[5:]]
    pkts += [s0(10, 150)]  # a stale retransmission spanning several delivered segments
    pkts += c.send(1, AUTH[1] + b"+OK\r\n" + GET[1], mss=1000)
    pkts.append(c.segment(1, 0, 5))  # server duplicate
    pkts += c.fin()
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "retransmit.pcap",
        "duplicate, partially overlapping (ahead of the original) and repacketized retransmissions across a late "
        "segment; each byte delivered once",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_gap_in_bulk() -> Scenario:
    c = conv4()
    value = bytes((ord("a") + i % 26) for i in range(4000))
    pkts = c.handshake()
    seg = c.send(0, cmd("SET", "big", value), mss=1000, ack=False)
    del seg[2]  # bytes 2000..2999 (inside the value) never captured
    pkts += seg + c.send(1, b"+OK\r\n")
    pkts += c.exchange(*GET)
    pkts += c.fin()
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "gap_in_bulk.pcap",
        "4000-byte SET value in 1000-byte segments, the third never captured: a 1000-byte gap inside the bulk "
        "string, GET after it intact",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_gap_between() -> Scenario:
    c = conv4()
    pkts = c.handshake()
    seg = []
    for req in (SET[0], GET[0], INCR[0]):
        seg += c.send(0, req, ack=False)
    del seg[1]  # the whole GET segment is missing
    pkts += seg + c.send(1, SET[1] + GET[1] + INCR[1])
    pkts += c.fin()
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "gap_between_commands.pcap",
        "pipelined SET GET INCR, the segment holding GET never captured: a gap exactly between two commands (its "
        "reply is there)",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_ipv6() -> Scenario:
    c = conv6()
    pkts = session(c, AUTH, SET, GET, QUIT)
    exts = [("hop",), ("dest",), ("hop", "dest"), ("routing",), ("atomic-frag",), ("hop", "routing", "dest")]
    k = 0
    for p in pkts:
        if p.payload:
            p.v6ext = exts[k % len(exts)]
            k += 1
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "ipv6_ext.pcap",
        "IPv6 (2001:db8::) session; data segments carry hop-by-hop, destination, routing headers and an atomic "
        "fragment header",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_vlan() -> Scenario:
    c = conv4()
    c6 = conv6(cport=40001)
    pkts = session(c, AUTH, SET, GET) + session(c6, GET, INCR)
    tags = [((0x8100, 10),), ((0x88A8, 100), (0x8100, 10)), ((0x9100, 200), (0x8100, 10)), ()]
    for i, p in enumerate(pkts):
        p.tags = tags[i % len(tags)]
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "vlan.pcap",
        "big-endian pcap; IPv4 and IPv6 sessions in 802.1Q, QinQ (0x88a8+0x8100), 0x9100+0x8100 and untagged frames",
        pcap_bytes(recs, ETHER, order=">"),
        [c, c6],
        pkts,
    )


def s_sll(link: int, name: str) -> Scenario:
    c = conv4()
    c6 = conv6(cport=40001)
    pkts = session(c, AUTH, SET, GET) + session(c6, INCR, QUIT)
    recs, _ = build_records(pkts, link)
    what = "Linux cooked v1 (SLL, 113)" if link == SLL else "Linux cooked v2 (SLL2, 276)"
    return Scenario(name, f"{what}: an IPv4 and an IPv6 session", pcap_bytes(recs, link), [c, c6], pkts)


def s_null(name: str, link: int, order: str, nanos: bool, what: str, mixed: bool = False) -> Scenario:
    c = conv4()
    c6 = conv6(cport=40001)
    pkts = session(c, AUTH, SET, GET) + session(c6, GET, QUIT)
    for i, p in enumerate(pkts):
        p.null_order = ("<" if i % 2 else ">") if mixed else order
    recs, _ = build_records(pkts, link)
    return Scenario(name, what, pcap_bytes(recs, link, order=order, nanos=nanos), [c, c6], pkts)


def s_raw() -> Scenario:
    c = conv4()
    c6 = conv6(cport=40001)
    pkts = session(c, AUTH, SET, GET) + session(c6, GET, INCR)
    recs, _ = build_records(pkts, RAW)
    return Scenario(
        "raw_ip.pcap", "raw IP (101): an IPv4 and an IPv6 session, no link header", pcap_bytes(recs, RAW), [c, c6], pkts
    )


def s_multi_iface() -> Scenario:
    ca = conv4()
    cb = conv4(cport=40002, cisn=77, sisn=99)
    pa = session(ca, AUTH, SET, GET)
    pb = session(cb, INCR, GET)
    for p in pb:
        p.iface = 1
    # interleave the two sessions; interface 2 (unsupported link type 147) carries one packet
    pkts: list[Pkt] = []
    for i in range(max(len(pa), len(pb))):
        pkts += pa[i : i + 1] + pb[i : i + 1]
    pkts.insert(5, Pkt(raw=b"\x00" * 20, iface=2))
    ifaces = [Iface(ETHER), Iface(RAW, tsresol=9), Iface(147, tsresol=0x94, tsoffset=-3600)]
    recs, _ = build_records(pkts, {0: ETHER, 1: RAW, 2: 147})
    data = ng_shb("<") + b"".join(ng_idb("<", i) for i in ifaces)
    data += b"".join(ng_packet("<", r, ifaces[r.iface]) for r in recs)
    return Scenario(
        "multi_iface.pcapng",
        "pcapng, three interfaces: Ethernet (us), raw IP (ns if_tsresol) and unsupported link type 147 (2^-20 s, "
        "if_tsoffset); two interleaved sessions; one packet skipped as unsupported",
        data,
        [ca, cb],
        pkts,
        stats={"unsupported_link": {"147": 1}},
        losses=["unsupported link type 147"],
    )


def s_sections() -> Scenario:
    c = conv4()
    c6 = conv6(cport=40001)
    p1 = c.handshake() + c.exchange(*AUTH)
    p2 = c.exchange(*SET) + c.exchange(*GET) + c.fin()
    p3 = session(c6, INCR, QUIT)
    for p in p2:
        p.block = "spb"
    for p in p3:
        p.iface = 1
        p.block = "pb"
    pkts = p1 + p2 + p3
    recs, _ = build_records(pkts, {0: RAW12, 1: IPV6})
    out = ng_shb("<") + ng_idb("<", Iface(RAW14)) + b"".join(ng_packet("<", r, Iface(RAW14)) for r in recs[: len(p1)])
    # section 2, big-endian: interface 0 raw IP (12) for simple packet blocks, interface 1 IPv6 (229)
    ifs = [Iface(RAW12, snaplen=65535), Iface(IPV6, tsresol=3)]
    out += ng_shb(">") + ng_idb(">", ifs[0]) + ng_idb(">", ifs[1])
    out += b"".join(ng_packet(">", r, ifs[r.iface]) for r in recs[len(p1) :])
    # an interface statistics block and a name resolution block, to be skipped
    out += ng_block(">", 5, struct.pack(">III", 0, 0, 0)) + ng_block(">", 4, b"\0\0\0\0")
    return Scenario(
        "sections.pcapng",
        "pcapng, two sections: little-endian (raw IP 14, EPB) then big-endian (raw IP 12 via simple packet blocks "
        "without timestamps, IPv6 229 via obsolete packet blocks, ms if_tsresol); the IPv4 session spans both "
        "sections",
        out,
        [c, c6],
        pkts,
    )


def s_midstream() -> Scenario:
    c = conv4(mid_stream=True, close="eof")
    c.sent[0].extend(GET[0])  # the request before the capture started
    pkts = c.send(1, GET[1], ack=True)  # capture starts with the server's reply
    pkts += c.exchange(*SET) + c.exchange(*INCR)
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "midstream.pcap",
        "starts mid-connection with the server talking (reply to an unseen GET); no SYN, no FIN",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
    )


def s_seq_wrap() -> Scenario:
    c = conv4(cisn=0xFFFFFFFF - 700, sisn=0xFFFFFFF0)
    pkts = c.handshake()
    value = b"w" * 1500
    seg = c.send(0, cmd("SET", "wrap", value), mss=400, ack=False)
    seg[1], seg[2] = seg[2], seg[1]  # reordered across the wrap
    pkts += seg + c.send(1, b"+OK\r\n")
    pkts += c.exchange(cmd("GET", "wrap"), bulk(value), mss=400)
    pkts += c.fin()
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "seq_wrap.pcap",
        "nanosecond pcap; ISNs just below 2^32 so both directions' sequence numbers wrap inside a 1500-byte value, "
        "with reordering across the wrap",
        pcap_bytes(recs, ETHER, nanos=True),
        [c],
        pkts,
    )


def s_port_reuse() -> Scenario:
    a = conv4(cisn=1000, sisn=2000)
    b = conv4(cisn=900_000, sisn=800_000, close="rst")
    c = conv4(cisn=3_000_000, sisn=4_000_000, close="close")
    d = conv4(cisn=5_000_000, sisn=6_000_000, close="eof")
    pkts = session(a, SET, GET)
    pkts += [Pkt(a, 0, "A")]  # the last ACK again: must not open a connection
    pkts += session(b, INCR, close=False) + b.rst()
    pkts += session(c, GET, close=False)
    pkts += session(d, QUIT, close=False)  # SYN with a new ISN while c is still open
    recs, _ = build_records(pkts, ETHER)
    return Scenario(
        "port_reuse.pcap",
        "four connections on the same 4-tuple: closed by FIN; by RST; open when a SYN with a new ISN arrives; open "
        "at the end",
        pcap_bytes(recs, ETHER),
        [a, b, c, d],
        pkts,
        stats={"connections": 4, "reused": 1},
    )


def s_truncated_pcap() -> Scenario:
    c = conv4(close="eof")
    pkts = session(c, AUTH, SET, GET)
    recs, _ = build_records(pkts, ETHER)
    full = pcap_bytes(recs, ETHER)
    keep = 9  # records kept whole
    cut = 24 + sum(16 + len(r.frame) for r in recs[:keep]) + 16 + 30  # inside record 10
    for p in pkts[keep:]:
        p.lost = True
    return Scenario(
        "truncated.pcap",
        "pcap cut in the middle of a record: the first 9 packets, then a truncation loss",
        full[:cut],
        [c],
        pkts,
        losses=["truncated file"],
    )


def s_truncated_pcapng() -> Scenario:
    c = conv4(close="eof")
    pkts = session(c, AUTH, SET, GET)
    recs, _ = build_records(pkts, ETHER)
    iface = Iface(ETHER)
    blocks = [ng_packet("<", r, iface) for r in recs]
    keep = 9
    head = ng_shb("<") + ng_idb("<", iface)
    data = head + b"".join(blocks[:keep]) + blocks[keep][:40]
    for p in pkts[keep:]:
        p.lost = True
    return Scenario(
        "truncated.pcapng",
        "pcapng cut in the middle of a block: the first 9 packets, then a truncation loss",
        data,
        [c],
        pkts,
        losses=["truncated file"],
    )


def s_corrupt_block() -> Scenario:
    c = conv4(close="eof")
    pkts = session(c, AUTH, SET, GET)
    recs, _ = build_records(pkts, ETHER)
    iface = Iface(ETHER)
    blocks = [ng_packet("<", r, iface) for r in recs]
    keep = 7
    bad = bytearray(blocks[keep])
    bad[4:8] = struct.pack("<I", 0xFFFFFFF0)  # absurd block length
    data = ng_shb("<") + ng_idb("<", iface) + b"".join(blocks[:keep]) + bytes(bad) + b"".join(blocks[keep + 1 :])
    for p in pkts[keep:]:
        p.lost = True
    return Scenario(
        "corrupt_block.pcapng",
        "pcapng whose 8th block has a corrupt length: 7 packets, then a loss (nothing after it is trusted)",
        data,
        [c],
        pkts,
        losses=["truncated file"],
    )


def s_snaplen() -> Scenario:
    c = conv4()
    value = b"s" * 300
    pkts = session(c, AUTH, (cmd("SET", "k", value), b"+OK\r\n"), (cmd("GET", "k"), bulk(value)), QUIT)
    snap = 96  # 14 Ethernet + 20 IP + 20 TCP + 42 payload bytes
    recs, caplens = build_records(pkts, ETHER, snaplen=snap)
    return Scenario(
        "snaplen.pcap",
        "captured with snaplen 96: payloads beyond 42 bytes are cut, the rest of each segment is a gap (caplen < "
        "wire length)",
        pcap_bytes(recs, ETHER, snaplen=snap),
        [c],
        pkts,
        caplens,
    )


def s_ipv4_misc() -> Scenario:
    c = conv4()
    pkts = c.handshake()
    pkts += c.exchange(*AUTH)
    for p in pkts:
        if p.payload:
            p.ip_options = True
    # tiny segments padded to the 60-byte Ethernet minimum with junk: the IP length must win
    pkts += c.send(0, b"PING\r\n", ack=False)
    pkts += c.send(1, b"+PONG\r\n")
    # a SET sent as two IP fragments: not reassembled, a gap
    frag_conv_pkts = c.send(0, SET[0], ack=False)
    whole = IP(l3_bytes(frag_conv_pkts[0]))
    whole.flags = 0
    frags = fragment(whole, fragsize=16)
    pkts += [Pkt(c, 0, raw=bytes(f), lost=True) for f in frags]
    pkts += c.send(1, SET[1])
    pkts += c.exchange(*GET)
    # traffic that is not ours
    pkts.append(
        Pkt(
            raw=bytes(
                Ether(src="02:00:00:00:00:02", dst="ff:ff:ff:ff:ff:ff")
                / ARP(hwsrc="02:00:00:00:00:02", psrc=C4, hwdst="00:00:00:00:00:00", pdst=S4)
            ),
            raw_is_l3=False,
        )
    )
    pkts.append(Pkt(raw=bytes(IP(src=C4, dst=S4, id=2) / UDP(sport=40000, dport=9) / Raw(b"discard"))))
    pkts.append(
        Pkt(
            raw=bytes(
                IP(src=C4, dst=S4, id=3) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET / HTTP/1.0\r\n\r\n")
            )
        )
    )
    pkts.append(Pkt(raw=bytes.fromhex("020000000001020000000002") + b"\x08\x00\x45\x00", raw_is_l3=False))  # malformed
    pkts += c.fin()
    recs = []
    for i, p in enumerate(pkts):
        ts = T0 + i * STEP
        if p.raw is not None:
            frame = p.raw if not p.raw_is_l3 else link_frame(ETHER, p, p.raw)
        else:
            frame = link_frame(ETHER, p, l3_bytes(p))
        if len(frame) < 60 and p.raw_is_l3 and (p.raw is None or p.conv is not None):
            frame += b"\xa5" * (60 - len(frame))
        recs.append(Record(ts, frame, len(frame)))
    return Scenario(
        "ipv4_misc.pcap",
        "IPv4 options (IHL 6), junk Ethernet padding after tiny segments, a SET split in IP fragments (skipped: a "
        "gap), ARP, UDP, TCP to port 80 and a frame cut inside its IP header",
        pcap_bytes(recs, ETHER),
        [c],
        pkts,
        stats={"ip_fragments": len(frags), "non_ip": 1, "non_tcp": 1, "other_port": 1, "malformed": 1},
        losses=["IP fragments not reassembled", "malformed packets skipped"],
    )


SCENARIOS: list[Callable[[], Scenario]] = [
    s_basic,
    s_reordered,
    s_retransmit,
    s_gap_in_bulk,
    s_gap_between,
    s_ipv6,
    s_vlan,
    lambda: s_sll(SLL, "sll.pcap"),
    lambda: s_sll(SLL2, "sll2.pcap"),
    lambda: s_null(
        "null_le.pcap",
        NULL,
        "<",
        False,
        "BSD loopback (NULL, 0), little-endian pcap and family: IPv4 and IPv6 (AF 30) sessions",
    ),
    lambda: s_null(
        "null_be.pcap",
        NULL,
        ">",
        True,
        "BSD loopback (NULL, 0) from a big-endian host, nanosecond big-endian pcap: IPv4 and IPv6 sessions",
    ),
    lambda: s_null(
        "loop.pcap",
        LOOP,
        "<",
        False,
        "OpenBSD loopback (LOOP, 108): family in network byte order on even packets, host order on odd ones",
        mixed=True,
    ),
    s_raw,
    s_multi_iface,
    s_sections,
    s_midstream,
    s_seq_wrap,
    s_port_reuse,
    s_truncated_pcap,
    s_truncated_pcapng,
    s_corrupt_block,
    s_snaplen,
    s_ipv4_misc,
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"directory to write (default {OUT})")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    readme = [
        "# Synthetic captures",
        "",
        "Written by `scripts/make_synthetic_pcaps.py` (deterministic: rerun it, never edit these files). Server",
        f"port {PORT}; client 192.0.2.10 / 2001:db8::10, server 192.0.2.1 / 2001:db8::1. `expected.json` holds,",
        "per file, the connections and the bytes each direction must reassemble to (`gap` entries: bytes never",
        "captured), exact values of the counters that matter and the losses reported at the end.",
        "",
        "| file | contents and expected effect |",
        "|---|---|",
    ]
    for make in SCENARIOS:
        s = make()
        (out / s.name).write_bytes(s.data)
        expected[s.name] = s.expected()
        readme.append(f"| `{s.name}` | {s.what} |")
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    (out / "README.md").write_text("\n".join(readme) + "\n")
    print(f"wrote {len(SCENARIOS)} captures to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Capture files (pcap / pcapng) -> source events, for ``redis-audit replay`` and the tests.

Input: a file path and the Redis server ports. Output: ``ConnOpen`` / ``Chunk`` / ``ConnClose`` / ``Loss``
events (via ``sources.tcp.TcpTracker``), and a ``PcapStats`` with what was read and skipped.

Formats: pcap (both byte orders, microsecond and nanosecond magic, the "modified" 24-byte record variant) and
pcapng (SHB / IDB / EPB / SPB / obsolete PB; several sections, byte orders, interfaces with their own link type,
``if_tsresol`` and ``if_tsoffset``). Link types: Ethernet (802.1Q / 802.1ad / 0x9100 VLAN tags), Linux SLL and
SLL2, BSD NULL and OpenBSD LOOP (either byte order), raw IP (101, 12, 14), IPv4 (228), IPv6 (229). IPv4 and
IPv6 (extension headers walked); TCP only. IP fragments are not reassembled (counted, reported as a loss).

The reader is strict and bounded: records and blocks are read whole into a buffer of at most
``limits.MAX_CAPTURE_RECORD`` + ``limits.CAPTURE_READ_BLOCK`` bytes, every length field is checked before use,
and every loop advances. A file cut mid-record or with a corrupt block length delivers everything before it and
then a ``Loss(conn=None, reason="truncated file: ...")``; a file that is not a capture at all raises
``CaptureError`` when iteration starts, before any event. Link, IP and TCP headers are parsed with ``struct``
straight from the read buffer (one slice per packet: the payload); dpkt's packet objects cost ~8 us per packet
here, the whole of this reader ~2 us.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from auditor import limits
from auditor.sources.tcp import TcpTracker, pcap_walker
from auditor.types import Loss, Source, SourceEvent


class CaptureError(Exception):
    """The file is not a capture this reader understands (one line, never payload bytes)."""


ProgressFn = Callable[[int, int], None]

_TRACKER_COUNTERS = (
    "other_port",
    "connections",
    "mid_stream",
    "closed_fin",
    "closed_rst",
    "reused",
    "evicted",
    "after_close",
    "before_start_bytes",
)


@dataclass
class PcapStats:
    """What a replay read and skipped; filled while iterating, complete when the iterator is exhausted."""

    format: str = ""  # pcap or pcapng
    bytes_total: int = 0
    bytes_read: int = 0
    packets: int = 0  # capture records (packets) read
    tcp_packets: int = 0
    non_ip: int = 0  # link-layer payload is neither IPv4 nor IPv6 (ARP, LLDP, ...)
    non_tcp: int = 0  # IP but not TCP (UDP, ICMP, ...)
    ip_fragments: int = 0  # TCP in IP fragments: not reassembled, skipped
    malformed: int = 0  # shorter than its headers or inconsistent lengths: skipped
    unsupported_link: dict[int, int] = field(default_factory=dict)  # link type -> packets skipped
    truncated: str | None = None  # why reading stopped early, if it did
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    # copied from the TCP tracker at the end
    other_port: int = 0
    connections: int = 0
    mid_stream: int = 0
    closed_fin: int = 0
    closed_rst: int = 0
    reused: int = 0
    evicted: int = 0
    after_close: int = 0
    before_start_bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


# ---------------------------------------------------------------------------------------------------------
# file formats

_PCAP_MAGIC = {  # first 4 bytes -> (byte order, ns per fraction unit, record header length)
    b"\xd4\xc3\xb2\xa1": ("<", 1000, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1000, 24),  # "modified" pcap (Kuznetzov): 8 more bytes per record
    b"\xa1\xb2\xcd\x34": (">", 1000, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}

# link type -> offset of the IP header, for link types that carry IP directly (version nibble decides 4/6)
_IP_LINKS = {0: 4, 108: 4, 101: 0, 12: 0, 14: 0, 228: 0, 229: 0}
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
_IPV6_EXT = frozenset((0, 43, 60, 51, 135, 139, 140))  # hop-by-hop, routing, dest-opts, AH, mobility, HIP, shim6


def read_pcap(
    path: str | os.PathLike[str],
    server_ports: Iterable[int],
    progress: ProgressFn | None = None,
    stats: PcapStats | None = None,
    *,
    max_connections: int = limits.MAX_CONNECTIONS,
    shard: tuple[int, int] | None = None,
    tracker: TcpTracker | None = None,
    last: bool = True,
) -> PcapReader:
    """Events of a capture file, in file order: iterate the result (its ``stats`` fill as it advances).
    ``progress(bytes_read, total_bytes)`` is called after each read block. ``CaptureError`` is raised when
    iteration starts (before any event) if the file cannot be opened or is not a pcap / pcapng file.
    ``shard=(k, n)``: only the k-th of n shares of the connections (file-wide losses only in share 0).
    Consecutive parts of one capture (``tcpdump -C``, ``--write-pcap`` rotation) share one ``tracker``;
    connections are closed at the end of the ``last`` part only."""
    return PcapReader(
        path, server_ports, progress, stats, max_connections=max_connections, shard=shard, tracker=tracker, last=last
    )


class PcapReader:
    """An iterable of ``SourceEvent``s of one capture file, plus its ``stats``.

    ``iter()`` checks the file header (``CaptureError``) and returns a flat iterator over batches of events
    (one per read block): iterating a list costs far less per event than resuming a generator.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        server_ports: Iterable[int],
        progress: ProgressFn | None = None,
        stats: PcapStats | None = None,
        *,
        max_connections: int = limits.MAX_CONNECTIONS,
        shard: tuple[int, int] | None = None,
        tracker: TcpTracker | None = None,
        last: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self.shard = shard
        self.tracker = tracker
        self.last = last
        self.server_ports = set(server_ports)
        self.progress = progress
        self.stats = stats if stats is not None else PcapStats()
        self.max_connections = max_connections
        self._it: Iterator[SourceEvent] | None = None

    def __iter__(self) -> Iterator[SourceEvent]:
        if self._it is None:
            self._it = itertools.chain.from_iterable(self.batches())
        return self._it

    def batches(self) -> Iterator[list[SourceEvent]]:
        """The events in lists (one per read block), for ``Pipeline.feed_many``. Use this or ``iter()``."""
        kind = _check_header(self.path)
        self.stats.format = kind
        tracker = self.tracker
        if tracker is None:
            tracker = TcpTracker(self.server_ports, Source.PCAP, self.max_connections, self.shard)
        file_losses = self.shard is None or self.shard[0] == 0
        return _batches(self.path, kind, tracker, self.stats, self.progress, file_losses, self.last)

    def __next__(self) -> SourceEvent:
        return next(iter(self))

    def __repr__(self) -> str:
        return f"PcapReader(path={self.path!r}, packets={self.stats.packets})"


def _check_header(path: str) -> str:
    """Return ``pcap`` or ``pcapng``, or raise ``CaptureError`` (one line, no file content in it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise CaptureError(f"{path}: cannot open: {e.strerror or e}") from None
    if not head:
        raise CaptureError(f"{path}: empty file, not a capture")
    if head[:4] in _PCAP_MAGIC:
        if len(head) < 24:
            raise CaptureError(f"{path}: truncated pcap file header")
        return "pcap"
    if head[:4] == _PCAPNG_SHB:
        if len(head) < 12 or head[8:12] not in _BOM:
            raise CaptureError(f"{path}: pcapng section header without a valid byte-order magic")
        return "pcapng"
    raise CaptureError(f"{path}: not a pcap or pcapng file (unknown magic number)")


def _batches(
    path: str,
    kind: str,
    tracker: TcpTracker,
    st: PcapStats,
    progress: ProgressFn | None,
    file_losses: bool = True,
    last: bool = True,
) -> Iterator[list[SourceEvent]]:
    with open(path, "rb") as f:
        inp = _Input(f, os.fstat(f.fileno()).st_size, progress, st)
        decode = make_decoder(tracker, st)
        try:
            if kind == "pcap":
                yield from _read_pcap(inp, st, decode, pcap_walker(tracker))
            else:
                yield from _read_pcapng(inp, st, decode)
            ts = st.last_ts_ns or 0
            end: list[SourceEvent] = _file_losses(st, ts, inp.consumed) if file_losses else []
            if last:
                end += tracker.finish(ts)
            yield end
        finally:
            st.tcp_packets = tracker.packets
            for name in _TRACKER_COUNTERS:
                setattr(st, name, getattr(tracker, name))


def _file_losses(st: PcapStats, ts: int, consumed: int) -> list[SourceEvent]:
    """What the whole file lost, as conn-less Loss events."""
    end: list[SourceEvent] = []
    if st.truncated is not None:
        end.append(Loss(None, ts, f"truncated file: {st.truncated}", nbytes=st.bytes_total - consumed))
    if st.ip_fragments:
        end.append(Loss(None, ts, "IP fragments not reassembled", count=st.ip_fragments))
    if st.malformed:
        end.append(Loss(None, ts, "malformed packets skipped", count=st.malformed))
    for link, n in sorted(st.unsupported_link.items()):
        end.append(Loss(None, ts, f"unsupported link type {link}", count=n))
    return end


class _Input:
    """Block reads from the file; ``consumed`` is the file offset of the first byte not yet parsed."""

    def __init__(self, f: BinaryIO, total: int, progress: ProgressFn | None, st: PcapStats) -> None:
        self.f = f
        self.total = total
        self.progress = progress
        self.st = st
        st.bytes_total = total
        self.consumed = 0  # file offset of buf[0]

    def refill(self, buf: bytes, off: int, need: int) -> bytes:
        """``buf[off:]`` plus more of the file, so that at least ``need`` bytes are there (unless at EOF)."""
        rest = buf[off:]
        self.consumed += off
        chunks = [rest]
        have = len(rest)
        while have < need:
            more = self.f.read(max(limits.CAPTURE_READ_BLOCK, need - have))
            if not more:
                break
            chunks.append(more)
            have += len(more)
            self.st.bytes_read += len(more)
            if self.progress is not None:
                self.progress(self.st.bytes_read, self.total)
        return b"".join(chunks) if len(chunks) > 1 else rest


def _read_pcap(
    inp: _Input, st: PcapStats, decode: _Decoder, walk: Callable[..., tuple] | None = None
) -> Iterator[list[SourceEvent]]:
    buf = inp.refill(b"", 0, 24)
    order, frac_ns, hl = _PCAP_MAGIC[buf[:4]]
    link = struct.unpack_from(order + "I", buf, 20)[0] & 0xFFFF  # upper bits: FCS length flags
    if hl != 16:
        walk = None
    big = order == ">"
    l3off = _IP_LINKS.get(link, -1)
    rec = struct.Struct(order + "IIII").unpack_from
    max_rec = limits.MAX_CAPTURE_RECORD
    off = 24
    blen = len(buf)
    n = 0
    ts = None
    first = None
    out: list[SourceEvent] = []
    try:
        while True:
            if walk is not None:
                # the common records in C (pcapwalk.c); it stops at the first one for the code below
                off, k, _, t0, t1, _ = walk(buf, off, big, frac_ns, link, l3off, max_rec, out)
                if k:
                    n += k
                    ts = t1
                    if first is None:
                        first = t0
            if blen - off < hl:
                if out:
                    yield out
                    out = []
                buf = inp.refill(buf, off, hl)
                off = 0
                blen = len(buf)
                if blen == 0:
                    break
                if blen < hl:
                    st.truncated = f"cut inside a record header at byte {inp.consumed}"
                    break
            sec, frac, caplen, wirelen = rec(buf, off)
            if caplen > max_rec:
                st.truncated = f"corrupt record length {caplen} at byte {inp.consumed + off}"
                break
            start = off + hl
            end = start + caplen
            if end > blen:
                if out:
                    yield out
                    out = []
                buf = inp.refill(buf, off, hl + caplen)
                off = 0
                blen = len(buf)
                start = hl
                end = start + caplen
                if end > blen:
                    st.truncated = f"cut inside a record at byte {inp.consumed}"
                    break
            n += 1
            ts = sec * 1_000_000_000 + frac * frac_ns
            if first is None:
                first = ts
            decode(out, buf, start, end, wirelen if wirelen > caplen else caplen, link, ts)
            off = end
        if out:
            yield out
    finally:
        inp.consumed += off
        st.packets += n
        if ts is not None:
            st.last_ts_ns = ts
            if st.first_ts_ns is None:
                st.first_ts_ns = first


def _read_pcapng(inp: _Input, st: PcapStats, decode: _Decoder) -> Iterator[list[SourceEvent]]:
    buf = b""
    off = 0
    blen = 0
    n = 0
    ts = 0
    seen_ts = False
    first = None
    max_rec = limits.MAX_CAPTURE_RECORD
    ifaces: list[tuple[int, int, int, int, int]] = []  # (link type, mult, div, offset ns, snaplen)
    order = "<"
    u32 = hdr = epb = pb = None
    out: list[SourceEvent] = []
    try:
        while True:
            if blen - off < 12:
                if out:
                    yield out
                    out = []
                buf = inp.refill(buf, off, 12)
                off = 0
                blen = len(buf)
                if blen == 0:
                    break
                if blen < 12:
                    st.truncated = f"cut inside a block header at byte {inp.consumed}"
                    break
            if buf[off : off + 4] == _PCAPNG_SHB:  # a new section: byte order and interfaces start over
                bom = _BOM.get(buf[off + 8 : off + 12])
                if bom is None:
                    st.truncated = f"corrupt section header at byte {inp.consumed + off}"
                    break
                order = bom
                u32 = struct.Struct(order + "I").unpack_from
                hdr = struct.Struct(order + "II").unpack_from
                epb = struct.Struct(order + "IIIII").unpack_from
                pb = struct.Struct(order + "HHIIII").unpack_from
                ifaces = []
            if hdr is None or u32 is None or epb is None or pb is None:  # pragma: no cover - read_pcap checked
                st.truncated = "no section header"
                break
            btype, size = hdr(buf, off)
            if size < (28 if btype == 0x0A0D0D0A else 12) or size % 4 or size > max_rec:
                st.truncated = f"corrupt block length {size} at byte {inp.consumed + off}"
                break
            if blen - off < size:
                if out:
                    yield out
                    out = []
                buf = inp.refill(buf, off, size)
                off = 0
                blen = len(buf)
                if blen < size:
                    st.truncated = f"cut inside a block at byte {inp.consumed}"
                    break
            bend = off + size - 4
            if u32(buf, bend)[0] != size:
                st.truncated = f"corrupt block (trailing length differs) at byte {inp.consumed + off}"
                break
            if btype == 6 or btype == 2:  # enhanced packet block, obsolete packet block
                if size < 32:
                    st.malformed += 1
                else:
                    if btype == 6:
                        ifid, tsh, tsl, caplen, wirelen = epb(buf, off + 8)
                    else:
                        ifid, _drops, tsh, tsl, caplen, wirelen = pb(buf, off + 8)
                    start = off + 28
                    if ifid >= len(ifaces) or start + caplen > bend:
                        st.malformed += 1
                    else:
                        link, mult, div, toff, _ = ifaces[ifid]
                        ts = ((tsh << 32 | tsl) * mult) // div + toff
                        if first is None:
                            first = ts
                        seen_ts = True
                        n += 1
                        decode(out, buf, start, start + caplen, wirelen if wirelen > caplen else caplen, link, ts)
            elif btype == 3:  # simple packet block: interface 0, no timestamp (the previous one is used)
                if not ifaces or size < 16:
                    st.malformed += 1
                else:
                    wirelen = u32(buf, off + 8)[0]
                    link, _, _, _, snap = ifaces[0]
                    caplen = min(wirelen, bend - (off + 12), snap or wirelen)
                    n += 1
                    decode(out, buf, off + 12, off + 12 + caplen, wirelen, link, ts)
            elif btype == 1:  # interface description block
                if size < 20:
                    st.truncated = f"corrupt interface description at byte {inp.consumed + off}"
                    break
                ifaces.append(_parse_idb(buf, off, bend, order))
            elif btype == 0x0A0D0D0A:
                major = struct.unpack_from(order + "H", buf, off + 12)[0]
                if major != 1:
                    st.truncated = f"unsupported pcapng version {major} at byte {inp.consumed + off}"
                    break
            off += size
        if out:
            yield out
    finally:
        inp.consumed += off
        st.packets += n
        if seen_ts:
            st.last_ts_ns = ts
            if st.first_ts_ns is None:
                st.first_ts_ns = first


def _parse_idb(buf: bytes, off: int, bend: int, order: str) -> tuple[int, int, int, int, int]:
    link, _, snaplen = struct.unpack_from(order + "HHI", buf, off + 8)
    mult, div, toff = 1000, 1, 0  # default resolution: microseconds
    p = off + 16
    while p + 4 <= bend:
        code, olen = struct.unpack_from(order + "HH", buf, p)
        if code == 0:
            break
        v = p + 4
        if v + olen > bend:
            break
        if code == 9 and olen >= 1:  # if_tsresol
            r = buf[v]
            exp = r & 0x7F
            if r & 0x80:
                mult, div = 1_000_000_000, 1 << exp
            elif exp <= 9:
                mult, div = 10 ** (9 - exp), 1
            else:
                mult, div = 1, 10 ** min(exp - 9, 100)
        elif code == 14 and olen >= 8:  # if_tsoffset, seconds
            toff = struct.unpack_from(order + "q", buf, v)[0] * 1_000_000_000
        p = v + ((olen + 3) & ~3)
    return link, mult, div, toff, snaplen


# ---------------------------------------------------------------------------------------------------------
# link / IP / TCP headers

_Decoder = Callable[[list[SourceEvent], bytes, int, int, int, int, int], None]


def make_decoder(tracker: TcpTracker, st: PcapStats) -> _Decoder:
    """A function ``decode(out, buf, start, end, wirelen, link, ts_ns)`` for one packet in ``buf[start:end]``:
    appends its events to ``out``, counts what it skips in ``st``. ``buf`` is anything indexable and sliceable
    to bytes (bytes, an mmap: the live sniffer decodes straight from its capture ring)."""
    feed = tracker.feed
    ip4tcp = struct.Struct("!BxHxxHxB2x4s4sHHIIBB").unpack_from  # IPv4 without options, then TCP
    ip4 = struct.Struct("!BxHxxHxB2x4s4s").unpack_from
    ip6 = struct.Struct("!IHB").unpack_from
    tcp = struct.Struct("!HHIIBB").unpack_from
    u16 = struct.Struct("!H").unpack_from
    ip_links = _IP_LINKS
    vlan = _VLAN_TPIDS
    ext6 = _IPV6_EXT
    max_tags = limits.MAX_VLAN_TAGS
    max_ext = limits.MAX_IPV6_EXT_HEADERS
    unsupported = st.unsupported_link

    def decode(out: list[SourceEvent], buf: bytes, off: int, end: int, wirelen: int, link: int, ts: int) -> None:
        # -- link layer: find the IP header (l3) and what it carries (et)
        if link == 1:
            if end - off < 14:
                st.malformed += 1
                return
            et = buf[off + 12] << 8 | buf[off + 13]
            l3 = off + 14
            if et in vlan:
                tags = 0
                while et in vlan:
                    tags += 1
                    if l3 + 4 > end or tags > max_tags:
                        st.malformed += 1
                        return
                    et = buf[l3 + 2] << 8 | buf[l3 + 3]
                    l3 += 4
        elif link in ip_links:
            l3 = off + ip_links[link]
            if l3 >= end:
                st.malformed += 1
                return
            v = buf[l3] >> 4
            et = 0x0800 if v == 4 else 0x86DD if v == 6 else 0
        elif link == 113:  # Linux cooked v1: protocol at 14
            if end - off < 16:
                st.malformed += 1
                return
            et = buf[off + 14] << 8 | buf[off + 15]
            l3 = off + 16
        elif link == 276:  # Linux cooked v2: protocol at 0
            if end - off < 20:
                st.malformed += 1
                return
            et = buf[off] << 8 | buf[off + 1]
            l3 = off + 20
        else:
            unsupported[link] = unsupported.get(link, 0) + 1
            return

        # -- IP
        if et == 0x0800:
            if l3 + 40 <= end and buf[l3] == 0x45:
                _, tl, frag, proto, src, dst, sport, dport, seq, ack, offb, flags = ip4tcp(buf, l3)
                ihl = 20
                t = l3 + 20
            else:
                if l3 + 20 > end:
                    st.malformed += 1
                    return
                vi, tl, frag, proto, src, dst = ip4(buf, l3)
                ihl = (vi & 15) * 4
                if vi >> 4 != 4 or ihl < 20:
                    st.malformed += 1
                    return
                t = l3 + ihl
                if proto == 6 and not frag & 0x3FFF:
                    if t + 20 > end:
                        st.malformed += 1
                        return
                    sport, dport, seq, ack, offb, flags = tcp(buf, t)
            if proto != 6:
                st.non_tcp += 1
                return
            if frag & 0x3FFF:  # more-fragments flag or an offset
                st.ip_fragments += 1
                return
            if tl == 0:  # TCP segmentation offload: the NIC fills in the length
                ip_end = off + wirelen
            elif tl < ihl:
                st.malformed += 1
                return
            else:
                ip_end = l3 + tl
        elif et == 0x86DD:
            if l3 + 40 > end:
                st.malformed += 1
                return
            vtc, plen, nh = ip6(buf, l3)
            if vtc >> 28 != 6:
                st.malformed += 1
                return
            src = buf[l3 + 8 : l3 + 24]
            dst = buf[l3 + 24 : l3 + 40]
            t = l3 + 40
            ip_end = t + plen if plen else off + wirelen  # 0: jumbogram or segmentation offload
            hops = 0
            while nh != 6:
                hops += 1
                if t + 8 > end or hops > max_ext:
                    st.malformed += 1
                    return
                if nh in ext6:
                    nxt = buf[t]
                    t += (buf[t + 1] + 2) * 4 if nh == 51 else (buf[t + 1] + 1) * 8
                    nh = nxt
                elif nh == 44:  # fragment header: only an atomic fragment (offset 0, no M flag) is whole
                    if u16(buf, t + 2)[0] & 0xFFF9:
                        if buf[t] == 6:
                            st.ip_fragments += 1
                        else:
                            st.non_tcp += 1
                        return
                    nh = buf[t]
                    t += 8
                else:
                    st.non_tcp += 1
                    return
            if t + 20 > end:
                st.malformed += 1
                return
            sport, dport, seq, ack, offb, flags = tcp(buf, t)
        else:
            st.non_ip += 1
            return

        # -- TCP payload: captured part and the length the IP header announces
        p0 = t + (offb >> 4) * 4
        if offb < 0x50 or p0 > ip_end:
            st.malformed += 1
            return
        if ip_end <= end:
            payload = buf[p0:ip_end]
            orig = ip_end - p0
        else:  # snaplen cut the packet: the rest of the payload is a gap
            wire_end = off + wirelen
            if ip_end > wire_end:  # the IP length claims more than was on the wire
                ip_end = wire_end if wire_end > p0 else p0
            payload = buf[p0:end] if end > p0 else b""
            orig = ip_end - p0 if ip_end - p0 > len(payload) else len(payload)
        feed(out, ts, src, sport, dst, dport, seq, flags, payload, orig, ack)

    return decode

"""Live packet capture -> source events, for ``redis-audit sniff`` and ``run --fallback`` (no eBPF needed).

Input: network interfaces and the Redis server ports. Output: ``ConnOpen`` / ``Chunk`` / ``ConnClose`` / ``Loss``
events with ``Source.SNIFF`` from ``poll()``. Link, IP and TCP headers are parsed by the same code as pcap replay
(``sources.pcap.make_decoder``) into the same ``TcpTracker``, so what the golden captures test holds live.

How packets are captured (and why not scapy: parsing one packet with scapy costs ~250 us here, this whole
per-packet path ~2.5 us; ``redis-benchmark -c 50`` on loopback makes ~100k packets/s):

- One ``AF_PACKET`` socket per interface (one for ``any``) with a ``TPACKET_V3`` ring mapped into this process:
  the kernel fills blocks of packets, no system call per packet, kernel timestamps (ns). Measured with
  ``redis-benchmark -c 50 -n 200000 -t set,get`` (800k packets) against a plain ``recv_into`` loop on the same
  filtered socket: 2.2 s of CPU for capture, decode and tracking against 3.5-5 s (a system call per packet;
  CPython's ``recvfrom`` even adds an ``ioctl`` per packet to name the interface), and a 64 MiB
  ``SO_RCVBUF(FORCE)`` (128 MiB charged) held 157k packets, each charged its whole skb (~850 bytes), where the
  ring takes ~240 bytes per small packet.
- A reader thread copies each block out of the ring as soon as the kernel hands it over (one copy per block)
  into a backlog that ``poll()`` decodes: the Python pipeline costs ~35 us per command, far more than capture,
  and on a busy host it falls behind a burst; the backlog (``limits.SNIFF_BACKLOG_BYTES``) absorbs that instead
  of the kernel dropping packets. Only when it is full does the ring fill and the kernel drop (counted).
- A classic BPF filter built here (not compiled by libpcap) is attached in the kernel: ``tcp port P1 or ...``
  for IPv4 (first fragments only, like tcpdump) and IPv6, plus every IPv6 packet with extension headers (the
  decoder walks them; tcpdump's filter would miss TCP behind them). It drops the outgoing copy of loopback
  packets (on ``lo`` every packet passes twice; the incoming copy is kept, as libpcap does). Its loads are
  relative to the network header (``SKF_NET_OFF``) and the packet's protocol, type and device type come from
  ancillary loads, so one program fits every link type and ``any``. No libpcap, no scapy at run time.
- Framing: a single Ethernet or loopback interface is read raw and written (``--write-pcap``) as Ethernet;
  ``any``, several interfaces or other device types are read from the network header on and written as Linux
  cooked v2 (SLL2: protocol, interface index, device type, packet type, address), like ``tcpdump -i any``.

Losses are never silent: the kernel's drop counter (``PACKET_STATISTICS``, read and reset every poll) becomes
``Loss(conn=None, reason="kernel dropped N packets", count=N)``; packets the decoder skips (IP fragments,
malformed headers) become ``Loss`` events too; holes in a TCP stream come out of the reassembly as gaps.

What packet capture cannot know, as opposed to the eBPF source: no server or client PID / UID / command (NULL),
nothing over Unix sockets, nothing readable inside TLS, and a connection already open at start is joined
mid-stream (user and db unknown). Redis processes in another network namespace are invisible from this one, and
VLAN tags the NIC did not strip hide the IP header from the filter (capture the VLAN interface instead).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from auditor import limits
from auditor.sources.pcap import PcapStats, make_decoder
from auditor.sources.pcapwriter import RotatingPcapWriter
from auditor.sources.tcp import TcpTracker
from auditor.types import Loss, Source, SourceEvent

if TYPE_CHECKING:
    from auditor.pipeline import Pipeline

# linux/if_packet.h, linux/if_ether.h, linux/if_arp.h, linux/filter.h
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
SO_ATTACH_FILTER = 26
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # what the live decoder is told for frames that start at the network header
LINKTYPE_LINUX_SLL2 = 276

EXPIRE_EVERY_NS = 10 * 1_000_000_000  # how often idle connections are looked for (limits.IDLE_TIMEOUT_NS)
REDIS_PROCESS_NAMES = frozenset(("redis-server", "valkey-server"))


class SniffError(Exception):
    """Capture cannot start (one line, e.g. no permission, no such interface)."""


# ---------------------------------------------------------------------------------------------------------
# the in-kernel filter (classic BPF)

_LD_W_ABS, _LD_H_ABS, _LD_B_ABS, _LD_H_IND = 0x20, 0x28, 0x30, 0x48
_ALU_AND_K, _ALU_LSH_K, _TAX = 0x54, 0x64, 0x07
_JA, _JEQ_K, _JSET_K, _RET_K = 0x05, 0x15, 0x45, 0x06
_AD = -0x1000  # SKF_AD_OFF: ancillary data
_AD_PROTOCOL, _AD_PKTTYPE, _AD_HATYPE = 0, 4, 28
_NET = -0x100000  # SKF_NET_OFF: offsets from the network header, whatever the link layer
_ACCEPT = 0xFFFFFFFF  # keep the whole packet (the ring block bounds it)
# hop-by-hop, routing, fragment, destination options, AH, mobility, HIP, shim6
_IPV6_EXT_HEADERS = (0, 43, 44, 60, 51, 135, 139, 140)

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def bpf_program(ports: set[int] | frozenset[int], skip_loopback_outgoing: bool = True) -> list[Insn]:
    """``tcp port P1 or tcp port P2 ...`` over IPv4 and IPv6, as classic BPF. More than
    ``limits.SNIFF_MAX_FILTER_PORTS`` ports: every TCP packet (the tracker drops the other ports).

    Every port test is ``jeq #P, 0, 1; ret #ACCEPT``: jumps stay short whatever the number of ports; the jump to
    the IPv6 part is a ``ja`` (32-bit offset)."""
    prog: list[Insn] = []

    def ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> None:
        prog.append((code, jt, jf, k & 0xFFFFFFFF))

    check = sorted(ports) if len(ports) <= limits.SNIFF_MAX_FILTER_PORTS else []

    def port_tests(offset_ins: list[tuple[int, int]]) -> None:
        for code, k in offset_ins:
            if not check:
                ins(_RET_K, _ACCEPT)
                return
            ins(code, k)
            for p in check:
                ins(_JEQ_K, p, 0, 1)
                ins(_RET_K, _ACCEPT)
        ins(_RET_K, 0)

    if skip_loopback_outgoing:
        ins(_LD_W_ABS, _AD + _AD_PKTTYPE)
        ins(_JEQ_K, PACKET_OUTGOING, 0, 3)
        ins(_LD_W_ABS, _AD + _AD_HATYPE)
        ins(_JEQ_K, ARPHRD_LOOPBACK, 0, 1)
        ins(_RET_K, 0)
    ins(_LD_W_ABS, _AD + _AD_PROTOCOL)
    ins(_JEQ_K, 0x86DD, 0, 1)
    ja_at = len(prog)
    ins(_JA, 0)  # patched below: to the IPv6 part
    ins(_JEQ_K, 0x0800, 1, 0)
    ins(_RET_K, 0)
    # IPv4: TCP, not a later fragment, ports after the (variable) IP header
    ins(_LD_B_ABS, _NET + 9)
    ins(_JEQ_K, 6, 1, 0)
    ins(_RET_K, 0)
    ins(_LD_H_ABS, _NET + 6)
    ins(_JSET_K, 0x1FFF, 0, 1)
    ins(_RET_K, 0)
    ins(_LD_B_ABS, _NET + 0)
    ins(_ALU_AND_K, 0x0F)
    ins(_ALU_LSH_K, 2)
    ins(_TAX)
    port_tests([(_LD_H_IND, _NET + 0), (_LD_H_IND, _NET + 2)])
    prog[ja_at] = (_JA, 0, 0, len(prog) - ja_at - 1)
    # IPv6: TCP right after the fixed header: ports; behind extension headers: kept whole (the decoder walks
    # them, the tracker drops other ports, TCP in fragments is reported as a loss); anything else: dropped
    ins(_LD_B_ABS, _NET + 6)
    ins(_JEQ_K, 6, 2 * len(_IPV6_EXT_HEADERS) + 1, 0)
    for nh in _IPV6_EXT_HEADERS:
        ins(_JEQ_K, nh, 0, 1)
        ins(_RET_K, _ACCEPT)
    ins(_RET_K, 0)
    port_tests([(_LD_H_ABS, _NET + 40), (_LD_H_ABS, _NET + 42)])
    return prog


def attach_filter(sock: socket.socket, prog: list[Insn]) -> None:
    """SO_ATTACH_FILTER: ``struct sock_fprog {unsigned short len; struct sock_filter *filter;}``."""
    code = b"".join(struct.pack("=HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# ---------------------------------------------------------------------------------------------------------
# kernel counters


def read_packet_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: PACKET_STATISTICS resets the kernel's counters when read.
    ``packets`` counts the dropped ones too."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)  # tpacket_stats_v3; v1/v2 return the first 8 bytes
    packets, drops = struct.unpack_from("=II", raw)
    return packets, drops


def drops_to_loss(ts_ns: int, drops: int) -> Loss | None:
    """New kernel drops -> the ``Loss`` the trail shows as a gap row (None when there were none)."""
    if drops <= 0:
        return None
    return Loss(None, ts_ns, f"kernel dropped {drops} packets", count=drops)


# ---------------------------------------------------------------------------------------------------------
# one capture socket and its ring

# tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, (tp_status), tp_mac
_PKT_HDR = struct.Struct("=IIIII4xH")
# tpacket_block_desc: (version, offset_to_priv, block_status), num_pkts, offset_to_first_pkt, blk_len
_BLOCK_HDR = struct.Struct("=12xIII")
_BLOCK_STATUS = struct.Struct("=8xI").unpack_from
# sockaddr_ll right after the 48-byte tpacket3_hdr: protocol (network order), ifindex, hatype, pkttype, halen, addr
_SLL = struct.Struct("=2x2siHBB8s")
_SLL_AT = 48
_SLL2 = struct.Struct("!2sHIHBB8s")  # LINKTYPE_LINUX_SLL2 header


class _Capture:
    """One AF_PACKET socket with its TPACKET_V3 ring. ``iface`` None: every interface (``any``)."""

    def __init__(self, iface: str | None, cooked: bool, prog: list[Insn], ring_bytes: int, block_bytes: int) -> None:
        self.iface = iface
        self.cooked = cooked  # frames start at the network header (SOCK_DGRAM)
        self.link = LINKTYPE_RAW if cooked else LINKTYPE_ETHERNET
        self.block_bytes = block_bytes
        self.nblocks = max(2, ring_bytes // block_bytes)
        self.head = 0  # next block to read
        self.mm: mmap.mmap | None = None
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        # Bound to an interface: protocol 0 until the filter and ring are in place, so nothing unfiltered is queued.
        proto = socket.htons(ETH_P_ALL) if iface is None else 0
        self.sock = socket.socket(socket.AF_PACKET, kind, proto)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            attach_filter(self.sock, prog)
            req = struct.pack("=7I", block_bytes, self.nblocks, block_bytes, self.nblocks,
                              limits.SNIFF_BLOCK_TIMEOUT_MS, 0, 0)  # fmt: skip
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            size = block_bytes * self.nblocks
            self.mm = mmap.mmap(self.sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            if iface is not None:
                self.sock.bind((iface, ETH_P_ALL))
            else:  # drop what was queued before the filter (read from the socket, not the ring, so never seen)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        self.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            read_packet_stats(self.sock)  # start the counters from zero
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def take_block(self) -> bytes | None:
        """Copy the next block the kernel handed over out of the ring and give the block back (one copy per
        block, not per packet), or None if there is none."""
        mm = self.mm
        if mm is None:
            return None
        blk = self.head * self.block_bytes
        if not _BLOCK_STATUS(mm, blk)[0] & TP_STATUS_USER:
            return None
        used = _BLOCK_HDR.unpack_from(mm, blk)[2]
        data = mm[blk : blk + min(max(used, _BLOCK_HDR.size), self.block_bytes)]
        mm[blk + 8 : blk + 12] = b"\0\0\0\0"  # TP_STATUS_KERNEL
        self.head = (self.head + 1) % self.nblocks
        return data

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        self.sock.close()


# ---------------------------------------------------------------------------------------------------------
# the source


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket of a local Redis process."""

    pid: int
    comm: str
    addr: str
    port: int


class SniffSource:
    """A ``LiveSource`` (see ``auditor.live``) capturing packets on ``ifaces`` (default: loopback).

    A reader thread moves every block the kernel hands over out of the ring into a backlog at once (a copy per
    block: cheap, and it runs while the pipeline is busy: the GIL is released in ``select``), so the kernel's
    ring never fills while the pipeline lags behind a burst; ``poll()`` decodes blocks from the backlog. When
    the backlog reaches ``limits.SNIFF_BACKLOG_BYTES`` the thread stops taking blocks, the ring fills and the
    kernel drops (and counts) packets. ``reader_thread=False``: ``poll()`` reads the ring itself (tests).
    """

    kind = Source.SNIFF

    def __init__(
        self,
        ifaces: list[str] | None,
        ports: set[int],
        write_pcap: Path | None,
        pcap_max_bytes: int,
        *,
        ring_bytes: int = limits.SNIFF_RING_BYTES,
        block_bytes: int = limits.SNIFF_BLOCK_BYTES,
        backlog_bytes: int = limits.SNIFF_BACKLOG_BYTES,
        reader_thread: bool = True,
    ) -> None:
        self.ifaces = list(dict.fromkeys(ifaces or ["lo"]))
        self.ports = frozenset(ports)
        if not self.ports:
            raise SniffError("no Redis port to capture: give --port")
        if any(not 0 < p < 65536 for p in self.ports):
            raise SniffError(f"not a TCP port: {sorted(self.ports)}")
        if "any" in self.ifaces and len(self.ifaces) > 1:
            raise SniffError("--iface any already captures every interface: give it alone")
        hatypes = {}
        for name in self.ifaces:
            if name == "any":
                continue
            try:
                socket.if_nametoindex(name)
            except OSError:
                raise SniffError(f"no such network interface: {name}") from None
            hatypes[name] = _hatype(name)
        # one Ethernet-like interface: raw frames, written as Ethernet; else cooked, written as SLL2
        self.cooked = self.ifaces == ["any"] or len(self.ifaces) > 1
        self.cooked |= any(h not in (ARPHRD_ETHER, ARPHRD_LOOPBACK) for h in hatypes.values())
        self.write_pcap = Path(write_pcap) if write_pcap is not None else None
        self.pcap_max_bytes = pcap_max_bytes
        self.ring_bytes = ring_bytes
        self.block_bytes = block_bytes
        self.backlog_limit = backlog_bytes
        self.use_thread = reader_thread
        self.tracker = TcpTracker(self.ports, Source.SNIFF)
        self.stats = PcapStats()  # what the decoder skipped (malformed, fragments, ...)
        self._decode = make_decoder(self.tracker, self.stats)
        self._captures: list[_Capture] = []
        self._writer: RotatingPcapWriter | None = None
        self._reported = {"ip_fragments": 0, "malformed": 0}
        self._last_expire = 0
        # backlog: (capture, block) appended by the reader thread, taken by poll(); its size is
        # taken - done, each counter written by one thread only
        self._backlog: deque[tuple[_Capture, bytes]] = deque()
        self._taken = 0
        self._done = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self.packets = 0
        self.bytes = 0
        self.kernel_drops = 0

    # -- LiveSource

    def start(self) -> None:
        prog = bpf_program(self.ports)
        try:
            for name in self.ifaces:
                iface = None if name == "any" else name
                self._captures.append(_Capture(iface, self.cooked, prog, self.ring_bytes, self.block_bytes))
        except PermissionError:
            self._close_captures()
            raise SniffError("no permission to capture packets: needs root or CAP_NET_RAW") from None
        except OSError as e:
            self._close_captures()
            if e.errno == errno.ENOMEM:
                raise SniffError(f"cannot allocate a {self.ring_bytes >> 20} MiB capture ring: {e.strerror}") from None
            raise SniffError(f"cannot capture on {','.join(self.ifaces)}: {e.strerror or e}") from None
        if self.write_pcap is not None:
            link = LINKTYPE_LINUX_SLL2 if self.cooked else LINKTYPE_ETHERNET
            try:
                self._writer = RotatingPcapWriter(self.write_pcap, link, self.pcap_max_bytes)
            except OSError as e:
                self._close_captures()
                raise SniffError(f"cannot write {self.write_pcap}: {e.strerror or e}") from None
        self._last_expire = time.time_ns()
        if self.use_thread:
            self._thread = threading.Thread(target=self._reader, name="sniff-reader", daemon=True)
            self._thread.start()

    def pump(self, pipe: Pipeline, timeout_ms: int = 100) -> None:
        """``pipe.feed_many(self.poll(timeout_ms))`` (the live loop's call)."""
        pipe.feed_many(self.poll(timeout_ms))

    def poll(self, timeout_ms: int) -> list[SourceEvent]:
        """Decode what was captured (at most ``SNIFF_MAX_BLOCKS_PER_POLL`` blocks), waiting up to ``timeout_ms``
        when nothing is there; then kernel drops, skipped packets and idle connections."""
        out: list[SourceEvent] = []
        if not self._captures:
            return out
        if self._thread_error is not None:
            raise SniffError(f"packet reader failed: {self._thread_error}")
        todo = limits.SNIFF_MAX_BLOCKS_PER_POLL
        if self._thread is not None:
            self._ready.clear()
            if not self._backlog and timeout_ms > 0:
                self._ready.wait(timeout_ms / 1000)
            backlog = self._backlog
            while backlog and todo:
                c, block = backlog.popleft()
                self._done += len(block)
                self._process(c, block, out)
                todo -= 1
        else:
            if timeout_ms > 0 and not any(_ready(c) for c in self._captures):
                select.select(self._captures, [], [], timeout_ms / 1000)
            for c in self._captures:
                for _ in range(todo):
                    block = c.take_block()
                    if block is None:
                        break
                    self._process(c, block, out)
        now = time.time_ns()
        out += self._kernel_losses(now)
        out += self._decoder_losses(now)
        if now - self._last_expire >= EXPIRE_EVERY_NS:
            self._last_expire = now
            out += self.tracker.expire(now)
        if self._writer is not None:
            self._writer.flush()
        return out

    def close(self) -> Iterator[SourceEvent]:
        """Stop capturing and hand over the rest: the backlog, the last partly filled blocks (the kernel hands a
        block over after ``SNIFF_BLOCK_TIMEOUT_MS``), losses, then every connection ends (``eof``). A generator:
        a large backlog is decoded block by block as the caller consumes it, never all at once."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        tail: list[tuple[_Capture, bytes]] = []
        if self._captures:
            wait = limits.SNIFF_BLOCK_TIMEOUT_MS / 1000
            deadline = time.monotonic() + 3 * wait
            while time.monotonic() < deadline:
                got = [(c, b) for c in self._captures for b in iter(c.take_block, None)]
                tail += got
                if not got:
                    time.sleep(wait)
        drops = self._kernel_losses(time.time_ns())
        self._close_captures(writer=False)
        return self._finish(tail, drops)

    def describe(self) -> str:
        ports = ",".join(map(str, sorted(self.ports)))
        return f"packets on {','.join(self.ifaces)} tcp port {ports} (sniff)"

    def counters(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "kernel_drops": self.kernel_drops,
            "connections": self.tracker.connections,
            "backlog_bytes": self._taken - self._done,
        }

    # -- internals

    def _reader(self) -> None:
        """Thread: move handed-over blocks from the rings to the backlog, as long as it has room."""
        caps = self._captures
        stop = self._stop
        try:
            while not stop.is_set():
                moved = False
                for c in caps:
                    while self._taken - self._done < self.backlog_limit:
                        block = c.take_block()
                        if block is None:
                            break
                        self._backlog.append((c, block))
                        self._taken += len(block)
                        moved = True
                if moved:
                    self._ready.set()
                elif self._taken - self._done >= self.backlog_limit:
                    stop.wait(0.01)  # full: leave the blocks in the ring until poll() made room
                else:
                    select.select(caps, [], [], 0.05)
        except BaseException as e:  # reported by the next poll()
            self._thread_error = e
            self._ready.set()

    def _process(self, c: _Capture, block: bytes, out: list[SourceEvent]) -> None:
        """One ring block: its packets, in order -> events (and the pcap file)."""
        hdr = _PKT_HDR.unpack_from
        decode = self._decode
        link = c.link
        writer = self._writer
        npkts, p, _ = _BLOCK_HDR.unpack_from(block, 0)
        nbytes = 0
        for _ in range(npkts):
            nxt, sec, nsec, snap, wirelen, mac = hdr(block, p)
            s = p + mac
            ts = sec * 1_000_000_000 + nsec
            if writer is not None:
                if c.cooked:
                    proto, ifindex, hatype, pkttype, halen, addr = _SLL.unpack_from(block, p + _SLL_AT)
                    head = _SLL2.pack(proto, 0, ifindex, hatype, pkttype, halen, addr)
                    writer.add(ts, head + block[s : s + snap], wirelen + len(head))
                else:
                    writer.add(ts, block[s : s + snap], wirelen)
            decode(out, block, s, s + snap, wirelen, link, ts)
            nbytes += snap
            p += nxt
        self.packets += npkts
        self.bytes += nbytes

    def _finish(self, tail: list[tuple[_Capture, bytes]], drops: list[SourceEvent]) -> Iterator[SourceEvent]:
        try:
            while self._backlog:
                c, block = self._backlog.popleft()
                self._done += len(block)
                out: list[SourceEvent] = []
                self._process(c, block, out)
                yield from out
            for c, block in tail:
                out = []
                self._process(c, block, out)
                yield from out
            now = time.time_ns()
            yield from drops
            yield from self._decoder_losses(now)
            yield from self.tracker.finish(now)
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _kernel_losses(self, now: int) -> list[SourceEvent]:
        out: list[SourceEvent] = []
        for c in self._captures:
            _, drops = read_packet_stats(c.sock)
            loss = drops_to_loss(now, drops)
            if loss is not None:
                self.kernel_drops += drops
                out.append(loss)
        return out

    def _decoder_losses(self, now: int) -> list[SourceEvent]:
        out: list[SourceEvent] = []
        for name, reason in (("ip_fragments", "IP fragments not reassembled"), ("malformed", "malformed packets")):
            n = getattr(self.stats, name) - self._reported[name]
            if n > 0:
                self._reported[name] += n
                out.append(Loss(None, now, reason, count=n))
        return out

    def _close_captures(self, writer: bool = True) -> None:
        for c in self._captures:
            c.close()
        self._captures = []
        if writer and self._writer is not None:
            self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return f"SniffSource(ifaces={self.ifaces}, ports={sorted(self.ports)}, packets={self.packets})"


def _ready(c: _Capture) -> bool:
    mm = c.mm
    return mm is not None and bool(_BLOCK_STATUS(mm, c.head * c.block_bytes)[0] & TP_STATUS_USER)


def _hatype(iface: str) -> int:
    """ARPHRD_* device type of an interface (1 Ethernet, 772 loopback, 65534 none/tun, ...)."""
    try:
        return int(Path(f"/sys/class/net/{iface}/type").read_text())
    except (OSError, ValueError):
        return -1


# ---------------------------------------------------------------------------------------------------------
# where local Redis listens


def local_redis_listeners(names: frozenset[str] = REDIS_PROCESS_NAMES) -> list[Listener]:
    """Listening TCP sockets (``/proc/net/tcp``, ``tcp6``) held by a ``redis-server`` / ``valkey-server`` process of
    this network namespace (found through the socket inodes among its fds)."""
    sockets = _listening_sockets()
    if not sockets:
        return []
    try:
        my_ns = os.readlink("/proc/self/ns/net")
    except OSError:
        my_ns = None
    out: list[Listener] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            if comm not in names or (my_ns is not None and os.readlink(f"/proc/{entry}/ns/net") != my_ns):
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                hit = sockets.get(int(link[8:-1]))
                if hit is not None:
                    out.append(Listener(int(entry), comm, hit[0], hit[1]))
    return sorted(set(out), key=lambda x: (x.port, x.addr, x.pid))


def local_redis_ports() -> set[int]:
    """Ports where a local redis-server / valkey-server listens (TCP)."""
    return {x.port for x in local_redis_listeners()}


def capture_ifaces(ports: set[int] | None = None) -> list[str]:
    """Interfaces for ``run --fallback``: ``lo`` when every matching Redis listens on loopback only
    (127.0.0.0/8, ::1); otherwise ``any``. A wildcard (0.0.0.0, ::) or a specific address is reached through a
    network interface by remote clients and through ``lo`` by local ones (Linux routes traffic to its own
    addresses over loopback), so ``any`` is the one capture that sees both, and interfaces that appear later.
    Nothing found (Redis not running yet, or in another namespace): ``any``."""
    addrs = {x.addr for x in local_redis_listeners() if ports is None or x.port in ports}
    if addrs and all(a.startswith("127.") or a == "::1" or a.startswith("::ffff:127.") for a in addrs):
        return ["lo"]
    return ["any"]


def _listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of listening TCP sockets."""
    out: dict[int, tuple[str, int]] = {}
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":  # TCP_LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out[int(f[9])] = (socket.inet_ntop(family, raw), int(hexport, 16))
    return out

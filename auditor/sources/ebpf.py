"""Live capture with eBPF: kernel records -> ConnOpen / Chunk / ConnClose / Loss.

Input: what redis-server / valkey-server processes read from and write to
their client sockets, recorded by ``probes/redis_audit.bpf.c`` (syscall,
sock and sched tracepoints, loaded with bcc). Output: batches of
``SourceEvent`` from ``EbpfSource.poll``.

Cost model (DESIGN.md §6): the probes filter in the kernel (target tgids,
then known socket fds), so only client traffic reaches the ring buffer; the
kernel wakes this process only when the ring is filling up, and ``poll``
drains it on a short timer, reading the mmap'ed ring directly (``ringbuf``):
one dict lookup and one ``Chunk`` per record in C (``ringdrain.c``), no ctypes
callback. The live loop calls ``pump``, which goes one step further: a record
of a connection its pipeline lane takes goes from ring memory straight to the
lane, with no Chunk at all. Work per connection (addresses, the client process
of a Unix socket) happens once, when its accept record is read, before its
``ConnOpen`` is returned.

Connection ids are ``"<server pid>-<fd>-<hex id>"``; the id is unique across
runs (it counts up from the start time in ns), so a reused fd number gets a
new id. Connections that existed before ``start`` are opened with
``mid_stream=True`` and their byte positions count from the attach.

Client identity (``client_pid/uid/comm``), without slowing redis: local TCP
clients from sock:inet_sock_set_state (in-kernel, by socket then 4-tuple);
Unix clients from the process whose write woke the server's socket (in-kernel;
their ``ConnOpen`` waits for that first request, at most a second); for
connections open before the attach, /proc and SO_PEERCRED via pidfd_getfd.

Losses: records the ring buffer refused are counted per connection and
direction in the kernel and reported with the connection's next record (or
its close): the hole becomes a ``Chunk`` without data whose ``orig_len`` is
its size (the stream turns it into a gap of exactly that size, positions stay
true), plus an unattributed ``Loss`` with the count for the trail. Lost
accept/close/exec/exit records become ``Loss(conn=None)``.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import dataclasses
import functools
import gc
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import auditor
from auditor import doctor, limits, native_enabled
from auditor.sources import ebpf_sock, procfs
from auditor.sources.ringbuf import BUSY_BIT, DISCARD_BIT, LEN_MASK, MappedRingBuffer
from auditor.types import CHUNK_SLOTS, Chunk, ConnClose, ConnMeta, ConnOpen, Direction, Loss, Source, SourceEvent

if TYPE_CHECKING:
    from auditor.pipeline import Pipeline


def _probes_dir() -> Path:
    """<repo>/probes for a source checkout (editable install), else the copy a wheel installs in
    <prefix>/share/redis-audit/probes. Never the current directory."""
    here = Path(auditor.__file__).resolve().parent.parent / "probes"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "redis-audit" / "probes"


PROBES_DIR = _probes_dir()
BPF_SOURCE = PROBES_DIR / "redis_audit.bpf.c"

# enum ra_type / ra_counter in probes/redis_audit.h
RA_DATA, RA_ACCEPT, RA_CLOSE, RA_EXEC, RA_EXIT, RA_PEER, RA_FORK, RA_TLS, RA_BUS = 1, 2, 3, 4, 5, 6, 7, 8, 9
CNT_LOST_DATA, CNT_LOST_BYTES, CNT_LOST_CTRL, CNT_SOCKS_FULL, CNT_IOV_REST, CNT_TLS_NOFD, CNT_TLS_CONNS = range(7)
CNT_BUS_CONNS = 7

# ring record header (u32 len, u32 pg_off) + struct ra_data_hdr: one unpack
_REC = struct.Struct("<IIHHIQQQIIQ")
_DATA_AT = _REC.size  # payload offset from the ring record header
# struct ra_accept (after the ring record header)
_ACCEPT = struct.Struct("<HHIQQIIIIII II16s16sH6x128s")
# struct ra_close
_CLOSE = struct.Struct("<HHIQQIIIIQQQQQ")
# struct ra_proc, struct ra_peer
_PROC = struct.Struct("<HHIQII16s")
_PEER = struct.Struct("<HHIQQII16s")
_TLS = struct.Struct("<HHIQQ")

_DIRS = (Direction.TO_SERVER, Direction.TO_CLIENT)
_RING_FULL = "ebpf ring buffer full"
_BPF_NOEXIST = 1
_HOUSEKEEPING_S = 1.0
# PID_MAX_LIMIT on 64-bit: the target bitmap covers every possible pid
_PID_MAX_LIMIT = 4 * 1024 * 1024
# A Unix connection's ConnOpen waits for its client (RA_PEER, which comes
# with the first request); one that stays silent is opened after this.
_HOLD_S = 1.0
_UNIX_PEER_TPS = (b"sock:sk_data_ready", b"sock:sock_recv_length")
_RESCAN_S = 5.0
# OpenSSL functions probed in each target's libssl: (symbol, entry program, return program). SSL_accept
# calls SSL_do_handshake; either alone names the socket of a handshake, whose ciphertext is not captured.
_SSL_PROBES = (
    (b"SSL_read", b"ssl_read_enter", b"ssl_io_exit"),
    (b"SSL_write", b"ssl_write_enter", b"ssl_io_exit"),
    (b"SSL_do_handshake", b"ssl_handshake_enter", b"ssl_handshake_exit"),
    (b"SSL_accept", b"ssl_handshake_enter", b"ssl_handshake_exit"),
)
# A target that forks this soon after it became one, serving nobody, is daemonizing (not a BGSAVE).
_DAEMONIZE_S = 2.0
# A server that does not listen on --port when found is asked again every second for this long.
_YOUNG_S = 10.0
# Housekeeping passes (one a second) that look for the libssl of a server that has none mapped yet.
_TLS_TRIES = 5


class EbpfError(RuntimeError):
    """The probes cannot be loaded or attached (the message says why)."""


class _ChunkSlots:
    """Same slots as ``Chunk``, without its frozen ``__setattr__``.

    The frozen dataclass ``__init__`` costs ~0.7 µs (six
    ``object.__setattr__`` calls), most of the budget per event. The hot loop
    fills one of these with plain attribute stores and then turns it into a
    real ``Chunk`` by assigning ``__class__`` (allowed: same slots, same
    layout), so ``type(c) is Chunk`` and it compares equal to one built
    normally. ``_FAST_CHUNK`` is False if this Python refuses it."""

    __slots__ = Chunk.__slots__


def _fast_chunk_works() -> bool:
    try:
        c = object.__new__(_ChunkSlots)
        c.conn, c.direction, c.pos, c.ts_ns, c.data, c.orig_len = "c", Direction.TO_SERVER, 1, 2, b"x", 1
        c.__class__ = Chunk
    except TypeError:
        return False
    return type(c) is Chunk and c == Chunk("c", Direction.TO_SERVER, 1, 2, b"x", 1)


_FAST_CHUNK = _fast_chunk_works()

try:  # the same loop in C for data records (auditor/_native/ringdrain.c)
    from auditor._ringdrain import drain as _cdrain
except ImportError:  # pragma: no cover - a build without a C compiler
    _cdrain = None
if not native_enabled():
    _cdrain = None


def _detach_all(b: Any) -> None:
    """Detach every tracepoint and uprobe at once: each detach waits for the kernel's grace period (~70-100 ms
    here), one after another that made stopping take ~2 s. bcc's calls drop the GIL; its bookkeeping is one
    dict deletion per probe. What fails here is left to ``cleanup()``."""
    jobs = [functools.partial(b.detach_tracepoint, tp) for tp in list(b.tracepoint_fds)]
    jobs += [functools.partial(b.detach_uprobe_event, ev) for ev in list(b.uprobe_fds)]

    def run(job: Callable[[], object]) -> None:
        with contextlib.suppress(Exception):
            job()

    if len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(len(jobs), 32)) as pool:
            list(pool.map(run, jobs))


@dataclass
class EbpfStats:
    """What the source saw. ``events``: records read from the ring buffer;
    ``bytes``: payload bytes (true lengths) of the captured syscalls;
    ``lost_*``: the kernel's counters of records the ring buffer refused;
    ``targets``: per server pid, syscalls captured and their bytes."""

    events: int = 0
    bytes: int = 0
    servers: int = 0
    conns_opened: int = 0
    conns_closed: int = 0
    wakeups: int = 0  # times the kernel woke the consumer (ring filling up)
    lost_events: int = 0
    lost_bytes: int = 0
    lost_conn_events: int = 0
    untracked_conns: int = 0
    iov_gaps: int = 0
    tls_servers: int = 0  # targets whose SSL_read/SSL_write are probed
    tls_unattributed: int = 0  # SSL_read/SSL_write calls whose socket was not known: their bytes are lost
    tls_errors: list[str] = field(default_factory=list)  # libssl files the probes could not attach to
    tls_connections: int = 0  # connections whose handshake no SSL probe saw: their bytes are encrypted
    cluster_bus_connections: int = 0  # Redis Cluster bus links (node to node, no client command): not captured
    targets: dict[int, dict[str, int]] = field(default_factory=dict)


class _Conn:
    __slots__ = ("cid", "fd", "name", "tgid")

    def __init__(self, cid: int, tgid: int, fd: int, name: str) -> None:
        self.cid = cid
        self.tgid = tgid
        self.fd = fd
        self.name = name


class _Proc:
    """A target server process."""

    __slots__ = ("comm", "listeners", "matches", "pid", "pidfd", "since", "tls", "tls_tries", "uid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.comm = procfs.comm(pid)
        self.uid = procfs.uid(pid)
        self.pidfd = ebpf_sock.pidfd_open(pid)
        self.listeners: dict[int, ebpf_sock.Endpoint | None] = {}
        self.matches: bool | None = None  # --port: listens on one of them
        self.tls: str | None = None  # the libssl its SSL_read/SSL_write probes are attached to
        self.tls_tries = 0  # looks at its maps (an exec'd server maps libssl a moment later)
        self.since = time.monotonic()  # when it became a target (its exec, or the attach)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _cflags(capture_bytes: int, auto_target: bool, ring_bytes: int, ssl_probes: bool = False) -> list[str]:
    piece = min(limits.EBPF_PIECE_BYTES, max(1, capture_bytes))
    tp = doctor.tracefs()
    exit_fmt = tp / "events/sched/sched_process_exit/format" if tp else None
    have_group_dead = exit_fmt is not None and exit_fmt.exists() and "group_dead" in exit_fmt.read_text()
    have_unix_peer = all(doctor.has_tracepoint(t) for t in doctor.OPTIONAL_TRACEPOINTS)
    return [
        f"-I{PROBES_DIR}",
        f"-DRA_CAPTURE_BYTES={capture_bytes}",
        f"-DRA_PIECE_BYTES={piece}",
        f"-DRA_MAX_IOV={limits.EBPF_MAX_IOV}",
        f"-DRA_MAX_CONNS={limits.EBPF_MAX_CONNS}",
        f"-DRA_PID_WORDS={_PID_MAX_LIMIT // 64}",
        f"-DRA_RINGBUF_PAGES={ring_bytes // os.sysconf('SC_PAGE_SIZE')}",
        f"-DRA_WAKEUP_BYTES={min(limits.EBPF_WAKEUP_BYTES, ring_bytes // 16)}",
        f"-DRA_AUTO_TARGET={int(auto_target)}",
        f"-DRA_HAVE_GROUP_DEAD={int(have_group_dead)}",
        f"-DRA_HAVE_UNIX_PEER={int(have_unix_peer)}",
        f"-DRA_SSL_PROBES={int(ssl_probes)}",
    ]


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class EbpfSource:
    """Live capture of local redis-server / valkey-server processes.

    ``pids``: only these processes (default: every redis-server /
    valkey-server, including ones started later). ``ports``: only servers
    listening on one of these TCP ports, and of their TCP connections only
    those to these ports. ``capture_bytes``: payload bytes copied per
    read/write-like syscall (None: EBPF_CAPTURE_BYTES; readv/writev/recvmsg/sendmsg: twice that);
    the true length always travels with the chunk.
    """

    def __init__(
        self,
        pids: set[int] | None = None,
        ports: set[int] | None = None,
        capture_bytes: int | None = limits.EBPF_CAPTURE_BYTES,
        *,
        ring_bytes: int = limits.EBPF_RINGBUF_BYTES,
        tls: bool = False,
    ) -> None:
        if capture_bytes is None:
            capture_bytes = limits.EBPF_CAPTURE_BYTES
        if capture_bytes < 0:
            raise ValueError("capture_bytes must be >= 0")
        self.kind = Source.EBPF
        self.pids = set(pids) if pids else None
        self.ports = set(ports) if ports else None
        self.capture_bytes = capture_bytes
        self.ring_bytes = ring_bytes  # tests shrink it to provoke losses
        self.tls = tls  # SSL probes: TLS connections in plaintext, at a high price per SSL call (README)
        self._bpf = None
        self._ring: MappedRingBuffer | None = None
        self._names: dict[int, str] = {}  # cid -> conn name ("" = ignored); the hot path
        self._conns: dict[int, _Conn] = {}
        self._by_fd: dict[tuple[int, int], int] = {}
        self._held: dict[int, tuple[int, ConnMeta, bool, float]] = {}  # cid -> ConnOpen not yet sent
        self._ignored: dict[int, float] = {}  # cid -> when: filtered out by --port (its names entry is "")
        self._backlog = False  # the last drain stopped at EBPF_MAX_BATCH_BYTES
        self._procs: dict[int, _Proc] = {}
        self._forked: dict[int, int] = {}  # child -> parent: forks of targets, not (yet) serving
        self._rejected: dict[int, float] = {}  # servers not listening on --port -> when first seen so
        self._pending: list[SourceEvent] = []
        self._stats = EbpfStats()
        self._closed_stats: dict[int, dict[str, int]] = {}  # per server pid, connections closed
        self._targets_at = -1e9  # when stats.targets was last computed
        self._reported = [0] * 7  # kernel counters already turned into Loss events
        self._clock = 0
        self._next_drain = 0.0
        self._next_housekeeping = 0.0
        self._next_rescan = 0.0
        self._seed_cid = 0

    # ------------------------------------------------------------------
    # life cycle
    # ------------------------------------------------------------------

    def _cflags(self) -> list[str]:
        return _cflags(self.capture_bytes, self.pids is None, self.ring_bytes, self.tls)

    def start(self) -> None:
        """Load and attach the probes, then track the target processes and
        seed their open connections. Raises EbpfError."""
        try:
            from bcc import BPF
        except ImportError as e:
            raise EbpfError(f"bcc is not importable ({e}); run `redis-audit doctor`") from e
        for attempt in range(3):
            try:
                self._bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=self._cflags())
                break
            except Exception as e:  # bcc raises bare Exception
                # The verifier gives up with EAGAIN when a signal arrives while it works
                # (a debugger or profiler attached, SIGCHLD): try again.
                if "Resource temporarily unavailable" in str(e) and attempt < 2:
                    continue
                raise EbpfError(f"cannot load {BPF_SOURCE.name}: {e}; run `redis-audit doctor`") from e
        b = self._bpf
        # The Unix-peer probes run for every socket read and wake-up on the host (~60 ns each, inside
        # redis-server too): attached only once a target listens on a Unix socket (see _unix_peers).
        # (done: attached, or this kernel has no such tracepoints and the probe was built without them)
        self._unix_peers_done = not all(doctor.has_tracepoint(t) for t in doctor.OPTIONAL_TRACEPOINTS)
        if not self._unix_peers_done:
            for tp in _UNIX_PEER_TPS:
                b.detach_tracepoint(tp=tp)
        base = time.time_ns()
        b[b"next_cid"][ct.c_int(0)] = ct.c_uint64(base)
        self._seed_cid = base - 1
        self._clock = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        events = b[b"events"]
        self._ring = MappedRingBuffer(events.map_fd, self.ring_bytes)
        self._target_bits = b[b"target_bits"]
        self._socks = b[b"socks"]
        self._counters = b[b"counters"]
        pids = sorted(self.pids) if self.pids is not None else procfs.find_servers()
        for pid in pids:
            if procfs.alive(pid):
                self._add_target(pid, seed=True)
        now = time.monotonic()
        self._next_housekeeping = now + _HOUSEKEEPING_S
        self._next_rescan = now + _RESCAN_S

    def close(self) -> list[SourceEvent]:
        """Drain what is left, end every open connection (reason ``eof``:
        the capture ends, not the connection), detach the probes and release
        everything. Returns those last events; idempotent."""
        out: list[SourceEvent] = []
        if self._ring is not None and self._bpf is not None:
            out, self._pending = self._pending, []
            for pid in self._procs:
                self._set_target_bit(pid, False)  # no new records: the drain below ends
            for _ in range(self.ring_bytes // limits.EBPF_MAX_BATCH_BYTES + 1):
                before = len(out)
                self._drain(out)
                if len(out) == before and not self._backlog:
                    break
            ts = time.time_ns()
            for v in self._socks.values():
                self._report_pending_loss(v, ts, out)
            for c in list(self._conns.values()):
                self._end(c, ts, "eof", out)
            self._targets_at = -1e9
            _ = self.stats  # keep the kernel's counters for counters() after close
        for proc in self._procs.values():
            proc.close()
        self._procs.clear()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._bpf is not None:
            _detach_all(self._bpf)
            self._bpf.cleanup()
            self._bpf = None
        return out

    def describe(self) -> str:
        what = (
            "pid " + ",".join(map(str, sorted(self.pids)))
            if self.pids is not None
            else "every redis-server/valkey-server"
        )
        if self.ports is not None:
            what += " on port " + ",".join(map(str, sorted(self.ports)))
        return f"{what} (ebpf)"

    def counters(self) -> dict[str, int]:
        st = self.stats
        return {
            "events": st.events,
            "bytes": st.bytes,
            "servers": st.servers,
            "connections": st.conns_opened,
            "lost_events": st.lost_events,
            "lost_bytes": st.lost_bytes,
            "lost_conn_events": st.lost_conn_events,
            "untracked_conns": st.untracked_conns,
            "tls_servers": st.tls_servers,
            "tls_connections_unread": st.tls_connections,
            "tls_unattributed": st.tls_unattributed,
            "cluster_bus_connections": st.cluster_bus_connections,
        }

    def __enter__(self) -> EbpfSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def target_pids(self) -> set[int]:
        return set(self._procs)

    @property
    def stats(self) -> EbpfStats:
        """Counters; the per-target part walks the kernel's connection map,
        so it is refreshed at most once a second."""
        s = self._stats
        if self._bpf is None:
            return s
        c = [int(self._counters.sum(ct.c_int(i)).value) for i in range(8)]
        s.lost_events, s.lost_bytes, s.lost_conn_events, s.untracked_conns, s.iov_gaps, s.tls_unattributed = c[:6]
        s.tls_connections = c[CNT_TLS_CONNS]
        s.cluster_bus_connections = c[CNT_BUS_CONNS]
        s.servers = len(self._procs)
        s.tls_servers = sum(p.tls is not None for p in self._procs.values())
        now = time.monotonic()
        if now - self._targets_at >= 1.0:
            self._targets_at = now
            targets = {pid: dict(v) for pid, v in self._closed_stats.items()}
            for k, v in self._socks.items():  # open connections
                t = targets.setdefault(k.tgid, {"events": 0, "bytes": 0})
                t["events"] += v.events
                t["bytes"] += v.pos[0] + v.pos[1]
            s.targets = targets
            s.bytes = sum(t["bytes"] for t in targets.values())
        return s

    # ------------------------------------------------------------------
    # the hot path
    # ------------------------------------------------------------------

    def poll(self, timeout_ms: int = 100) -> list[SourceEvent]:
        """Events that arrived since the last call, in order; waits up to
        ``timeout_ms`` for some. Drains at most every EBPF_POLL_INTERVAL_MS
        unless the kernel signals that the ring buffer is filling up."""
        return self._poll(timeout_ms, None)

    def pump(self, pipe: Pipeline, timeout_ms: int = 100) -> None:
        """``pipe.feed_many(self.poll(timeout_ms))``, with one shortcut: a data
        record the pipeline would give to its connection's lane goes from the
        ring straight to the lane (``pipe.feeder``, see ringdrain.c), without
        becoming a Chunk. Rows are the same either way."""
        out = self._poll(timeout_ms, pipe)
        if out:
            pipe.feed_many(out)

    def _poll(self, timeout_ms: int, pipe: Pipeline | None) -> list[SourceEvent]:
        ring = self._ring
        if ring is None:
            raise EbpfError("EbpfSource.poll() before start()")
        out, self._pending = self._pending, []
        deadline = time.monotonic() + timeout_ms / 1000
        interval = limits.EBPF_POLL_INTERVAL_MS / 1000
        while True:
            now = time.monotonic()
            wait = min(self._next_drain, deadline) - now
            if wait > 0 and not out and not self._backlog and ring.wait(wait):
                self._stats.wakeups += 1
            n = self._drain(out, pipe)
            now = time.monotonic()
            self._next_drain = now + interval
            if now >= self._next_housekeeping:
                self._housekeeping(out, now)
            if out or n or now >= deadline:
                return out

    def _drain(self, out: list[SourceEvent], pipe: Pipeline | None = None) -> int:
        """Turn every submitted record (up to EBPF_MAX_BATCH_BYTES) into
        events: data records of named connections in C (ringdrain.c), the
        rest here, one unpack each. With ``pipe``: see ``pump`` (events are fed to it as they come, so
        that the records given to lanes directly stay in order with them).
        Returns the records read."""
        ring = self._ring
        data, mask, base = ring.data, ring.mask, ring.base
        cons = ring.consumer_pos
        prod = ring.producer_pos
        end = min(prod, cons + limits.EBPF_MAX_BATCH_BYTES)
        unpack = _REC.unpack_from
        names = self._names
        append = out.append
        new, slots, chunk_t, fast = object.__new__, _ChunkSlots, Chunk, _FAST_CHUNK
        dirs = _DIRS
        clock = self._clock
        n = 0
        # A batch allocates tens of thousands of Chunks; the cyclic GC would
        # walk them again every 700 allocations (they hold no cycles).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        cdrain = _cdrain
        feeder = pipe.feeder if pipe is not None and cdrain is not None else None
        try:
            while cons < end:
                if feeder is not None and out:
                    pipe.feed_many(out)  # type: ignore[union-attr]
                    out.clear()
                if cdrain is not None:
                    # data records of named connections in C; it stops at a record for the code below
                    cons, k, why, hot = cdrain(
                        data, base, mask, cons, end, names, dirs, clock, CHUNK_SLOTS, chunk_t, out, feeder
                    )
                    n += k
                    if why == 3:  # the pipeline must take a Chunk, or finish what a lane gave back
                        if hot is not None:
                            pipe.hot(*hot)  # type: ignore[union-attr]
                        continue
                    if why != 2:
                        break
                off = base + (cons & mask)
                rlen, _, typ, d, ln, cid, ts, pos, orig, lost, lost_bytes = unpack(data, off)
                if rlen >= DISCARD_BIT:  # busy or discarded: rare
                    if rlen & BUSY_BIT:
                        break  # still being written
                    cons += ((rlen & LEN_MASK) + 15) & ~7
                    continue
                cons += (rlen + 15) & ~7
                n += 1
                if typ != RA_DATA:
                    self._control(typ, off + 8, out)
                    continue
                name = names.get(cid)
                if not name:
                    if name is not None:
                        continue  # filtered out (--port)
                    name = self._adopt(cid, pos, lost, out)
                    if not name:
                        continue
                if lost:
                    self._lost(out, name, d, pos, ts + clock, lost, lost_bytes)
                off += _DATA_AT
                if fast:
                    c = new(slots)
                    c.conn = name
                    c.direction = dirs[d]
                    c.pos = pos
                    c.ts_ns = ts + clock
                    c.data = data[off : off + ln]
                    c.orig_len = orig
                    c.__class__ = chunk_t
                    append(c)
                else:
                    append(chunk_t(name, dirs[d], pos, ts + clock, data[off : off + ln], orig))
        finally:
            ring.consumer_pos = cons
            self._backlog = end < prod and cons >= end  # stopped by the batch limit, not by an empty ring
            if gc_was_enabled:
                gc.enable()
            self._stats.events += n
        return n

    # ------------------------------------------------------------------
    # connection and process records (rare)
    # ------------------------------------------------------------------

    def _control(self, typ: int, off: int, out: list[SourceEvent]) -> None:
        data = self._ring.data
        if typ == RA_ACCEPT:
            self._on_accept(_ACCEPT.unpack_from(data, off), out)
        elif typ == RA_CLOSE:
            _, _, tgid, cid, ts, _, lost0, lost1, _, lb0, lb1, pos0, pos1, nev = _CLOSE.unpack_from(data, off)
            t = self._closed_stats.setdefault(tgid, {"events": 0, "bytes": 0})
            t["events"] += nev
            t["bytes"] += pos0 + pos1
            c = self._conns.get(cid)
            if c is None:
                self._names.pop(cid, None)
                return
            ts += self._clock
            if cid in self._held:
                self._release(cid, out)
            for d, lost, lb, end in ((0, lost0, lb0, pos0), (1, lost1, lb1, pos1)):
                if lost:
                    self._lost(out, c.name, d, end, ts, lost, lb)
            self._end(c, ts, "close", out)
        elif typ == RA_EXEC:
            _, _, tgid, _, _, _, _ = _PROC.unpack_from(data, off)
            if self.pids is None and tgid not in self._procs:
                # the kernel already made it a target (RA_AUTO_TARGET)
                self._add_target(tgid, seed=False)
        elif typ == RA_TLS:
            _, _, _, cid, ts = _TLS.unpack_from(data, off)
            c = self._conns.get(cid)
            if c is not None:
                if c.cid in self._held:
                    self._release(c.cid, out)
                why = (
                    "TLS: encrypted bytes before the SSL probes saw the connection, not audited"
                    if self.tls
                    else "TLS: encrypted, not audited (`run --tls` audits it)"
                )
                out.append(Loss(c.name, ts + self._clock, why, 0, 0))  # (no byte of the plaintext stream)
        elif typ == RA_BUS:
            # a Redis Cluster bus link (node-to-node messages on the bus port): nothing of it is captured; its
            # disconnect row says what it was
            _, _, _, cid, ts = _TLS.unpack_from(data, off)
            c = self._conns.get(cid)
            if c is not None:
                self._end(c, ts + self._clock, "cluster_bus", out)
        elif typ == RA_FORK:
            # a target's child process, a target in the kernel already: a BGSAVE child, or the server a
            # `daemonize yes` redis-server forks before it exits (it becomes a full target then, below)
            _, _, tgid, _, _, parent, _ = _PROC.unpack_from(data, off)
            if tgid not in self._procs:
                self._forked[tgid] = parent
                p = self._procs.get(parent)
                young = p is not None and time.monotonic() - p.since < _DAEMONIZE_S
                if young and not any(c.tgid == parent for c in self._conns.values()):
                    # a parent just started that serves nobody is daemonizing: its child is the server, whose
                    # TLS handshakes must find the SSL probes there (not so a BGSAVE child)
                    self._add_target(tgid, seed=False)
        elif typ == RA_EXIT:
            _, _, tgid, ts, _, _, _ = _PROC.unpack_from(data, off)
            if self._forked.pop(tgid, None) is not None and tgid not in self._procs:
                self._set_target_bit(tgid, False)  # a child that never served (BGSAVE)
                return
            self._drop_target(tgid, ts + self._clock, out)
            if self.pids is None:
                # `daemonize yes`: the exec'd process forked the server and exits
                for child in [c for c, p in self._forked.items() if p == tgid]:
                    del self._forked[child]
                    if child not in self._procs and procfs.alive(child):
                        self._add_target(child, seed=True)
                self._rescan(out)  # (and whatever else a lost record hid)
        elif typ == RA_PEER:
            _, _, _, cid, _, pid, uid, comm = _PEER.unpack_from(data, off)
            if cid in self._held:
                ts, meta, tracked, _ = self._held[cid]
                meta = dataclasses.replace(meta, client_pid=pid, client_uid=uid, client_comm=_cstr(comm))
                self._held[cid] = (ts, meta, tracked, 0.0)
                self._release(cid, out)

    def _on_accept(self, rec: tuple, out: list[SourceEvent]) -> None:
        (_, _, tgid, cid, ts, fd, listen_fd, uid, tracked, has_client, addrlen) = rec[:11]
        cpid, cuid, ccomm, daddr, dport, sockaddr = rec[11:]
        ts += self._clock
        old = self._by_fd.get((tgid, fd))
        if old is not None and old in self._conns:
            # its close record was lost: the fd number was reused
            self._end(self._conns[old], ts, "close", out)
        proc = self._procs.get(tgid) or self._add_target(tgid, seed=False)
        listener = self._listener(proc, listen_fd)
        if not self._wanted(proc, listener):
            self._names[cid] = ""
            self._ignored[cid] = time.monotonic()
            self._untrack(tgid, fd, cid)
            return
        fam, paddr, pport = ebpf_sock.decode_sockaddr(sockaddr, addrlen)
        if fam == socket.AF_UNIX or (listener is not None and listener.family == socket.AF_UNIX):
            # the client process comes with its first request (RA_PEER)
            self._unix_peers()
            addr = f"unix:{(listener.path if listener else None) or ''}"
            meta = ConnMeta(
                Source.EBPF,
                client_addr=addr,
                server_addr=addr,
                server_pid=tgid,
                server_uid=uid,
                server_comm=proc.comm,
            )
            self._track(cid, tgid, fd)
            self._held[cid] = (ts, meta, bool(tracked), time.monotonic())
            return
        if has_client:
            saddr, sport = ebpf_sock.ip_from16(daddr), dport
        elif listener is not None and not listener.wildcard:
            saddr, sport = listener.local_addr, listener.local_port
        else:
            ep = self._dup_verified(proc, fd, cid)
            if ep is not None:
                saddr, sport = ep.local_addr, ep.local_port
            else:
                saddr = listener.local_addr if listener else None
                sport = listener.local_port if listener else None
        meta = ConnMeta(
            Source.EBPF,
            client_addr=paddr,
            client_port=pport,
            server_addr=saddr,
            server_port=sport,
            server_pid=tgid,
            server_uid=uid,
            server_comm=proc.comm,
            client_pid=cpid if has_client else None,
            client_uid=cuid if has_client else None,
            client_comm=_cstr(ccomm) if has_client else None,
        )
        self._open(cid, tgid, fd, ts, meta, False, out)
        if not tracked:
            out.append(Loss(self._names[cid], ts, "ebpf connection table full", 1, None))

    def _track(self, cid: int, tgid: int, fd: int) -> _Conn:
        c = self._conns[cid] = _Conn(cid, tgid, fd, f"{tgid}-{fd}-{cid:x}")
        self._by_fd[(tgid, fd)] = cid
        return c

    def _open(self, cid: int, tgid: int, fd: int, ts: int, meta: ConnMeta, mid: bool, out: list[SourceEvent]) -> str:
        name = self._track(cid, tgid, fd).name
        self._names[cid] = name
        self._stats.conns_opened += 1
        out.append(ConnOpen(name, ts, meta, mid))
        return name

    def _release(self, cid: int, out: list[SourceEvent]) -> str:
        """Send the held ConnOpen of a Unix connection."""
        ts, meta, tracked, _ = self._held.pop(cid)
        c = self._conns[cid]
        self._names[cid] = c.name
        self._stats.conns_opened += 1
        out.append(ConnOpen(c.name, ts, meta, False))
        if not tracked:
            out.append(Loss(c.name, ts, "ebpf connection table full", 1, None))
        return c.name

    def _end(self, c: _Conn, ts: int, reason: str, out: list[SourceEvent]) -> None:
        if c.cid in self._held:
            self._release(c.cid, out)
        out.append(ConnClose(c.name, ts, reason))
        self._conns.pop(c.cid, None)
        self._names.pop(c.cid, None)
        if self._by_fd.get((c.tgid, c.fd)) == c.cid:
            del self._by_fd[(c.tgid, c.fd)]
        self._stats.conns_closed += 1

    def _adopt(self, cid: int, pos: int, lost: int, out: list[SourceEvent]) -> str | None:
        """Data of a connection not opened yet: a held Unix connection, or
        one whose accept record the ring buffer refused (then it is found in
        the kernel's socks map and opened now, mid_stream unless its first
        bytes are here). Records of a connection gone from the map cannot be
        attributed: one Loss, the rest are dropped with it."""
        if cid in self._held:
            return self._release(cid, out)
        for k, v in self._socks.items():
            if v.cid == cid:
                proc = self._procs.get(k.tgid)
                if proc is None:
                    break
                ep = ebpf_sock.endpoint(proc.pidfd, proc.pid, k.fd)
                meta = ebpf_sock.conn_meta(proc.pid, proc.uid, proc.comm, ep)
                return self._open(cid, k.tgid, k.fd, time.time_ns(), meta, pos != 0 or lost != 0, out)
        self._names[cid] = ""
        self._ignored[cid] = time.monotonic()
        out.append(Loss(None, time.time_ns(), "ebpf records of a connection whose accept record was lost", 1))
        return None

    # ------------------------------------------------------------------
    # targets
    # ------------------------------------------------------------------

    def _add_target(self, pid: int, seed: bool) -> _Proc:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = _Proc(pid)
        if self.ports is not None and seed and not self._listens_on_ports(proc):
            del self._procs[pid]
            proc.close()
            self._rejected.setdefault(pid, time.monotonic())
            return proc
        self._attach_tls(proc)  # before the bit: a TLS handshake from then on is seen as one
        self._set_target_bit(pid, True)
        if seed:
            self._seed(proc)
        return proc

    def _attach_tls(self, proc: _Proc) -> None:
        """Probes on the SSL_read / SSL_write / handshake of the libssl this server maps, for this process
        only (other processes using the library pay nothing): its TLS connections are audited in plaintext."""
        if not self.tls or proc.tls is not None or proc.tls_tries >= _TLS_TRIES or self._bpf is None:
            return
        proc.tls_tries += 1
        lib = procfs.mapped_library(proc.pid, "libssl.so")
        if lib is None:
            return
        path = f"/proc/{proc.pid}/root{lib}".encode()  # the process's own file, also inside a container
        attached: list[tuple[bytes, bool]] = []
        try:
            for sym, enter, leave in _SSL_PROBES:
                self._bpf.attach_uprobe(name=path, sym=sym, fn_name=enter, pid=proc.pid)
                attached.append((sym, False))
                self._bpf.attach_uretprobe(name=path, sym=sym, fn_name=leave, pid=proc.pid)
                attached.append((sym, True))
        except Exception as e:  # bcc raises bare Exception
            self._detach_tls(proc.pid, path, attached)
            proc.tls_tries = _TLS_TRIES
            if procfs.mapped_library(proc.pid, "libssl.so"):  # (not one that exited meanwhile: a daemon's parent)
                self._stats.tls_errors.append(f"pid {proc.pid}: {lib}: {e}")
            return
        proc.tls = path.decode()

    def _detach_tls(self, pid: int, path: bytes, probes: list[tuple[bytes, bool]]) -> None:
        if self._bpf is None:
            return
        for sym, ret in probes:
            with contextlib.suppress(Exception):
                if ret:
                    self._bpf.detach_uretprobe(name=path, sym=sym, pid=pid)
                else:
                    self._bpf.detach_uprobe(name=path, sym=sym, pid=pid)

    def _drop_target(self, tgid: int, ts: int, out: list[SourceEvent]) -> None:
        self._set_target_bit(tgid, False)
        t = self._closed_stats.setdefault(tgid, {"events": 0, "bytes": 0})
        for k, v in list(self._socks.items()):
            if k.tgid == tgid:  # its fds were closed by the exit, not by close()
                t["events"] += v.events
                t["bytes"] += v.pos[0] + v.pos[1]
                self._report_pending_loss(v, ts, out)
                with contextlib.suppress(KeyError):
                    del self._socks[k]
        for c in [c for c in self._conns.values() if c.tgid == tgid]:
            self._end(c, ts, "exit", out)
        proc = self._procs.pop(tgid, None)
        if proc is not None:
            if proc.tls is not None:
                every = [(sym, ret) for sym, _, _ in _SSL_PROBES for ret in (False, True)]
                self._detach_tls(tgid, proc.tls.encode(), every)
            proc.close()

    @staticmethod
    def _lost(out: list[SourceEvent], name: str, d: int, end: int, ts: int, count: int, nbytes: int) -> None:
        """``count`` records of (name, direction d) the ring buffer refused,
        ``nbytes`` bytes ending at ``end``. The hole becomes a chunk without
        data (``orig_len`` = its size) so that the stream stays in order and
        turns it into a gap of exactly that size; the Loss carries the count
        and reason for the trail, unattributed so that no decoder treats the
        same bytes as a second gap."""
        out.append(Chunk(name, _DIRS[d], end - nbytes, ts, b"", nbytes))
        out.append(Loss(None, ts, f"{_RING_FULL}: {name} {_DIRS[d].name.lower()}", count, nbytes))

    def _report_pending_loss(self, sock, ts: int, out: list[SourceEvent]) -> None:
        """Records of a connection the ring refused and no later record
        reported (they ride on the next one; there is none)."""
        c = self._conns.get(sock.cid)
        if c is None:
            return
        if c.cid in self._held:
            self._release(c.cid, out)
        for d in (0, 1):
            if sock.lost_events[d]:
                self._lost(out, c.name, d, sock.pos[d], ts, sock.lost_events[d], sock.lost_bytes[d])

    def _set_target_bit(self, pid: int, on: bool) -> None:
        """target_bits is a bitmap of tgids (the probes' first test)."""
        key = ct.c_int(pid // 64)
        word = self._target_bits[key].value
        new = word | (1 << (pid % 64)) if on else word & ~(1 << (pid % 64))
        if new != word:
            self._target_bits[key] = ct.c_uint64(new)

    def _listens_on_ports(self, proc: _Proc) -> bool:
        if proc.matches is None:
            for fd in procfs.socket_fds(proc.pid):
                self._listener(proc, fd)
            proc.matches = any(
                ep is not None and ep.listening and ep.local_port in self.ports for ep in proc.listeners.values()
            )
        return proc.matches

    def _wanted(self, proc: _Proc, listener: ebpf_sock.Endpoint | None) -> bool:
        if self.ports is None:
            return True
        if listener is not None and listener.family != socket.AF_UNIX:
            return listener.local_port in self.ports
        return self._listens_on_ports(proc)

    def _listener(self, proc: _Proc, fd: int) -> ebpf_sock.Endpoint | None:
        if fd in proc.listeners:
            return proc.listeners[fd]
        ep = ebpf_sock.endpoint(proc.pidfd, proc.pid, fd)
        if ep is not None and not ep.listening:
            return None  # not a listener (only listeners are cached)
        proc.listeners[fd] = ep
        return ep

    def _dup_verified(self, proc: _Proc, fd: int, cid: int) -> ebpf_sock.Endpoint | None:
        """The socket behind (pid, fd) if it is still connection ``cid``:
        checked after the dup, so a reused fd number is never mistaken for
        it (close() removes the socks entry before the fd is released)."""
        if proc.pidfd is None:
            return None
        dup = ebpf_sock.pidfd_getfd(proc.pidfd, fd)
        if dup is None:
            return None
        ep = ebpf_sock.endpoint_of(dup)
        try:
            if self._socks[self._socks.Key(proc.pid, fd)].cid != cid:
                return None
        except KeyError:
            return None
        return ep

    def _untrack(self, tgid: int, fd: int, cid: int) -> None:
        key = self._socks.Key(tgid, fd)
        try:
            if self._socks[key].cid == cid:
                del self._socks[key]
        except KeyError:
            pass

    # ------------------------------------------------------------------
    # seeding connections that were open before the attach
    # ------------------------------------------------------------------

    def _unix_peers(self) -> None:
        """A target serves a Unix socket: attach the probes that name each Unix client's process with its
        first request (without them, or for a connection made before they were attached, the process
        comes from SO_PEERCRED after _HOLD_S)."""
        if self._unix_peers_done or self._bpf is None:
            return
        for tp in _UNIX_PEER_TPS:
            fn = b"tracepoint__" + tp.replace(b":", b"__")
            self._bpf.attach_tracepoint(tp=tp, fn_name=fn)
        self._unix_peers_done = True

    def _seed(self, proc: _Proc) -> None:
        fds = procfs.socket_fds(proc.pid)
        eps = {fd: ebpf_sock.endpoint(proc.pidfd, proc.pid, fd) for fd in fds}
        lports = {ep.local_port for ep in eps.values() if ep and ep.listening and ep.local_port}
        lpaths = {ep.path for ep in eps.values() if ep and ep.listening and ep.path}
        if lpaths or any(ep and ep.listening and ep.family == socket.AF_UNIX for ep in eps.values()):
            self._unix_peers()
        for fd, ep in eps.items():
            if ep is not None and ep.listening:
                proc.listeners[fd] = ep
        accepted = {}
        for fd, ep in eps.items():
            if ep is None or ep.listening:
                continue
            if ep.family == socket.AF_UNIX:
                if ep.path not in lpaths:
                    continue  # a socket redis connected itself, or a socketpair
            elif ep.local_port not in lports:
                continue  # outgoing (replication, cluster bus link)
            elif self.ports is not None and ep.local_port not in self.ports:
                continue
            accepted[fd] = ep
        local_tcp = {
            (ep.peer_addr, ep.peer_port, ep.local_addr, ep.local_port)
            for ep in accepted.values()
            if ep.family != socket.AF_UNIX
        }
        clients = ebpf_sock.local_tcp_clients(proc.pid, local_tcp)
        leaf_t = self._socks.Leaf
        for fd, ep in accepted.items():
            cid = self._seed_cid
            self._seed_cid -= 1
            key = self._socks.Key(proc.pid, fd)
            leaf = leaf_t()
            leaf.cid = cid
            if not self._insert(key, leaf):
                continue  # accepted since the attach: its accept record covers it
            if procfs.socket_inode(proc.pid, fd) != ep.inode:
                self._untrack(proc.pid, fd, cid)  # closed meanwhile
                continue
            client = clients.get((ep.peer_addr, ep.peer_port))
            meta = ebpf_sock.conn_meta(proc.pid, proc.uid, proc.comm, ep, client)
            self._open(cid, proc.pid, fd, time.time_ns(), meta, True, self._pending)

    def _insert(self, key, leaf) -> bool:
        from bcc import lib

        return lib.bpf_update_elem(self._socks.map_fd, ct.byref(key), ct.byref(leaf), _BPF_NOEXIST) == 0

    # ------------------------------------------------------------------

    def _housekeeping(self, out: list[SourceEvent], now: float) -> None:
        self._next_housekeeping = now + _HOUSEKEEPING_S
        for cid, since in list(self._ignored.items()):
            if now - since > _HOLD_S:  # its records in flight are drained by now
                del self._ignored[cid]
                self._names.pop(cid, None)
        ts = time.time_ns()
        for cid, (_, meta, tracked, since) in list(self._held.items()):
            if now - since >= _HOLD_S:
                # silent so far: ask the socket itself (if still open)
                c = self._conns[cid]
                proc = self._procs.get(c.tgid)
                ep = self._dup_verified(proc, c.fd, cid) if proc is not None else None
                if ep is not None and ep.peer_pid:
                    meta = dataclasses.replace(
                        meta, client_pid=ep.peer_pid, client_uid=ep.peer_uid, client_comm=procfs.comm(ep.peer_pid)
                    )
                    self._held[cid] = (self._held[cid][0], meta, tracked, since)
                self._release(cid, out)
        for pid in [p for p in self._forked if not procfs.alive(p)]:  # (their exit record was lost)
            del self._forked[pid]
            if pid not in self._procs:
                self._set_target_bit(pid, False)
        for pid, proc in list(self._procs.items()):
            if procfs.alive(pid):
                self._set_target_bit(pid, True)  # in case a racing update lost it
                self._attach_tls(proc)
            else:
                self._drop_target(pid, ts, out)  # its exit record was lost
        lost_ctrl = int(self._counters.sum(ct.c_int(CNT_LOST_CTRL)).value)
        if lost_ctrl > self._reported[CNT_LOST_CTRL]:
            out.append(Loss(None, ts, _RING_FULL + " (connection records)", lost_ctrl - self._reported[CNT_LOST_CTRL]))
            self._reported[CNT_LOST_CTRL] = lost_ctrl
        nofd = int(self._counters.sum(ct.c_int(CNT_TLS_NOFD)).value)
        if nofd > self._reported[CNT_TLS_NOFD]:
            n = nofd - self._reported[CNT_TLS_NOFD]
            out.append(Loss(None, ts, "TLS reads/writes of a connection whose socket was not seen", n))
            self._reported[CNT_TLS_NOFD] = nofd
        if self.pids is None and (
            now >= self._next_rescan or any(t >= now - _YOUNG_S for t in self._rejected.values())
        ):
            self._rescan(out)  # a safety net for exec records lost in a full ring buffer; young rejected servers

    def _rescan(self, out: list[SourceEvent]) -> None:
        """Servers not known yet, from /proc (seeded: their open connections are audited from now on)."""
        self._next_rescan = time.monotonic() + _RESCAN_S
        servers = procfs.find_servers()
        self._rejected = {pid: t for pid, t in self._rejected.items() if pid in servers}
        young = time.monotonic() - _YOUNG_S
        for pid in servers:
            # a server just started may not listen on --port yet: asked again while young
            if pid not in self._procs and self._rejected.get(pid, young) >= young:
                self._add_target(pid, seed=True)
        out.extend(self._pending)
        self._pending = []

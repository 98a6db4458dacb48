"""pcap / pcapng replay -> source events: synthetic captures (expected.json), real-world hostile captures, and a
capture of a real redis-server made during the test."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.sources.pcap import CaptureError, PcapStats, read_pcap
from auditor.sources.tcp import TcpTracker
from auditor.stream import Stream
from auditor.types import Acked, Chunk, ConnClose, ConnOpen, Direction, Gap, Loss, Source, SourceEvent

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "tests" / "pcaps" / "synthetic"
SHARED = ROOT.parent / "shared" / "pcaps"
EXPECTED = json.loads((SYNTHETIC / "expected.json").read_text())
HOSTILE_TIMEOUT_S = 30  # each shared capture replays in milliseconds; this only catches a hang
HOSTILE_MEMORY = 1 << 30  # address-space cap for the replay child: catches unbounded buffering


@dataclass
class Conn:
    open: ConnOpen
    close: str | None = None
    streams: tuple[Stream, Stream] = field(default_factory=lambda: (Stream(), Stream()))
    pieces: tuple[list, list] = field(default_factory=lambda: ([], []))

    def text(self, d: Direction) -> list[list[object]]:
        """The reassembled direction as [["data", latin-1 text] | ["gap", nbytes]], adjacent pieces merged."""
        out: list[list[object]] = []
        for p in self.pieces[d]:
            if isinstance(p, Gap):
                if out and out[-1][0] == "gap":
                    out[-1][1] += p.nbytes
                else:
                    out.append(["gap", p.nbytes])
            elif out and out[-1][0] == "data":
                out[-1][1] += p[1].decode("latin-1")
            else:
                out.append(["data", p[1].decode("latin-1")])
        return out

    def data(self, d: Direction) -> bytes:
        return b"".join(p[1] for p in self.pieces[d] if not isinstance(p, Gap))


@dataclass
class Replay:
    conns: list[Conn]
    losses: list[Loss]
    stats: PcapStats
    events: list[SourceEvent]


def replay(path: Path, ports: set[int] | None = None) -> Replay:
    """Read a capture and reassemble every connection, checking the event protocol on the way."""
    reader = read_pcap(path, ports or {6379})
    events = list(reader)
    st = reader.stats
    conns: dict[str, Conn] = {}
    losses = []
    for ev in events:
        if isinstance(ev, ConnOpen):
            assert ev.conn not in conns, "connection id reused"
            assert ev.meta.source is Source.PCAP
            conns[ev.conn] = Conn(ev)
        elif isinstance(ev, Chunk):
            c = conns[ev.conn]
            assert c.close is None, "chunk after close"
            assert ev.pos >= 0 and ev.orig_len >= len(ev.data)
            c.pieces[ev.direction].extend(c.streams[ev.direction].push(ev))
        elif isinstance(ev, ConnClose):
            c = conns[ev.conn]
            assert c.close is None, "closed twice"
            c.close = ev.reason
            for d in Direction:
                c.pieces[d].extend(c.streams[d].flush(ev.ts_ns, ev.reason))
        elif isinstance(ev, Acked):  # the peer acknowledged bytes before a hole: the stream skips it
            c = conns[ev.conn]
            assert c.close is None, "acked after close"
            c.pieces[ev.direction].extend(c.streams[ev.direction].acked(ev.pos, ev.ts_ns))
        else:
            assert isinstance(ev, Loss)
            losses.append(ev)
    assert all(c.close is not None for c in conns.values()), "connection left open after the end"
    return Replay(list(conns.values()), losses, st, events)


# ---------------------------------------------------------------------------------------------------------
# synthetic captures


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_synthetic_capture(name: str) -> None:
    exp = EXPECTED[name]
    r = replay(SYNTHETIC / name)
    got = [
        {
            "client": f"{c.open.meta.client_addr}:{c.open.meta.client_port}",
            "server": f"{c.open.meta.server_addr}:{c.open.meta.server_port}",
            "mid_stream": c.open.mid_stream,
            "close": c.close,
            "to_server": c.text(Direction.TO_SERVER),
            "to_client": c.text(Direction.TO_CLIENT),
        }
        for c in r.conns
    ]
    assert got == exp["connections"]
    stats = r.stats.as_dict()
    for key, value in exp["stats"].items():
        if key == "unsupported_link":
            assert {str(k): v for k, v in stats[key].items()} == value
        else:
            assert stats[key] == value, key
    reasons = [loss.reason for loss in r.losses]
    assert len(reasons) == len(exp["losses"]), reasons
    for want, reason in zip(exp["losses"], reasons, strict=True):
        assert reason.startswith(want)
    assert r.stats.connections == len(exp["connections"])
    assert r.stats.bytes_read == r.stats.bytes_total == (SYNTHETIC / name).stat().st_size


def test_synthetic_captures_are_reproducible(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_synthetic_pcaps.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True, timeout=120)
    committed = sorted(p.name for p in SYNTHETIC.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (SYNTHETIC / name).read_bytes(), f"{name} differs: rerun the script"


def test_conn_ids_are_stable_and_distinct() -> None:
    a = [c.open.conn for c in replay(SYNTHETIC / "port_reuse.pcap").conns]
    b = [c.open.conn for c in replay(SYNTHETIC / "port_reuse.pcap").conns]
    assert a == b and len(set(a)) == 4


def test_truncated_loss_counts_the_bytes_left() -> None:
    r = replay(SYNTHETIC / "truncated.pcap")
    (loss,) = r.losses
    assert loss.conn is None and loss.nbytes is not None and 0 < loss.nbytes < 100
    assert "cut inside a record" in loss.reason
    assert r.stats.packets == 9 and r.stats.truncated is not None
    assert r.events[-1] == ConnClose(r.conns[0].open.conn, r.stats.last_ts_ns, "eof")


def test_snaplen_gaps_are_sized() -> None:
    r = replay(SYNTHETIC / "snaplen.pcap")
    (conn,) = r.conns
    gaps = [p for p in conn.pieces[Direction.TO_SERVER] if isinstance(p, Gap)]
    assert gaps and all(g.reason == "not captured" and g.nbytes > 0 for g in gaps)
    assert any(isinstance(ev, Chunk) and ev.orig_len > len(ev.data) for ev in r.events)


def test_progress_reports_bytes(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    path = SYNTHETIC / "basic.pcap"
    list(read_pcap(path, {6379}, progress=lambda done, total: calls.append((done, total))))
    size = path.stat().st_size
    assert calls and calls[-1] == (size, size)


def test_other_ports_are_skipped() -> None:
    r = replay(SYNTHETIC / "basic.pcap", ports={6380})
    assert r.conns == [] and r.stats.other_port == r.stats.tcp_packets == r.stats.packets > 0


def test_timestamps_per_interface_resolution() -> None:
    """Interface 0 counts microseconds, interface 1 nanoseconds; both must give the same clock."""
    r = replay(SYNTHETIC / "multi_iface.pcapng")
    opens = [c.open.ts_ns for c in r.conns]
    t0 = 1_700_000_000 * 1_000_000_000
    assert opens == [t0, t0 + 250_000]


# ---------------------------------------------------------------------------------------------------------
# not captures, corrupt headers, odd variants


def test_not_a_capture(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("SET secret value\r\n" * 10)
    reader = read_pcap(p, {6379})  # lazy: the error comes when iteration starts
    with pytest.raises(CaptureError) as e:
        list(reader)
    msg = str(e.value)
    assert "not a pcap or pcapng file" in msg and "secret" not in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00XXXX", "byte-order magic"),
    ],
)
def test_broken_headers(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "x.pcap"
    p.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        list(read_pcap(p, {6379}))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        next(read_pcap(tmp_path / "nope.pcap", {6379}))


def _pcap(records: list[bytes], link: int = 1, magic: int = 0xA1B2C3D4, extra: bytes = b"") -> bytes:
    head = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, link)
    return head + b"".join(struct.pack("<IIII", 1, 0, len(r), len(r)) + extra + r for r in records)


def test_unsupported_link_type(tmp_path: Path) -> None:
    p = tmp_path / "usb.pcap"
    p.write_bytes(_pcap([b"\x00" * 30, b"\x00" * 30], link=189))
    r = replay(p)
    assert r.conns == [] and r.stats.unsupported_link == {189: 2}
    assert [loss.reason for loss in r.losses] == ["unsupported link type 189"] and r.losses[0].count == 2


def test_corrupt_record_length(tmp_path: Path) -> None:
    frames = (SYNTHETIC / "basic.pcap").read_bytes()
    p = tmp_path / "bad.pcap"
    bad = bytearray(frames)
    first_len = struct.unpack_from("<I", bad, 24 + 8)[0]
    second = 24 + 16 + first_len
    struct.pack_into("<I", bad, second + 8, 0x7FFFFFFF)  # caplen of record 2
    p.write_bytes(bytes(bad))
    r = replay(p)
    assert r.stats.packets == 1
    assert [loss.reason.split(":")[0] for loss in r.losses] == ["truncated file"]
    assert "corrupt record length" in r.losses[0].reason


def test_modified_pcap_magic(tmp_path: Path) -> None:
    """The "modified" (Kuznetzov) pcap variant has 8 more bytes per record header."""
    src = (SYNTHETIC / "basic.pcap").read_bytes()
    out = bytearray(struct.pack("<I", 0xA1B2CD34) + src[4:24])
    off = 24
    while off < len(src):
        caplen = struct.unpack_from("<I", src, off + 8)[0]
        out += src[off : off + 16] + b"\x01\x00\x00\x00\x08\x00\x00\x00" + src[off + 16 : off + 16 + caplen]
        off += 16 + caplen
    p = tmp_path / "modified.pcap"
    p.write_bytes(bytes(out))
    got = replay(p)
    want = replay(SYNTHETIC / "basic.pcap")
    assert [c.text(Direction.TO_SERVER) for c in got.conns] == [c.text(Direction.TO_SERVER) for c in want.conns]


def test_stats_dict_is_flat() -> None:
    r = replay(SYNTHETIC / "ipv4_misc.pcap")
    d = r.stats.as_dict()
    assert d["format"] == "pcap" and d["packets"] == r.stats.packets and isinstance(d["unsupported_link"], dict)


# ---------------------------------------------------------------------------------------------------------
# the tracker alone


def test_tracker_evicts_least_recently_active() -> None:
    t = TcpTracker({6379}, Source.PCAP, max_connections=2)
    ev: list[SourceEvent] = []
    for i, port in enumerate((1001, 1002)):
        ev += t.packet(i, "192.0.2.1", port, "192.0.2.2", 6379, 100, 0x02, b"", 0)
    ev += t.packet(10, "192.0.2.1", 1001, "192.0.2.2", 6379, 101, 0x18, b"PING\r\n", 6)  # 1001 active again
    ev += t.packet(11, "192.0.2.1", 1003, "192.0.2.2", 6379, 100, 0x02, b"", 0)
    closes = [e for e in ev if isinstance(e, ConnClose)]
    opens = {e.conn: e.meta.client_port for e in ev if isinstance(e, ConnOpen)}
    assert [(opens[c.conn], c.reason) for c in closes] == [(1002, "evicted")]
    assert t.evicted == 1 and t.open_connections == 2


def test_tracker_acks_only_for_a_flow_with_a_hole() -> None:
    """Data past the highest byte seen is a hole: the peer's ACKs then become Acked events, ahead of the
    peer's own data, until everything seen is acknowledged."""
    t = TcpTracker({6379}, Source.PCAP)
    cl, sv = ("192.0.2.1", 5000, "192.0.2.2", 6379), ("192.0.2.2", 6379, "192.0.2.1", 5000)
    ev = t.packet(0, *cl, 100, 0x02, b"", 0) + t.packet(1, *sv, 500, 0x12, b"", 0, 101)
    conn = ev[0].conn
    ev = t.packet(2, *cl, 101, 0x18, b"PING\r\n", 6, 501)
    ev += t.packet(3, *sv, 501, 0x18, b"+PONG\r\n", 7, 107)  # no hole: no Acked
    assert [type(e) for e in ev] == [Chunk, Chunk] and not t.holes
    ev = t.packet(4, *cl, 113, 0x18, b"PING\r\n", 6, 508)  # bytes 6..12 never seen
    assert t.holes == {conn}
    ev = t.packet(5, *sv, 508, 0x18, b"+PONG\r\n+PONG\r\n", 14, 119)  # acknowledges all 18 bytes
    assert ev[0] == Acked(conn, Direction.TO_SERVER, 18, 5) and type(ev[1]) is Chunk
    assert not t.holes  # everything seen is acknowledged
    assert [type(e) for e in t.packet(6, *sv, 522, 0x10, b"", 0, 119)] == []
    # a hole in the replies: the client's ACKs, also on a data-less segment
    t.packet(7, *sv, 530, 0x18, b"+OK\r\n", 5, 119)  # reply bytes 21..30 never seen
    assert t.holes == {conn}
    assert t.packet(8, *cl, 119, 0x10, b"", 0, 536) == [Acked(conn, Direction.TO_CLIENT, 35, 8)]
    assert not t.holes


def test_tracker_idle_expiry_and_finish() -> None:
    t = TcpTracker({6379}, Source.SNIFF)
    (op,) = t.packet(0, "2001:db8::1", 5000, "2001:db8::2", 6379, 7, 0x18, b"x", 1)[:1]
    assert isinstance(op, ConnOpen) and op.mid_stream and op.meta.client_addr == "2001:db8::1"
    assert t.expire(10) == []
    assert t.expire(10**13) == [ConnClose(op.conn, 10**13, "idle")]
    assert t.finish(10**13) == [] and t.idle == 1


def test_tracker_packed_addresses_and_wrap() -> None:
    t = TcpTracker({6379}, Source.PCAP)
    c, s = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    ev = t.packet(0, c, 5000, s, 6379, 0xFFFFFFFE, 0x02, b"", 0)
    assert isinstance(ev[0], ConnOpen) and ev[0].meta.client_addr == "192.0.2.1"
    (a,) = t.packet(1, c, 5000, s, 6379, 0xFFFFFFFF, 0x18, b"abc", 3)
    (b,) = t.packet(2, c, 5000, s, 6379, 2, 0x18, b"def", 3)
    (old,) = t.packet(3, c, 5000, s, 6379, 0xFFFFFFFF, 0x18, b"abc", 3)  # retransmission from before the wrap
    assert (a.pos, b.pos, old.pos) == (0, 3, 0)
    assert isinstance(a, Chunk) and a == Chunk(a.conn, Direction.TO_SERVER, 0, 1, b"abc", 3)


def test_tracker_mid_stream_drops_bytes_before_base() -> None:
    t = TcpTracker({6379}, Source.PCAP)
    ev = t.packet(0, "192.0.2.1", 5000, "192.0.2.2", 6379, 1000, 0x18, b"later", 5)
    assert [type(e) for e in ev] == [ConnOpen, Chunk] and ev[1].pos == 0
    (part,) = t.packet(1, "192.0.2.1", 5000, "192.0.2.2", 6379, 997, 0x18, b"abcdefgh", 8)
    assert (part.pos, part.data) == (0, b"defgh")
    assert t.packet(2, "192.0.2.1", 5000, "192.0.2.2", 6379, 990, 0x18, b"old", 3) == []
    assert t.before_start_bytes == 6


# ---------------------------------------------------------------------------------------------------------
# real-world captures from other projects (tcpdump's test suite): must end, quickly, with sensible stats


def _replay_in_child(path: Path) -> dict[str, object]:
    code = (
        "import json, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({HOSTILE_MEMORY}, {HOSTILE_MEMORY}))\n"
        "from auditor.sources.pcap import PcapStats, read_pcap\n"
        "from auditor.types import Chunk, Loss\n"
        "st = PcapStats(); kinds = {}; data = [b'', b'']\n"
        "for ev in read_pcap(sys.argv[1], {6379}, stats=st):\n"
        "    kinds[type(ev).__name__] = kinds.get(type(ev).__name__, 0) + 1\n"
        "    if isinstance(ev, Chunk): data[ev.direction] += ev.data\n"
        "print(json.dumps({'stats': st.as_dict(), 'kinds': kinds,"
        " 'to_server': data[0].decode('latin-1'), 'to_client': data[1].decode('latin-1')}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=HOSTILE_TIMEOUT_S, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_shared_benchmark_capture() -> None:
    out = _replay_in_child(SHARED / "resp_1_benchmark.pcap")
    st = out["stats"]
    assert st["packets"] == 150 and st["connections"] == 15 and st["closed_fin"] == 15 and st["malformed"] == 0
    assert "PING" in out["to_server"] and "+PONG" in out["to_client"]


def test_shared_inline_pipeline_capture() -> None:
    out = _replay_in_child(SHARED / "resp_2_inline.pcap")
    st = out["stats"]
    assert st["packets"] == 14 and st["connections"] == 1 and st["mid_stream"] == 0
    lines = out["to_server"].split("\n")
    pipeline = ["incr test", "set test2 redis", "get test2"] + [f"lpush test3 {c}" for c in "redis"]
    assert all(cmd in lines or cmd + "\r" in lines for cmd in pipeline)
    assert sum(1 for line in lines if line.strip()) == 12  # set, a 10-command pipeline, get
    assert out["to_client"].startswith("+OK")


def test_shared_malicious_capture() -> None:
    out = _replay_in_child(SHARED / "resp_3_malicious.pcap")
    st = out["stats"]
    assert st["packets"] == 163 and st["truncated"] is None and st["malformed"] == 0
    assert st["connections"] == 18 and st["mid_stream"] == 1  # the capture starts with a connection closing
    assert out["kinds"]["ConnOpen"] == out["kinds"]["ConnClose"] == 18


def test_shared_infinite_loop_capture() -> None:
    out = _replay_in_child(SHARED / "resp_4_infiniteloop.pcapng")
    st = out["stats"]
    assert st["format"] == "pcapng" and st["packets"] == 1 and st["connections"] == 1 and st["mid_stream"] == 1
    assert out["kinds"]["Chunk"] == 1 and out["to_server"].startswith("*-53245001789559")


# ---------------------------------------------------------------------------------------------------------
# a real redis-server, captured with tcpdump during the test


@pytest.mark.root
def test_real_capture(redis_server, tcpdump_factory, tmp_path: Path) -> None:
    path = tmp_path / "real.pcap"
    with tcpdump_factory(path, port=redis_server.port):
        redis_server.cli("SET", "audit:key", "v1")
        redis_server.cli("GET", "audit:key")
        redis_server.cli("INCR", "audit:n")
        redis_server.cli(input="SET a 1\nGET a\nDEL a\n")
    r = replay(path, {redis_server.port})
    assert r.stats.connections == len(r.conns) == 4 and r.stats.mid_stream == 0
    assert [c.close for c in r.conns] == ["fin"] * 4
    assert r.losses == [] and r.stats.malformed == 0 and r.stats.truncated is None
    sent = b"".join(c.data(Direction.TO_SERVER) for c in r.conns)
    got = b"".join(c.data(Direction.TO_CLIENT) for c in r.conns)
    for args in (["SET", "audit:key", "v1"], ["GET", "audit:key"], ["INCR", "audit:n"], ["DEL", "a"]):
        assert b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args) in sent
    assert b"$2\r\nv1\r\n" in got and b":1\r\n" in got
    assert all(not isinstance(p, Gap) for c in r.conns for d in Direction for p in c.pieces[d])


# ---------------------------------------------------------------------------------------------------------
# fuzzing: any corruption of a capture ends (events, then maybe a loss) without an exception


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["basic.pcap", "multi_iface.pcapng", "sections.pcapng", "ipv6_ext.pcap", "vlan.pcap"]),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 4000),
)
def test_corrupted_captures_never_crash(name: str, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray((SYNTHETIC / name).read_bytes())
    for where, value in flips:
        if 4 <= where < len(data):  # keep the magic: a wrong magic is a CaptureError by design
            data[where] = value
    data = data[: max(cut, 12)] if cut < len(data) else data
    with tempfile.NamedTemporaryFile(suffix=".cap") as f:
        f.write(bytes(data))
        f.flush()
        try:
            events = list(read_pcap(f.name, {6379}))
        except CaptureError:
            return
    opened = {e.conn for e in events if isinstance(e, ConnOpen)}
    closed = [e.conn for e in events if isinstance(e, ConnClose)]
    assert sorted(closed) == sorted(opened)
    assert all(e.conn in opened for e in events if isinstance(e, Chunk))

"""Live packet capture (`redis-audit sniff`, `run --fallback`): real redis-server, real clients, as root.

Through the CLI: a loopback workload against Redis's own INFO commandstats, a client in another network namespace
over a veth pair (IPv4 and IPv6), the eBPF -> sniff fallback, and `--write-pcap` replayed. In process: the kernel
filter (other ports, UDP, loopback's duplicate copy), the kernel drop counter, the pcap writer's rotation, where
local Redis listens. Nothing here is skipped: a missing tool or privilege fails with the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_fixtures import RedisServer, RespConn, free_port, require_tool

from auditor import limits
from auditor.query import run_sql
from auditor.sources.pcap import read_pcap
from auditor.sources.pcapwriter import RotatingPcapWriter
from auditor.sources.sniff import (
    SniffError,
    SniffSource,
    attach_filter,
    bpf_program,
    capture_ifaces,
    drops_to_loss,
    local_redis_listeners,
    local_redis_ports,
    read_packet_stats,
)
from auditor.types import Chunk, ConnOpen, Direction, Loss, Source

AUDIT = Path(sys.executable).with_name("redis-audit")
START_TIMEOUT_S = 120  # imports, and for run two BPF compiles: ~5 s idle, far more on a loaded 2-core box
STOP_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("packet capture tests need root (AF_PACKET sockets, network namespaces)", pytrace=False)
    if not AUDIT.exists():
        pytest.fail(f"{AUDIT} missing: install the package into the venv (pip install -e .)", pytrace=False)


# --------------------------------------------------------------------------------------------- helpers


class Audit:
    """A `redis-audit sniff|run ...` process: started once it says "auditing", stopped with SIGINT."""

    def __init__(self, args: list[str], prefix: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.cmd = [*prefix, str(AUDIT), *args, "--json"]
        self.env = {**os.environ, "COLUMNS": "400", **(env or {})}  # no wrapping of rich's one-line messages
        self.proc: subprocess.Popen[str] | None = None
        self.stderr: list[str] = []
        self.stdout = ""
        self.summary: dict[str, Any] = {}
        self._started = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> Audit:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=self.env
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._started.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.wait(kill=True)
                pytest.fail(f"{' '.join(self.cmd)} did not start: {' | '.join(self.stderr)}", pytrace=False)
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if line.startswith("auditing "):  # not the fallback notice "...; auditing with packet capture"
                self._started.set()

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None
        time.sleep(0.2)  # last replies and FINs reach the ring
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self, kill: bool = False) -> dict[str, Any]:
        assert self.proc is not None
        if kill:
            self.proc.kill()
        try:
            self.stdout, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, err = self.proc.communicate()
        if self._reader is not None:
            self._reader.join(5)
        # communicate() reads stderr too, racing the reader thread for the last lines: keep both shares
        self.stderr.extend((err or "").splitlines())
        if not kill:
            assert self.proc.returncode == 0, f"exit {self.proc.returncode}: {' | '.join(self.stderr)}"
            self.summary = json.loads(self.stdout.strip().splitlines()[-1])
        return self.summary

    def __enter__(self) -> Audit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.wait(kill=True)


def rows(out: Path, where: str = "TRUE") -> list[dict[str, Any]]:
    cols, data = run_sql(out, f"SELECT * FROM audit WHERE {where} ORDER BY ts, conn_id, seq")
    return [dict(zip(cols, r, strict=True)) for r in data]


def command_key(r: dict[str, Any]) -> str:
    return r["command"].lower() + (f"|{r['subcommand'].lower()}" if r["subcommand"] else "")


def counted_by_redis(cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The command rows INFO commandstats counts: not unknown commands / subcommands (Redis rejects them before
    counting), not commands queued in a MULTI that was discarded or aborted."""
    out = []
    for r in cmds:
        err = r["error"] or ""
        if err.startswith(("ERR unknown command", "ERR unknown subcommand")):
            continue
        if r["tx"] in ("aborted", "discarded"):
            continue
        out.append(r)
    return out


def run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


# --------------------------------------------------------------------------------------------- loopback


def mixed_workload(srv: RedisServer) -> dict[str, Any]:
    """redis-cli one-shots (errors of every kind), a redis-py pipeline and MULTI/EXEC, raw inline commands,
    a 1 MB value. Returns facts for the assertions."""
    srv.cli("SET", "user:1", "alice")
    srv.cli("GET", "user:1")
    srv.cli("INCR", "user:1")  # ERR not an integer: failed_calls
    srv.cli("LPUSH", "user:1", "x")  # WRONGTYPE: failed_calls
    srv.cli("GET")  # wrong number of arguments: rejected_calls
    srv.cli("NOSUCHCOMMAND", "a")  # unknown: not in commandstats at all
    srv.cli("CONFIG", "GET", "maxmemory")
    srv.cli("HSET", "h:1", "f", "v")
    r = srv.client()
    try:
        p = r.pipeline(transaction=False)
        for i in range(150):
            p.set(f"k:{i}", i)
            p.get(f"k:{i}")
        p.execute()
        tx = r.pipeline(transaction=True)
        tx.incr("counter").incr("counter").get("counter")
        tx.execute()
        big = os.urandom(1_000_000)
        r.set("big", big)
        assert r.strlen("big") == len(big)
    finally:
        r.close()
    with RespConn(srv.port) as c:
        c.send(b"PING\r\nSET inline:1 hello\r\nGET inline:1\r\n")
        assert [c.read(), c.read(), c.read()] == ["PONG", "OK", b"hello"]
        raw_port = c.sock.getsockname()[1]
    return {"raw_port": raw_port}


def test_loopback_rows_match_commandstats(redis_server: RedisServer, tmp_path: Path) -> None:
    out = tmp_path / "trail"
    before = redis_server.snapshot()
    with Audit(["sniff", "--port", str(redis_server.port), "--out", str(out)]) as audit:
        facts = mixed_workload(redis_server)
        summary = audit.stop()
    delta = redis_server.snapshot().delta(before)

    assert summary["kernel_drops"] == 0 and summary["gaps"] == 0 and summary["parse_errors"] == 0, summary
    cmds = rows(out, "event = 'command'")
    assert cmds, "no command rows"
    assert {r["source"] for r in rows(out)} == {"sniff"}
    assert all(r["server_pid"] is None and r["client_pid"] is None for r in cmds)
    assert all(r["client_addr"] == "127.0.0.1" and r["server_port"] == redis_server.port for r in cmds)

    counted = counted_by_redis(cmds)
    got = Counter(command_key(r) for r in counted)
    want = {k: s["calls"] + s["rejected_calls"] for k, s in delta["commandstats"].items()}
    assert dict(got) == want
    errors = Counter(command_key(r) for r in counted if r["status"] == "error")
    assert dict(errors) == {
        k: s["failed_calls"] + s["rejected_calls"]
        for k, s in delta["commandstats"].items()
        if s["failed_calls"] or s["rejected_calls"]
    }
    assert sum(delta["errorstats"].values()) == sum(1 for r in cmds if r["status"] == "error")
    assert delta["connections"] == len({r["conn_id"] for r in cmds})

    by = {(r["command"], tuple(r["keys"] or ())): r for r in cmds}
    assert by[("SET", ("user:1",))]["status"] == "ok"
    assert by[("INCR", ("user:1",))]["error"].startswith("ERR value is not an integer")
    assert by[("LPUSH", ("user:1",))]["error"].startswith("WRONGTYPE")
    assert by[("CONFIG", ())]["subcommand"] == "GET"
    big = by[("SET", ("big",))]
    assert big["status"] == "ok" and big["request_bytes"] > 1_000_000
    raw = [r for r in cmds if r["client_port"] == facts["raw_port"]]
    assert [(r["command"], r["keys"], r["status"], r["seq"]) for r in raw] == [
        ("PING", [], "ok", 1),
        ("SET", ["inline:1"], "ok", 2),
        ("GET", ["inline:1"], "ok", 3),
    ]
    tx = [(r["command"], r["tx"]) for r in cmds if r["command"] in ("MULTI", "EXEC") or r["keys"] == ["counter"]]
    assert [c for c, _ in tx] == ["MULTI", "INCRBY", "INCRBY", "GET", "EXEC"] and all(t for _, t in tx[1:4]), tx


# --------------------------------------------------------------------------------------------- fallback


def test_run_falls_back_to_sniff_and_says_so(redis_server: RedisServer, tmp_path: Path) -> None:
    out = tmp_path / "trail"
    env = {"REDIS_AUDIT_DISABLE_EBPF": "1"}
    args = ["run", "--fallback", "auto", "--port", str(redis_server.port), "--out", str(out), "--duration", "3"]
    with Audit(args, env=env) as audit:
        redis_server.cli("SET", "fallback:1", "v")
        summary = audit.wait()
    said = [line for line in audit.stderr if "eBPF" in line]
    assert len(said) == 1 and "sniff" in said[0], audit.stderr
    assert summary["commands"] == 1 and summary["kernel_drops"] == 0
    (row,) = rows(out, "event = 'command'")
    assert (row["source"], row["command"], row["keys"], row["status"]) == ("sniff", "SET", ["fallback:1"], "ok")
    (start,) = rows(out, "event = 'auditor_start'")
    assert json.loads(start["detail"])["source"] == "sniff"

    p = subprocess.run(
        [str(AUDIT), "run", "--fallback", "none", "--port", str(redis_server.port), "--out", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env, "COLUMNS": "400"},
    )  # fmt: skip
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "eBPF" in errors[0], p.stderr


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    p = subprocess.run(
        [str(AUDIT), "sniff", "--iface", "nosuch0", "--out", str(tmp_path / "t"), "--duration", "1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.splitlines()[0] == "error: no such network interface: nosuch0", p.stderr


# --------------------------------------------------------------------------------------------- write-pcap


def test_write_pcap_replays_to_the_same_rows(redis_server: RedisServer, tmp_path: Path) -> None:
    live, replayed, pcap = tmp_path / "live", tmp_path / "replayed", tmp_path / "cap.pcap"
    args = ["sniff", "--port", str(redis_server.port), "--out", str(live), "--write-pcap", str(pcap)]
    with Audit(args) as audit:
        mixed_workload(redis_server)
        summary = audit.stop()
    assert pcap.exists() and not Path(f"{pcap}.1").exists()
    p = run(str(AUDIT), "replay", str(pcap), "--port", str(redis_server.port), "--out", str(replayed), "--json")
    assert json.loads(p.stdout.strip().splitlines()[-1])["packets"] == summary["packets"]

    def shape(out: Path) -> list[tuple[Any, ...]]:
        rs = rows(out, "event IN ('command', 'connect')")
        order: dict[str, int] = {}
        return [
            (order.setdefault(r["conn_id"], len(order)), r["event"], r["ts"], r["seq"], r["command"],
             r["subcommand"], r["keys"], r["args"], r["status"], r["error"], r["client_port"], r["request_bytes"])
            for r in rs
        ]  # fmt: skip

    a, b = shape(live), shape(replayed)
    assert len(a) > 300 and a == b
    assert {r["source"] for r in rows(replayed)} == {"pcap"}


def test_pcap_writer_rotates_into_numbered_files(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    path = tmp_path / "rot.pcap"
    w = RotatingPcapWriter(path, 1, max_bytes=1000)
    sent = b""
    seq = 1000
    for i in range(40):
        data = b"*1\r\n$4\r\nPING\r\n" * (1 + i % 3)
        pkt = bytes(
            Ether() / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(sport=40000, dport=6379, seq=seq, flags="A") / data
        )
        w.add(1_700_000_000_123_456_789 + i, pkt, len(pkt))
        sent += data
        seq += len(data)
    w.close()
    names = [p.name for p in w.files]
    assert names == ["rot.pcap"] + [f"rot.pcap.{i}" for i in range(1, len(names))] and len(names) > 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    got = b""
    packets = 0
    for p in w.files:
        assert p.stat().st_size <= 1000
        reader = read_pcap(p, {6379})
        evs = list(reader)
        packets += reader.stats.packets
        got += b"".join(e.data for e in evs if isinstance(e, Chunk))
        assert reader.stats.first_ts_ns is not None and reader.stats.first_ts_ns % 1000 != 0  # nanoseconds kept
    assert packets == 40 and got == sent


# --------------------------------------------------------------------------------------------- network namespaces


@pytest.fixture
def netns_pair(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two network namespaces joined by a veth pair (192.0.2.1|2 /24, 2001:db8::1|2 /64) and a redis-server in
    the first one, listening on both addresses. Everything is torn down afterwards, also on failure."""
    for tool in ("ip", "redis-server", "redis-cli"):
        require_tool(tool)
    tag = secrets.token_hex(3)
    srv_ns, cli_ns = f"ra-s-{tag}", f"ra-c-{tag}"
    srv_if, cli_if = f"ras{tag}", f"rac{tag}"
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tmp_path / "redis")
    workdir.mkdir()
    try:
        run("ip", "netns", "add", srv_ns)
        run("ip", "netns", "add", cli_ns)
        run("ip", "link", "add", srv_if, "netns", srv_ns, "type", "veth", "peer", "name", cli_if, "netns", cli_ns)
        for ns, ifname, n in ((srv_ns, srv_if, 1), (cli_ns, cli_if, 2)):
            run("ip", "-n", ns, "addr", "add", f"192.0.2.{n}/24", "dev", ifname)
            run("ip", "-n", ns, "-6", "addr", "add", f"2001:db8::{n}/64", "dev", ifname, "nodad")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", ifname, "up")
        redis = subprocess.Popen(
            ["ip", "netns", "exec", srv_ns, "redis-server", "--bind", "192.0.2.1 2001:db8::1", "--port", "6379",
             "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(workdir),
             "--logfile", str(workdir / "log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(redis)
        deadline = time.monotonic() + 15
        while (
            run("ip", "netns", "exec", cli_ns, "redis-cli", "-h", "192.0.2.1", "PING", check=False).stdout != "PONG\n"
        ):
            if redis.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "log").read_text() if (workdir / "log").exists() else ""
                pytest.fail(f"redis-server in {srv_ns} did not answer: {log[-2000:]}", pytrace=False)
            time.sleep(0.05)
        yield {"srv_ns": srv_ns, "cli_ns": cli_ns, "srv_if": srv_if, "procs": procs}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for ns in (srv_ns, cli_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_veth_between_namespaces_ipv4_and_ipv6(netns_pair: dict[str, Any], tmp_path: Path) -> None:
    srv_ns, cli_ns = netns_pair["srv_ns"], netns_pair["cli_ns"]
    out = tmp_path / "trail"
    probe = "from auditor.sources.sniff import capture_ifaces as c, local_redis_ports as p; print(sorted(p()), c())"
    where = run("ip", "netns", "exec", srv_ns, sys.executable, "-c", probe)
    assert where.stdout.strip() == "[6379] ['any']"  # bound to specific addresses: lo for local, veth for remote
    args = ["sniff", "--iface", netns_pair["srv_if"], "--port", "6379", "--out", str(out)]
    with Audit(args, prefix=("ip", "netns", "exec", srv_ns)) as audit:
        for host, key in (("192.0.2.1", "v4"), ("2001:db8::1", "v6")):
            for cmd in (("SET", f"key:{key}", "x"), ("GET", f"key:{key}"), ("INCR", f"key:{key}")):
                run("ip", "netns", "exec", cli_ns, "redis-cli", "-h", host, *cmd)
        summary = audit.stop()
    assert summary["kernel_drops"] == 0 and summary["gaps"] == 0
    got = [(r["client_addr"], r["server_addr"], r["server_port"], r["command"], r["keys"], r["status"])
           for r in rows(out, "event = 'command'")]  # fmt: skip
    want = []
    for (c, s), key in ((("192.0.2.2", "192.0.2.1"), "v4"), (("2001:db8::2", "2001:db8::1"), "v6")):
        want += [(c, s, 6379, "SET", [f"key:{key}"], "ok"), (c, s, 6379, "GET", [f"key:{key}"], "ok")]
        want += [(c, s, 6379, "INCR", [f"key:{key}"], "error")]
    assert got == want
    assert all(r["client_port"] for r in rows(out, "event = 'command'"))


# --------------------------------------------------------------------------------------------- in process


def _events_for(src: SniffSource, until: Callable[[list[Any]], bool], timeout: float = 5.0) -> list[Any]:
    evs: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(evs):
        evs += src.poll(50)
    return evs


def test_kernel_filter_keeps_only_tcp_to_the_ports_once(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    listeners = []
    for fam, host, p in (
        (socket.AF_INET, "127.0.0.1", port),
        (socket.AF_INET6, "::1", port),
        (socket.AF_INET, "127.0.0.1", other),
    ):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.bind((host, p))
        s.listen()
        listeners.append(s)
    src = SniffSource(["lo"], {port}, None, 0)
    src.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"PING\r\n", ("127.0.0.1", port))  # UDP to the port: filtered out
        with socket.create_connection(("127.0.0.1", other)) as c:
            c.sendall(b"PING\r\n")  # TCP to another port: filtered out
        time.sleep(3 * limits.SNIFF_BLOCK_TIMEOUT_MS / 1000)
        assert src.poll(50) == [] and src.counters()["packets"] == 0

        sent = b"*1\r\n$4\r\nPING\r\n" * 3
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, port)) as c:
                for i in range(3):
                    c.sendall(sent[i * 14 : (i + 1) * 14])
                    time.sleep(0.01)
        evs = _events_for(
            src, lambda e: sum(isinstance(x, ConnOpen) for x in e) == 2 and sum(isinstance(x, Chunk) for x in e) >= 6
        )
    finally:
        evs_close = list(src.close())
        for s in listeners:
            s.close()
    opens = [e for e in evs if isinstance(e, ConnOpen)]
    assert [(o.meta.client_addr, o.meta.server_port, o.meta.source, o.mid_stream) for o in opens] == [
        ("127.0.0.1", port, Source.SNIFF, False),
        ("::1", port, Source.SNIFF, False),
    ]
    for o in opens:  # every byte once: loopback's outgoing copy was dropped in the kernel
        chunks = [e for e in evs + evs_close if isinstance(e, Chunk) and e.conn == o.conn]
        assert all(c.direction is Direction.TO_SERVER for c in chunks)
        assert b"".join(c.data for c in sorted(chunks, key=lambda c: c.pos)) == sent
        assert [c.pos for c in chunks] == [0, 14, 28]
    assert not [e for e in evs + evs_close if isinstance(e, Loss)]


def test_tcp_behind_ipv6_extension_headers_is_captured() -> None:
    """A client whose packets carry a hop-by-hop options header (tcpdump's `tcp port P` misses these)."""
    port = free_port()
    with socket.socket(socket.AF_INET6) as lsock:
        lsock.bind(("::1", port))
        lsock.listen()
        src = SniffSource(["lo"], {port}, None, 0)
        src.start()
        try:
            with socket.socket(socket.AF_INET6) as c:
                c.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))  # PadN
                c.connect(("::1", port))
                peer, _ = lsock.accept()
                with peer:
                    c.sendall(b"*1\r\n$4\r\nPING\r\n")
                    assert peer.recv(100)
                    peer.sendall(b"+PONG\r\n")
                    assert c.recv(100) == b"+PONG\r\n"
            evs = _events_for(src, lambda e: sum(isinstance(x, Chunk) for x in e) >= 2)
        finally:
            evs += list(src.close())
    opens = [e for e in evs if isinstance(e, ConnOpen)]
    assert len(opens) == 1 and not opens[0].mid_stream  # the SYN (behind the options header) was seen
    assert [(c.direction, c.data) for c in evs if isinstance(c, Chunk)] == [
        (Direction.TO_SERVER, b"*1\r\n$4\r\nPING\r\n"),
        (Direction.TO_CLIENT, b"+PONG\r\n"),
    ]


def test_kernel_drops_become_losses() -> None:
    assert drops_to_loss(5, 0) is None
    assert drops_to_loss(5, 7) == Loss(None, 5, "kernel dropped 7 packets", count=7)

    port = free_port()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", port))
    lsock.listen()
    # Two 4 KiB blocks (~20 packets each) and nobody reading them: the kernel has to drop.
    src = SniffSource(["lo"], {port}, None, 0, ring_bytes=8192, block_bytes=4096, reader_thread=False)
    src.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer, _ = lsock.accept()
            for _ in range(200):
                c.sendall(b"*1\r\n$4\r\nPING\r\n")
                peer.recv(100)
                peer.sendall(b"+PONG\r\n")
            peer.close()
        time.sleep(3 * limits.SNIFF_BLOCK_TIMEOUT_MS / 1000)
        evs = src.poll(0)
    finally:
        evs_close = list(src.close())
        lsock.close()
    losses = [e for e in evs + evs_close if isinstance(e, Loss)]
    assert losses and all(x.conn is None and x.reason == f"kernel dropped {x.count} packets" for x in losses)
    assert sum(x.count for x in losses) == src.counters()["kernel_drops"] > 100


def test_packet_statistics_are_read_and_reset() -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    try:
        attach_filter(s, bpf_program({free_port()}))
        s.bind(("lo", 3))
        read_packet_stats(s)
        assert read_packet_stats(s) == (0, 0)
    finally:
        s.close()


def test_filter_program_shapes() -> None:
    prog = bpf_program({6379, 6380})
    assert len(prog) < 80 and prog[-1] == (0x06, 0, 0, 0)
    many = bpf_program(set(range(10000, 10000 + limits.SNIFF_MAX_FILTER_PORTS)))
    assert len(many) <= 4096  # BPF_MAXINSNS
    everything = bpf_program(set(range(10000, 10001 + limits.SNIFF_MAX_FILTER_PORTS)))
    assert len(everything) < 50  # too many ports: every TCP packet, the tracker sorts them out
    for p in (prog, many, everything):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(s, p)  # the kernel's checker accepts it
        finally:
            s.close()


def test_start_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SniffError, match=r"^no such network interface: nosuch0$"):
        SniffSource(["nosuch0"], {6379}, None, 0)
    with pytest.raises(SniffError, match="any"):
        SniffSource(["any", "lo"], {6379}, None, 0)
    src = SniffSource(["lo"], {6379}, tmp_path / "missing" / "x.pcap", 1 << 20)
    with pytest.raises(SniffError, match=r"^cannot write .*x\.pcap: No such file or directory$"):
        src.start()


def test_local_redis_ports_and_interfaces(redis_server: RedisServer) -> None:
    assert redis_server.port in local_redis_ports()
    mine = [x for x in local_redis_listeners() if x.pid == redis_server.pid]
    assert [(x.addr, x.port, x.comm) for x in mine] == [("127.0.0.1", redis_server.port, "redis-server")]
    assert capture_ifaces({redis_server.port}) == ["lo"]
    assert capture_ifaces({free_port()}) == ["any"]  # nothing listens there: capture everywhere


def test_any_interface_and_sll2_pcap(redis_server: RedisServer, tmp_path: Path) -> None:
    pcap = tmp_path / "any.pcap"
    src = SniffSource(["any"], {redis_server.port}, pcap, 1 << 20)
    src.start()
    try:
        redis_server.cli("SET", "any:1", "v")
        evs = _events_for(src, lambda e: sum(isinstance(x, Chunk) for x in e) >= 2)
    finally:
        evs += list(src.close())
    data = b"".join(e.data for e in evs if isinstance(e, Chunk) and e.direction is Direction.TO_SERVER)
    assert data == b"*3\r\n$3\r\nSET\r\n$5\r\nany:1\r\n$1\r\nv\r\n"  # once, though lo is in "any"
    assert pcap.read_bytes()[20:24] == (276).to_bytes(4, "little")  # LINKTYPE_LINUX_SLL2
    replayed = [e for e in read_pcap(pcap, {redis_server.port}) if isinstance(e, Chunk)]
    assert [(c.direction, c.pos, c.data) for c in replayed] == [
        (c.direction, c.pos, c.data) for c in evs if isinstance(c, Chunk)
    ]

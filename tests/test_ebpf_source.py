"""The eBPF source against a real redis-server (root, bcc, tracefs).

These run in CI on this machine kind and are never skipped: when a
prerequisite is missing they fail with `redis-audit doctor`'s explanation.
One probe load (~2 s) serves the module; the restart test loads its own.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from auditor import doctor, limits
from auditor.pipeline import Pipeline
from auditor.redact import Redactor
from auditor.sources.ebpf import EbpfSource
from auditor.types import Chunk, ConnClose, ConnOpen, Direction, Loss, Row, Source, SourceEvent

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

QUIET_S = 0.3  # no events for this long: the source has caught up
SYNC_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------- fixtures


@functools.cache
def _doctor() -> tuple[doctor.Check, ...]:
    return tuple(doctor.checks())


def _require_ebpf() -> None:
    results = list(_doctor())
    if not all(c.ok for c in results):
        pytest.fail("eBPF prerequisites missing:\n" + doctor.explain(results), pytrace=False)
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: apt-get install redis-server redis-tools", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    unix: str

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_server(tmp: Path, port: int | None = None) -> Server:
    port = port or _free_port()
    unix = str(tmp / f"redis-{port}.sock")
    # exec, not a shell: the pid is redis-server's own
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "::1", "--unixsocket", unix]
    argv += ["--unixsocketperm", "777", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16) == b"+PONG\r\n":
                    return Server(proc, port, unix)
        except OSError:
            time.sleep(0.02)
    stop_server(Server(proc, port, unix))
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


def stop_server(srv: Server) -> None:
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(10)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()


class Capture:
    """The source plus every event it produced, in order."""

    def __init__(self, src: EbpfSource) -> None:
        self.src = src
        self.events: list[SourceEvent] = []

    def sync(self) -> list[SourceEvent]:
        """Poll until quiet; returns the events that arrived."""
        start = len(self.events)
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            got = self.src.poll(50)
            if got:
                self.events.extend(got)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_S:
                break
        return self.events[start:]

    def opens(self, events: list[SourceEvent] | None = None) -> list[ConnOpen]:
        return [e for e in (self.events if events is None else events) if isinstance(e, ConnOpen)]

    def open_for_port(self, client_port: int) -> ConnOpen:
        found = [e for e in self.opens() if e.meta.client_port == client_port]
        assert len(found) == 1, f"connections from port {client_port}: {found}"
        return found[0]

    def stream(self, conn: str, direction: Direction) -> tuple[bytes, int, int]:
        """(captured bytes in order, bytes not captured, total length); the
        chunks must tile the stream without holes or overlaps."""
        chunks = sorted(
            (e for e in self.events if isinstance(e, Chunk) and e.conn == conn and e.direction == direction),
            key=lambda c: c.pos,
        )
        buf = bytearray()
        end = missing = 0
        for c in chunks:
            assert c.pos == end, f"{conn} {direction.name}: chunk at {c.pos}, expected {end}"
            assert len(c.data) <= c.orig_len
            buf += c.data
            missing += c.orig_len - len(c.data)
            end = c.pos + c.orig_len
        return bytes(buf), missing, end


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_ebpf()
    srv = start_server(tmp_path_factory.mktemp("redis"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def preexisting(server: Server) -> Iterator[socket.socket]:
    """A client connected (and used) before the probes were attached."""
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"SET before-attach 1\r\n")
    assert s.recv(64) == b"+OK\r\n"
    yield s
    s.close()


@pytest.fixture(scope="module")
def cap(server: Server, preexisting: socket.socket) -> Iterator[Capture]:
    src = EbpfSource(pids={server.pid})
    src.start()
    c = Capture(src)
    c.sync()
    yield c
    src.close()


def _thread_comm() -> str:
    return Path("/proc/thread-self/comm").read_text().strip()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        assert got, "connection closed"
        buf += got
    return buf


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


# --------------------------------------------------------------------------- tests


def test_doctor_all_ok() -> None:
    results = doctor.checks()
    assert all(c.ok for c in results), doctor.explain(results)
    assert doctor.ebpf_usable() == (True, "ok")


def test_doctor_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(doctor.DISABLE_ENV, "1")
    ok, why = doctor.ebpf_usable()
    assert not ok
    assert "disabled by REDIS_AUDIT_DISABLE_EBPF" in why


def test_raw_socket_bytes_exact(server: Server, cap: Capture) -> None:
    sent = _resp(b"SET", b"raw:key", b"value") + b"GET raw:key\r\n" + _resp(b"DEL", b"raw:key")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        port = s.getsockname()[1]
        s.sendall(sent)
        replies = _recv_exactly(s, len(b"+OK\r\n$5\r\nvalue\r\n:1\r\n"))
    cap.sync()
    op = cap.open_for_port(port)
    assert not op.mid_stream
    m = op.meta
    assert (m.client_addr, m.server_addr, m.server_port) == ("127.0.0.1", "127.0.0.1", server.port)
    assert (m.server_pid, m.server_uid, m.server_comm) == (server.pid, os.getuid(), "redis-server")
    # a local TCP client: who connected, from the kernel
    assert (m.client_pid, m.client_uid, m.client_comm) == (os.getpid(), os.getuid(), _thread_comm())
    data, missing, total = cap.stream(op.conn, Direction.TO_SERVER)
    assert (data, missing, total) == (sent, 0, len(sent))
    reply, missing, _ = cap.stream(op.conn, Direction.TO_CLIENT)
    assert (reply, missing) == (replies, 0)
    closes = [e for e in cap.events if isinstance(e, ConnClose) and e.conn == op.conn]
    assert [c.reason for c in closes] == ["close"]


def test_ipv6_client(server: Server, cap: Capture) -> None:
    sent = _resp(b"PING")
    with socket.create_connection(("::1", server.port)) as s:
        port = s.getsockname()[1]
        s.sendall(sent)
        assert _recv_exactly(s, 7) == b"+PONG\r\n"
    cap.sync()
    m = cap.open_for_port(port).meta
    assert (m.client_addr, m.server_addr, m.server_port) == ("::1", "::1", server.port)
    assert (m.client_pid, m.client_comm) == (os.getpid(), _thread_comm())
    assert cap.stream(cap.open_for_port(port).conn, Direction.TO_SERVER) == (sent, 0, len(sent))


def test_socket_read_through_pidfd(server: Server, cap: Capture, preexisting: socket.socket) -> None:
    """What the source asks a server's socket when the kernel could not say
    (remote clients of a wildcard listener, silent Unix clients)."""
    op = cap.open_for_port(preexisting.getsockname()[1])
    _, fd, cid = op.conn.split("-")
    proc = cap.src._procs[server.pid]
    ep = cap.src._dup_verified(proc, int(fd), int(cid, 16))
    assert ep is not None
    assert (ep.local_addr, ep.local_port) == ("127.0.0.1", server.port)
    assert (ep.peer_addr, ep.peer_port) == preexisting.getsockname()
    # a stale id (the fd was reused by another connection) is refused
    assert cap.src._dup_verified(proc, int(fd), int(cid, 16) + 1) is None


def test_redis_cli_client_identity(server: Server, cap: Capture) -> None:
    cli = subprocess.Popen(
        ["redis-cli", "-p", str(server.port), "SET", "cli:key", "from-cli"], stdout=subprocess.PIPE, text=True
    )
    out, _ = cli.communicate(timeout=10)
    assert out.strip() == "OK"
    cap.sync()
    found = [e for e in cap.opens() if e.meta.client_pid == cli.pid]
    assert len(found) == 1, cap.opens()
    m = found[0].meta
    assert (m.client_comm, m.client_uid, m.client_addr) == ("redis-cli", os.getuid(), "127.0.0.1")
    assert m.server_port == server.port and m.client_port
    data, missing, _ = cap.stream(found[0].conn, Direction.TO_SERVER)
    assert missing == 0
    assert data.endswith(_resp(b"SET", b"cli:key", b"from-cli"))
    reply, _, _ = cap.stream(found[0].conn, Direction.TO_CLIENT)
    assert reply.endswith(b"+OK\r\n")


def test_redis_cli_over_unix_socket(server: Server, cap: Capture) -> None:
    # (its own key: the test passes alone and in any order)
    subprocess.run(
        ["redis-cli", "-p", str(server.port), "SET", "unix:key", "from-cli"], check=True, capture_output=True
    )
    cli = subprocess.Popen(["redis-cli", "-s", server.unix, "GET", "unix:key"], stdout=subprocess.PIPE, text=True)
    out, _ = cli.communicate(timeout=10)
    assert out.strip() == "from-cli"
    cap.sync()
    found = [e for e in cap.opens() if e.meta.client_pid == cli.pid]
    assert len(found) == 1, cap.opens()
    m = found[0].meta
    assert (m.client_addr, m.server_addr, m.client_port) == (f"unix:{server.unix}", f"unix:{server.unix}", None)
    assert (m.client_comm, m.client_uid, m.server_pid) == ("redis-cli", os.getuid(), server.pid)
    data, missing, _ = cap.stream(found[0].conn, Direction.TO_SERVER)
    assert missing == 0 and data.endswith(_resp(b"GET", b"unix:key"))
    reply, _, _ = cap.stream(found[0].conn, Direction.TO_CLIENT)
    assert reply.endswith(b"$8\r\nfrom-cli\r\n")


def test_redis_py_tcp_and_unix(server: Server, cap: Capture) -> None:
    before = len(cap.events)
    tcp = redis.Redis(port=server.port)
    unix = redis.Redis(unix_socket_path=server.unix)
    try:
        tcp.set("py:tcp", "1")
        assert unix.get("py:tcp") == b"1"
        tcp_port = tcp.connection_pool.get_connection()._sock.getsockname()[1]
    finally:
        tcp.close()
        unix.close()
    cap.sync()
    opens = cap.opens(cap.events[before:])
    t = [o for o in opens if o.meta.client_port == tcp_port]
    u = [o for o in opens if o.meta.client_addr == f"unix:{server.unix}"]
    assert len(t) == 1 and len(u) == 1, opens
    assert u[0].meta.client_pid == os.getpid() and u[0].meta.client_uid == os.getuid()
    tdata, missing, _ = cap.stream(t[0].conn, Direction.TO_SERVER)
    assert missing == 0 and _resp(b"SET", b"py:tcp", b"1") in tdata
    udata, missing, _ = cap.stream(u[0].conn, Direction.TO_SERVER)
    assert missing == 0 and _resp(b"GET", b"py:tcp") in udata
    ureply, _, _ = cap.stream(u[0].conn, Direction.TO_CLIENT)
    assert ureply.endswith(b"$1\r\n1\r\n")


def test_pipeline_of_500_commands(server: Server, cap: Capture) -> None:
    sent = b"".join(_resp(b"SET", b"pipe:%d" % i, b"v" * 60) for i in range(500))
    assert len(sent) > 32768  # more than one redis read
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        port = s.getsockname()[1]
        s.sendall(sent)
        replies = _recv_exactly(s, 500 * 5)
    assert replies == b"+OK\r\n" * 500
    cap.sync()
    op = cap.open_for_port(port)
    assert cap.stream(op.conn, Direction.TO_SERVER) == (sent, 0, len(sent))
    assert cap.stream(op.conn, Direction.TO_CLIENT) == (replies, 0, len(replies))
    # redis 7 reads more than 16 KiB at once (the free room of its query
    # buffer): such a read arrives whole, in 16 KiB records
    reads = [e for e in cap.events if isinstance(e, Chunk) and e.conn == op.conn and e.direction is Direction.TO_SERVER]
    assert max(len(c.data) for c in reads) <= limits.EBPF_PIECE_BYTES


def test_one_megabyte_value(server: Server, cap: Capture) -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    sent = _resp(b"SET", b"big", value) + _resp(b"GET", b"big")
    expected_reply = b"+OK\r\n" + b"$%d\r\n" % len(value) + value + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        port = s.getsockname()[1]
        s.sendall(sent)
        reply = _recv_exactly(s, len(expected_reply))
    assert reply == expected_reply
    cap.sync()
    op = cap.open_for_port(port)
    chunks = [e for e in cap.events if isinstance(e, Chunk) and e.conn == op.conn]
    data, missing, total = cap.stream(op.conn, Direction.TO_SERVER)
    # every byte is accounted for; what was copied is exactly what was sent
    assert total == len(sent)
    assert missing > 0 and len(data) + missing == len(sent)
    for c in chunks:
        assert len(c.data) <= limits.EBPF_CAPTURE_BYTES
        if c.direction is Direction.TO_SERVER:
            assert c.data == sent[c.pos : c.pos + len(c.data)]
        else:
            assert c.data == expected_reply[c.pos : c.pos + len(c.data)]
    assert any(c.orig_len > len(c.data) for c in chunks if c.direction is Direction.TO_SERVER)
    _, _, reply_total = cap.stream(op.conn, Direction.TO_CLIENT)
    assert reply_total == len(expected_reply)
    assert not [e for e in cap.events if isinstance(e, Loss)]


def test_connection_opened_before_attach(server: Server, cap: Capture, preexisting: socket.socket) -> None:
    port = preexisting.getsockname()[1]
    op = cap.open_for_port(port)
    assert op.mid_stream
    assert (op.meta.server_pid, op.meta.server_port, op.meta.client_addr) == (server.pid, server.port, "127.0.0.1")
    assert op.meta.client_pid == os.getpid()  # found through /proc at attach
    sent = _resp(b"GET", b"before-attach")
    preexisting.sendall(sent)
    assert _recv_exactly(preexisting, 7) == b"$1\r\n1\r\n"
    cap.sync()
    data, missing, _ = cap.stream(op.conn, Direction.TO_SERVER)
    assert (data, missing) == (sent, 0)  # positions count from the attach
    assert cap.stream(op.conn, Direction.TO_CLIENT)[0] == b"$1\r\n1\r\n"


def test_fd_reuse_gives_new_connection_id(server: Server, cap: Capture) -> None:
    ids = []
    for i in range(2):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            port = s.getsockname()[1]
            s.sendall(b"PING %d\r\n" % i)
            _recv_exactly(s, 7)
        cap.sync()  # redis has closed its end: the fd number is free again
        ids.append(cap.open_for_port(port).conn)
    assert ids[0] != ids[1]
    # "<server pid>-<fd>-<id>": same fd number, different connection
    assert ids[0].split("-")[:2] == ids[1].split("-")[:2]
    for conn, i in zip(ids, range(2), strict=True):
        assert cap.stream(conn, Direction.TO_SERVER)[0] == b"PING %d\r\n" % i


def test_redis_own_files_never_captured(server: Server, cap: Capture) -> None:
    # INFO makes redis read /proc/self/stat (and its cron does, every 100 ms),
    # on fd numbers that client sockets just used
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"INFO memory\r\n")
            s.recv(65536)
        time.sleep(0.15)
    cap.sync()
    for e in cap.events:
        if isinstance(e, Chunk):
            assert b"(redis-server)" not in e.data, e
            assert e.conn in {o.conn for o in cap.opens()}


def test_stats(server: Server, cap: Capture) -> None:
    cap.sync()
    time.sleep(1.0)  # stats.targets is refreshed once a second
    st = cap.src.stats
    assert st.events > 0 and st.lost_events == 0 and st.lost_conn_events == 0
    assert server.pid in st.targets and st.targets[server.pid]["bytes"] > 1024 * 1024
    assert cap.src.target_pids == {server.pid}


def test_every_syscall_variant() -> None:
    """read/recvfrom/readv/recvmsg and write/sendto/writev/sendmsg, on a
    socket accepted by this very process (made the target)."""
    _require_ebpf()
    src = EbpfSource(pids={os.getpid()})
    src.start()
    try:
        cap = Capture(src)
        with socket.create_server(("127.0.0.1", 0)) as lsn:
            client = socket.create_connection(lsn.getsockname())
            srv, _ = lsn.accept()  # accept4: tracked from here
            with client, srv:
                fd = srv.fileno()
                to_server = [b"read1\n", b"recvfrom2\n", b"readv3\n", b"recvmsg4\n"]
                got = []
                client.sendall(to_server[0])
                got.append(os.read(fd, 100))
                client.sendall(to_server[1])
                got.append(srv.recv(100))
                client.sendall(to_server[2])
                a, b = bytearray(3), bytearray(100)
                n = os.readv(fd, [a, b])
                got.append(bytes(a + b)[:n])
                client.sendall(to_server[3])
                got.append(srv.recvmsg(100)[0])
                assert got == to_server
                os.write(fd, b"write1\n")
                srv.send(b"sendto2\n")
                os.writev(fd, [b"writev", b"3\n"])
                srv.sendmsg([b"send", b"msg4\n"])
                to_client = b"write1\nsendto2\nwritev3\nsendmsg4\n"
                assert _recv_exactly(client, len(to_client)) == to_client
                port = client.getsockname()[1]
        cap.sync()
        op = cap.open_for_port(port)
        assert op.meta.server_pid == os.getpid() and op.meta.client_pid == os.getpid()
        assert cap.stream(op.conn, Direction.TO_SERVER) == (b"".join(to_server), 0, len(b"".join(to_server)))
        assert cap.stream(op.conn, Direction.TO_CLIENT) == (to_client, 0, len(to_client))
        assert [e.reason for e in cap.events if isinstance(e, ConnClose) and e.conn == op.conn] == ["close"]
    finally:
        src.close()


def test_ring_buffer_full_becomes_loss(server: Server) -> None:
    """Records the kernel could not deliver are counted per connection and
    direction and reported as Loss events that cover the hole exactly."""
    src = EbpfSource(pids={server.pid}, ring_bytes=64 * 1024)
    src.start()
    try:
        cap = Capture(src)
        cap.sync()
        sent = b"".join(_resp(b"SET", b"loss:%d" % i, b"x" * 1000) for i in range(300))
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            port = s.getsockname()[1]
            s.sendall(sent)  # ~300 KB into a 64 KB ring nobody drains
            _recv_exactly(s, 300 * 5)
            cap.sync()
            s.sendall(b"PING\r\n")  # the next record carries what was lost before it
            _recv_exactly(s, 7)
            cap.sync()
        op = cap.open_for_port(port)
        # the hole is a chunk without data: the stream still tiles exactly
        _, missing, total = cap.stream(op.conn, Direction.TO_SERVER)
        assert total == len(sent) + 6 and missing > 0
        _, _, reply_total = cap.stream(op.conn, Direction.TO_CLIENT)
        assert reply_total == 300 * 5 + 7
        everything = sent + b"PING\r\n"
        for c in cap.events:
            if isinstance(c, Chunk) and c.conn == op.conn and c.direction is Direction.TO_SERVER:
                assert c.data == everything[c.pos : c.pos + len(c.data)]
        losses = [e for e in cap.events if isinstance(e, Loss)]
        assert losses and all(x.conn is None and x.reason.startswith("ebpf ring buffer full: ") for x in losses)
        assert src.stats.lost_events == sum(x.count for x in losses)
        assert src.stats.lost_bytes == sum(x.nbytes for x in losses) >= missing
    finally:
        src.close()


def _pump_until(src: EbpfSource, pipe: Pipeline, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while not done() and time.monotonic() < deadline:
        src.pump(pipe, 50)
        pipe.flush()
    assert done(), "the rows did not come"


def test_pump_gives_records_to_lanes_and_losses_become_gap_rows(server: Server) -> None:
    """``pump`` (the live loop's call): ring records of a connection in its lane go to it
    without becoming Chunks, and records the ring refused still become a gap row, with
    every command after the hole audited."""
    rows: list[Row] = []
    pipe = Pipeline(Redactor(), rows.extend, Source.EBPF)
    chunks = 0
    feed = pipe.feed_many

    def counting_feed(events: list[SourceEvent]) -> None:
        nonlocal chunks
        chunks += sum(type(e) is Chunk for e in events)
        feed(events)

    pipe.feed_many = counting_feed  # type: ignore[method-assign]
    src = EbpfSource(pids={server.pid}, ring_bytes=64 * 1024)
    src.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            port = s.getsockname()[1]
            for i in range(100):  # pumped as they come: the lane takes them
                s.sendall(_resp(b"SET", b"pump:%d" % i, b"v"))
                _recv_exactly(s, 5)
                if i % 10 == 9:
                    src.pump(pipe, 0)

            def mine() -> list[Row]:
                return [r for r in rows if r.event == "command" and r.client_port == port]

            _pump_until(src, pipe, lambda: len(mine()) == 100)
            assert src.stats.events >= 200 and chunks < 20  # (records straight to the lane: no Chunk)
            s.sendall(b"".join(_resp(b"SET", b"lost:%d" % i, b"x" * 1000) for i in range(300)))
            _recv_exactly(s, 300 * 5)  # ~300 KB into a 64 KB ring nobody drains
            _pump_until(src, pipe, lambda: any(r.event == "gap" for r in rows))
            src.pump(pipe, 100)  # (the rest of the ring)
            for n, k in enumerate((7, 8), 1):  # the first one's records carry what was lost before them
                s.sendall(_resp(b"GET", b"pump:%d" % k))
                _recv_exactly(s, 7)
                _pump_until(src, pipe, lambda n=n: sum(r.command == "GET" for r in mine()) == n)
        _pump_until(src, pipe, lambda: any(r.event == "disconnect" and r.client_port == port for r in rows))
    finally:
        src.close()
    gaps = [r for r in rows if r.event == "gap"]
    assert gaps and sum(r.lost_events or 0 for r in gaps) == src.stats.lost_events > 0
    cmds = mine()
    assert [r.keys for r in cmds[:100]] == [[f"pump:{i}"] for i in range(100)]
    assert all(r.status == "ok" for r in cmds[:100])
    get = [r for r in cmds if r.command == "GET"]
    assert [r.keys for r in get] == [["pump:7"], ["pump:8"]]
    # right after the hole the first reply may not be attributable with certainty (replies were lost
    # too: which requests they answered is unknown); the next command pairs again
    assert get[0].status in ("ok", "unknown") and get[1].status == "ok"


def test_restarted_server_is_picked_up(tmp_path: Path) -> None:
    _require_ebpf()
    first = start_server(tmp_path)
    src = EbpfSource(ports={first.port})
    try:
        src.start()
        cap = Capture(src)
        assert first.pid in src.target_pids
        stop_server(first)
        cap.sync()
        assert first.pid not in src.target_pids
        assert not any(o.meta.server_pid == first.pid for o in cap.opens())  # it had no clients
        second = start_server(tmp_path, port=first.port)
        try:
            t0 = time.monotonic()
            while second.pid not in src.target_pids and time.monotonic() - t0 < 1.0:
                cap.events.extend(src.poll(50))
            assert second.pid in src.target_pids, "restarted redis-server not tracked within 1 s"
            with socket.create_connection(("127.0.0.1", second.port)) as s:
                port = s.getsockname()[1]
                s.sendall(b"SET after-restart 1\r\n")
                assert _recv_exactly(s, 5) == b"+OK\r\n"
            cap.sync()
            # the readiness PING of start_server was captured too; take ours
            op = cap.open_for_port(port)
            assert op.meta.server_pid == second.pid and not op.mid_stream
            assert cap.stream(op.conn, Direction.TO_SERVER)[0] == b"SET after-restart 1\r\n"
        finally:
            stop_server(second)
        cap.sync()
        assert second.pid not in src.target_pids
        assert [e.reason for e in cap.events if isinstance(e, ConnClose) and e.conn == op.conn] == ["close"]
    finally:
        src.close()


def test_unix_client_of_a_server_started_later(tmp_path: Path) -> None:
    """The Unix-peer probes are attached only once a target serves a Unix socket: a server that starts after
    the attach still gets its Unix clients' process (from the probes, or SO_PEERCRED after a second)."""
    _require_ebpf()
    src = EbpfSource()
    src.start()
    try:
        cap = Capture(src)
        srv = start_server(tmp_path)
        try:
            t0 = time.monotonic()
            while srv.pid not in src.target_pids and time.monotonic() - t0 < 2.0:
                cap.events.extend(src.poll(50))
            assert srv.pid in src.target_pids
            for _ in range(2):  # the first may come before the probes are attached; the second after
                cli = subprocess.Popen(["redis-cli", "-s", srv.unix, "SET", "late:unix", "1"], stdout=subprocess.PIPE)
                cli.communicate(timeout=10)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 5.0 and not [e for e in cap.opens() if e.meta.client_pid == cli.pid]:
                    cap.events.extend(src.poll(50))
                found = [e for e in cap.opens() if e.meta.client_pid == cli.pid]
                assert len(found) == 1, cap.opens()
                m = found[0].meta
                assert (m.client_comm, m.server_pid, m.client_addr) == ("redis-cli", srv.pid, f"unix:{srv.unix}")
        finally:
            stop_server(srv)
    finally:
        src.close()

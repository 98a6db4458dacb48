"""`redis-audit run` (live eBPF) end to end: the CLI as a subprocess, a real redis-server, real clients, as root.

Each test starts `redis-audit run --fallback none ... --json`, waits for its "auditing" line, runs a workload over
loopback TCP and the Unix socket, stops it with SIGINT and reads the trail with SQL. Completeness is measured against
Redis's own INFO commandstats, client addresses against Redis's own CLIENT INFO. Never skipped: without a working
eBPF stack every test fails with `redis-audit doctor`'s explanation (`--fallback none`: no silent packet capture).
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis
from redis_fixtures import RedisServer, RespConn, free_port, require_tool
from test_sniff import AUDIT, Audit, command_key, counted_by_redis, rows

from auditor import doctor
from auditor.query import run_sql

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

LATENCY_BOUND_US = 1_000_000  # generous: an ordinary command on loopback answers in well under a millisecond
RESTART_PICKUP_S = 1.5  # a new redis-server process is picked up within a second (exec record, or /proc rescan)
BIG = 1_000_000


@functools.cache
def _doctor_checks() -> tuple[doctor.Check, ...]:
    return tuple(doctor.checks())


@pytest.fixture(autouse=True)
def _ebpf() -> None:
    if os.geteuid() != 0:
        pytest.fail("`redis-audit run` tests need root (eBPF)", pytrace=False)
    if not AUDIT.exists():
        pytest.fail(f"{AUDIT} missing: install the package into the venv (pip install -e .)", pytrace=False)
    results = list(_doctor_checks())
    if not all(c.ok for c in results):
        why = "eBPF is unusable here, `redis-audit run` cannot be tested:\n" + doctor.explain(results)
        pytest.fail(why, pytrace=False)


# --------------------------------------------------------------------------------------------- helpers


def audit_run(out: Path, *target: str) -> Audit:
    """`redis-audit run TARGET --out OUT --json`, eBPF or nothing."""
    return Audit(["run", *target, "--fallback", "none", "--out", str(out)])


def thread_comm() -> str:
    """comm of this thread: what the kernel reports as client_comm for the sockets it writes to."""
    return Path("/proc/thread-self/comm").read_text().strip()


def cli(srv: RedisServer, *args: str, unix: bool = False, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """One `redis-cli` run (one connection); returns its pid (the rows' client_pid) and its output."""
    target = ["-s", srv.unix_path] if unix else ["-h", "127.0.0.1", "-p", str(srv.port)]
    p = subprocess.Popen(
        [require_tool("redis-cli"), *target, "--no-auth-warning", *extra, *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return p.pid, out


def client_info(text: str) -> dict[str, str]:
    """CLIENT INFO's `id=5 addr=127.0.0.1:4711 fd=12 ...` line as a dict."""
    return dict(part.split("=", 1) for part in text.split())


def addr_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@dataclass(frozen=True)
class E:
    """An expected command row."""

    command: str
    keys: tuple[str, ...] = ()
    status: str = "ok"
    sub: str | None = None
    error: str | None = None  # prefix of the error text


def assert_rows(got: list[dict[str, Any]], want: list[E], what: str) -> None:
    """The rows are exactly `want`, in order; an error text must start with the expected prefix."""

    def shape(r: dict[str, Any], w: E | None) -> E:
        err = r["error"]
        if err is not None and w is not None and w.error is not None and err.startswith(w.error):
            err = w.error
        return E(r["command"], tuple(r["keys"] or ()), r["status"], r["subcommand"], err)

    padded: list[E | None] = [*want, *[None] * (len(got) - len(want))]
    assert [shape(r, w) for r, w in zip(got, padded, strict=False)] == want, what


def conn_of(cmds: list[dict[str, Any]], marker: str) -> str:
    """conn_id of the one connection that touched key `marker`."""
    found = {r["conn_id"] for r in cmds if marker in (r["keys"] or ())}
    assert len(found) == 1, f"connections with key {marker}: {found}"
    return found.pop()


def after_handshake(conn_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """redis-py's rows without its connect handshake: HELLO 3 and CLIENT SETINFO LIB-NAME / LIB-VER (unknown to
    Redis 7.0, which answers `ERR unknown subcommand`; redis-py ignores that)."""

    def handshake(r: dict[str, Any]) -> bool:
        if r["command"] == "HELLO":
            return r["status"] == "ok"
        return r["command"] == "CLIENT" and r["subcommand"] in ("SETINFO", None) and r["keys"] == []

    i = 0
    while i < len(conn_rows) and handshake(conn_rows[i]):
        i += 1
    assert conn_rows[0]["command"] == "HELLO", [r["command"] for r in conn_rows[:3]]
    return conn_rows[i:]


def check_run(out: Path, summary: dict[str, Any], audit: Audit) -> list[dict[str, Any]]:
    """What holds for every run: eBPF rows only, one auditor_start first and one auditor_stop last, nothing lost,
    the summary's counts are the trail's. Returns all rows."""
    everything = rows(out)
    assert {r["source"] for r in everything} == {"ebpf"}
    events = [r["event"] for r in everything]
    assert events.count("auditor_start") == 1 and events.count("auditor_stop") == 1, Counter(events)
    start = next(r for r in everything if r["event"] == "auditor_start")
    stop = next(r for r in everything if r["event"] == "auditor_stop")
    # (connections open before the attach are seeded during the source's start: their connect rows may come first)
    assert start["ts"] <= min(r["ts"] for r in everything if r["event"] != "connect")
    assert stop["ts"] == max(r["ts"] for r in everything)
    assert json.loads(start["detail"])["source"] == "ebpf"
    assert json.loads(stop["detail"])["reason"] == "SIGINT"
    assert summary["lost_events"] == 0 and summary["lost_conn_events"] == 0, summary
    assert summary["parse_errors"] == 0 and summary["unmatched_replies"] == 0, summary
    assert summary["rows"] == len(everything), summary
    assert summary["commands"] == events.count("command"), summary
    assert not [r for r in everything if r["event"] in ("gap", "parse_error")]
    assert not [line for line in audit.stderr if "Traceback" in line or line.startswith("error")], audit.stderr
    return everything


# --------------------------------------------------------------------------------------------- completeness


@dataclass
class Client:
    """One connection of the workload: what it sent and who it was."""

    rows: list[E]
    addr: str  # client_addr: 127.0.0.1 or unix:<path>
    pid: int
    comm: str
    marker: str | None = None  # a key only this connection touched (else it is found by its pid: redis-cli)
    port: int | None = None  # the TCP client port, when known (getsockname, or Redis's own CLIENT INFO)
    handshake: bool = False  # redis-py: HELLO 3, CLIENT SETINFO first


def mixed_workload(srv: RedisServer) -> dict[str, Client]:
    """redis-cli one-shots, redis-py (RESP3) with a 400-command pipeline, MULTI/EXEC and a 1 MB value, raw inline
    commands; over TCP and the Unix socket. Returns every connection it made."""
    conns: dict[str, Client] = {}
    tcp, unix, me, comm = "127.0.0.1", f"unix:{srv.unix_path}", os.getpid(), thread_comm()

    # redis-cli: one connection per command, found by its pid
    one_shots = [
        (("SET", "user:1", "alice"), E("SET", ("user:1",))),
        (("GET", "user:1"), E("GET", ("user:1",))),
        (("INCR", "user:1"), E("INCR", ("user:1",), "error", error="ERR value is not an integer")),
        (("LPUSH", "user:1", "x"), E("LPUSH", ("user:1",), "error", error="WRONGTYPE Operation against a key")),
        (("GET",), E("GET", (), "error", error="ERR wrong number of arguments for 'get' command")),
        (("NOSUCHCOMMAND", "a"), E("<unknown:13>", (), "error", error="ERR unknown command")),
        (("CONFIG", "GET", "maxmemory"), E("CONFIG", sub="GET")),
        (("CLIENT", "INFO"), E("CLIENT", sub="INFO")),
    ]
    for i, (args, want) in enumerate(one_shots):
        pid, text = cli(srv, *args)
        port = addr_port(client_info(text)["addr"]) if args[0] == "CLIENT" else None
        conns[f"redis-cli {i}"] = Client([want], tcp, pid, "redis-cli", port=port)
    for i, (args, want) in enumerate(
        [(("SET", "cli:unix", "v"), E("SET", ("cli:unix",))), (("CLIENT", "INFO"), E("CLIENT", sub="INFO"))]
    ):
        pid, _ = cli(srv, *args, unix=True)
        conns[f"redis-cli unix {i}"] = Client([want], unix, pid, "redis-cli")

    # redis-py over TCP and the Unix socket: pipeline, MULTI/EXEC, 1 MB value, an error reply
    for tag, kwargs in (("tcp", {}), ("unix", {"unix_socket_path": srv.unix_path})):
        r = srv.client(**kwargs)
        want = [E("SET", (f"py:{tag}",))]
        try:
            r.set(f"py:{tag}", "1")
            p = r.pipeline(transaction=False)
            for i in range(200):
                p.set(f"{tag}:k:{i}", i)
                p.get(f"{tag}:k:{i}")
                want += [E("SET", (f"{tag}:k:{i}",)), E("GET", (f"{tag}:k:{i}",))]
            assert len(p.execute()) == 400
            tx = r.pipeline(transaction=True)
            tx.incr(f"{tag}:counter").incr(f"{tag}:counter").get(f"{tag}:counter")
            assert tx.execute() == [1, 2, b"2"]
            want += [E("MULTI"), *[E("INCRBY", (f"{tag}:counter",))] * 2, E("GET", (f"{tag}:counter",)), E("EXEC")]
            big = os.urandom(BIG)
            r.set(f"{tag}:big", big)
            assert r.get(f"{tag}:big") == big
            want += [E("SET", (f"{tag}:big",)), E("GET", (f"{tag}:big",))]
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                r.lpush(f"py:{tag}", "x")
            want.append(E("LPUSH", (f"py:{tag}",), "error", error="WRONGTYPE Operation against a key holding"))
            info = r.client_info()
            want.append(E("CLIENT", sub="INFO"))
        finally:
            r.close()
        port = addr_port(info["addr"]) if tag == "tcp" else None
        addr = tcp if tag == "tcp" else unix
        conns[f"redis-py {tag}"] = Client(want, addr, me, comm, marker=f"py:{tag}", port=port, handshake=True)

    # raw sockets, inline commands (and an unknown one, which Redis does not count)
    for tag, kwargs in (("tcp", {"port": srv.port}), ("unix", {"unix_path": srv.unix_path})):
        with RespConn(**kwargs) as c:
            c.send(f"PING\r\nSET inline:{tag} hello\r\nGET inline:{tag}\r\nNOSUCHCMD x\r\n".encode())
            replies = [c.read(), c.read(), c.read(), c.read()]
            port = c.sock.getsockname()[1] if tag == "tcp" else None
        assert replies[:3] == ["PONG", "OK", b"hello"] and str(replies[3]).startswith("ERR unknown command")
        want = [E("PING"), E("SET", (f"inline:{tag}",)), E("GET", (f"inline:{tag}",))]
        want.append(E("<unknown:9>", (), "error", error="ERR unknown command '<redacted:9>'"))
        addr = tcp if tag == "tcp" else unix
        conns[f"raw {tag}"] = Client(want, addr, me, comm, marker=f"inline:{tag}", port=port)
    return conns


def test_every_command_is_a_row(redis_server: RedisServer, tmp_path: Path) -> None:
    srv, out = redis_server, tmp_path / "trail"
    before = srv.snapshot()  # the helper's admin connection stays idle while the auditor runs
    with audit_run(out, "--pid", str(srv.pid)) as audit:
        conns = mixed_workload(srv)
        summary = audit.stop()
    delta = srv.snapshot().delta(before)
    everything = check_run(out, summary, audit)
    cmds = [r for r in everything if r["event"] == "command"]

    # completeness: as many rows per command as Redis counted (calls + rejected calls; unknown commands and
    # subcommands are not counted by Redis)
    got = Counter(command_key(r) for r in counted_by_redis(cmds))
    assert dict(got) == {k: s["calls"] + s["rejected_calls"] for k, s in delta["commandstats"].items()}
    errors = Counter(command_key(r) for r in counted_by_redis(cmds) if r["status"] == "error")
    assert dict(errors) == {
        k: s["failed_calls"] + s["rejected_calls"]
        for k, s in delta["commandstats"].items()
        if s["failed_calls"] or s["rejected_calls"]
    }
    assert sum(delta["errorstats"].values()) == sum(r["status"] == "error" for r in cmds)
    assert delta["connections"] == len({r["conn_id"] for r in cmds}) == len(conns)

    # every row: the server, the transport
    unix = f"unix:{srv.unix_path}"
    for r in cmds:
        assert (r["server_pid"], r["server_uid"]) == (srv.pid, os.getuid()), r
        if r["client_addr"] == unix:
            assert (r["client_port"], r["server_addr"], r["server_port"]) == (None, unix, None), r
        else:
            assert (r["client_addr"], r["server_addr"], r["server_port"]) == ("127.0.0.1", "127.0.0.1", srv.port), r
            assert r["client_port"], r

    # every connection: found by its client's pid or a key only it touched; exactly the commands it sent, from
    # the right client
    by_conn: dict[str, list[dict[str, Any]]] = {}
    for r in cmds:
        by_conn.setdefault(r["conn_id"], []).append(r)
    found: set[str] = set()
    for label, c in conns.items():
        if c.marker is not None:
            conn = conn_of(cmds, c.marker)
        else:
            (conn,) = {r["conn_id"] for r in cmds if r["client_pid"] == c.pid}
        found.add(conn)
        mine = by_conn[conn]
        assert_rows(after_handshake(mine) if c.handshake else mine, c.rows, label)
        assert [r["seq"] for r in mine] == list(range(1, len(mine) + 1)), label
        who = {(r["client_addr"], r["client_pid"], r["client_uid"], r["client_comm"], r["user"], r["db"]) for r in mine}
        assert who == {(c.addr, c.pid, os.getuid(), c.comm, "default", 0)}, label
        if c.port is not None:
            assert {r["client_port"] for r in mine} == {c.port}, label
    assert found == set(by_conn)  # one connection each, none left over

    # the transactions: MULTI, three commands run by EXEC, EXEC
    for tag in ("tcp", "unix"):
        mine = by_conn[conn_of(cmds, f"py:{tag}")]
        i = next(i for i, r in enumerate(mine) if r["command"] == "MULTI")
        assert [(r["command"], r["tx"]) for r in mine[i : i + 5]] == [
            ("MULTI", None), ("INCRBY", "exec"), ("INCRBY", "exec"), ("GET", "exec"), ("EXEC", "exec")
        ]  # fmt: skip
        bigs = [r for r in mine if r["keys"] == [f"{tag}:big"]]
        assert bigs[0]["request_bytes"] > BIG and bigs[1]["reply_bytes"] > BIG, bigs
        assert bigs[0]["args"] == [f"<redacted:{BIG}>"], bigs[0]["args"]

    # latency and replies: every answered command has a plausible latency; error replies carry their text
    for r in cmds:
        assert 0 < r["latency_us"] < LATENCY_BOUND_US, r
        assert r["reply_bytes"] > 0 and r["reply_type"], r
        assert (r["status"] == "error") == (r["error"] is not None) == (r["reply_type"] in ("-", "!")), r
    wrongtype = [r for r in cmds if r["error"] and r["error"].startswith("WRONGTYPE")]
    assert len(wrongtype) == 3 and {r["status"] for r in wrongtype} == {"error"}
    assert {r["error"] for r in wrongtype} == {"WRONGTYPE Operation against a key holding the wrong kind of value"}

    # connections: one connect row per client connection, plus the helper's admin connection (open before the
    # auditor attached: mid_stream)
    connects = [r for r in everything if r["event"] == "connect"]
    assert {r["conn_id"] for r in connects if r["detail"] is None} == set(by_conn)
    assert [r["detail"] for r in connects if r["conn_id"] not in by_conn] == ["mid_stream"]


# --------------------------------------------------------------------------------------------- AUTH and secrets

ALICE = "user alice on >CANARY-alice-pw-1 ~app:* +@all -@dangerous"
DEFAULT_PW = "CANARY-default-pw-3"


def output_texts(out: Path, audit: Audit) -> dict[str, bytes]:
    """Everything the auditor wrote: the raw bytes of every file under --out, every Parquet file decoded to text
    with DuckDB (its pages may be compressed), the trail through `audit`, and the CLI's stdout and stderr."""
    texts = {"stdout": audit.stdout.encode(), "stderr": "\n".join(audit.stderr).encode()}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files), files
    for p in files:
        texts[str(p)] = p.read_bytes()
        if p.suffix == ".parquet":
            texts[f"{p} (decoded)"] = repr(duckdb.sql(f"SELECT * FROM read_parquet('{p}')").fetchall()).encode()
    cols, data = run_sql(out, "SELECT * FROM audit")
    texts["audit view"] = repr((cols, data)).encode()
    return texts


def test_auth_users_denials_and_no_secrets(redis_server_factory: Callable[..., RedisServer], tmp_path: Path) -> None:
    srv, out = redis_server_factory([ALICE], password=DEFAULT_PW), tmp_path / "trail"
    with audit_run(out, "--pid", str(srv.pid)) as audit:
        with RespConn(srv.port) as c:
            port = c.sock.getsockname()[1]
            replies = [
                c.call("GET", "app:k"),
                c.call("AUTH", "alice", "CANARY-wrong-pw-4"),
                c.call("AUTH", "alice", "CANARY-alice-pw-1"),
                c.call("SET", "app:k", "CANARY-value-2"),
                c.call("GET", "app:k"),
                c.call("FLUSHALL"),
                c.call("GET", "other:1"),
            ]
        assert [str(x).split(" ")[0] for x in replies] == ["NOAUTH", "WRONGPASS", "OK", "OK", "b'CANARY-value-2'",
                                                           "NOPERM", "NOPERM"], replies  # fmt: skip
        r = srv.client(unix_socket_path=srv.unix_path, username="alice", password="CANARY-alice-pw-1", protocol=3)
        try:
            assert r.get("app:k") == b"CANARY-value-2"  # HELLO 3 AUTH alice <pw>
        finally:
            r.close()
        cli(srv, "ACL", "SETUSER", "bob", "on", ">CANARY-bob-pw-5", "~*", "+@read", extra=("-a", DEFAULT_PW))
        cli(srv, "GET", "app:k", unix=True, extra=("--user", "alice", "--pass", "CANARY-alice-pw-1"))
        summary = audit.stop()
    everything = check_run(out, summary, audit)
    cmds = [r for r in everything if r["event"] == "command"]

    raw = [r for r in cmds if r["client_port"] == port]
    assert [(r["command"], r["keys"], r["status"], r["user"]) for r in raw] == [
        ("GET", ["app:k"], "error", "default"),
        ("AUTH", [], "error", "default"),
        ("AUTH", [], "ok", "alice"),
        ("SET", ["app:k"], "ok", "alice"),
        ("GET", ["app:k"], "ok", "alice"),
        ("FLUSHALL", [], "error", "alice"),
        ("GET", ["other:1"], "error", "alice"),
    ]
    assert raw[0]["error"].startswith("NOAUTH Authentication required")
    assert raw[1]["error"].startswith("WRONGPASS invalid username-password pair")
    assert raw[1]["args"] == raw[2]["args"] == ["alice", "<secret>"], raw[1]["args"]
    assert raw[3]["args"] == [f"<redacted:{len('CANARY-value-2')}>"]
    assert raw[5]["error"].startswith("NOPERM") and "flushall" in raw[5]["error"]
    assert raw[6]["error"].startswith("NOPERM") and "key" in raw[6]["error"]

    unix = [r for r in cmds if r["client_addr"] == f"unix:{srv.unix_path}"]
    py = [r for r in unix if r["client_comm"] != "redis-cli"]
    assert (py[0]["command"], py[0]["status"], py[0]["args"][:2]) == ("HELLO", "ok", ["3", "AUTH"]), py[0]
    assert (py[-1]["command"], py[-1]["keys"], py[-1]["status"], py[-1]["user"]) == ("GET", ["app:k"], "ok", "alice")
    via_cli = [(r["command"], r["status"], r["user"]) for r in unix if r["client_comm"] == "redis-cli"]
    assert via_cli == [("AUTH", "ok", "alice"), ("GET", "ok", "alice")]
    acl = [r for r in cmds if r["command"] == "ACL"]
    assert [(r["subcommand"], r["status"], r["user"]) for r in acl] == [("SETUSER", "ok", "default")]

    leaks = {where for where, text in output_texts(out, audit).items() if b"CANARY" in text}
    assert not leaks, f"a password or the planted value reached {sorted(leaks)}"
    assert b"alice" in output_texts(out, audit)["audit view"]  # the scan sees the rows' text


# --------------------------------------------------------------------------------------------- connections


def test_connections_open_before_the_attach(redis_server: RedisServer, tmp_path: Path) -> None:
    srv, out = redis_server, tmp_path / "trail"
    tcp = srv.client(single_connection_client=True)
    unix = srv.client(unix_socket_path=srv.unix_path, single_connection_client=True)
    try:
        tcp.set("mid:tcp", "before")
        unix.set("mid:unix", "before")
        port = addr_port(tcp.client_info()["addr"])
        with audit_run(out, "--pid", str(srv.pid)) as audit:
            for r, tag in ((tcp, "tcp"), (unix, "unix")):
                assert r.get(f"mid:{tag}") == b"before"
                assert r.incr(f"mid:{tag}:n") == 1
                with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                    r.lpush(f"mid:{tag}", "x")
                assert r.client_info()["resp"] == "3"
            summary = audit.stop()
    finally:
        tcp.close()
        unix.close()
    everything = check_run(out, summary, audit)
    cmds = [r for r in everything if r["event"] == "command"]
    assert summary["mid_stream_connections"] == 3  # these two and the helper's admin connection
    for tag in ("tcp", "unix"):
        conn = conn_of(cmds, f"mid:{tag}")
        mine = [r for r in cmds if r["conn_id"] == conn]
        assert [(r["command"], r["subcommand"], r["keys"], r["status"]) for r in mine] == [
            ("GET", None, [f"mid:{tag}"], "ok"),
            ("INCRBY", None, [f"mid:{tag}:n"], "ok"),
            ("LPUSH", None, [f"mid:{tag}"], "error"),
            ("CLIENT", "INFO", [], "ok"),
        ], tag
        assert {(r["user"], r["db"]) for r in mine} == {(None, None)}, tag  # unknown: joined mid-connection
        assert mine[2]["error"].startswith("WRONGTYPE")
        assert all(0 < r["latency_us"] < LATENCY_BOUND_US for r in mine), tag
        (connect,) = [r for r in everything if r["conn_id"] == conn and r["event"] == "connect"]
        assert connect["detail"] == "mid_stream"
        assert connect["client_pid"] == os.getpid()  # found through /proc at the attach
        if tag == "tcp":
            assert {(r["client_addr"], r["client_port"]) for r in mine} == {("127.0.0.1", port)}
        else:
            assert {(r["client_addr"], r["client_port"]) for r in mine} == {(f"unix:{srv.unix_path}", None)}


def test_reused_fd_numbers_are_new_connections(redis_server: RedisServer, tmp_path: Path) -> None:
    """Sequential connections (TCP, TCP, Unix, Unix, redis-cli): Redis gives each the same lowest free fd."""
    srv, out = redis_server, tmp_path / "trail"
    seen: list[dict[str, Any]] = []
    with audit_run(out, "--pid", str(srv.pid)) as audit:
        for i, kwargs in enumerate(({"port": srv.port}, {"port": srv.port}, {"unix_path": srv.unix_path}) * 2):
            with RespConn(**kwargs) as c:
                info = client_info(c.call("CLIENT", "INFO").decode())
                assert c.call("SET", f"fd:{i}", "v") == "OK"
                port = c.sock.getsockname()[1] if "port" in kwargs else None
            seen.append({"fd": info["fd"], "port": port, "addr": info["addr"], "key": f"fd:{i}"})
            deadline = time.monotonic() + 5
            while f"id={info['id']} " in srv.admin("CLIENT", "LIST").decode():  # Redis closed its end: fd free
                assert time.monotonic() < deadline, "Redis did not close the connection"
                time.sleep(0.01)
        summary = audit.stop()
    assert len({s["fd"] for s in seen}) == 1, f"Redis did not reuse the fd number: {seen}"
    everything = check_run(out, summary, audit)
    cmds = [r for r in everything if r["event"] == "command"]
    conns = [conn_of(cmds, s["key"]) for s in seen]
    assert len(set(conns)) == len(seen), conns
    for s, conn in zip(seen, conns, strict=True):
        mine = [r for r in cmds if r["conn_id"] == conn]
        assert [(r["seq"], r["command"], r["keys"], r["status"]) for r in mine] == [
            (1, "CLIENT", [], "ok"),
            (2, "SET", [s["key"]], "ok"),
        ], s
        want_addr = ("127.0.0.1", s["port"]) if s["port"] else (f"unix:{srv.unix_path}", None)
        assert {(r["client_addr"], r["client_port"]) for r in mine} == {want_addr}, s
        assert s["port"] is None or s["addr"] == f"127.0.0.1:{s['port']}"  # Redis agrees on the client port
        events = [r["event"] for r in everything if r["conn_id"] == conn]
        assert events == ["connect", "command", "command", "disconnect"], (s, events)


def reply_size(c: RespConn, *args: str) -> int:
    """Send one command on an idle raw connection and read its reply; returns the reply's size on the wire."""
    assert not c.reader.buf
    got = 0
    fill = c.reader._fill

    def counting() -> None:
        nonlocal got
        n = len(c.reader.buf)
        fill()
        got += len(c.reader.buf) - n

    c.reader._fill = counting  # type: ignore[method-assign]
    try:
        c.send_command(*args)
        assert not isinstance(c.read(), redis.RedisError)
    finally:
        c.reader._fill = fill  # type: ignore[method-assign]
    return got - len(c.reader.buf)


def test_big_structured_replies_are_copied_whole(redis_server: RedisServer, tmp_path: Path) -> None:
    """Big replies that are not one bulk string, which redis writev()s: ~20 KiB reply blocks (HGETALL, LRANGE,
    XRANGE of thousands of elements) and hundreds of tiny blocks (COMMAND, CONFIG GET: lengths only known at the
    end). A cut there is not inside a value: it loses the reply's framing (gap and parse_error rows, `unknown`)."""
    srv, out = redis_server, tmp_path / "trail"
    r = srv.client()
    try:
        r.hset("big:h", mapping={f"field:{i}": f"value:{i}" for i in range(4000)})
        r.rpush("big:l", *[f"element:{i}" for i in range(8000)])
        p = r.pipeline(transaction=False)
        for i in range(1500):
            p.xadd("big:s", {"f": f"v{i}", "g": "w"})
        p.execute()
    finally:
        r.close()
    calls = [
        ("HGETALL", "big:h"),
        ("LRANGE", "big:l", "0", "-1"),
        ("XRANGE", "big:s", "-", "+"),
        ("COMMAND",),
        ("CONFIG", "GET", "*"),
        ("SET", "big:marker", "1"),
    ]
    with audit_run(out, "--pid", str(srv.pid)) as audit:
        with RespConn(port=srv.port) as c:
            sizes = [reply_size(c, *args) for args in calls]
        summary = audit.stop()
    assert min(sizes[:4]) > 64 * 1024, sizes  # several writev()s each
    everything = check_run(out, summary, audit)  # no gap, no parse_error, nothing lost
    cmds = [r for r in everything if r["event"] == "command"]
    mine = [r for r in cmds if r["conn_id"] == conn_of(cmds, "big:marker")]
    assert [(r["command"], r["status"], r["reply_bytes"]) for r in mine] == [
        (args[0], "ok", size) for args, size in zip(calls, sizes, strict=True)
    ]


def test_a_replica_and_a_raw_sync_are_replication_links(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """A real replica (PSYNC, diskless: keep-alive newlines, then "$EOF:<mark>" RDB) and a raw SYNC (the RDB
    file without a final CRLF): the PSYNC / SYNC rows are `ok`, then what the server sends on those links is
    replication traffic, not replies (no parse_error, no unmatched reply), and REPLCONF ACK gets no reply."""
    master, replica = redis_server_factory(), redis_server_factory()
    out = tmp_path / "trail"
    with audit_run(out, "--pid", str(master.pid)) as audit:
        replica.admin("REPLICAOF", "127.0.0.1", str(master.port))
        r = master.client()
        try:
            r.set("repl:key", "v")
            deadline = time.monotonic() + 30
            while replica.admin("GET", "repl:key") != b"v":  # (diskless sync waits 5 s for more replicas)
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.1)
            r.set("repl:after", "w")
            with socket.create_connection(("127.0.0.1", master.port), timeout=30) as raw:
                raw.sendall(b"SYNC\r\n")
                got = b""
                while not (m := re.match(rb"\n*\$(\d+)\r\n", got)) or len(got) < m.end() + int(m.group(1)):
                    data = raw.recv(65536)
                    assert data, got[:40]
                    got += data
                assert got[m.end() : m.end() + 5] == b"REDIS"
                time.sleep(0.2)
        finally:
            r.close()
        time.sleep(1.5)  # a REPLCONF ACK a second from the replica
        replica.admin("REPLICAOF", "NO", "ONE")
        summary = audit.stop()
    everything = check_run(out, summary, audit)  # no parse_error, no unmatched reply
    cmds = [r for r in everything if r["event"] == "command"]
    by_cmd = Counter((r["command"], r["status"]) for r in cmds)
    assert by_cmd[("PSYNC", "ok")] == 1 and by_cmd[("SYNC", "ok")] == 1, by_cmd
    assert by_cmd[("SET", "ok")] == 2, by_cmd
    acks = [r for r in cmds if r["command"] == "REPLCONF" and r["status"] == "no_reply"]
    assert acks, by_cmd
    # the replica's link carried its RDB file and the propagated SET (the raw SYNC's file was its reply)
    link = next(r["conn_id"] for r in cmds if r["command"] == "PSYNC")
    close = next(r["detail"] for r in everything if r["event"] == "disconnect" and r["conn_id"] == link)
    assert re.search(r"replicated=[2-9]", close), close


# --------------------------------------------------------------------------------------------- restart


def test_restarted_redis_is_audited(redis_server: RedisServer, tmp_path: Path) -> None:
    srv, out = redis_server, tmp_path / "trail"
    old_pid = srv.pid
    with audit_run(out, "--port", str(srv.port)) as audit:
        with RespConn(srv.port) as c:
            assert c.call("SET", "restart:before", "1") == "OK"
        srv.restart()
        assert srv.pid != old_pid
        time.sleep(RESTART_PICKUP_S)
        with RespConn(srv.port) as c:
            assert c.call("SET", "restart:after", "1") == "OK"
            assert c.call("GET", "restart:after") == b"1"
            port = c.sock.getsockname()[1]
        pid, _ = cli(srv, "GET", "restart:after", unix=True)
        summary = audit.stop()
    everything = check_run(out, summary, audit)
    cmds = [r for r in everything if r["event"] == "command"]
    (before,) = [r for r in cmds if r["keys"] == ["restart:before"]]
    assert (before["server_pid"], before["status"]) == (old_pid, "ok")
    after = [r for r in cmds if r["client_port"] == port]
    assert [(r["command"], r["keys"], r["status"], r["server_pid"]) for r in after] == [
        ("SET", ["restart:after"], "ok", srv.pid),
        ("GET", ["restart:after"], "ok", srv.pid),
    ]
    # the old process: the helper's SHUTDOWN (no reply: the server exits) ends its connections
    old = [r for r in everything if r["server_pid"] == old_pid]
    assert [(r["command"], r["status"]) for r in old if r["event"] == "command"] == [
        ("SET", "ok"),
        ("SHUTDOWN", "no_reply"),
    ]
    assert {r["conn_id"] for r in old if r["event"] == "connect"} == {
        r["conn_id"] for r in old if r["event"] == "disconnect"
    }
    (via_cli,) = [r for r in cmds if r["client_pid"] == pid]
    assert (via_cli["command"], via_cli["status"], via_cli["server_pid"], via_cli["client_addr"]) == (
        "GET", "ok", srv.pid, f"unix:{srv.unix_path}"
    )  # fmt: skip


def test_a_daemonized_server_is_picked_up(tmp_path: Path) -> None:
    """`daemonize yes`: the exec'd redis-server forks the server and exits, so the server itself is never an exec.
    A target's fork is a target in the kernel at once: its very first clients are audited (here with --port,
    which it listens on only a moment after it starts)."""
    port, out, pidfile = free_port(), tmp_path / "trail", tmp_path / "redis.pid"
    argv = [require_tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
            "--pidfile", str(pidfile), "--dir", str(tmp_path), "--save", "",
            "--logfile", str(tmp_path / "log")]  # fmt: skip
    pid = 0
    try:
        with audit_run(out, "--port", str(port)) as audit:
            subprocess.run(argv, check=True, timeout=30)
            deadline = time.monotonic() + 10
            while not pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            pid = int(pidfile.read_text())
            while True:  # at once: the first client of the server, as soon as it listens
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the daemonized redis-server did not listen"
                    time.sleep(0.005)
            with RespConn(port) as c:
                assert c.call("SET", "daemon:k", "1") == "OK"
                assert c.call("GET", "daemon:k") == b"1"
                client_port = c.sock.getsockname()[1]
                # a BGSAVE child: a fork of the target too, one that serves no client
                assert c.call("BGSAVE") == "Background saving started"
                while b"rdb_bgsave_in_progress:0" not in c.call("INFO", "persistence"):
                    assert time.monotonic() < deadline + 10, "BGSAVE did not finish"
                    time.sleep(0.02)
                time.sleep(0.3)  # the child's exit reaches the auditor
            summary = audit.stop()
    finally:
        if pid:
            os.kill(pid, 9)
    everything = check_run(out, summary, audit)
    mine = [r for r in everything if r["event"] == "command" and r["client_port"] == client_port]
    assert [(r["command"], r["status"], r["server_pid"]) for r in mine if r["command"] != "INFO"] == [
        ("SET", "ok", pid),
        ("GET", "ok", pid),
        ("BGSAVE", "ok", pid),
    ]
    assert {r["server_pid"] for r in everything if r["server_pid"] is not None} == {pid}
    assert summary["servers"] == 1, summary  # the BGSAVE child was dropped when it exited


# --------------------------------------------------------------------------------------------- TLS


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, with the openssl command line."""
    ssl = require_tool("openssl")
    p = {k: d / f"{k}.pem" for k in ("ca", "ca_key", "crt", "key")}
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    run([ssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=redis-audit test CA",
         "-keyout", str(p["ca_key"]), "-out", str(p["ca"])])  # fmt: skip
    csr = d / "srv.csr"
    run([ssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(p["key"]),
         "-out", str(csr)])  # fmt: skip
    ext = d / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    run([ssl, "x509", "-req", "-in", str(csr), "-CA", str(p["ca"]), "-CAkey", str(p["ca_key"]), "-CAcreateserial",
         "-days", "2", "-extfile", str(ext), "-out", str(p["crt"])])  # fmt: skip
    return p


def split_record_set(port: int, ca: Path, key: str) -> bytes:
    """SET key 1 over TLS, its record sent in two TCP writes a moment apart: the server's first SSL_read finds
    half a record and returns -1 (SSL_ERROR_WANT_READ). Returns the reply."""
    ctx = ssl.create_default_context(cafile=str(ca))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:

        def until(step: Callable[[], Any]) -> Any:
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    if pending := out.read():
                        sock.sendall(pending)
                    inc.write(sock.recv(65536))

        until(tls.do_handshake)
        if pending := out.read():
            sock.sendall(pending)
        tls.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(key), key.encode()))
        record = out.read()
        sock.sendall(record[:5])  # the record header alone
        time.sleep(0.3)
        sock.sendall(record[5:])
        return until(tls.read)


def tls_server(factory: Callable[..., RedisServer], d: Path) -> tuple[RedisServer, int, dict[str, Path]]:
    """A redis-server with a TLS port besides its plain port and Unix socket; the ACL user alice."""
    certs = make_certs(d)
    tls_port = free_port()
    conf = [f"tls-port {tls_port}", f"tls-cert-file {certs['crt']}", f"tls-key-file {certs['key']}",
            f"tls-ca-cert-file {certs['ca']}", "tls-auth-clients no", ALICE]  # fmt: skip
    return factory(conf), tls_port, certs


def test_tls_connections_are_audited_in_plaintext(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """`run --tls`, a TLS port (OpenSSL in redis-server): the probes on SSL_read / SSL_write give the plaintext, none
    of the ciphertext is taken for commands, secrets sent over TLS stay out of the trail."""
    srv, tls_port, certs = tls_server(redis_server_factory, tmp_path)
    out = tmp_path / "trail"
    tls_cli = ("--tls", "--cacert", str(certs["ca"]))
    early = redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(certs["ca"]))
    assert early.ping()  # a TLS connection older than the auditor: its handshake is not seen
    before = srv.snapshot()
    with audit_run(out, "--pid", str(srv.pid), "--tls") as audit:
        assert early.set("tls:early", "1") and early.get("tls:early") == b"1"
        early.close()
        r = redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(certs["ca"]))
        try:
            pipe = r.pipeline(transaction=False)
            for i in range(300):
                pipe.set(f"tls:{i}", "x" * 40)
            pipe.execute()
            with r.pipeline(transaction=True) as tx:
                tx.incr("tls:n").get("tls:0").execute()
            r.set("tls:big", "v" * BIG)  # 1 MB each way: many TLS records, SSL_read served from OpenSSL's buffer
            assert len(r.get("tls:big") or b"") == BIG
            with pytest.raises(redis.ResponseError):
                r.lpush("tls:0", "not a list")
        finally:
            r.close()
        # an SSL_read that returns -1 (half a record): its int return is not 4294967295 bytes of plaintext
        assert split_record_set(tls_port, certs["ca"], "tls:split") == b"+OK\r\n"
        p = subprocess.run(
            [require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(tls_port), *tls_cli, "--no-auth-warning"],
            input="AUTH alice CANARY-alice-pw-1\nSET app:t CANARY-tls-value-6\nGET app:t\n",
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert p.stdout.split() == ["OK", "OK", "CANARY-tls-value-6"], p.stdout
        cli(srv, "SET", "plain:k", "v")  # the plain port of the same server, meanwhile
        summary = audit.stop()
    delta = srv.snapshot().delta(before)
    everything = check_run(out, summary, audit)  # (no parse_error and no gap: no ciphertext was parsed)
    cmds = [r for r in everything if r["event"] == "command"]
    got = Counter(command_key(r) for r in counted_by_redis(cmds))
    assert dict(got) == {k: s["calls"] + s["rejected_calls"] for k, s in delta["commandstats"].items()}

    tls = [r for r in cmds if r["server_port"] == tls_port]
    assert {r["client_comm"] for r in tls} >= {"redis-cli"} and all(r["client_addr"] == "127.0.0.1" for r in tls)
    sets = sum(r["command"] == "SET" and r["keys"][0].startswith("tls:") for r in tls)
    assert sets == 303  # 300 pipelined, tls:big, tls:early, tls:split
    big = [r for r in tls if r["keys"] == ["tls:big"]]
    assert [(r["command"], r["status"]) for r in big] == [("SET", "ok"), ("GET", "ok")]
    assert big[0]["request_bytes"] > BIG and big[1]["reply_bytes"] > BIG
    assert [r["status"] for r in tls if r["command"] == "LPUSH"] == ["error"]
    via_cli = [(r["command"], r["status"], r["user"]) for r in tls if r["client_comm"] == "redis-cli"]
    assert via_cli[-3:] == [("AUTH", "ok", "alice"), ("SET", "ok", "alice"), ("GET", "ok", "alice")], via_cli
    assert [r["server_port"] for r in cmds if r["keys"] == ["plain:k"]] == [srv.port]
    assert [(r["command"], r["status"]) for r in tls if r["keys"] == ["tls:early"]] == [("SET", "ok"), ("GET", "ok")]
    assert summary["tls_servers"] == 1 and summary["tls_unattributed"] == 0
    leaks = {where for where, text in output_texts(out, audit).items() if b"CANARY" in text}
    assert not leaks, f"a password or the planted value reached {sorted(leaks)}"


def test_the_cluster_bus_is_not_taken_for_clients(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Two cluster nodes: their bus links (port + 10000, binary messages starting "RCmb") are accepted and
    connected sockets of the targets like any client's, but carry no command. Recognised in the kernel by their
    first bytes, they are not captured (no parse_error rows), end as `cluster_bus` and are counted."""
    conf = ["cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 5000"]
    # (the bus port is port + 10000 by default: past 65535 for a high random port)
    bus_a, bus_b = free_port(), free_port()
    a = redis_server_factory([*conf, f"cluster-port {bus_a}"])
    b = redis_server_factory([*conf, f"cluster-port {bus_b}"])
    out = tmp_path / "trail"
    with audit_run(out, "--pid", str(a.pid), "--pid", str(b.pid)) as audit:
        assert a.admin("CLUSTER", "MEET", "127.0.0.1", str(b.port), str(bus_b)) == "OK"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = [srv.admin("CLUSTER", "INFO") for srv in (a, b)]
            if all(b"cluster_known_nodes:2" in i for i in info):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the nodes did not meet")
        time.sleep(1.5)  # node pings go over the bus meanwhile
        _, reply = cli(a, "CLUSTER", "MYID")
        assert reply.strip()
        cli(b, "PING")
        summary = audit.stop()
    everything = check_run(out, summary, audit)  # (no parse_error, no gap)
    assert summary["cluster_bus_connections"] >= 1, summary
    bus = [r for r in everything if r["event"] == "disconnect" and (r["detail"] or "").startswith("cluster_bus")]
    assert len(bus) == summary["cluster_bus_connections"], bus
    cmds = [r["command"] for r in everything if r["event"] == "command"]  # (the helper's CLUSTER MEET / INFO too)
    assert set(cmds) == {"CLUSTER", "PING"} and cmds[-1] == "PING"


def test_tls_without_the_ssl_probes_is_one_row_per_connection(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Without --tls (the default: the SSL probes cost much per request here) a TLS connection is recognised by its
    first bytes: no ciphertext reaches the parsers (no parse_error rows), one gap row says the connection was not
    audited, the summary counts it and stderr says how to audit it; the plain port is audited as ever."""
    srv, tls_port, certs = tls_server(redis_server_factory, tmp_path)
    out = tmp_path / "trail"
    with audit_run(out, "--pid", str(srv.pid)) as audit:
        for _ in range(3):
            p = subprocess.run(
                [require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(tls_port), "--tls", "--cacert",
                 str(certs["ca"]), "SET", "tls:k", "CANARY-tls-value-7"],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            assert p.stdout.strip() == "OK"
        cli(srv, "SET", "plain:k", "v")
        summary = audit.stop()
    everything = rows(out)
    tls_conns = {r["conn_id"] for r in everything if r["event"] == "connect" and r["server_port"] == tls_port}
    gaps = [r for r in everything if r["event"] == "gap"]
    assert len(tls_conns) == 3 and {r["conn_id"] for r in gaps} == tls_conns and len(gaps) == 3, gaps
    assert all(r["detail"].startswith("source: TLS: encrypted, not audited") for r in gaps)
    assert not [r for r in everything if r["event"] == "parse_error" or r["status"] == "unknown"]
    assert not [r for r in everything if r["event"] == "command" and r["server_port"] == tls_port]
    assert [(r["command"], r["status"]) for r in everything if r["keys"] == ["plain:k"]] == [("SET", "ok")]
    assert summary["tls_connections_unread"] == 3 and summary["tls_servers"] == 0, summary
    assert summary["parse_errors"] == 0 and summary["lost_events"] == 0, summary
    note = [line for line in audit.stderr if "3 TLS connection(s) were not audited" in line and "--tls" in line]
    assert note, audit.stderr

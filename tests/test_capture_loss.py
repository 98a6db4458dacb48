"""Packets a capture dropped (tcpdump's "packets dropped by kernel"): the peer's ACK shows the bytes were
received, so the hole is a gap at once. One lost request costs one command, not every command after it on
the connection (they used to wait behind the hole, their replies going by unmatched, until the end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

CLI = [sys.executable, "-m", "auditor.cli"]
ROUNDS = 150  # x 4 commands


def replay(pcap: Path, port: int, out: Path, pure: bool) -> tuple[dict, list[dict]]:
    env = {**os.environ, "REDIS_AUDIT_PURE": "1"} if pure else None
    p = subprocess.run(
        [*CLI, "replay", str(pcap), "--port", str(port), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    q = subprocess.run(
        [*CLI, "query", "--out", str(out), "--json", "--limit", "100000",
         "SELECT event, seq, command, status, error, detail, lost_bytes FROM audit ORDER BY ts, seq"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    return json.loads(p.stdout), json.loads(q.stdout)


def drop_packets(src: Path, dst: Path, port: int, which: set[int]) -> list[bytes]:
    """A copy of a loopback capture without the client's data segments numbered in ``which``."""
    dropped = []
    with src.open("rb") as f, dst.open("wb") as g:
        r = dpkt.pcap.Reader(f)
        w = dpkt.pcap.Writer(g, linktype=r.datalink(), snaplen=262144)
        n = 0
        for ts, buf in r:
            tcp = dpkt.ethernet.Ethernet(buf).data.data
            if tcp.dport == port and tcp.data:
                n += 1
                if n in which:
                    dropped.append(bytes(tcp.data))
                    continue
            w.writepkt(buf, ts)
    return dropped


@pytest.fixture
def capture(redis_server_factory, tcpdump_factory, tmp_path_factory) -> tuple[Path, int]:
    """One raw connection, request then reply: SET ok, LPOP error (WRONGTYPE), GET ok, INCR ok; then a 512 KiB
    value (loopback carries it in ~64 KiB segments) and one more SET."""
    srv = redis_server_factory()
    path = tmp_path_factory.mktemp("loss") / "full.pcap"
    for _attempt in range(3):  # tcpdump itself may drop packets on a busy machine: capture again
        srv.admin("FLUSHALL")
        with tcpdump_factory(path, port=srv.port) as td, srv.raw() as c:
            for i in range(ROUNDS):
                assert c.call("SET", "k", f"v{i}") == "OK"
                assert str(c.call("LPOP", "k")).startswith("WRONGTYPE")
                assert c.call("GET", "k") == f"v{i}".encode()
                assert c.call("INCR", "n") == i + 1
            assert c.call("SET", "big", b"x" * (1 << 19)) == "OK"
            assert c.call("SET", "after", "1") == "OK"
        if td.dropped == 0:
            return path, srv.port
    pytest.fail(f"tcpdump dropped packets in 3 captures ({td.dropped} in the last): no whole capture to cut")


def expected_status(command: str) -> str:
    return "error" if command == "LPOP" else "ok"


@pytest.mark.root
@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_a_dropped_request_costs_one_command(capture: tuple[Path, int], tmp_path: Path, pure: bool) -> None:
    full, port = capture
    s, rows = replay(full, port, tmp_path / "full", pure)
    assert s["gaps"] == 0 and s["unmatched_replies"] == 0 and s["commands"] == 4 * ROUNDS + 2
    cut = tmp_path / "cut.pcap"
    # request 302: the LPOP of round 75, one segment
    (lost,) = drop_packets(full, cut, port, {2 + 4 * 75})
    assert b"LPOP" in lost
    s, rows = replay(cut, port, tmp_path / "cut", pure)
    cmds = [r for r in rows if r["event"] == "command"]
    gaps = [r for r in rows if r["event"] == "gap"]
    assert len(cmds) == 4 * ROUNDS + 1 and s["commands"] == len(cmds)
    assert [(g["detail"], g["lost_bytes"]) for g in gaps] == [("to_server: not captured (acknowledged)", len(lost))]
    assert s["unmatched_replies"] == 1 and s["no_reply"] == 0 and s["unknown"] == 0  # the lost LPOP's reply
    assert all(r["status"] == expected_status(r["command"]) for r in cmds), [
        (r["seq"], r["command"], r["status"]) for r in cmds if r["status"] != expected_status(r["command"])
    ][:5]


@pytest.mark.root
@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_a_segment_dropped_inside_a_value(capture: tuple[Path, int], tmp_path: Path, pure: bool) -> None:
    """A hole inside a bulk value is skipped without losing the command: its row says how many bytes."""
    full, port = capture
    cut = tmp_path / "cut.pcap"
    first_big = 4 * ROUNDS + 1  # the 1 MB SET's first segment; drop its third
    (lost,) = drop_packets(full, cut, port, {first_big + 2})
    assert set(lost) == {ord("x")}
    s, rows = replay(cut, port, tmp_path / "cut", pure)
    cmds = [r for r in rows if r["event"] == "command"]
    assert len(cmds) == 4 * ROUNDS + 2 and all(r["status"] == expected_status(r["command"]) for r in cmds)
    big = [r for r in cmds if r["lost_bytes"]]
    assert [(r["command"], r["lost_bytes"]) for r in big] == [("SET", len(lost))]
    assert s["truncated_commands"] == 1 and s["truncated_bytes"] == len(lost)
    assert s["gaps"] == 0 and s["unmatched_replies"] == 0 and s["no_reply"] == 0

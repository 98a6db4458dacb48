"""`replay` without --port: Redis on a port other than 6379 is found by what its clients send (a capture made
elsewhere, Redis in the cloud on 10625...), and nothing else is taken for Redis: HTTP, TLS, a replication
stream or a pub/sub reply coming from a Redis port."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pcapbuild import CLIENT, SERVER, Capture, cmd

from auditor import limits
from auditor.sources.portscan import detect_ports, looks_like_command

CLI = [sys.executable, "-m", "auditor.cli"]


def replay(*args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, "replay", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return p


def test_command_heads() -> None:
    assert looks_like_command(cmd("SET", "k", "v"))
    assert looks_like_command(cmd("client", "setname", "x"))  # any case, a container command
    assert looks_like_command(b"*1\r\n$4\r\nPING\r\n")
    assert not looks_like_command(b"*1\r\n$4\r\nPIN")  # cut before the name ends
    assert not looks_like_command(cmd("HELLX", "3"))  # not a command: an array of words
    assert not looks_like_command(b"*3\r\n$9\r\nsubscribe\r\n"[:10])
    assert not looks_like_command(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not looks_like_command(b"*0\r\n") and not looks_like_command(b"")


@pytest.mark.root
def test_replay_finds_redis_on_another_port(redis_server, tcpdump_factory, tmp_path: Path) -> None:
    """A real redis-server on a random port, real clients (redis-cli, redis-py with pub/sub), tcpdump."""
    path = tmp_path / "other_port.pcap"
    with tcpdump_factory(path, port=redis_server.port):
        redis_server.cli("SET", "k", "v")
        redis_server.cli("GET", "k")
        sub = redis_server.client()
        ps = sub.pubsub()
        ps.subscribe("news")  # its reply, "*3 subscribe news 1", comes from the Redis port
        assert ps.get_message(timeout=2)["type"] == "subscribe"
        redis_server.client().publish("news", "hello")
        deadline = time.monotonic() + 5
        while (m := ps.get_message(timeout=0.5)) is None and time.monotonic() < deadline:
            pass
        assert m is not None and m["data"] == b"hello"
        ps.close()
        sub.close()
    assert detect_ports([path], {limits.DEFAULT_PORT}).keys() == {redis_server.port}
    p = replay(str(path), "--out", str(tmp_path / "t"), "--json")
    s = json.loads(p.stdout)
    assert s["server_ports"] == f"{limits.DEFAULT_PORT},{redis_server.port}"
    # SET, GET, and redis-py's SUBSCRIBE and PUBLISH (plus what redis-py sends on connect, if anything)
    assert s["commands"] >= 4 and s["parse_errors"] == 0 and s["unmatched_replies"] == 0
    assert f"port {redis_server.port}" in p.stderr and "--port" in p.stderr
    # with --port given, nothing is guessed
    p = replay(str(path), "--port", "6380", "--out", str(tmp_path / "u"), "--json")
    s = json.loads(p.stdout)
    assert s["server_ports"] == "6380" and s["commands"] == 0 and s["other_port_packets"] > 0
    assert "pass --port" in p.stderr


def _mid_stream(c: Capture, src: bytes, sport: int, dst: bytes, dport: int, data: bytes) -> None:
    c._frame(src, dst, sport, dport, 777, 888, 0x18, data)


def test_other_traffic_is_not_taken_for_redis(tmp_path: Path) -> None:
    c = Capture()
    c.conversation([(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n")], sport=8080)
    c.conversation([(bytes.fromhex("1603010200010001fc0303") + b"\x00" * 64, b"\x16\x03\x03\x00\x10")], sport=443)
    c.conversation([(cmd("HELLX", "a"), b"-ERR\r\n")], sport=9999)  # RESP, but no command named so
    # a replication stream caught mid-way: the master (6379) sends commands to the replica's port
    _mid_stream(c, SERVER, 6379, CLIENT, 45000, cmd("SET", "k", "v") + cmd("PING"))
    # a Redis found on 10625; its pub/sub reply to the client's port names a command (subscribe)
    c.conversation([(cmd("SUBSCRIBE", "ch"), cmd("subscribe", "ch") + b":1\r\n")], cport=51000, sport=10625)
    path = c.write(tmp_path / "mixed.pcap")
    assert detect_ports([path], {limits.DEFAULT_PORT}) == {10625: 1}
    s = json.loads(replay(str(path), "--out", str(tmp_path / "t"), "--json").stdout)
    assert s["server_ports"] == "6379,10625" and s["commands"] == 1  # SUBSCRIBE (the stream: a mid-way link)


def test_survey_reads_only_the_start_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Capture()
    c.conversation([(b"x" * 60_000, b"y" * 60_000)] * 40, sport=8080)  # ~4.8 MB of something else first
    c.conversation([(cmd("GET", "k"), b"$-1\r\n")], sport=7000)
    path = c.write(tmp_path / "late.pcap")
    assert detect_ports([path], {6379}) == {7000: 1}
    monkeypatch.setattr(limits, "PORT_SURVEY_BYTES", 2 * 1024 * 1024)
    assert detect_ports([path], {6379}) == {}
    assert detect_ports([tmp_path / "missing.pcap", path.parent / "late.pcap"], {7000}) == {}  # no error here


def test_nothing_found_says_how_to_pass_the_port(tmp_path: Path) -> None:
    c = Capture()
    c.conversation([(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n\r\n")], sport=8080)
    path = c.write(tmp_path / "http.pcap")
    p = replay(str(path), "--out", str(tmp_path / "t"), "--json")
    s = json.loads(p.stdout)
    assert s["commands"] == 0 and s["server_ports"] == "6379"
    assert s["other_port_packets"] == 6  # the handshake, 2 segments, 2 FINs
    assert "no Redis commands on port 6379" in p.stderr and "pass --port" in p.stderr

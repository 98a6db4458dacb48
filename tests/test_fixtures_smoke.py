"""The shared fixtures themselves: redis-server starts/stops, INFO parses, tcpdump captures."""

from __future__ import annotations

import os

import dpkt
import pytest
from redis_fixtures import RedisError, RedisServer, RespConn, parse_commandstats, parse_errorstats


def test_server_starts_on_tcp_and_unix(redis_server: RedisServer) -> None:
    assert redis_server.port > 0
    assert os.path.exists(redis_server.unix_path)
    os.kill(redis_server.pid, 0)  # alive
    assert redis_server.cli("PING").stdout.strip() == "PONG"
    assert redis_server.cli("PING", unix=True).stdout.strip() == "PONG"
    r = redis_server.client()
    r.set("k", "v")
    assert r.get("k") == b"v"
    r.close()


def test_cleanup_stops_process() -> None:
    srv = RedisServer().start()
    pid, workdir = srv.pid, srv.workdir
    srv.cleanup()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert workdir is not None and not workdir.exists()


def test_restart_keeps_port_and_loses_data(redis_server: RedisServer) -> None:
    port, pid = redis_server.port, redis_server.pid
    redis_server.cli("SET", "k", "v")
    redis_server.restart()
    assert redis_server.port == port and redis_server.pid != pid
    assert redis_server.cli("EXISTS", "k").stdout.strip() == "0"


def test_password_and_extra_config(redis_server_factory) -> None:
    srv = redis_server_factory(["user alice on >alice-pw ~app:* +@read"], password="s3cret")
    before = srv.snapshot()
    with RespConn(srv.port) as c:
        assert str(c.call("PING")).startswith("NOAUTH")
        assert c.call("AUTH", "alice", "alice-pw") == "OK"
        assert str(c.call("SET", "app:1", "x")).startswith("NOPERM")
    assert srv.commandstats()["auth"].calls == 2  # raw counters include the helper's own admin AUTH ...
    delta = srv.snapshot().delta(before)
    assert delta["commandstats"]["auth"]["calls"] == 1  # ... the delta does not
    assert delta["commandstats"]["set"] == {"calls": 0, "rejected_calls": 1, "failed_calls": 0}
    assert delta["errorstats"] == {"NOAUTH": 1, "NOPERM": 1}


def test_commandstats_and_delta(redis_server: RedisServer) -> None:
    before = redis_server.snapshot()
    redis_server.cli("SET", "k", "v")
    redis_server.cli("GET", "k")
    redis_server.cli("GET", "k")
    redis_server.cli("INCR", "k")  # ERR value is not an integer
    redis_server.cli("NOSUCHCOMMAND")
    stats = redis_server.commandstats()
    assert stats["get"].calls == 2
    assert stats["incr"].failed_calls == 1
    d = redis_server.snapshot().delta(before)
    assert d["commandstats"] == {
        "get": {"calls": 2, "rejected_calls": 0, "failed_calls": 0},
        "incr": {"calls": 1, "rejected_calls": 0, "failed_calls": 1},
        "set": {"calls": 1, "rejected_calls": 0, "failed_calls": 0},
    }
    assert d["errorstats"] == {"ERR": 2}
    assert d["connections"] == 5
    assert d["commands_processed"] == 4


def test_info_parsers() -> None:
    text = (
        "# Commandstats\r\ncmdstat_client|reply:calls=3,usec=4,usec_per_call=1.33,rejected_calls=1,failed_calls=0\r\n"
        "cmdstat_get:calls=7,usec=9,usec_per_call=1.29\r\n\r\n# Errorstats\r\nerrorstat_WRONGPASS:count=2\r\n"
    )
    stats = parse_commandstats(text)
    assert stats["client|reply"].calls == 3 and stats["client|reply"].rejected_calls == 1
    assert stats["get"].failed_calls == 0
    assert parse_errorstats(text) == {"WRONGPASS": 2}


def test_resp_conn_reads_resp3(redis_server: RedisServer) -> None:
    with RespConn(redis_server.port) as c:
        hello = c.call("HELLO", "3")
        assert hello[b"proto"] == 3
        assert c.call("GET", "missing") is None
        assert isinstance(c.call("NOSUCH"), RedisError)
        assert c.errors and c.errors[0].startswith("ERR unknown command")


def test_tcpdump_captures_ping(redis_server: RedisServer, tcpdump_factory, tmp_path) -> None:
    pcap = tmp_path / "ping.pcap"
    with tcpdump_factory(pcap, port=redis_server.port) as dump:
        assert redis_server.cli("PING").stdout.strip() == "PONG"
    payload = b""
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip.data, dpkt.tcp.TCP):
                payload += bytes(ip.data.data)
    assert b"*1\r\n$4\r\nPING\r\n" in payload
    assert b"+PONG\r\n" in payload
    assert dump.stats.get("captured", 0) >= 6  # handshake, request, reply, close
    assert dump.stats.get("dropped by kernel", 0) == 0

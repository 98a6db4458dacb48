"""Bad input end to end, through the CLI: counted rows or one clear error line,
never a traceback, a hang or unbounded memory; what came before is kept."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from golden import commands, rows
from pcapbuild import Capture, cmd

CLI = [sys.executable, "-m", "auditor.cli"]


def replay(pcap: Path, out: Path, *extra: str, mem_mb: int = 1024) -> subprocess.CompletedProcess:
    def limit() -> None:  # a leak or an unbounded buffer fails here instead of swapping
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb * 1024 * 1024 * 4, mem_mb * 1024 * 1024 * 4))

    return subprocess.run(
        [*CLI, "replay", str(pcap), "--out", str(out), "--json", *extra],
        capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )  # fmt: skip


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr[-2000:]


def summary(p: subprocess.CompletedProcess) -> dict:
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_huge_declared_lengths_are_parse_errors_then_resync(tmp_path: Path) -> None:
    c = Capture()
    c.conversation(
        [
            (cmd("SET", "before", "v"), b"+OK\r\n"),
            (b"*1\r\n$9223372036854775808\r\nxx\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        ],
        cport=40001,
    )
    c.conversation([(b"*99999999999999999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n")], 40002)
    c.conversation([(cmd("GET", "after"), b"$-1\r\n")], cport=40003)
    p = replay(c.write(tmp_path / "h.pcap"), tmp_path / "t")
    no_traceback(p)
    assert p.returncode == 0
    s = summary(p)
    assert s["parse_errors"] == 2 and s["commands"] == 2
    pe = rows(tmp_path / "t", "event = 'parse_error'")
    assert all(r["status"] == "error" and r["error"].startswith("ERR Protocol error") for r in pe)
    assert [r["command"] for r in commands(tmp_path / "t")] == ["SET", "GET"]


def test_reply_nested_10000_deep(tmp_path: Path) -> None:
    deep = b"*1\r\n" * 10_000 + b":1\r\n"
    c = Capture()
    c.conversation([(cmd("EVAL", "return 1", "0"), deep), (cmd("PING"), b"+PONG\r\n")])
    p = replay(c.write(tmp_path / "d.pcap"), tmp_path / "t")
    no_traceback(p)
    assert p.returncode == 0
    s = summary(p)
    assert s["parse_errors"] >= 1 and s["commands"] == 2


def test_100k_pipelined_commands_without_reply(tmp_path: Path) -> None:
    burst = b"".join(cmd("SET", f"k{i}", "v") for i in range(100_000))
    c = Capture()
    c.conversation([(burst, b"")])
    p = replay(c.write(tmp_path / "p.pcap"), tmp_path / "t")
    no_traceback(p)
    assert p.returncode == 0
    s = summary(p)
    assert s["commands"] == 100_000 and s["no_reply"] + s["unknown"] == 100_000


def test_garbage_both_ways_and_non_redis_traffic(tmp_path: Path) -> None:
    rnd = bytes((i * 7919 + 13) % 256 for i in range(200_000))
    c = Capture()
    c.conversation([(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"")], cport=40010)
    c.conversation([(rnd, rnd[::-1])], cport=40011)
    c.conversation([(cmd("PING"), b"+PONG\r\n")], cport=40012)
    p = replay(c.write(tmp_path / "g.pcap"), tmp_path / "t")
    no_traceback(p)
    assert p.returncode == 0
    assert "PING" in [r["command"] for r in commands(tmp_path / "t")]


def test_truncated_file_keeps_rows_and_counts_the_loss(tmp_path: Path) -> None:
    c = Capture()
    c.conversation([(cmd("SET", "a", "1"), b"+OK\r\n")] * 50)
    full = c.write(tmp_path / "full.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(full[: len(full) * 2 // 3])
    p = replay(cut, tmp_path / "t")
    no_traceback(p)
    assert p.returncode == 0
    s = summary(p)
    assert 20 < s["commands"] < 50 and s["lost_events"] >= 1
    gaps = rows(tmp_path / "t", "event = 'gap'")
    assert any("truncated" in (g["detail"] or "") for g in gaps)


def test_not_a_capture_is_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello, not a pcap\n" * 10)
    p = replay(f, tmp_path / "t")
    no_traceback(p)
    assert p.returncode != 0
    assert "not a pcap or pcapng" in p.stderr and "hint:" in p.stderr


def test_missing_file_and_missing_out_parent(tmp_path: Path) -> None:
    p = replay(tmp_path / "nope.pcap", tmp_path / "t")
    no_traceback(p)
    assert p.returncode != 0 and "cannot read" in p.stderr
    c = Capture()
    c.conversation([(cmd("PING"), b"+PONG\r\n")])
    p = replay(c.write(tmp_path / "ok.pcap"), tmp_path / "no" / "such" / "dir")
    no_traceback(p)
    assert p.returncode != 0 and "parent of --out does not exist" in p.stderr


def test_planted_secrets_and_values_never_reach_the_trail(tmp_path: Path) -> None:
    canaries = ["CANARY-pw-1111", "CANARY-pw-2222", "CANARY-val-3333", "CANARY-hash-4444", "CANARY-cfg-5555"]
    c = Capture()
    c.conversation(
        [
            (cmd("AUTH", canaries[0]), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
            (cmd("AUTH", "app", canaries[1]), b"+OK\r\n"),
            (cmd("SET", "user:42", canaries[2]), b"+OK\r\n"),
            (cmd("GET", "user:42"), b"$15\r\n" + canaries[2].encode() + b"\r\n"),
            (cmd("ACL", "SETUSER", "bob", "on", f">{canaries[3]}", "~*", "+@all"), b"+OK\r\n"),
            (cmd("CONFIG", "SET", "requirepass", canaries[4]), b"+OK\r\n"),
            (cmd("HELLO", "3", "AUTH", "app", canaries[1]), b"%1\r\n$5\r\nproto\r\n:3\r\n"),
            (cmd("EVAL", f"return '{canaries[2]}'", "0"), b"$15\r\n" + canaries[2].encode() + b"\r\n"),
            (cmd(canaries[0]), f"-ERR unknown command '{canaries[0]}', with args beginning with: \r\n".encode()),
            (cmd("MIGRATE", "h", "1", "", "0", "5", "AUTH", canaries[1], "KEYS", "a"), b"+NOKEY\r\n"),
        ]
    )
    pcap = c.write(tmp_path / "c.pcap")
    for keys in ("mask", "plain", "hash", "drop"):
        out = tmp_path / keys
        env = {**os.environ, "REDIS_AUDIT_KEY_FILE": str(tmp_path / "hmac.key")}
        p = subprocess.run(
            [*CLI, "replay", str(pcap), "--out", str(out), "--keys", keys],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        no_traceback(p)
        assert p.returncode == 0, p.stderr
        q = subprocess.run(
            [*CLI, "query", "--out", str(out), "--json", "SELECT * FROM audit"], capture_output=True, text=True
        )
        everything = p.stdout + p.stderr + q.stdout + q.stderr
        everything += "".join(f.read_bytes().decode("latin-1") for f in out.rglob("*") if f.is_file())
        for canary in canaries:
            assert canary not in everything, (keys, canary)
        assert "CANARY" not in everything
        cmds = json.loads(q.stdout)
        assert len([r for r in cmds if r["event"] == "command"]) == 10


def test_capture_split_in_parts_replays_as_one(tmp_path: Path) -> None:
    """tcpdump -C / --write-pcap rotation: a connection spanning files stays one connection."""
    c = Capture()
    c.conversation([(cmd("AUTH", "app", "pw"), b"+OK\r\n"), *[(cmd("INCR", "n"), b":1\r\n")] * 20], cport=40100)
    whole = c.write(tmp_path / "whole.pcap")
    head, recs = whole.read_bytes()[:24], c.records
    (tmp_path / "part.pcap").write_bytes(head + b"".join(recs[: len(recs) // 2]))
    (tmp_path / "part.pcap.1").write_bytes(head + b"".join(recs[len(recs) // 2 :]))
    a = subprocess.run([*CLI, "replay", str(whole), "--out", str(tmp_path / "a")], capture_output=True, timeout=60)
    b = subprocess.run(
        [*CLI, "replay", str(tmp_path / "part.pcap"), str(tmp_path / "part.pcap.1"), "--out", str(tmp_path / "b")],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert a.returncode == 0 and b.returncode == 0
    ra, rb = commands(tmp_path / "a"), commands(tmp_path / "b")
    assert len(ra) == 21 and [(r["seq"], r["user"], r["status"]) for r in rb] == [
        (r["seq"], r["user"], r["status"]) for r in ra
    ]
    assert all(r["user"] == "app" for r in rb[1:])

"""Replay every capture (golden, synthetic, shared real-world) and compare the
whole trail with the expected rows stored beside it.

Expected rows are regenerated, never hand-edited:
    REDIS_AUDIT_REGEN=1 .venv/bin/pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from golden import EXPECTED, captures, commands, manifest, rows, run_replay

REGEN = os.environ.get("REDIS_AUDIT_REGEN") == "1"
CAPTURES = captures()


@pytest.mark.parametrize(("name", "path", "ports"), CAPTURES, ids=[c[0] for c in CAPTURES])
def test_trail_matches_expected_rows(name: str, path: Path, ports: set[int], tmp_path: Path) -> None:
    run_replay(path, ports, tmp_path / "trail")
    got = rows(tmp_path / "trail")
    expected_file = EXPECTED / f"{name}.jsonl"
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in got)
    if REGEN:
        EXPECTED.mkdir(exist_ok=True)
        expected_file.write_text(text)
        return
    assert expected_file.exists(), f"no expected rows for {name}: run with REDIS_AUDIT_REGEN=1"
    want = [json.loads(line) for line in expected_file.read_text().splitlines()]
    assert [json.loads(json.dumps(r, sort_keys=True, default=str)) for r in got] == want


def test_no_stale_expected_files() -> None:
    names = {f"{c[0]}.jsonl" for c in CAPTURES}
    stale = sorted(p.name for p in EXPECTED.glob("*.jsonl") if p.name not in names)
    assert not stale


GOLDEN = sorted(manifest().items())


@pytest.mark.parametrize(("name", "cap"), GOLDEN, ids=[n for n, _ in GOLDEN])
def test_command_rows_match_redis_commandstats(name: str, cap: dict, tmp_path: Path) -> None:
    """Every command Redis counted (executed or rejected) has exactly one row."""
    from golden import PCAPS

    run_replay(PCAPS / cap["file"], set(cap["server_ports"]), tmp_path / "t")
    got = Counter()
    executed_or_rejected = [r for r in commands(tmp_path / "t") if r["tx"] not in ("aborted", "discarded")]
    for r in executed_or_rejected:
        key = r["command"].lower() + (f"|{r['subcommand'].lower()}" if r["subcommand"] else "")
        got[key] += 1
    stats = cap["expected"]["commandstats"]
    for cmd, s in stats.items():
        assert got[cmd] == s["calls"] + s["rejected_calls"], cmd
    extra = {k: n for k, n in got.items() if k not in stats}
    # Rows Redis did not count: unknown commands / subcommands (rejected before counting).
    for r in executed_or_rejected:
        key = r["command"].lower() + (f"|{r['subcommand'].lower()}" if r["subcommand"] else "")
        if key in extra:
            assert r["status"] in ("error", "no_reply"), (key, r["status"], r["error"])
            if r["status"] == "error":
                assert "unknown" in r["error"] or "Protocol error" in r["error"] or "wrong number" in r["error"], r


def test_auth_acl_users_and_canaries(tmp_path: Path) -> None:
    cap = manifest()["auth_acl"]
    from golden import PCAPS

    for keys in ("mask", "plain", "hash", "drop"):
        from auditor.redact import KeysPolicy

        out = tmp_path / keys
        run_replay(PCAPS / cap["file"], set(cap["server_ports"]), out, KeysPolicy(keys))
        every = json.dumps(rows(out), default=str)
        every += "".join(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
        for canary in cap["facts"]["canaries"]:
            assert canary not in every
        assert "CANARY" not in every
    cmds = commands(tmp_path / "mask")
    auths = [(r["user"], r["status"], (r["error"] or "")[:9]) for r in cmds if r["command"] == "AUTH"]
    assert ("alice", "ok", "") in auths
    assert any(s == "error" and e.startswith("WRONGPASS") for _, s, e in auths)
    assert any(r["error"] and r["error"].startswith("NOPERM") and r["user"] == "alice" for r in cmds)
    assert any(r["error"] and r["error"].startswith("NOAUTH") for r in cmds)


def test_shared_inline_pipeline(tmp_path: Path) -> None:
    from golden import SHARED

    run_replay(SHARED / "resp_2_inline.pcap", {6379}, tmp_path / "t")
    cmds = commands(tmp_path / "t")
    assert [r["command"] for r in cmds] == ["SET", "INCR", "SET", "GET", *["LPUSH"] * 5, "LRANGE", "DEL", "GET"]
    assert all(r["status"] == "ok" for r in cmds)
    assert cmds[9]["reply_type"] == "*" and cmds[1]["keys"] == ["test"]

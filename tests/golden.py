"""Helpers for replaying captures and reading the rows back (tests only)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from auditor.redact import KeysPolicy, Redactor
from auditor.replay import ReplayResult, replay
from auditor.sink import ParquetSink

TESTS = Path(__file__).resolve().parent
PCAPS = TESTS / "pcaps"
SHARED = TESTS.parent.parent / "shared" / "pcaps"
EXPECTED = PCAPS / "expected"


def manifest() -> dict[str, Any]:
    return json.loads((PCAPS / "manifest.json").read_text())["captures"]


def captures() -> list[tuple[str, Path, set[int]]]:
    """(name, path, server ports) of every capture the suite replays."""
    out = [(f"golden_{n}", PCAPS / c["file"], set(c["server_ports"])) for n, c in sorted(manifest().items())]
    out += [(f"synthetic_{p.stem}_{p.suffix[1:]}", p, {6379}) for p in sorted((PCAPS / "synthetic").glob("*.pcap*"))]
    out += [(f"shared_{p.stem}", p, {6379}) for p in sorted(SHARED.glob("*.pcap*"))]
    return out


def run_replay(path: Path, ports: set[int], out: Path, keys: KeysPolicy = KeysPolicy.MASK) -> ReplayResult:
    sink = ParquetSink(out, host="test")
    result = replay([path], ports, Redactor(keys, b"k" * 32 if keys is KeysPolicy.HASH else None), sink.write_many)
    sink.close()
    return result


def rows(out: Path, where: str = "true") -> list[dict[str, Any]]:
    """Every row of a trail as plain JSON-able dicts, in (ts, conn, seq) order."""
    files = list(out.rglob("*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    rel = con.execute(
        f"SELECT * EXCLUDE (host, date) FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true) "
        f"WHERE {where} ORDER BY ts, conn_id, seq NULLS FIRST, event"
    )
    cols = [d[0] for d in rel.description]
    result = []
    for r in rel.fetchall():
        d = dict(zip(cols, r, strict=True))
        d["ts"] = d["ts"].isoformat() if isinstance(d["ts"], datetime) else d["ts"]
        result.append(d)
    return result


def commands(out: Path) -> list[dict[str, Any]]:
    return rows(out, "event = 'command'")

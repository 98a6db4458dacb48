"""docs/schema.md documents every column the sink writes, and only those."""

import re
from pathlib import Path

from auditor.sink import COLUMNS

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
CONTRACT = [
    "ts", "event", "source", "conn_id", "seq", "client_addr", "client_port", "server_addr", "server_port",
    "server_pid", "server_uid", "client_pid", "client_uid", "client_comm", "user", "db", "command",
    "subcommand", "keys", "args", "status", "error", "latency_us", "request_bytes", "reply_bytes",
]  # fmt: skip


def documented() -> list[str]:
    return re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M)


def test_every_column_documented_in_order():
    assert documented() == list(COLUMNS)


def test_design_contract_columns_exist():
    missing = [c for c in CONTRACT if c not in COLUMNS]
    assert not missing

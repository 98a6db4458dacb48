"""sink: redacted Rows -> Parquet files under the trail directory.

Files are hive-partitioned by UTC date (``date=YYYY-MM-DD/``), each written
whole to a temporary name, fsynced and renamed, so a reader never sees half a
file. Every finished file is appended to ``manifest.jsonl`` with its SHA-256
and a hash chain over the previous entries: ``redis-audit verify`` (and any
reviewer with sha256sum) can prove no file was altered, removed or inserted.

Only ``Row`` is accepted: raw Exchanges cannot reach disk by construction.
"""

from __future__ import annotations

import hashlib
import io
import json
import operator
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from auditor import limits, native_enabled
from auditor.types import Row

try:  # the columns' conversion in C (auditor/_native/colenc.c); without it pyarrow's, ~10x slower
    from auditor import _colenc
except ImportError:  # pragma: no cover - a build without a C compiler
    _colenc = None  # type: ignore[assignment]
if not native_enabled():
    _colenc = None  # type: ignore[assignment]

_S, _I32, _I64, _F = pa.string(), pa.int32(), pa.int64(), pa.float64()
_LIST = pa.list_(pa.string())

# Column name -> Arrow type, in Row field order (docs/schema.md documents each).
COLUMNS: dict[str, pa.DataType] = {
    "ts": pa.timestamp("us", tz="UTC"),
    "event": _S,
    "source": _S,
    "conn_id": _S,
    "seq": _I64,
    "client_addr": _S,
    "client_port": _I32,
    "server_addr": _S,
    "server_port": _I32,
    "server_pid": _I32,
    "server_uid": _I32,
    "client_pid": _I32,
    "client_uid": _I32,
    "client_comm": _S,
    "user": _S,
    "db": _I32,
    "command": _S,
    "subcommand": _S,
    "keys": _LIST,
    "args": _LIST,
    "status": _S,
    "error": _S,
    "latency_us": _F,
    "request_bytes": _I64,
    "reply_bytes": _I64,
    "reply_type": _S,
    "resp": _I32,
    "tx": _S,
    "acl_categories": _LIST,
    "detail": _S,
    "lost_bytes": _I64,
    "lost_events": _I64,
    "host": _S,
}
SCHEMA = pa.schema([pa.field(n, t) for n, t in COLUMNS.items()])
assert Row._fields[0] == "ts_ns" and list(Row._fields[1:]) == list(COLUMNS)[1:-1], "Row and COLUMNS out of step"
_DAY_NS = 86_400 * 1_000_000_000
_TS = operator.itemgetter(0)


def _day_range(rows: list[Row]) -> tuple[int, int]:
    """The first and last day (days since 1970, UTC) of the rows' times (C-speed passes: ~55 ns a row)."""
    ts = list(map(_TS, rows))
    return min(ts) // _DAY_NS, max(ts) // _DAY_NS


_TYPES = list(COLUMNS.values())[1:-1]
_ACL = list(COLUMNS).index("acl_categories")
# Min/max statistics where queries filter (time ranges, who, what); elsewhere they cost more than they save.
_STATS_COLUMNS = ["ts", "event", "conn_id", "user", "command", "status", "client_addr"]
# Dictionary encoding where values repeat (who, what, outcome); elsewhere (times, sizes, keys, arguments) trying
# it costs more CPU than it saves. With zstd level 1: ~0.9 µs per row written, ~5.5 bytes per row for
# redis-benchmark traffic (pyarrow's defaults: ~1.3 µs, 6.8 bytes).
_DICT_COLUMNS = [
    "event", "source", "conn_id", "client_addr", "server_addr", "client_comm", "user", "command", "subcommand",
    "status", "error", "reply_type", "tx", "acl_categories", "detail", "host",
]  # fmt: skip
# _colenc kind of each Row field ("T": int ns -> timestamp[us]).
_ROW_TYPES = list(COLUMNS.values())[:-1]
_KINDS = b"T" + bytes({_S: b"s", _I32: b"i", _I64: b"l", _F: b"d", _LIST: b"L"}[t][0] for t in _TYPES)


def _buf(b: bytearray | None) -> pa.Buffer | None:
    return None if b is None else pa.py_buffer(b)


def _encoded_arrays(rows: list[Row]) -> list[pa.Array]:
    """The Row columns as Arrow arrays, built by _colenc from buffers it fills (no per-value Python)."""
    n = len(rows)
    arrays = []
    for t, (nulls, valid, *bufs) in zip(_ROW_TYPES, _colenc.encode(rows, _KINDS), strict=True):
        if t is _LIST:
            offsets, (clen, cnulls, cvalid, coffsets, cdata) = bufs
            child = pa.Array.from_buffers(_S, clen, [_buf(cvalid), pa.py_buffer(coffsets), pa.py_buffer(cdata)], cnulls)
            arrays.append(pa.Array.from_buffers(t, n, [_buf(valid), pa.py_buffer(offsets)], nulls, children=[child]))
        else:
            arrays.append(pa.Array.from_buffers(t, n, [_buf(valid), *map(pa.py_buffer, bufs)], nulls))
    return arrays


def _shared_lists(values: tuple) -> pa.Array:
    """A list<string> column whose rows share few distinct list objects (ACL categories per command):
    convert each distinct object once and gather by index."""
    index: dict[int, int] = {}
    uniques: list = []
    idx = []
    for v in values:
        k = id(v)
        i = index.get(k)
        if i is None:
            i = index[k] = len(uniques)
            uniques.append(v)
        idx.append(i)
    return pa.array(uniques, _LIST).take(pa.array(idx, pa.int32()))


MANIFEST = "manifest.jsonl"


class SinkError(Exception):
    """The trail directory cannot be written (one line, for the CLI)."""


@dataclass(slots=True)
class SinkStats:
    rows: int = 0
    files: int = 0
    bytes: int = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetSink:
    """Buffers rows (bounded) and writes one file per UTC date per flush."""

    def __init__(
        self,
        out: Path,
        host: str | None = None,
        rows_per_file: int = limits.SINK_ROWS_PER_FILE,
        manifest: bool = True,
    ) -> None:
        """``manifest=False``: finished files are listed in ``unrecorded`` for a parent process to record
        (parallel replay: one writer of the manifest chain)."""
        out = Path(out)
        if not out.parent.exists():
            raise SinkError(f"the parent of --out does not exist: {out.parent}")
        try:
            out.mkdir(exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise SinkError(f"cannot write to the trail directory {out}: {e.strerror}") from None
        self.out = out
        self.host = host if host is not None else socket.gethostname()
        self.rows_per_file = rows_per_file
        self.stats = SinkStats()
        self._rows: list[Row] = []  # not yet encoded (fewer than SINK_BATCH_ROWS)
        self._tables: dict[int, list[pa.Table]] = {}  # day -> encoded batches not yet written
        self._buffered = 0  # rows in both
        self._days: dict[int, str] = {}
        self._run = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
        self._n = 0
        self._last_flush = time.monotonic()
        self._manifest = manifest
        self.unrecorded: list[tuple[str, str, int, int]] = []

    @property
    def buffered(self) -> int:
        """Rows taken and not yet in a file."""
        return self._buffered

    def write(self, row: Row) -> None:
        self.write_many([row])

    def write_many(self, rows: list[Row]) -> None:
        self._rows.extend(rows)
        self._buffered += len(rows)
        if self._buffered >= self.rows_per_file:
            self.flush()
        elif len(self._rows) >= limits.SINK_BATCH_ROWS:
            self._encode()

    def maybe_flush(self, every_s: float = limits.SINK_FLUSH_SECONDS) -> None:
        """Live modes: bound how much a crash could lose."""
        if self._buffered and time.monotonic() - self._last_flush >= every_s:
            self.flush()

    def _encode(self) -> None:
        """The rows taken so far as Arrow batches, by UTC date: a row lives briefly as Python objects
        (which the allocator then reuses while they are still in cache), and compactly until its file."""
        rows, self._rows = self._rows, []
        first, last = _day_range(rows)
        if first == last:  # the usual case
            self._tables.setdefault(first, []).append(self._table(rows))
            return
        by_day: dict[int, list[Row]] = {}
        for r in rows:
            by_day.setdefault(r[0] // _DAY_NS, []).append(r)
        for day, part in by_day.items():
            self._tables.setdefault(day, []).append(self._table(part))

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._rows:
            self._encode()
        tables, self._tables = self._tables, {}
        self._buffered = 0
        for day, parts in sorted(tables.items()):  # one file per date
            self._write_file(self._day(day), parts[0] if len(parts) == 1 else pa.concat_tables(parts))

    def _day(self, day: int) -> str:
        name = self._days.get(day)
        if name is None:
            name = self._days[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
        return name

    def close(self) -> None:
        self.flush()

    def _table(self, rows: list[Row]) -> pa.Table:
        if _colenc is not None:
            host = pa.repeat(pa.scalar(self.host, _S), len(rows))
            return pa.Table.from_arrays([*_encoded_arrays(rows), host], schema=SCHEMA)
        cols = list(zip(*rows, strict=True))
        arrays = [
            pa.array(cols[0], pa.timestamp("ns", tz="UTC")).cast(pa.timestamp("us", tz="UTC"), safe=False),
            *(
                _shared_lists(c) if i == _ACL else pa.array(c, t)
                for i, (c, t) in enumerate(zip(cols[1:], _TYPES, strict=True), 1)
            ),
            pa.array([self.host] * len(rows), _S),
        ]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)

    def _write_file(self, day: str, table: pa.Table) -> None:
        self._n += 1
        part_dir = self.out / f"date={day}"
        part_dir.mkdir(exist_ok=True)
        name = f"part-{self._run}-{self._n:05d}.parquet"
        buf = io.BytesIO()
        pq.write_table(
            table,
            buf,
            compression="zstd",
            compression_level=1,
            use_dictionary=_DICT_COLUMNS,
            write_statistics=_STATS_COLUMNS,
        )
        data = buf.getvalue()
        tmp = part_dir / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, part_dir / name)
        _fsync_dir(part_dir)
        entry = (f"date={day}/{name}", hashlib.sha256(data).hexdigest(), len(data), table.num_rows)
        if self._manifest:
            self.record(*entry)
        else:
            self.unrecorded.append(entry)
        self.stats.rows += table.num_rows
        self.stats.files += 1
        self.stats.bytes += len(data)

    def record(self, rel: str, sha: str, nbytes: int, nrows: int) -> None:
        """Append a finished file to the hash-chained manifest (fsynced)."""
        manifest = self.out / MANIFEST
        prev = last_chain(manifest)
        chain = hashlib.sha256(f"{prev}{rel}{sha}".encode()).hexdigest()
        entry = {"file": rel, "rows": nrows, "bytes": nbytes, "sha256": sha, "prev": prev, "chain": chain}
        with open(manifest, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def last_chain(manifest: Path) -> str:
    """The chain hash of the last manifest entry ("" for a new trail)."""
    if not manifest.exists():
        return ""
    with open(manifest, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        lines = f.read().splitlines()
    for line in reversed(lines):
        if line.strip():
            try:
                return str(json.loads(line)["chain"])
            except (ValueError, KeyError):
                return "corrupt"
    return ""


def verify(out: Path) -> list[str]:
    """Check every manifest entry against the files; return the problems."""
    problems: list[str] = []
    manifest = Path(out) / MANIFEST
    if not manifest.exists():
        return [f"no {MANIFEST} in {out}"]
    prev = ""
    listed: set[str] = set()
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            rel, sha, chain = e["file"], e["sha256"], e["chain"]
        except (ValueError, KeyError):
            problems.append(f"manifest line {n}: not a valid entry")
            continue
        listed.add(rel)
        if e.get("prev") != prev or hashlib.sha256(f"{prev}{rel}{sha}".encode()).hexdigest() != chain:
            problems.append(f"manifest line {n}: hash chain broken (entry altered, removed or inserted)")
        prev = chain
        path = Path(out) / rel
        if not path.exists():
            problems.append(f"{rel}: listed in the manifest but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            problems.append(f"{rel}: content differs from its recorded SHA-256")
    for path in sorted(Path(out).rglob("*.parquet")):
        rel = path.relative_to(out).as_posix()
        if rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    return problems

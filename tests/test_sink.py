"""The Parquet sink: one file per UTC date per flush, each recorded in the manifest chain."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from golden import captures  # tests/ is on sys.path (conftest.py)

from auditor import limits, sink
from auditor.pipeline import Pipeline
from auditor.redact import KeysPolicy, Redactor
from auditor.sources.pcap import read_pcap
from auditor.types import Row, Source

MIDNIGHT_NS = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp()) * 1_000_000_000


def _rows() -> list[Row]:
    name, path, ports = next(c for c in captures() if c[0].startswith("golden_"))
    rows: list[Row] = []
    pipe = Pipeline(Redactor(KeysPolicy.MASK, None), rows.extend, Source.PCAP)
    for ev in read_pcap(path, ports):
        pipe.feed(ev)
    pipe.close(0, "eof")
    assert len(rows) > 10, name
    return rows


def _files(out: Path) -> dict[str, list[int]]:
    """date partition -> the ts (µs) of its rows, over every file."""
    got: dict[str, list[int]] = {}
    for f in sorted(out.glob("date=*/*.parquet")):
        ts = pq.read_table(f).column("ts").cast("int64").to_pylist()
        got.setdefault(f.parent.name, []).extend(ts)
    return got


def test_one_day_one_file(tmp_path: Path) -> None:
    rows = [r._replace(ts_ns=MIDNIGHT_NS + i * 1_000_000) for i, r in enumerate(_rows())]
    s = sink.ParquetSink(tmp_path, host="t")
    s.write_many(rows)
    s.close()
    assert s.stats.files == 1 and s.stats.rows == len(rows)
    assert list(_files(tmp_path)) == ["date=2026-11-21"]
    assert sink.verify(tmp_path) == []


@pytest.mark.parametrize("batch", [limits.SINK_BATCH_ROWS, 7])
@pytest.mark.parametrize("order", ["before_first", "interleaved", "after_last"])
def test_rows_on_both_sides_of_midnight_go_to_their_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str, batch: int
) -> None:
    """A flush holding rows of two UTC dates writes one file per date, in whatever order the rows came
    (a long-pending request of yesterday can finish among today's rows); also when the rows were
    encoded in several batches before the flush."""
    monkeypatch.setattr(limits, "SINK_BATCH_ROWS", batch)
    rows = _rows()
    day_before = MIDNIGHT_NS - 1_000  # 23:59:59.999999
    timed = [r._replace(ts_ns=MIDNIGHT_NS + i) for i, r in enumerate(rows)]
    if order == "before_first":
        timed[0] = timed[0]._replace(ts_ns=day_before)
    elif order == "after_last":
        timed[-1] = timed[-1]._replace(ts_ns=day_before)
    else:  # every other row of the day before, the first and last rows of the new day: only a full pass sees it
        timed = [r._replace(ts_ns=day_before) if i % 2 else r for i, r in enumerate(timed)]
        timed[-1] = timed[-1]._replace(ts_ns=MIDNIGHT_NS + 10**9)
    s = sink.ParquetSink(tmp_path, host="t")
    for i in range(0, len(timed), 5):  # as the pipeline hands them over: a few at a time
        s.write_many(timed[i : i + 5])
    assert s.buffered == len(timed)
    s.close()
    assert s.buffered == 0
    got = _files(tmp_path)
    assert sorted(got) == ["date=2026-11-20", "date=2026-11-21"]
    old = [r.ts_ns // 1000 for r in timed if r.ts_ns < MIDNIGHT_NS]
    new = [r.ts_ns // 1000 for r in timed if r.ts_ns >= MIDNIGHT_NS]
    assert got["date=2026-11-20"] == old and got["date=2026-11-21"] == new
    assert s.stats.files == 2 and s.stats.rows == len(rows)
    assert sink.verify(tmp_path) == []


def test_a_full_buffer_is_written_without_a_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rows_per_file bounds what is held (Python rows and encoded batches together)."""
    monkeypatch.setattr(limits, "SINK_BATCH_ROWS", 4)
    rows = [r._replace(ts_ns=MIDNIGHT_NS + i) for i, r in enumerate(_rows())]
    s = sink.ParquetSink(tmp_path, host="t", rows_per_file=10)
    for r in rows[:25]:
        s.write(r)
    assert s.stats.files == 2 and s.stats.rows == 20 and s.buffered == 5
    s.close()
    assert s.stats.rows == 25 and [len(v) for v in _files(tmp_path).values()] == [25]
    assert sink.verify(tmp_path) == []

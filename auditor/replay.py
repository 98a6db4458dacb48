"""replay: pcap / pcapng files -> the pipeline -> the sink (library entry point).

Big files are replayed by several worker processes: each reads the whole file
but tracks only its share of the connections (by client port), so every
connection is handled whole by one worker and rows are identical to a
single-process replay. Workers write their own Parquet files; the parent alone
appends them to the manifest's hash chain.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from auditor.pipeline import Pipeline, Totals, tune_gc
from auditor.redact import KeysPolicy, Redactor
from auditor.sink import ParquetSink, SinkStats
from auditor.sources.pcap import CaptureError, read_pcap
from auditor.sources.tcp import TcpTracker
from auditor.types import Row, Source

# Below this many bytes of input, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class ReplayResult:
    totals: Totals
    packets: int = 0
    other_port: int = 0  # TCP segments of connections to other ports (not Redis, or a --port not given)
    failed: list[str] = field(default_factory=list)  # one line per unreadable file


def replay(
    files: Iterable[Path],
    ports: set[int],
    redactor: Redactor,
    write: Callable[[list[Row]], None],
    progress: Callable[[Path, int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> ReplayResult:
    """Replay the files in this process as consecutive parts of one capture (give them in capture
    order: a connection that spans a rotation stays one connection); connections end with the last."""
    pipe = Pipeline(redactor, write, Source.PCAP)
    result = ReplayResult(pipe.totals)
    files = list(files)
    tracker = TcpTracker(ports, Source.PCAP, shard=shard)
    last_ts = 0
    for i, f in enumerate(files):
        cb = (lambda done, total, f=f: progress(f, done, total)) if progress is not None else None
        reader = read_pcap(f, ports, progress=cb, shard=shard, tracker=tracker, last=i == len(files) - 1)
        try:
            for batch in reader.batches():
                if batch:
                    pipe.feed_many(batch)
                    last_ts = batch[-1].ts_ns
        except CaptureError as e:
            result.failed.append(str(e))  # names the file already
        result.packets += reader.stats.packets
    result.other_port = tracker.other_port  # (the tracker spans the files)
    if result.failed:  # a part could not be read: its connections' ends were never seen
        for ev in tracker.finish(last_ts):
            pipe.feed(ev)
    pipe.close(last_ts, "eof")
    return result


def default_jobs(files: list[Path]) -> int:
    if sum(f.stat().st_size for f in files) < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def replay_to_sink(
    files: list[Path],
    ports: set[int],
    keys: KeysPolicy,
    hmac_key: bytes | None,
    sink: ParquetSink,
    jobs: int,
    progress: Callable[[Path, int, int], None] | None = None,
) -> tuple[ReplayResult, SinkStats]:
    """Replay into ``sink``'s directory with ``jobs`` processes; returns merged totals and file stats."""
    if jobs <= 1:
        result = replay(files, ports, Redactor(keys, hmac_key), sink.write_many, progress)
        sink.close()
        return result, sink.stats
    # fork: a worker starts with the modules already imported (spawn re-imports them: ~0.3 s per worker,
    # a third of a 200k-command replay); it only runs the pipeline and its own sink, never the parent's
    # console or progress thread.
    # Only while this is the process's one thread: a lock another thread holds at fork time (stderr's, say)
    # would stay held in the child forever.
    fork = "fork" in mp.get_all_start_methods() and threading.active_count() == 1
    ctx = mp.get_context("fork" if fork else "spawn")
    done = [ctx.Value("q", 0) for _ in files]
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                k,
                jobs,
                files,
                ports,
                keys.value,
                hmac_key,
                str(sink.out),
                sink.host,
                done if k == 0 else None,
                results,
            ),
            daemon=True,
        )
        for k in range(jobs)
    ]
    for p in procs:
        p.start()
    parts: list[dict[str, Any]] = []
    while len(parts) < jobs:
        try:
            parts.append(results.get(timeout=0.2))
        except Exception:  # queue.Empty: report progress, check the workers are alive
            if progress is not None:
                for f, v in zip(files, done, strict=True):
                    progress(f, v.value, f.stat().st_size)
            if any(p.exitcode not in (None, 0) for p in procs) and results.empty():
                raise RuntimeError("a replay worker died; rerun with --jobs 1 to see why") from None
    for p in procs:
        p.join()
    parts.sort(key=lambda r: r["k"])
    total = Totals()
    stats = SinkStats()
    other = sum(part["other_port"] for part in parts)  # each segment is counted by one worker
    result = ReplayResult(total, packets=parts[0]["packets"], other_port=other, failed=parts[0]["failed"])
    for part in parts:
        _merge(total, part["totals"])
        for rel, sha, nbytes, nrows in part["files"]:
            sink.record(rel, sha, nbytes, nrows)
            stats.files += 1
            stats.rows += nrows
            stats.bytes += nbytes
    return result, stats


def _merge(into: Totals, part: dict[str, Any]) -> None:
    for f in fields(Totals):
        v = part[f.name]
        if isinstance(v, dict):
            d = getattr(into, f.name)
            for k, n in v.items():
                d[k] = d.get(k, 0) + n
        else:
            setattr(into, f.name, getattr(into, f.name) + v)


def _worker(
    k: int,
    n: int,
    files: list[Path],
    ports: set[int],
    keys: str,
    hmac_key: bytes | None,
    out: str,
    host: str,
    done: list[Any] | None,
    results: Any,
) -> None:
    tune_gc()
    sink = ParquetSink(Path(out), host=host, manifest=False)
    progress = None
    if done is not None:
        index = {f: i for i, f in enumerate(files)}

        def progress(f: Path, n_done: int, _total: int) -> None:
            done[index[f]].value = n_done

    result = replay(files, ports, Redactor(KeysPolicy(keys), hmac_key), sink.write_many, progress, shard=(k, n))
    sink.close()
    totals = {f.name: getattr(result.totals, f.name) for f in fields(Totals)}
    results.put(
        {
            "k": k,
            "totals": totals,
            "packets": result.packets,
            "other_port": result.other_port,
            "failed": result.failed,
            "files": sink.unrecorded,
        }
    )

"""replay: pcap / pcapng files -> the pipeline -> the sink (library entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from auditor.pipeline import Pipeline
from auditor.redact import Redactor
from auditor.sources.pcap import CaptureError, read_pcap
from auditor.types import Row, Source


@dataclass(slots=True)
class ReplayResult:
    pipeline: Pipeline
    packets: int = 0
    failed: list[str] = field(default_factory=list)  # one line per unreadable file


def replay(
    files: Iterable[Path],
    ports: set[int],
    redactor: Redactor,
    write: Callable[[list[Row]], None],
    progress: Callable[[Path, int, int], None] | None = None,
) -> ReplayResult:
    """Replay each file in turn; connections end with the file they are in."""
    pipe = Pipeline(redactor, write, Source.PCAP)
    result = ReplayResult(pipe)
    for f in files:
        last_ts = 0
        cb = (lambda done, total, f=f: progress(f, done, total)) if progress is not None else None
        reader = read_pcap(f, ports, progress=cb)
        try:
            for ev in reader:
                pipe.feed(ev)
                last_ts = ev.ts_ns
        except CaptureError as e:
            result.failed.append(f"{f}: {e}")
        result.packets += reader.stats.packets
        pipe.close(last_ts, "eof")
    return result

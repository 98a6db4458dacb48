"""eBPF ring records straight into the lanes (auditor/_native/ringdrain.c with
the pipeline's Feeder, as ``EbpfSource.pump`` drains them) against the same
records made into Chunks and fed to the pipeline, and against the pure Python
stages: the same rows, in the same order, and the same totals.

The ring here is a buffer laid out as the kernel writes it (ring record
header, ``struct ra_data_hdr``, payload, 8-byte alignment), built from the
events of every capture the suite replays and of hypothesis scenarios. The
live path (probes, ``pump``) is covered end to end by tests/test_run_ebpf.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from auditor._ringdrain import drain
from golden import captures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fastlane import POLICIES, _redactor, scenario

from auditor.pipeline import Pipeline, Totals
from auditor.redact import KeysPolicy
from auditor.sources import ebpf
from auditor.sources.pcap import read_pcap
from auditor.types import CHUNK_SLOTS, Chunk, Direction, Row, Source, SourceEvent

DIRS = (Direction.TO_SERVER, Direction.TO_CLIENT)
HDR = ebpf._REC  # ring record header + struct ra_data_hdr


def _ring(chunks: list[Chunk], cids: dict[str, int]) -> tuple[bytes, int]:
    """The chunks as ring records (no wrap-around), and the ring's mask."""
    buf = bytearray()
    for c in chunks:
        n = len(c.data)
        rlen = HDR.size - 8 + n
        d = DIRS.index(c.direction)
        rec = HDR.pack(rlen, 0, ebpf.RA_DATA, d, n, cids[c.conn], c.ts_ns, c.pos, c.orig_len, 0, 0) + c.data
        buf += rec + bytes(((rlen + 15) & ~7) - len(rec))
    size = 1 << max(12, len(buf).bit_length())
    return bytes(buf), size - 1


def _drain_into(p: Pipeline, chunks: list[Chunk], cids: dict[str, int], fused: bool) -> int:
    """The records through ringdrain, as EbpfSource._drain does with a pipeline; returns how many
    records went straight to a lane."""
    buf, mask = _ring(chunks, cids)
    names = {cid: name for name, cid in cids.items()}
    feeder = p.feeder if fused else None
    out: list[SourceEvent] = []
    cons, end, made = 0, len(buf), 0
    while cons < end:
        if out:
            p.feed_many(out)
            made += len(out)
            out.clear()
        cons, _, why, hot = drain(buf, 0, mask, cons, end, names, DIRS, 0, CHUNK_SLOTS, Chunk, out, feeder)
        if why == 3:
            if hot is not None:
                p.hot(*hot)
        else:
            assert why == 0 and hot is None
    p.feed_many(out)
    return len(chunks) - made - len(out)


def _run(events: Iterable[SourceEvent], keys: KeysPolicy, mode: str) -> tuple[list[Row], Totals, int]:
    """mode: "pure" (no lane, events fed directly), "chunks" (ring records made into Chunks),
    "fused" (ring records straight into the lanes)."""
    rows: list[Row] = []
    p = Pipeline(_redactor(keys), rows.extend, Source.EBPF, fast=mode != "pure")
    cids: dict[str, int] = {}
    run: list[Chunk] = []
    direct = 0
    last = 0
    for ev in events:
        last = ev.ts_ns
        if type(ev) is Chunk and mode != "pure":
            cids.setdefault(ev.conn, len(cids) + 1)
            run.append(ev)
            if len(run) < 64:
                continue
        if run:
            direct += _drain_into(p, run, cids, mode == "fused")
            run.clear()
        if type(ev) is not Chunk or mode == "pure":
            p.feed(ev)
    if run:
        direct += _drain_into(p, run, cids, mode == "fused")
    p.close(last)
    return rows, p.totals, direct


def _assert_same(events: list[SourceEvent], keys: KeysPolicy) -> int:
    pure, pure_totals, _ = _run(events, keys, "pure")
    chunks, chunk_totals, none = _run(events, keys, "chunks")
    fused, fused_totals, direct = _run(events, keys, "fused")
    assert none == 0
    assert pure == chunks == fused
    assert pure_totals == chunk_totals == fused_totals
    return direct


CAPTURES = captures()


@pytest.mark.parametrize("keys", [KeysPolicy.PLAIN, KeysPolicy.HASH], ids=["plain", "hash"])
@pytest.mark.parametrize(("name", "path", "ports"), CAPTURES, ids=[c[0] for c in CAPTURES])
def test_ring_records_into_lanes_give_the_same_rows(name: str, path: str, ports: set[int], keys: KeysPolicy) -> None:
    events = list(read_pcap(path, ports))
    direct = _assert_same(events, keys)
    if name in ("golden_basic", "golden_pipeline", "shared_resp_1_benchmark"):
        # the shortcut is taken, not only allowed: most reads and writes of plain traffic go straight to a lane
        assert direct >= 0.75 * sum(type(e) is Chunk for e in events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=scenario(), keys=st.sampled_from(POLICIES))
def test_ring_records_of_event_streams_give_the_same_rows(events: list[SourceEvent], keys: KeysPolicy) -> None:
    _assert_same(events, keys)


def test_drain_refuses_a_feeder_of_another_type() -> None:
    with pytest.raises(TypeError, match="Feeder"):
        drain(b"", 0, 0, 0, 0, {}, DIRS, 0, CHUNK_SLOTS, Chunk, [], object())


def test_feeder_refuses_slots_of_other_types() -> None:
    """The feeder reads the pipeline's objects by slot offset: descriptors of another class, or too few,
    are an error when it is made, not a read of the wrong object later."""
    from auditor import _lane, fastlane
    from auditor.pipeline import _Conn
    from auditor.stream import Stream

    conn_slots = tuple(_Conn.__dict__[f] for f in ("fast", "lane", "req_stream", "rep_stream"))
    stream_slots = (Stream.__dict__["expected"], Stream.__dict__["_segs"])
    good = {
        "conns": {},
        "conn_type": _Conn,
        "conn_slots": conn_slots,
        "stream_type": Stream,
        "stream_slots": stream_slots,
        "chunk_type": Chunk,
        "chunk_slots": CHUNK_SLOTS,
        "to_server": Direction.TO_SERVER,
        "to_client": Direction.TO_CLIENT,
    }
    assert type(fastlane.new_feeder({}, _Conn, Stream)) is _lane.Feeder
    _lane.Feeder(**good)
    for bad, err in (
        ({"conn_slots": stream_slots + stream_slots}, TypeError),  # slots of Stream given as _Conn's
        ({"stream_slots": conn_slots[:2]}, TypeError),
        ({"chunk_slots": CHUNK_SLOTS[:5]}, ValueError),
        ({"conn_type": Stream}, TypeError),
    ):
        with pytest.raises(err):
            _lane.Feeder(**(good | bad))

"""Stream reassembly: ordering, retransmissions, overlaps, the out-of-order cap, uncaptured tails, flush."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.stream import Stream
from auditor.types import Chunk, Direction, Gap

D = Direction.TO_SERVER


def ch(pos: int, data: bytes, orig_len: int | None = None, ts: int = 0) -> Chunk:
    return Chunk("c1", D, pos, ts, data, len(data) if orig_len is None else orig_len)


def feed(s: Stream, *chunks: Chunk) -> list:
    out = []
    for c in chunks:
        out += s.push(c)
    return out


def flat(pieces: list) -> list:
    """Pieces as b"data" / ("gap", n, reason), adjacent data joined."""
    out: list = []
    for p in pieces:
        if isinstance(p, Gap):
            out.append(("gap", p.nbytes, p.reason))
        elif out and isinstance(out[-1], bytes):
            out[-1] += p[1]
        else:
            out.append(p[1])
    return out


def test_in_order_fast_path_does_not_copy() -> None:
    s = Stream()
    data = b"*1\r\n$4\r\nPING\r\n"
    out = s.push(ch(0, data, ts=7))
    assert out == [(7, data)] and out[0][1] is data
    assert s.push(ch(len(data), b"")) == []
    assert s.expected == len(data) and s.buffered_bytes == 0


def test_reordering() -> None:
    s = Stream()
    assert s.push(ch(3, b"def", ts=2)) == []
    assert s.push(ch(6, b"ghi", ts=3)) == []
    assert s.buffered_bytes == 6 and s.ooo_segments == 2
    assert s.push(ch(0, b"abc", ts=1)) == [(1, b"abc"), (2, b"def"), (3, b"ghi")]
    assert s.expected == 9 and s.buffered_bytes == 0 and s.gaps == 0


def test_exact_retransmission_is_dropped() -> None:
    s = Stream()
    assert flat(feed(s, ch(0, b"abc"), ch(0, b"abc"), ch(3, b"def"))) == [b"abcdef"]
    assert (s.retrans_bytes, s.retrans_segments, s.overlaps) == (3, 1, 0)


def test_partial_overlap_with_delivered_bytes_is_trimmed() -> None:
    s = Stream()
    assert flat(feed(s, ch(0, b"abcd"), ch(2, b"cdef"))) == [b"abcdef"]
    assert (s.retrans_bytes, s.overlaps) == (2, 1)


def test_overlap_with_buffered_keeps_first_copy() -> None:
    s = Stream()
    feed(s, ch(4, b"EFGH"))  # buffered
    feed(s, ch(6, b"xxIJ"))  # "xx" overlaps the buffered copy: dropped, "IJ" kept
    assert flat(s.push(ch(0, b"abcd"))) == [b"abcdEFGHIJ"]
    assert s.overlaps == 1 and s.retrans_bytes == 2


def test_retransmission_spanning_holes_and_buffered_segments() -> None:
    s = Stream()
    feed(s, ch(2, b"CD"), ch(6, b"GH"))  # holes at 0-2, 4-6, 8-10
    out = feed(s, ch(0, b"abcdefghij"))  # fills all three holes; C, D, G, H from the first copies
    assert flat(out) == [b"abCDefGHij"]
    assert s.retrans_bytes == 4 and s.expected == 10 and s.buffered_bytes == 0


def test_duplicate_of_buffered_segment() -> None:
    s = Stream()
    feed(s, ch(3, b"def"), ch(3, b"def"))
    assert s.retrans_segments == 1 and s.buffered_bytes == 3
    assert flat(s.push(ch(0, b"abc"))) == [b"abcdef"]


def test_ooo_byte_cap_declares_the_hole_a_gap() -> None:
    s = Stream(max_ooo_bytes=8)
    assert feed(s, ch(10, b"0123"), ch(14, b"4567")) == []  # 8 bytes buffered: at the cap, not over
    out = s.push(ch(18, b"89", ts=5))
    assert flat(out) == [("gap", 10, "reorder limit"), b"0123456789"]
    assert out[0].ts_ns == 5 and (s.gaps, s.gap_bytes, s.expected) == (1, 10, 20)
    assert s.push(ch(0, b"late")) == [] and s.retrans_bytes == 4  # the hole's bytes arrive too late


def test_ooo_segment_cap() -> None:
    s = Stream(max_ooo_segments=2)
    out = feed(s, ch(2, b"c"), ch(4, b"e"), ch(6, b"g"))
    assert flat(out) == [("gap", 2, "reorder limit"), b"c"]  # only the first hole is skipped
    assert s.expected == 3 and s.buffered_bytes == 2
    assert flat(feed(s, ch(3, b"d"), ch(5, b"f"))) == [b"defg"]


def test_uncaptured_tail_in_order() -> None:
    s = Stream()
    out = s.push(ch(0, b"abc", orig_len=10, ts=4))
    assert out == [(4, b"abc"), Gap(4, 7, "not captured")]
    assert s.expected == 10 and (s.gaps, s.gap_bytes) == (1, 7)
    assert s.push(ch(3, b"0123456789")) == [(0, b"789")]  # the uncaptured range stays a gap


def test_uncaptured_tail_out_of_order() -> None:
    s = Stream()
    assert s.push(ch(5, b"fg", orig_len=6)) == []
    assert flat(s.push(ch(0, b"abcde"))) == [b"abcdefg", ("gap", 4, "not captured")]
    assert s.expected == 11


def test_chunk_with_nothing_captured() -> None:
    s = Stream()
    assert s.push(ch(0, b"", orig_len=5)) == [Gap(0, 5, "not captured")]
    assert s.push(ch(5, b"x")) == [(0, b"x")]


def test_flush_turns_holes_into_gaps() -> None:
    s = Stream()
    feed(s, ch(0, b"ab"), ch(5, b"fg", ts=3), ch(10, b"k", ts=4))
    out = s.flush(99, "fin")
    assert flat(out) == [("gap", 3, "missing at fin"), b"fg", ("gap", 3, "missing at fin"), b"k"]
    assert [p.ts_ns for p in out if isinstance(p, Gap)] == [99, 99]
    assert s.flush(100, "eof") == [] and s.expected == 11
    assert s.push(ch(11, b"l")) == [(0, b"l")]  # still usable


def test_an_acknowledged_hole_is_a_gap_at_once() -> None:
    """The peer acknowledged bytes the capture never had: the hole is skipped now, and what waited behind it
    is delivered (not held until the reorder limits or the end of the connection)."""
    s = Stream()
    feed(s, ch(0, b"ab"), ch(5, b"fg", ts=3), ch(10, b"k", ts=4))
    A = "not captured (acknowledged)"
    assert s.acked(2, 50) == [] and s.acked(1, 50) == []  # nothing acknowledged beyond what was delivered
    out = s.acked(8, 50)  # the first hole, the segment behind it and a byte of the second hole
    assert flat(out) == [("gap", 3, A), b"fg", ("gap", 1, A)]
    assert [p.ts_ns for p in out if isinstance(p, Gap)] == [50, 50]
    assert s.expected == 8 and s.buffered_bytes == 1
    assert flat(s.acked(9, 60)) == [("gap", 1, A)] and s.expected == 9 and s.buffered_bytes == 1
    assert flat(s.acked(11, 70)) == [("gap", 1, A), b"k"] and s.expected == 11 and s.buffered_bytes == 0
    assert s.gaps == 4 and s.gap_bytes == 6


def test_acknowledged_bytes_with_nothing_buffered_may_still_come() -> None:
    """No data behind the hole: the capture may list an ACK before the data it acknowledges."""
    s = Stream()
    feed(s, ch(0, b"ab"))
    assert s.acked(10, 5) == [] and s.expected == 2
    assert s.push(ch(2, b"cd")) == [(0, b"cd")]


def test_repr_has_no_payload() -> None:
    s = Stream()
    s.push(ch(4, b"SECRET"))
    assert "SECRET" not in repr(s) and "6 bytes" in repr(s)


@st.composite
def _mangled(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    data = draw(st.binary(min_size=1, max_size=300))
    n = len(data)
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=20)) if n > 1 else []))
    bounds = [0, *cuts, n]
    segs = list(pairwise(bounds))
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 60)), max_size=10))
    segs += [(a, min(n, a + k)) for a, k in extra]  # retransmissions / overlaps of arbitrary ranges
    return data, draw(st.permutations(segs))


@settings(max_examples=300, deadline=None)
@given(_mangled(), st.integers(1, 400))
def test_any_arrival_order_reassembles_exactly(case: tuple[bytes, list[tuple[int, int]]], cap: int) -> None:
    data, segs = case
    s = Stream(max_ooo_bytes=cap)
    out = [p for a, b in segs for p in s.push(ch(a, data[a:b]))] + s.flush(0, "eof")
    got = bytearray()
    for p in out:
        if isinstance(p, Gap):
            got += b"\0" * p.nbytes
        else:
            got += p[1]
    assert len(got) == len(data) == s.expected
    if s.gaps == 0:
        assert bytes(got) == data
    else:  # bytes not in a gap are right
        pos = 0
        for p in out:
            if isinstance(p, Gap):
                pos += p.nbytes
            else:
                assert p[1] == data[pos : pos + len(p[1])]
                pos += len(p[1])

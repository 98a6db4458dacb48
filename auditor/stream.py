"""Stream reassembly: ``Chunk``s of one connection direction -> in-order ``(ts_ns, bytes)`` pieces and ``Gap``s.

Input is the source's chunks in arrival order; output is that direction's byte stream in ``pos`` order, each
byte delivered at most once:

- bytes before the next expected position were already delivered (retransmission): dropped and counted;
- bytes overlapping a buffered out-of-order segment: the first copy is kept, the later one trimmed (counted);
- out-of-order segments wait for the hole before them to fill, up to ``limits.MAX_OOO_BYTES`` /
  ``limits.MAX_OOO_SEGMENTS``; beyond that the earliest hole is declared a ``Gap`` and skipped;
- ``chunk.orig_len > len(chunk.data)``: the tail that was not captured becomes a ``Gap`` right after the data
  (that byte range stays a gap even if a later copy carries it: first copy wins).

A ``Gap``'s ``ts_ns`` is the time the stream declared the bytes missing (the chunk that proved it, or the time
given to ``flush``). Reasons: ``not captured`` (orig_len tail), ``reorder limit`` (buffer cap), ``missing at
<reason>`` (hole still open at ``flush``).

In-order chunks (every eBPF chunk, most TCP segments) take a fast path: no copy, no sorting, no buffering.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from auditor import limits
from auditor.types import Chunk, Gap

Piece = tuple[int, bytes] | Gap

# A buffered out-of-order segment: (pos, end, ts_ns, data). ``end`` >= pos + len(data); the difference is a
# tail that was not captured. Buffered segments never overlap each other and all start after ``expected``.
_Seg = tuple[int, int, int, bytes]


def _seg_pos(seg: _Seg) -> int:
    return seg[0]


class Stream:
    """One direction of one connection. ``expected`` is the position of the next byte to deliver.

    Counters (for the summary): ``retrans_bytes`` (duplicate bytes dropped, retransmitted or overlapping),
    ``retrans_segments`` (chunks dropped entirely as duplicates), ``overlaps`` (chunks trimmed because part of
    them was a duplicate), ``ooo_segments`` (chunks that had to wait for an earlier hole), ``gaps`` and
    ``gap_bytes`` (holes declared missing and their size).
    """

    __slots__ = (
        "_ooo_bytes",
        "_segs",
        "expected",
        "gap_bytes",
        "gaps",
        "max_ooo_bytes",
        "max_ooo_segments",
        "ooo_segments",
        "overlaps",
        "retrans_bytes",
        "retrans_segments",
    )

    def __init__(
        self,
        start: int = 0,
        max_ooo_bytes: int = limits.MAX_OOO_BYTES,
        max_ooo_segments: int = limits.MAX_OOO_SEGMENTS,
    ) -> None:
        self.expected = start
        self.max_ooo_bytes = max_ooo_bytes
        self.max_ooo_segments = max_ooo_segments
        self._segs: list[_Seg] = []
        self._ooo_bytes = 0
        self.retrans_bytes = 0
        self.retrans_segments = 0
        self.overlaps = 0
        self.ooo_segments = 0
        self.gaps = 0
        self.gap_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held out of order, waiting for a hole to fill."""
        return self._ooo_bytes

    def push(self, chunk: Chunk) -> list[Piece]:
        """Add one chunk; return what became deliverable, in stream order."""
        pos = chunk.pos
        if pos == self.expected and not self._segs:  # fast path: in order, nothing buffered
            data = chunk.data
            n = len(data)
            if chunk.orig_len <= n:
                self.expected = pos + n
                return [(chunk.ts_ns, data)] if n else []
            lost = chunk.orig_len - n
            self.expected = pos + n + lost
            self.gaps += 1
            self.gap_bytes += lost
            gap = Gap(chunk.ts_ns, lost, "not captured")
            return [(chunk.ts_ns, data), gap] if n else [gap]
        return self._push_slow(chunk)

    def flush(self, ts_ns: int, reason: str = "close") -> list[Piece]:
        """The connection ends (``reason``: fin, rst, eof, ...): deliver everything buffered, each hole before
        a buffered segment becoming a ``Gap(ts_ns, size, "missing at <reason>")``. The stream stays usable."""
        out: list[Piece] = []
        segs = self._segs
        while segs:
            self._declare_hole(out, ts_ns, f"missing at {reason}")
            self._drain(out)
        return out

    def acked(self, pos: int, ts_ns: int) -> list[Piece]:
        """The peer received every byte before ``pos`` (a TCP ACK): a hole before it is not a reordering but
        bytes the capture missed, so it becomes a ``Gap`` ("not captured (acknowledged)") now, and what was
        buffered behind it is delivered, rather than waiting for the reorder limits or the end of the connection.
        Only a hole with buffered data behind it: bytes acknowledged but not seen, with nothing after them
        yet, may still come (a capture can list the ACK before the data)."""
        out: list[Piece] = []
        while self._segs and self.expected < pos:
            # (a hole that goes on past what is acknowledged: only [expected, pos) is known lost)
            self._declare_hole(out, ts_ns, "not captured (acknowledged)", pos)
            self._drain(out)
        return out

    # -- slow path ---------------------------------------------------------------------------------------

    def _push_slow(self, chunk: Chunk) -> list[Piece]:
        out: list[Piece] = []
        pos = chunk.pos
        data = chunk.data
        end = pos + max(chunk.orig_len, len(data))
        exp = self.expected
        if end <= exp:
            if end > pos:
                self.retrans_bytes += end - pos
                self.retrans_segments += 1
            return out
        if pos < exp:  # starts with bytes already delivered: keep only the new part
            cut = exp - pos
            self.retrans_bytes += cut
            self.overlaps += 1
            data = data[cut:]
            pos = exp
        if pos > exp or self._segs:
            self._insert(pos, end, chunk.ts_ns, data)
            self._drain(out)
            while self._segs and (self._ooo_bytes > self.max_ooo_bytes or len(self._segs) > self.max_ooo_segments):
                self._declare_hole(out, chunk.ts_ns, "reorder limit")
                self._drain(out)
        else:  # pos == exp, nothing buffered: the trimmed retransmission is simply the next data
            self._deliver(out, pos, end, chunk.ts_ns, data)
        return out

    def _insert(self, pos: int, end: int, ts_ns: int, data: bytes) -> None:
        """Buffer [pos, end) minus whatever buffered segments already cover (first copy wins)."""
        segs = self._segs
        i = max(bisect_right(segs, pos, key=_seg_pos) - 1, 0)
        pieces: list[tuple[int, int]] = []
        cur = pos
        while cur < end and i < len(segs):
            s0, s1 = segs[i][0], segs[i][1]
            if s1 <= cur:
                i += 1
                continue
            if s0 >= end:
                break
            if s0 > cur:
                pieces.append((cur, s0))
            cur = max(cur, s1)
            i += 1
        if cur < end:
            pieces.append((cur, end))
        new = sum(b - a for a, b in pieces)
        if new < end - pos:
            self.retrans_bytes += end - pos - new
            if new:
                self.overlaps += 1
            else:
                self.retrans_segments += 1
        if not new:
            return
        self.ooo_segments += 1
        whole = len(pieces) == 1 and pieces[0] == (pos, end)
        for a, b in pieces:
            part = data if whole else data[a - pos : b - pos]
            self._ooo_bytes += len(part)
            insort(segs, (a, b, ts_ns, part), key=_seg_pos)

    def _drain(self, out: list[Piece]) -> None:
        """Deliver buffered segments that start at (or before) ``expected``."""
        segs = self._segs
        k = 0
        while k < len(segs) and segs[k][0] <= self.expected:
            pos, end, ts_ns, data = segs[k]
            self._ooo_bytes -= len(data)
            k += 1
            exp = self.expected
            if end <= exp:  # covered by an earlier segment's uncaptured tail
                self.retrans_bytes += end - pos
                self.retrans_segments += 1
                continue
            if pos < exp:
                cut = exp - pos
                self.retrans_bytes += cut
                self.overlaps += 1
                data = data[cut:]
                pos = exp
            self._deliver(out, pos, end, ts_ns, data)
        if k:
            del segs[:k]

    def _deliver(self, out: list[Piece], pos: int, end: int, ts_ns: int, data: bytes) -> None:
        if data:
            out.append((ts_ns, data))
        lost = end - pos - len(data)
        if lost > 0:
            self.gaps += 1
            self.gap_bytes += lost
            out.append(Gap(ts_ns, lost, "not captured"))
        self.expected = end

    def _declare_hole(self, out: list[Piece], ts_ns: int, reason: str, upto: int | None = None) -> None:
        """Skip the hole before the first buffered segment (or its part before ``upto``)."""
        end = self._segs[0][0] if upto is None else min(self._segs[0][0], upto)
        hole = end - self.expected
        if hole > 0:
            self.gaps += 1
            self.gap_bytes += hole
            out.append(Gap(ts_ns, hole, reason))
            self.expected = end

    def __repr__(self) -> str:
        return (
            f"Stream(expected={self.expected}, buffered={len(self._segs)} segs/{self._ooo_bytes} bytes, "
            f"gaps={self.gaps}, gap_bytes={self.gap_bytes}, retrans_bytes={self.retrans_bytes})"
        )

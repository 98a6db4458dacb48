"""The pcap reader's C loop (auditor/_native/pcapwalk.c) against its Python path: the same events and counters
for every capture, for parallel-replay shards, and for hostile captures made by mutating real ones (flipped
bytes, cut records, lying lengths). The C loop only takes records it is sure of; everything else must come
out exactly as the Python path makes it."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

import auditor.sources.tcp as tcp
from auditor.sources.pcap import read_pcap
from tests.golden import captures

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "pcaps"

ITEMS = [(name, path, ports) for name, path, ports in captures()]
ITEMS += [(p.name, p, {6379}) for p in sorted((ROOT / "tests" / "pcaps" / "synthetic").glob("*.pcap"))]
ITEMS += [(p.name, p, {6379}) for p in sorted(SHARED.glob("*.pcap"))]


def _events(path: Path, ports: set[int], fast: bool, shard: tuple[int, int] | None = None) -> tuple:
    saved = tcp._cwalk
    if not fast:
        tcp._cwalk = None
    try:
        reader = read_pcap(str(path), ports, shard=shard)
        try:
            events: list = list(reader)
        except Exception as e:  # a CaptureError: the same one either way
            events = [("error", type(e).__name__, str(e))]
        return events, dataclasses.asdict(reader.stats)
    finally:
        tcp._cwalk = saved


def test_the_c_loop_is_built_in_ci() -> None:
    if os.environ.get("CI"):
        assert tcp._cwalk is not None and tcp.pcap_walker(tcp.TcpTracker({6379}, tcp.Source.PCAP)) is not None


def test_the_c_loop_takes_the_common_records(monkeypatch: pytest.MonkeyPatch) -> None:
    if tcp._cwalk is None:
        pytest.fail("auditor._pcapwalk is not built (scripts/setup builds it)")
    taken = []
    real = tcp._cwalk

    def counting(*a: object) -> tuple:
        r = real(*a)
        taken.append(r[1])
        return r

    monkeypatch.setattr(tcp, "_cwalk", counting)
    _, path, ports = next(i for i in ITEMS if i[0] == "golden_pipeline")
    events = list(read_pcap(str(path), ports))
    assert sum(taken) > len(events) // 2  # most records: data segments of known connections


@pytest.mark.parametrize("shard", [None, (0, 2), (1, 2)], ids=["whole", "shard0", "shard1"])
@pytest.mark.parametrize(("name", "path", "ports"), ITEMS, ids=[i[0] for i in ITEMS])
def test_same_events_as_python(name: str, path: Path, ports: set[int], shard: tuple[int, int] | None) -> None:
    assert _events(path, ports, True, shard) == _events(path, ports, False, shard)


def _mutants(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:  # flip a few bytes anywhere after the file header
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(24, len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # cut the file anywhere
            del b[rng.randrange(24, len(b)) :]
        elif kind == 2:  # a record length that lies (caplen / wirelen fields of some record)
            i = 24 + 8 + rng.randrange(0, max(1, len(b) - 40)) // 4 * 4
            b[i : i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x10\x00\x00\x00"])
        else:  # overwrite a run with random bytes
            i = rng.randrange(24, len(b))
            run = rng.randbytes(min(rng.randint(1, 64), len(b) - i))
            b[i : i + len(run)] = run
        out.append(bytes(b))
    return out


@pytest.mark.parametrize(("name", "path", "ports"), ITEMS[:6], ids=[i[0] for i in ITEMS[:6]])
def test_hostile_mutations(tmp_path: Path, name: str, path: Path, ports: set[int]) -> None:
    rng = random.Random(name)
    for k, data in enumerate(_mutants(path.read_bytes(), rng, 25)):
        f = tmp_path / f"m{k}.pcap"
        f.write_bytes(data)
        assert _events(f, ports, True) == _events(f, ports, False), f"mutant {k} of {name}"


@dataclasses.dataclass(slots=True)
class _NotAChunk:
    a: object = None
    b: object = None


def test_the_c_loops_refuse_slots_that_are_not_chunks() -> None:
    """Both loops write Chunk fields by slot offset: descriptors of another class, or too few, are an
    error before anything is written, not a write into the wrong object."""
    from auditor._pcapwalk import walk
    from auditor._ringdrain import drain

    good = tcp.CHUNK_SLOTS
    wrong = (*good[:5], _NotAChunk.__dict__["a"])
    dirs = (tcp.Direction.TO_SERVER, tcp.Direction.TO_CLIENT)
    for descrs, err in ((wrong, TypeError), (good[:5], ValueError), ((*good[:5], "conn"), TypeError)):
        with pytest.raises(err):
            drain(b"", 0, 0, 0, 0, {}, dirs, 0, descrs, tcp.Chunk, [])
        with pytest.raises(err):
            walk(b"", 0, False, 0, 1, -1, 65535, {}, 0, 1, set(), descrs, (1, 2, 3, 4, 5), (1, 2), tcp.Chunk, [], set())
    # and the good ones pass the check (an empty buffer: nothing to do)
    assert drain(b"", 0, 0, 0, 0, {}, dirs, 0, good, tcp.Chunk, [])[1] == 0

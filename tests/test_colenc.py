"""The C column encoder (auditor._colenc) builds the same Arrow table as pyarrow does from the rows.

Every comparison builds the table twice with ParquetSink._table: with the encoder, and with
``sink._colenc = None`` (the pure-pyarrow fallback, the reference).
"""

from __future__ import annotations

import enum
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from golden import captures  # tests/ is on sys.path (conftest.py)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor import sink
from auditor.pipeline import Pipeline
from auditor.redact import KeysPolicy, Redactor
from auditor.sources.pcap import read_pcap
from auditor.types import Row, Source

I32, I64 = 2**31 - 1, 2**63 - 1
FLOATS = [name for name, t in sink.COLUMNS.items() if t == pa.float64()]


def test_ci_runs_the_encoder() -> None:
    """CI must exercise the C path: without the extension the tests below would skip (they fail under CI)."""
    if os.environ.get("CI"):
        import auditor._colenc  # noqa: F401  (pip install -e . builds it)

        assert sink._colenc is not None, "REDIS_AUDIT_PURE is set in CI"
    # Everywhere: the sink uses the encoder exactly when it is built and not turned off.
    pure = os.environ.get("REDIS_AUDIT_PURE", "") not in ("", "0")
    assert (sink._colenc is not None) == (importlib.util.find_spec("auditor._colenc") is not None and not pure)


def test_pure_env_turns_the_encoder_off(colenc) -> None:
    code = "from auditor import sink; print(sink._colenc is not None)"
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "REDIS_AUDIT_PURE"}
    for pure, want in (("1", "False"), ("0", "True"), (None, "True")):
        run_env = env if pure is None else {**env, "REDIS_AUDIT_PURE": pure}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=run_env, capture_output=True, text=True, check=True, timeout=60
        )
        assert out.stdout.strip() == want, pure


@pytest.fixture
def colenc():
    if sink._colenc is None:  # not built, or REDIS_AUDIT_PURE
        if os.environ.get("CI"):
            pytest.fail("auditor._colenc is not built, or REDIS_AUDIT_PURE is set: CI must test the C encoder")
        pytest.skip("auditor._colenc is not built, or REDIS_AUDIT_PURE is set")
    return sink._colenc


def _comparable(t: pa.Table) -> pa.Table:
    """Float columns as their bits: NaN is never equal to itself in Table.equals."""
    for name in FLOATS:
        i = t.schema.get_field_index(name)
        t = t.set_column(i, name, t.column(i).combine_chunks().view(pa.int64()))
    return t


def _both(rows: list[Row], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[pa.Table, pa.Table]:
    s = sink.ParquetSink(tmp_path, host="host-é")
    fast = s._table(rows)
    with monkeypatch.context() as m:
        m.setattr(sink, "_colenc", None)
        ref = s._table(rows)
    return fast, ref


def _assert_same(rows: list[Row], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fast, ref = _both(rows, monkeypatch, tmp_path)
    fast.validate(full=True)
    assert fast.schema.equals(sink.SCHEMA, check_metadata=True)
    assert fast.num_rows == len(rows)
    assert _comparable(fast).equals(_comparable(ref))
    for name in fast.schema.names:  # null counts are given to Arrow, not computed: check them
        assert fast.column(name).null_count == ref.column(name).null_count, name


# ----------------------------------------------------------------------------
# (a) generated rows
# ----------------------------------------------------------------------------

_text = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), max_size=4),  # non-BMP
    st.sampled_from(["", "a", "é", "€", "\U0001f600", "\x00", "SET", "acl:@read"]),
)
_str = st.none() | _text
_i32 = st.none() | st.integers(-(2**31), I32) | st.sampled_from([-(2**31), I32, 0, -1])
_i64 = st.none() | st.integers(-(2**63), I64) | st.sampled_from([-(2**63), I64, 0, -1])
_ts = st.none() | st.integers(0, I64) | st.sampled_from([0, 999, 1000, 1001, I64])
_float = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324])
    | st.integers(-(2**53), 2**53)
)
_item = st.none() | _text
_list = st.one_of(
    st.none(),
    st.lists(_item, max_size=6),
    st.lists(_item, max_size=6).map(tuple),
    st.just([]),
    st.lists(st.text(max_size=2), min_size=100, max_size=300),  # many items
)
_BY_TYPE = {pa.string(): _str, pa.int32(): _i32, pa.int64(): _i64, pa.float64(): _float, sink._LIST: _list}
_row = st.tuples(_ts, *(_BY_TYPE[t] for t in list(sink.COLUMNS.values())[1:-1])).map(Row._make)


@st.composite
def _rows(draw: st.DrawFn) -> list[Row]:
    rows = draw(st.lists(_row, min_size=1, max_size=40))
    # Rows sharing one list object, as ACL categories do (the fallback converts each distinct object once)
    shared = draw(st.lists(_item, max_size=4))
    picks = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    return [r._replace(acl_categories=shared) if p else r for r, p in zip(rows, picks, strict=True)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows())
def test_generated_rows_match_pyarrow(rows: list[Row], colenc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _assert_same(rows, monkeypatch, tmp_path)


def test_all_null_and_no_null_columns(colenc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nulls = Row(*([None] * len(Row._fields)))
    full = Row(
        1_700_000_000_123_456_789, "command", "pcap", "c1", 7, "127.0.0.1", 5000, "127.0.0.1", 6379, 1, 2, 3, 4,
        "redis-cli", "default", 0, "SET", "", ["k"], ["v", ""], "ok", "", 12.5, 30, 5, "simple", 2, "", ["@write"],
        "", 0, 0,
    )  # fmt: skip
    for rows in ([nulls], [full], [nulls] * 9, [full] * 9, [nulls, full] * 9, [full] * 8 + [nulls]):
        _assert_same(rows, monkeypatch, tmp_path)


def test_str_and_tuple_subclasses(colenc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Kind(enum.StrEnum):
        COMMAND = "command"

    class Text(str):
        pass

    row = Row(1000, Kind.COMMAND, Text("pcap"), "c", keys=(Text("é"), Kind.COMMAND), args=[Text("x")])
    _assert_same([row, row], monkeypatch, tmp_path)


# ----------------------------------------------------------------------------
# (b) rows of real captures
# ----------------------------------------------------------------------------

CAPTURES = captures()


def _replay_rows(path: Path, ports: set[int], keys: KeysPolicy) -> list[Row]:
    rows: list[Row] = []
    pipe = Pipeline(Redactor(keys, b"k" * 32 if keys is KeysPolicy.HASH else None), rows.extend, Source.PCAP)
    last = 0
    for ev in read_pcap(path, ports):
        pipe.feed(ev)
        last = ev.ts_ns
    pipe.close(last, "eof")
    return rows


@pytest.mark.parametrize(("name", "path", "ports"), CAPTURES, ids=[c[0] for c in CAPTURES])
def test_capture_rows_match_pyarrow(
    name: str, path: Path, ports: set[int], colenc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for keys in (KeysPolicy.PLAIN, KeysPolicy.MASK):
        rows = _replay_rows(path, ports, keys)
        assert rows, name
        _assert_same(rows, monkeypatch, tmp_path)


# ----------------------------------------------------------------------------
# the encoder itself: shapes, errors, references
# ----------------------------------------------------------------------------

SECRET = "SECRET-pa\u00dfword"


def _i32s(*v: int) -> bytes:
    return pa.array(v, pa.int32()).buffers()[1].to_pybytes()


def test_buffer_shapes(colenc) -> None:
    (ts,) = colenc.encode([(1999,), (None,), (2**63 - 1,)], b"T")  # ns -> us truncates, as Arrow's cast
    assert ts[:2] == (1, b"\x05") and bytes(ts[2]) == pa.array([1, 0, I64 // 1000]).buffers()[1].to_pybytes()
    (s,) = colenc.encode([("ab",), (None,), ("",), ("\u20ac",)], b"s")
    assert s == (1, b"\x0d", _i32s(0, 2, 2, 2, 5), b"ab\xe2\x82\xac")
    (lst,) = colenc.encode([(["x", None],), (None,), ((),)], b"L")
    assert lst == (1, b"\x05", _i32s(0, 2, 2, 2), (2, 1, b"\x01", _i32s(0, 1, 1), b"x"))
    assert all(type(b) is bytearray for b in (*ts[1:], *s[1:], *lst[1:3], *lst[3][2:]))
    assert colenc.encode([], b"TsildL") == [
        (0, None, b""),
        (0, None, _i32s(0), b""),
        (0, None, b""),
        (0, None, b""),
        (0, None, b""),
        (0, None, _i32s(0), (0, 0, None, _i32s(0), b"")),
    ]


@pytest.mark.parametrize(
    ("kinds", "cell", "exc"),
    [
        (b"s", SECRET.encode(), TypeError),  # bytes are not str
        (b"s", 5, TypeError),
        (b"s", [SECRET], TypeError),
        (b"L", SECRET, TypeError),  # a str is not a list of str
        (b"L", [SECRET, SECRET.encode()], TypeError),
        (b"L", {SECRET}, TypeError),
        (b"i", SECRET, TypeError),
        (b"i", 1.0, TypeError),
        (b"i", True, TypeError),  # as pyarrow: bool is not an int here
        (b"l", SECRET, TypeError),
        (b"T", SECRET, TypeError),
        (b"d", SECRET, TypeError),
        (b"i", 2**31, OverflowError),
        (b"i", -(2**31) - 1, OverflowError),
        (b"l", 2**63, OverflowError),
        (b"l", -(2**63) - 1, OverflowError),
        (b"T", 2**63, OverflowError),
        (b"d", 2**53 + 1, OverflowError),
        (b"d", 10**400, OverflowError),
        (b"s", SECRET + "\ud800", UnicodeError),
        (b"L", ["ok", SECRET + "\udfff"], UnicodeError),
    ],
)
def test_errors_name_the_column_not_the_cell(colenc, kinds: bytes, cell: object, exc: type) -> None:
    rows = [("ok", 1, None), ("ok", 1, cell)]
    with pytest.raises(exc) as info:
        colenc.encode(rows, b"si" + kinds)
    e = info.value
    assert "column 2, row 1" in str(e)
    for text in (str(e), repr(e), repr(e.args), repr(e.__context__), repr(e.__cause__)):
        assert "SECRET" not in text and "2147483648" not in text and "9223372036854775808" not in text
    assert not isinstance(e, UnicodeEncodeError)  # it would carry the whole str in .object
    assert e.__context__ is None and e.__cause__ is None


def test_errors_through_the_sink(colenc, tmp_path: Path) -> None:
    s = sink.ParquetSink(tmp_path, host="h")
    good = Row(1000, "command", "pcap", "c")
    with pytest.raises(TypeError, match="column 19, row 1") as info:
        s._table([good, good._replace(args=[SECRET.encode()])])
    assert "SECRET" not in str(info.value)
    with pytest.raises(UnicodeError, match="column 1, row 0") as info:
        s._table([good._replace(event=SECRET + "\ud800")])
    assert "SECRET" not in str(info.value)


def test_bad_arguments(colenc) -> None:
    with pytest.raises(TypeError, match="row 1: expected a tuple, got list"):
        colenc.encode([("a",), ["a"]], b"s")
    with pytest.raises(ValueError, match="row 0: 2 fields, expected 1"):
        colenc.encode([("a", "b")], b"s")
    with pytest.raises(ValueError, match=r"kinds\[1\]"):
        colenc.encode([("a", "b")], b"sx")
    with pytest.raises(TypeError):
        colenc.encode((("a",),), b"s")  # rows: a list
    with pytest.raises(TypeError):
        colenc.encode([("a",)], "s")  # kinds: bytes


def test_more_than_2gib_of_strings_is_an_overflow(colenc) -> None:
    big = "a" * 2**30  # 1 GiB: the second copy would pass the int32 offsets (lists share the same check)
    try:
        with pytest.raises(OverflowError, match=r"column 0, row 1: more than 2\*\*31-1 bytes"):
            colenc.encode([(big,), (big,)], b"s")
    finally:
        del big


def test_references_are_balanced(colenc) -> None:
    cells = ["x" + "é" * 3, ["a", "b"], 2**40, 1.5, SECRET]
    rows = [(cells[0], cells[1], cells[2], cells[3], cells[4])] * 50
    before = [sys.getrefcount(c) for c in cells]
    for _ in range(200):
        colenc.encode(rows, b"sLlds")
        with pytest.raises(TypeError):
            colenc.encode([*rows, (cells[0], cells[1], cells[2], cells[3], b"x")], b"sLlds")
    assert [sys.getrefcount(c) for c in cells] == before
    out = colenc.encode(rows, b"sLlds")
    del rows, cells  # the buffers are copies: they outlive the rows
    assert bytes(out[4][3]) == SECRET.encode() * 50

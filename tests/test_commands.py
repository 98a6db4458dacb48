"""Command table: lookup, key positions (checked against a real redis-server's
COMMAND GETKEYS) and argument roles."""

from __future__ import annotations

import random
import shlex
from collections.abc import Iterator

import pytest
import redis
from redis_fixtures import RedisServer, ToolMissing, require_tool

from auditor import commands
from auditor.commands import Role, arg_roles, key_positions, lookup


def _args(line: str) -> list[bytes]:
    return [a.encode() for a in shlex.split(line)]


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    """One redis-server for the whole module (COMMAND GETKEYS is read-only)."""
    try:
        require_tool("redis-server")
    except ToolMissing as e:
        pytest.fail(str(e), pytrace=False)
    srv = RedisServer().start()
    client = redis.Redis(host="127.0.0.1", port=srv.port)
    try:
        yield client
    finally:
        client.close()
        srv.cleanup()


def _getkeys(server: redis.Redis, args: list[bytes]) -> list[str]:
    keys = server.execute_command("COMMAND GETKEYS", *args)
    return [k.decode() if isinstance(k, bytes) else k for k in keys]


# (request, expected key arguments)
KEY_CASES: list[tuple[str, list[str]]] = [
    ("SET k v EX 10", ["k"]),
    ("SET k v GET", ["k"]),
    ("GET k", ["k"]),
    ("get k", ["k"]),
    ("MSET a 1 b 2 c 3", ["a", "b", "c"]),
    ("MGET a b c", ["a", "b", "c"]),
    ("DEL a b", ["a", "b"]),
    ("EVAL 'return 1' 2 k1 k2 arg1 arg2", ["k1", "k2"]),
    ("EVAL 'return 1' 0 arg1", []),
    ("EVALSHA abc 1 k1 arg1", ["k1"]),
    ("FCALL f 2 k1 k2 a", ["k1", "k2"]),
    ("XREAD COUNT 2 STREAMS s1 s2 0 0", ["s1", "s2"]),
    ("XREAD BLOCK 0 STREAMS streams 0", ["streams"]),
    ("XREADGROUP GROUP g c COUNT 1 STREAMS s1 >", ["s1"]),
    ("ZUNIONSTORE dst 2 a b WEIGHTS 1 2 AGGREGATE MAX", ["dst", "a", "b"]),
    ("ZUNION 2 a b WITHSCORES", ["a", "b"]),
    ("MIGRATE 127.0.0.1 6380 k 0 5000", ["k"]),
    ("MIGRATE 127.0.0.1 6380 '' 0 5000 COPY REPLACE AUTH pw KEYS k1 k2", ["k1", "k2"]),
    ("MIGRATE 127.0.0.1 6380 '' 0 5000 AUTH2 u keys KEYS k1", ["k1"]),
    ("SORT s BY w_* LIMIT 0 5 GET o_* GET # ALPHA STORE dst", ["s", "dst"]),
    ("SORT s LIMIT 0 5", ["s"]),
    ("SORT_RO s BY w_* GET o_*", ["s"]),
    ("GEORADIUS g 15 37 200 km WITHDIST STORE dst", ["g", "dst"]),
    ("GEORADIUS g 15 37 200 km STOREDIST dst", ["g", "dst"]),
    ("GEORADIUSBYMEMBER g m 200 km STORE dst", ["g", "dst"]),
    ("LMOVE src dst LEFT RIGHT", ["src", "dst"]),
    ("BLMOVE src dst LEFT RIGHT 0", ["src", "dst"]),
    ("BLMPOP 0 2 a b LEFT COUNT 2", ["a", "b"]),
    ("LMPOP 1 a RIGHT", ["a"]),
    ("BZMPOP 0 1 z MIN", ["z"]),
    ("SINTERCARD 2 a b LIMIT 3", ["a", "b"]),
    ("OBJECT ENCODING k", ["k"]),
    ("object encoding k", ["k"]),
    ("XINFO STREAM s FULL COUNT 5", ["s"]),
    ("XINFO GROUPS s", ["s"]),
    ("XGROUP CREATE s g $ MKSTREAM", ["s"]),
    ("MEMORY USAGE k", ["k"]),
    ("BITOP AND dst a b", ["dst", "a", "b"]),
    ("BITFIELD k GET u8 0", ["k"]),
    ("RENAME a b", ["a", "b"]),
    ("SMOVE a b m", ["a", "b"]),
    ("COPY a b DB 2 REPLACE", ["a", "b"]),
    ("PFMERGE dst a b", ["dst", "a", "b"]),
    ("WATCH a b", ["a", "b"]),
    ("XADD s MAXLEN ~ 1000 * f v", ["s"]),
    ("CLIENT KILL ID 5", []),
    ("CONFIG SET maxmemory 10", []),
    ("PING", []),
    ("FOOBAR k v", []),
]


@pytest.mark.parametrize(("line", "expected"), KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_key_positions(line: str, expected: list[str], server: redis.Redis) -> None:
    args = _args(line)
    got = [args[p].decode() for p in key_positions(lookup(args), args)]
    assert got == expected
    try:
        redis_keys = _getkeys(server, args)
    except redis.ResponseError:
        # unknown command, no key arguments, or (EVAL ... 0) "invalid arguments"
        redis_keys = []
    # redis lists keys per key spec; ours are in argument order
    assert sorted(got) == sorted(redis_keys)


def test_key_positions_every_command_with_fixed_keys(server: redis.Redis) -> None:
    """Every table entry whose first key is at a fixed position: a request
    with enough arguments must give the same keys as redis-server."""
    checked = 0
    for name, info in commands.all_commands().items():
        if info.is_container or "|" in name or info.first_key <= 0 or info.arity < 0:
            continue
        args = [info.command.encode()] + [f"a{i}".encode() for i in range(1, info.arity)]
        try:
            want = sorted(_getkeys(server, args))
        except redis.ResponseError:
            continue
        got = sorted(args[p].decode() for p in key_positions(info, args))
        assert got == want, name
        checked += 1
    assert checked > 50


def test_table_loads() -> None:
    table = commands.all_commands()
    top = [n for n in table if "|" not in n]
    assert len(top) > 200
    assert commands.table_version().startswith("8.")
    assert table["get"].acl_categories == ("@fast", "@read", "@string")


def test_lookup_subcommands() -> None:
    cases = {
        "CONFIG SET maxmemory 1": ("CONFIG", "SET"),
        "config get maxmemory": ("CONFIG", "GET"),
        "CLIENT SETNAME x": ("CLIENT", "SETNAME"),
        "ACL SETUSER bob": ("ACL", "SETUSER"),
        "XINFO STREAM s": ("XINFO", "STREAM"),
        "OBJECT FREQ k": ("OBJECT", "FREQ"),
        "FUNCTION LOAD code": ("FUNCTION", "LOAD"),
        "SCRIPT FLUSH": ("SCRIPT", "FLUSH"),
        "MEMORY USAGE k": ("MEMORY", "USAGE"),
        "CLUSTER INFO": ("CLUSTER", "INFO"),
        "COMMAND DOCS get": ("COMMAND", "DOCS"),
        "CONFIG": ("CONFIG", None),
        "CONFIG nosuchsub": ("CONFIG", None),
        "GET k": ("GET", None),
    }
    for line, (cmd, sub) in cases.items():
        info = lookup(_args(line))
        assert info is not None, line
        assert (info.command, info.subcommand) == (cmd, sub), line
    assert lookup([b"NOSUCHCOMMAND"]) is None
    assert lookup([]) is None
    assert lookup([b"x" * 5000]) is None


def test_legacy_range_without_key_specs() -> None:
    info2 = commands.CommandInfo("fake", {"arity": -2, "first": 1, "last": -1, "step": 2})
    assert key_positions(info2, _args("FAKE a 1 b 2")) == [1, 3]
    assert key_positions(info2, _args("FAKE")) == []


def _roles(line: str) -> list[tuple[str, str]]:
    args = _args(line)
    return [(a.decode(), r.name) for a, r in zip(args, arg_roles(lookup(args), args), strict=True)]


ROLE_CASES: list[tuple[str, list[str]]] = [
    ("SET k v EX 10", ["COMMAND", "KEY", "VALUE", "TOKEN", "VALUE"]),
    ("set k v nx get", ["COMMAND", "KEY", "VALUE", "TOKEN", "TOKEN"]),
    ("SET k NX", ["COMMAND", "KEY", "VALUE"]),  # the value NX is a value
    ("ZADD z CH NX 1 m 2 CH", ["COMMAND", "KEY", "TOKEN", "TOKEN", "VALUE", "VALUE", "VALUE", "VALUE"]),
    ("XADD s MAXLEN ~ 10 * f v", ["COMMAND", "KEY", "TOKEN", "TOKEN", "VALUE", "TOKEN", "VALUE", "VALUE"]),
    ("XREAD COUNT 2 STREAMS a b 0 0", ["COMMAND", "TOKEN", "VALUE", "TOKEN", "KEY", "KEY", "VALUE", "VALUE"]),
    ("EVAL body 1 k a", ["COMMAND", "SCRIPT", "IDENT", "KEY", "VALUE"]),
    ("EVALSHA 0123abcd 0", ["COMMAND", "IDENT", "IDENT"]),
    ("BLMPOP 0 2 a b LEFT COUNT 2", ["COMMAND", "VALUE", "IDENT", "KEY", "KEY", "TOKEN", "TOKEN", "VALUE"]),
    ("CONFIG GET maxmemory", ["COMMAND", "SUBCOMMAND", "IDENT"]),
    ("CLIENT KILL ID 5 SKIPME no", ["COMMAND", "SUBCOMMAND", "TOKEN", "IDENT", "TOKEN", "TOKEN"]),
    ("CLIENT SETNAME worker-1", ["COMMAND", "SUBCOMMAND", "IDENT"]),
    (
        "CLIENT TRACKING ON PREFIX a PREFIX b BCAST",
        ["COMMAND", "SUBCOMMAND", "TOKEN", "TOKEN", "VALUE", "TOKEN", "VALUE", "TOKEN"],
    ),
    ("SELECT 3", ["COMMAND", "IDENT"]),
    ("SWAPDB 0 1", ["COMMAND", "IDENT", "IDENT"]),
    ("REPLICAOF NO ONE", ["COMMAND", "TOKEN", "TOKEN"]),
    ("BITFIELD k OVERFLOW SAT SET u8 0 1", ["COMMAND", "KEY", "TOKEN", "TOKEN", "TOKEN", "VALUE", "VALUE", "VALUE"]),
    ("FOO bar", ["COMMAND", "VALUE"]),
]


@pytest.mark.parametrize(("line", "expected"), ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_arg_roles(line: str, expected: list[str]) -> None:
    assert [r for _, r in _roles(line)] == expected


def test_roles_cached_by_shape_not_values() -> None:
    a1, a2 = _args("SET k1 v1 EX 10"), _args("SET other secretvalue PX 99")
    info = lookup(a1)
    assert info is not None
    assert arg_roles(info, a1) == arg_roles(info, a1)
    r2 = arg_roles(info, a2)
    assert r2 == [Role.COMMAND, Role.KEY, Role.VALUE, Role.TOKEN, Role.VALUE]
    for shape in info._role_cache:
        assert b"secretvalue" not in repr(shape).encode()


def test_secret_roles() -> None:
    assert [r for _, r in _roles("AUTH pw")] == ["COMMAND", "SECRET"]
    assert [r for _, r in _roles("AUTH u pw")] == ["COMMAND", "IDENT", "SECRET"]
    assert [r for _, r in _roles("AUTH a b c")] == ["COMMAND", "SECRET", "SECRET", "SECRET"]
    assert dict(_roles("HELLO 3 AUTH default pw SETNAME n")) == {
        "HELLO": "COMMAND",
        "3": "IDENT",
        "AUTH": "TOKEN",
        "default": "IDENT",
        "pw": "SECRET",
        "SETNAME": "TOKEN",
        "n": "IDENT",
    }
    assert dict(_roles("MIGRATE h 1 '' 0 5 AUTH pw KEYS a"))["pw"] == "SECRET"
    assert dict(_roles("MIGRATE h 1 '' 0 5 AUTH2 u pw KEYS a"))["pw"] == "SECRET"
    assert dict(_roles("CONFIG SET requirepass pw maxmemory 1 masterauth pw2")) == {
        "CONFIG": "COMMAND",
        "SET": "SUBCOMMAND",
        "requirepass": "IDENT",
        "pw": "SECRET",
        "maxmemory": "IDENT",
        "1": "VALUE",
        "masterauth": "IDENT",
        "pw2": "SECRET",
    }
    assert [r for _, r in _roles("ACL SETUSER bob on >p1 <p2 #h1 !h2 ~* +@all resetpass nopass")] == [
        "COMMAND", "SUBCOMMAND", "IDENT", "IDENT", "SECRET", "SECRET", "SECRET", "SECRET",
        "IDENT", "IDENT", "IDENT", "IDENT",
    ]  # fmt: skip
    acl = [b"ACL", b"SETUSER", b"bob", b"(~k* +get)", b"(~x >pw)", b"%R~r*", b"&ch*", b"reset"]
    assert [r.name for r in arg_roles(lookup(acl), acl)] == [
        "COMMAND", "SUBCOMMAND", "IDENT", "IDENT", "SECRET", "IDENT", "IDENT", "IDENT",
    ]  # fmt: skip
    assert [r for _, r in _roles("ACL SETUSER >pw on")] == ["COMMAND", "SUBCOMMAND", "SECRET", "IDENT"]
    assert dict(_roles("SENTINEL SET m auth-pass pw"))["pw"] == "SECRET"
    # identifiers of a fixed form are kept only in that form
    assert [r for _, r in _roles("SELECT 3")] == ["COMMAND", "IDENT"]
    assert [r for _, r in _roles("SELECT pw")] == ["COMMAND", "VALUE"]
    assert [r for _, r in _roles("HELLO pw")] == ["COMMAND", "VALUE"]
    assert [r for _, r in _roles("EVALSHA pw 0")] == ["COMMAND", "VALUE", "IDENT"]
    assert [r for _, r in _roles("EVALSHA 0123abcd x")] == ["COMMAND", "IDENT", "VALUE"]
    assert [r for _, r in _roles("CONFIG SET a&b v")] == ["COMMAND", "SUBCOMMAND", "VALUE", "VALUE"]
    assert dict(_roles("SCRIPT LOAD body"))["body"] == "SCRIPT"
    assert dict(_roles("FUNCTION LOAD REPLACE body"))["body"] == "SCRIPT"


# --- fast paths: exact-bytes lookup, static roles per shape ---------------------------------


def test_lookup_any_case_and_table_names() -> None:
    for line, name in {
        "SET k v": "set",
        "set k v": "set",
        "SeT k v": "set",
        "config set maxmemory 1": "config|set",
        "CONFIG SET maxmemory 1": "config|set",
        "Config sEt maxmemory 1": "config|set",
        "CONFIG": "config",
        "CONFIG nosuch": "config",
        "config|set maxmemory 1": "config|set",  # a table name sent as a name, as before
    }.items():
        info = lookup(_args(line))
        assert info is not None and info.name == name, line
    assert lookup([b"config", b"x" * 100]) is not None
    assert lookup([b"s" * 65]) is None


def _word_variants(info: commands.CommandInfo) -> list[bytes]:
    words = sorted(commands._plan(info).tokens)
    return words + [w.lower() for w in words] + [w[:1] + w[1:].lower() for w in words]


_FILLERS = [b"xxx", b"", b"10", b"-1", b"0123abcd", b"v" * 40, b"k:1", b"\xff", b"*", b"$", b">", b"on", b"~*"]


def _requests(info: commands.CommandInfo, n: int, rnd: random.Random, word_share: float) -> Iterator[list[bytes]]:
    head = [info.command.encode()] + ([info.subcommand.encode()] if info.subcommand else [])
    words = _word_variants(info)
    for _ in range(6):
        rest = [rnd.choice(words) if rnd.random() < word_share else rnd.choice(_FILLERS) for _ in range(n - len(head))]
        yield head + rest


@pytest.mark.parametrize("word_share", [0.0, 0.3])
def test_static_roles_equal_arg_roles(word_share: float) -> None:
    """For every command and argument count: a request with no word at the
    probed positions has exactly the static roles and keys; any request has
    the roles of its signature (and equal signatures give equal roles)."""
    rnd = random.Random(7)
    checked = 0
    for info in commands.all_commands().values():
        for n in range(1, 12):
            st = commands.static_roles(info, n)
            if st is None:
                continue
            for args in _requests(info, n, rnd, word_share):
                if len(args) != n:
                    continue
                want_keys = key_positions(info, args)
                want = arg_roles(info, args)
                assert list(st.keys) == want_keys, (info.name, n)
                if not any(st.is_word(args[i]) for i in st.probe):
                    assert st.roles_of(args) == want, (info.name, n)
                sub = st.with_words(args)
                if sub is not None:
                    assert sub.roles_of(args) == want, (info.name, n)
                    for i, word in sub.words.items():
                        assert args[i].upper().decode() == word
                checked += 1
    assert checked > 1000


def test_static_roles_refused_where_content_decides() -> None:
    """No static roles where more than the words decides: keys found by
    keyword or count, per-command fixups (secrets), scripts."""
    for name, n in [
        ("auth", 2),
        ("auth", 3),
        ("config|set", 4),
        ("acl|setuser", 4),
        ("module|loadex", 6),
        ("eval", 4),
        ("xread", 5),
        ("migrate", 6),
        ("sort", 3),
        ("script|load", 3),
        ("function|load", 3),
    ]:
        assert commands.static_roles(commands.all_commands()[name], n) is None, name


def test_static_roles_probe_covers_auth_words() -> None:
    """LPUSH l AUTH pw: the word AUTH at any non-key position leaves the
    static roles (the value after it becomes a secret)."""
    info = commands.all_commands()["lpush"]
    st = commands.static_roles(info, 4)
    assert st is not None
    args = [b"LPUSH", b"l", b"auth", b"pw"]
    assert any(st.is_word(args[i]) for i in st.probe)
    sub = st.with_words(args)
    assert sub is not None and sub.roles_of(args)[3] is Role.SECRET
    assert st.roles_of([b"LPUSH", b"l", b"a", b"b"]) == [Role.COMMAND, Role.KEY, Role.VALUE, Role.VALUE]


# Commands newer than the redis-server this machine runs (the table is generated from Redis 8.0): their keys come
# from the table's key specs alone.
NEWER_CASES: list[tuple[str, list[str], str]] = [
    ("HEXPIRE user:1 10 FIELDS 2 email phone", ["user:1"], "HEXPIRE"),
    ("HGETEX user:1 EX 5 FIELDS 1 name", ["user:1"], "HGETEX"),
    ("HSETEX user:1 FNX EX 5 FIELDS 1 name bob", ["user:1"], "HSETEX"),
    ("HGETDEL user:1 FIELDS 1 name", ["user:1"], "HGETDEL"),
    ("VADD vs VALUES 2 0.1 0.2 elem", ["vs"], "VADD"),
    ("vsim vs ELE elem", ["vs"], "VSIM"),
    ("WAITAOF 1 0 0", [], "WAITAOF"),
    ("CLIENT NO-TOUCH on", [], "CLIENT"),
]


@pytest.mark.parametrize(("line", "expected", "name"), NEWER_CASES, ids=[c[0] for c in NEWER_CASES])
def test_newer_commands(line: str, expected: list[str], name: str) -> None:
    args = _args(line)
    info = lookup(args)
    assert info is not None and info.command == name
    assert [args[p].decode() for p in key_positions(info, args)] == expected
    assert lookup(_args("CLIENT NO-TOUCH on")).subcommand == "NO-TOUCH"  # type: ignore[union-attr]

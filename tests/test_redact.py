"""Redaction: Exchange -> Row per argument role, secrets under every policy,
key masking / hashing, error scrubbing, unknown commands, the HMAC key file."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import stat
from pathlib import Path

import pytest

from auditor import limits, redact
from auditor.commands import _plan, all_commands
from auditor.keyfile import KeyFileError, default_key_path, load_or_create_key
from auditor.redact import KeysPolicy, Redactor, luhn_ok, mask_key
from auditor.types import ConnMeta, Event, Exchange, Request, Row, Source, Status

CANARY = "CANARY-PASS-7f3a"
HMAC_KEY = b"k" * 32
META = ConnMeta(
    source=Source.PCAP, client_addr="192.0.2.10", client_port=40000, server_addr="192.0.2.1", server_port=6379
)
ALL_POLICIES = [Redactor(p, HMAC_KEY) for p in KeysPolicy]


def ex(
    args: list[bytes] | list[str],
    status: Status | None = Status.OK,
    error: bytes | None = None,
    lens: list[int] | None = None,
    gap_bytes: int = 0,
) -> Exchange:
    raw = [a.encode() if isinstance(a, str) else a for a in args]
    req = Request(raw, ts_ns=1_000_000, nbytes=sum(len(a) for a in raw) + 8, lens=lens, gap_bytes=gap_bytes)
    return Exchange(
        event=Event.COMMAND,
        conn="c1",
        ts_ns=1_000_000,
        meta=META,
        seq=7,
        user="default",
        db=0,
        resp=2,
        request=req,
        status=status,
        error=error,
        reply_ts_ns=1_250_000 if status is not Status.NO_REPLY else None,
        reply_bytes=5,
        reply_type="-" if status is Status.ERROR else "+",
    )


def row(args: list[str], policy: KeysPolicy = KeysPolicy.MASK, **kw: object) -> Row:
    return Redactor(policy, HMAC_KEY).row(ex(args, **kw))  # type: ignore[arg-type]


# --- roles -------------------------------------------------------------------------

# (args, command, subcommand, keys (plain), args)
ROLE_TABLE: list[tuple[list[str], str, str | None, list[str], list[str]]] = [
    (["SET", "k", "value", "EX", "10"], "SET", None, ["k"], ["<redacted:5>", "EX", "<redacted:2>"]),
    (["set", "k", "v", "nx", "get"], "SET", None, ["k"], ["<redacted:1>", "NX", "GET"]),
    (["GET", "user:1"], "GET", None, ["user:1"], []),
    (["MSET", "a", "1", "b", "22"], "MSET", None, ["a", "b"], ["<redacted:1>", "<redacted:2>"]),
    (["HSET", "h", "field", "value"], "HSET", None, ["h"], ["<redacted:5>", "<redacted:5>"]),
    (["ZADD", "z", "CH", "1", "CH"], "ZADD", None, ["z"], ["CH", "<redacted:1>", "<redacted:2>"]),
    (["CONFIG", "GET", "maxmemory"], "CONFIG", "GET", [], ["maxmemory"]),
    (["config", "set", "maxmemory", "100mb"], "CONFIG", "SET", [], ["maxmemory", "<redacted:5>"]),
    (["OBJECT", "ENCODING", "k"], "OBJECT", "ENCODING", ["k"], []),
    (["XINFO", "STREAM", "s", "FULL"], "XINFO", "STREAM", ["s"], ["FULL"]),
    (
        ["XREAD", "COUNT", "5", "STREAMS", "s1", "s2", "0", "$"],
        "XREAD",
        None,
        ["s1", "s2"],
        ["COUNT", "<redacted:1>", "STREAMS", "<redacted:1>", "<redacted:1>"],
    ),
    (["EVALSHA", "ab" * 20, "1", "k", "arg"], "EVALSHA", None, ["k"], ["ab" * 20, "1", "<redacted:3>"]),
    (["SELECT", "3"], "SELECT", None, [], ["3"]),
    (["SWAPDB", "0", "1"], "SWAPDB", None, [], ["0", "1"]),
    (["CLIENT", "SETNAME", "worker-1"], "CLIENT", "SETNAME", [], ["worker-1"]),
    (
        ["CLIENT", "KILL", "USER", "bob", "SKIPME", "yes"],
        "CLIENT",
        "KILL",
        [],
        ["USER", "bob", "SKIPME", "YES"],
    ),
    (["ACL", "DELUSER", "bob", "alice"], "ACL", "DELUSER", [], ["bob", "alice"]),
    (["ACL", "GETUSER", "bob"], "ACL", "GETUSER", [], ["bob"]),
    (["AUTH", "bob", "pw"], "AUTH", None, [], ["bob", "<secret>"]),
    (["HELLO", "3", "SETNAME", "app"], "HELLO", None, [], ["3", "SETNAME", "app"]),
    (["PING"], "PING", None, [], []),
    (["MULTI"], "MULTI", None, [], []),
]


@pytest.mark.parametrize(
    ("args", "command", "sub", "keys", "rargs"), ROLE_TABLE, ids=[" ".join(c[0]) for c in ROLE_TABLE]
)
def test_roles(args: list[str], command: str, sub: str | None, keys: list[str], rargs: list[str]) -> None:
    r = row(args, KeysPolicy.PLAIN)
    assert (r.command, r.subcommand, r.keys, r.args) == (command, sub, keys, rargs)


def test_row_fields() -> None:
    r = row(["SET", "k", "v"])
    assert r.event == "command"
    assert r.source == "pcap"
    assert (r.conn_id, r.seq, r.user, r.db, r.resp) == ("c1", 7, "default", 0, 2)
    assert (r.client_addr, r.client_port, r.server_addr, r.server_port) == ("192.0.2.10", 40000, "192.0.2.1", 6379)
    assert r.status == "ok"
    assert r.latency_us == 250.0
    assert r.request_bytes == 13  # 5 argument bytes + 8 in the helper
    assert r.reply_bytes == 5
    assert r.acl_categories == ["@slow", "@string", "@write"]
    nr = row(["SET", "k", "v"], status=Status.NO_REPLY)
    assert nr.latency_us is None
    assert nr.status == "no_reply"


def test_lifecycle_event() -> None:
    e = Exchange(event=Event.GAP, conn="c1", ts_ns=5, meta=META, lost_bytes=100, detail="missing")
    r = Redactor().row(e)
    assert (r.event, r.command, r.keys, r.args, r.lost_bytes, r.detail) == ("gap", None, None, None, 100, "missing")
    r = Redactor().row(Exchange(event=Event.AUDITOR_START, conn="", ts_ns=5, meta=None))
    assert r.event == "auditor_start"


def test_true_lengths_from_lens() -> None:
    # the parser kept 4 bytes of a 100000-byte value
    r = row(["SET", "k", "vvvv"], lens=[3, 1, 100000])
    assert r.args == ["<redacted:100000>"]


def test_scripts() -> None:
    body = "return redis.call('GET', KEYS[1])"
    sha = hashlib.sha1(body.encode()).hexdigest()
    assert row(["EVAL", body, "1", "k"]).args == [f"<sha1:{sha}>", "1"]
    assert row(["EVAL_RO", body, "0"]).args == [f"<sha1:{sha}>", "0"]
    assert row(["SCRIPT", "LOAD", body]).args == [f"<sha1:{sha}>"]
    assert row(["FUNCTION", "LOAD", "REPLACE", body]).args == ["REPLACE", f"<sha1:{sha}>"]
    # truncated by the parser: the SHA would be wrong
    assert row(["EVAL", body[:10], "0"], lens=[4, 5000, 1]).args == ["<script:5000>", "0"]
    assert row(["EVAL", body, "0"], gap_bytes=10).args == [f"<script:{len(body)}>", "0"]


def test_list_caps() -> None:
    n = limits.MAX_ROW_KEYS + 500
    args = ["MSET"]
    for i in range(n):
        args += [f"k{i}", "v"]
    r = row(args, KeysPolicy.PLAIN)
    assert r.keys is not None and r.args is not None
    assert len(r.keys) == limits.MAX_ROW_KEYS + 1
    assert r.keys[-1] == "<+500 more>"
    assert len(r.args) == limits.MAX_ROW_ARGS + 1
    assert r.args[-1] == f"<+{n - limits.MAX_ROW_ARGS} more>"


def test_drop_policy() -> None:
    r = row(["MGET", "a", "b"], KeysPolicy.DROP)
    assert r.keys == []
    assert r.args == []


# --- secrets: never in a Row, under any policy -----------------------------------------

SECRET_CASES: list[tuple[list[str], Status, bytes | None]] = [
    (["AUTH", CANARY], Status.ERROR, b"WRONGPASS invalid username-password pair or user is disabled."),
    (["AUTH", "bob", CANARY], Status.OK, None),
    (["auth", "bob", CANARY, "extra"], Status.ERROR, b"ERR syntax error"),
    (["HELLO", "3", "AUTH", "bob", CANARY, "SETNAME", "app"], Status.OK, None),
    (["HELLO", "AUTH", "bob", CANARY], Status.ERROR, b"NOPROTO unsupported protocol version"),
    (["MIGRATE", "192.0.2.5", "6379", "", "0", "5000", "AUTH", CANARY, "KEYS", "a", "b"], Status.OK, None),
    (["MIGRATE", "192.0.2.5", "6379", "k", "0", "5000", "COPY", "AUTH2", "bob", CANARY], Status.OK, None),
    (["ACL", "SETUSER", "bob", "on", f">{CANARY}", "~*", "+@all"], Status.OK, None),
    (["ACL", "SETUSER", "bob", f"<{CANARY}"], Status.OK, None),
    (["ACL", "SETUSER", "bob", f"#{CANARY}", f"!{CANARY}"], Status.OK, None),
    (["CONFIG", "SET", "requirepass", CANARY], Status.OK, None),
    (["CONFIG", "SET", "masterauth", CANARY], Status.OK, None),
    (["CONFIG", "SET", "maxmemory", "1gb", "tls-key-file-pass", CANARY], Status.OK, None),
    (["config", "set", "REQUIREPASS", CANARY], Status.OK, None),
    (["EVAL", f"return '{CANARY}'", "0"], Status.OK, None),
    (["EVAL_RO", f"return '{CANARY}'", "0"], Status.OK, None),
    (["SCRIPT", "LOAD", f"return '{CANARY}'"], Status.OK, None),
    (["FUNCTION", "LOAD", f"#!lua name=lib\n-- {CANARY}"], Status.OK, None),
    (["SENTINEL", "SET", "mymaster", "auth-pass", CANARY], Status.OK, None),
    (["SENTINEL", "CONFIG", "SET", "sentinel-pass", CANARY], Status.OK, None),
    (["MYMODULE.LOGIN", "AUTH", CANARY], Status.OK, None),
    (["MODULE", "LOADEX", "/m.so", "CONFIG", "m.password", CANARY], Status.OK, None),
    (["ACL", "SETUSER", f">{CANARY}", "on"], Status.OK, None),  # the user name forgotten
    (
        ["ACL", "SETUSER", "bob", f" >{CANARY}"],
        Status.ERROR,
        f"ERR Error in ACL SETUSER modifier ' >{CANARY}'".encode(),
    ),
    (
        ["ACL", "SETUSER", "bob", f"(~x >{CANARY})"],
        Status.ERROR,
        f"ERR Error in ACL SETUSER modifier '(~x >{CANARY})': Syntax error".encode(),
    ),
    # a password typed where an identifier belongs
    (["HELLO", CANARY], Status.ERROR, b"NOPROTO unsupported protocol version"),
    (["SELECT", CANARY], Status.ERROR, b"ERR value is not an integer or out of range"),
    (["EVALSHA", CANARY, "0"], Status.ERROR, b"NOSCRIPT No matching script. Please use EVAL."),
    # a password pasted at the prompt
    ([CANARY], Status.ERROR, f"ERR unknown command '{CANARY}', with args beginning with: ".encode()),
    ([CANARY, "x"], Status.ERROR, f"ERR unknown command `{CANARY}`, with args beginning with: `x`, ".encode()),
    ([CANARY], Status.NO_REPLY, None),
    ([CANARY], Status.UNKNOWN, None),
    (["CONFIG", CANARY], Status.ERROR, f"ERR unknown subcommand '{CANARY}'. Try CONFIG HELP.".encode()),
    (["x", CANARY], Status.ERROR, f"ERR unknown command 'x', with args beginning with: '{CANARY}' ".encode()),
    # a truncated error reply leaving a quote open
    (["GET", "k"], Status.ERROR, f"ERR something about '{CANARY}".encode()),
    (["GET", "k"], Status.ERROR, f"ERR it's about '{CANARY}'s thing'".encode()),
]


@pytest.mark.parametrize("policy", list(KeysPolicy))
@pytest.mark.parametrize(("args", "status", "error"), SECRET_CASES, ids=[" ".join(c[0])[:50] for c in SECRET_CASES])
def test_secrets_never_in_row(args: list[str], status: Status, error: bytes | None, policy: KeysPolicy) -> None:
    r = Redactor(policy, HMAC_KEY).row(ex(args, status, error))
    for text in (repr(r), str(r)):
        assert CANARY not in text
        assert "CANARY" not in text.upper()
        assert "7f3a" not in text


def test_secret_markers_have_no_length() -> None:
    assert row(["AUTH", CANARY]).args == ["<secret>"]
    assert row(["CONFIG", "SET", "requirepass", CANARY]).args == ["requirepass", "<secret>"]
    assert row(["ACL", "SETUSER", "bob", "on", f">{CANARY}", "nopass", "resetpass", "~*", "+@all"]).args == [
        "bob", "on", "<secret>", "nopass", "resetpass", "~*", "+@all",
    ]  # fmt: skip
    assert row(["HELLO", "3", "AUTH", "bob", CANARY]).args == ["3", "AUTH", "bob", "<secret>"]
    assert row(["MIGRATE", "h", "1", "", "0", "5", "AUTH2", "bob", CANARY, "KEYS", "a"]).args == [
        "h", "1", "", "0", "<redacted:1>", "AUTH2", "bob", "<secret>", "KEYS",
    ]  # fmt: skip


def test_no_payload_in_reprs() -> None:
    e = ex(["SET", "k", CANARY])
    assert CANARY not in repr(e)
    assert CANARY not in repr(e.request)
    assert "CANARY" not in repr(Redactor(KeysPolicy.HASH, HMAC_KEY))
    assert "kkkk" not in repr(Redactor(KeysPolicy.HASH, HMAC_KEY))


# --- unknown commands ------------------------------------------------------------------


def test_unknown_command_rejected_is_hidden() -> None:
    r = row(
        ["hunter2", "a"], status=Status.ERROR, error=b"ERR unknown command 'hunter2', with args beginning with: 'a' "
    )
    assert r.command == "<unknown:7>"
    assert r.args == ["<redacted:1>"]
    assert r.error == "ERR unknown command '<redacted:7>', with args beginning with: <redacted>"
    assert r.acl_categories is None


def test_unknown_command_that_ran_is_kept() -> None:
    r = row(["mymod.do", "a"], status=Status.OK)
    assert r.command == "MYMOD.DO"
    assert r.args == ["<redacted:1>"]
    r = row(["mymod.do", "a"], status=Status.ERROR, error=b"ERR mymod: bad input")
    assert r.command == "MYMOD.DO"
    assert row(["x" * 100], status=Status.OK).command == "X" * limits.MAX_COMMAND_CHARS + "…<+36>"


def test_unknown_command_without_reply_is_hidden() -> None:
    assert row(["hunter2"], status=Status.NO_REPLY).command == "<unknown:7>"
    assert row(["hunter2"], status=Status.UNKNOWN).command == "<unknown:7>"


# --- errors -------------------------------------------------------------------------------


def test_error_scrubbing() -> None:
    r = row(["GET"], status=Status.ERROR, error=b"ERR wrong number of arguments for 'get' command")
    assert r.error == "ERR wrong number of arguments for 'get' command"
    r = row(
        ["CONFIG", "SET", "x"], status=Status.ERROR, error=b"ERR wrong number of arguments for 'config|set' command"
    )
    assert r.error == "ERR wrong number of arguments for 'config|set' command"
    r = row(
        ["CONFIG", "SET", "maxmemory", "lots"],
        status=Status.ERROR,
        error=b"ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument couldn't be parsed",
    )
    assert r.error == "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument couldn't be parsed"
    r = row(["XADD", "s", "*", "f"], status=Status.ERROR, error=b"ERR value 'secret-ish' isn't valid")
    assert r.error == "ERR value '<redacted:10>' isn't valid"
    r = row(["GET", "k"], status=Status.ERROR, error=b"ERR x " + b"y" * 2000)
    assert r.error is not None and len(r.error) == limits.MAX_ERROR_CHARS
    r = row(
        ["GET", "k"], status=Status.ERROR, error=b"WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert r.error == "WRONGTYPE Operation against a key holding the wrong kind of value"


# --- keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("user:alice@example.com:cart", "user:<email>:cart"),
        ("card:4111111111111111", "card:<card>"),
        ("card:4111 1111 1111 1111:x", "card:<card>:x"),
        ("card:4111-1111-1111-1111", "card:<card>"),
        ("card:4111111111111112", "card:4111111111111112"),  # fails Luhn
        ("order:12345678901234567890123", "order:12345678901234567890123"),  # too long for a card
        ("ssn:123-45-6789", "ssn:<ssn>"),
        ("phone:+14155552671", "phone:<phone>"),
        ("phone:+44 20 7946 0958:x", "phone:<phone>:x"),
        ("iban:DE89370400440532013000", "iban:<iban>"),
        ("iban:GB82 WEST 1234 5698 7654 32", "iban:<iban>"),
        ("iban:DE89370400440532013001", "iban:DE89370400440532013001"),  # bad checksum
        ("session:1700000000", "session:1700000000"),
        ("user:1000", "user:1000"),
        ("plain", "plain"),
    ],
)
def test_mask(key: str, masked: str) -> None:
    assert mask_key(key) == masked
    assert row(["GET", key]).keys == [masked]


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")


def test_hash_policy() -> None:
    r1 = row(["GET", "user:1"], KeysPolicy.HASH)
    r2 = row(["SET", "user:1", "v"], KeysPolicy.HASH)
    assert r1.keys == r2.keys
    assert r1.keys is not None
    (h,) = r1.keys
    assert h.startswith("hmac:") and len(h) == 5 + 32
    int(h[5:], 16)
    assert h == "hmac:" + hmac.new(HMAC_KEY, b"user:1", hashlib.sha256).hexdigest()[:32]
    long_key = b"L" * 100  # HMAC keys longer than a SHA-256 block are hashed first
    got = Redactor(KeysPolicy.HASH, long_key).key(b"user:1")
    assert got == "hmac:" + hmac.new(long_key, b"user:1", hashlib.sha256).hexdigest()[:32]
    assert row(["GET", "user:2"], KeysPolicy.HASH).keys != r1.keys
    other = Redactor(KeysPolicy.HASH, b"x" * 32).row(ex(["GET", "user:1"]))
    assert other.keys != r1.keys
    assert "user:1" not in repr(r1)
    with pytest.raises(ValueError):
        Redactor(KeysPolicy.HASH, None)


def test_plain_key_cap() -> None:
    r = row(["GET", "a" * (limits.MAX_KEY_CHARS + 10)], KeysPolicy.PLAIN)
    assert r.keys == ["a" * limits.MAX_KEY_CHARS + "…<+10>"]
    # the parser kept 5 of 9000 bytes
    r = row(["GET", "abcde"], KeysPolicy.PLAIN, lens=[3, 9000])
    assert r.keys == ["abcde…<+8995>"]


def test_binary_key_is_backslash_escaped() -> None:
    r = Redactor(KeysPolicy.PLAIN).row(ex([b"GET", b"k\xff"]))
    assert r.keys == ["k\\xff"]


# --- key file -------------------------------------------------------------------------


def test_keyfile_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "hmac.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_keyfile_refuses_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "hmac.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError):
        load_or_create_key(path)


def test_keyfile_refuses_short_or_symlink(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_or_create_key(short)
    link = tmp_path / "link.key"
    link.symlink_to(short)
    with pytest.raises(OSError):
        load_or_create_key(link)


def test_keyfile_not_in_trail(tmp_path: Path) -> None:
    trail = tmp_path / "trail"
    trail.mkdir()
    with pytest.raises(KeyFileError, match="trail"):
        load_or_create_key(trail / "hmac.key", trail_dir=trail)
    assert not (trail / "hmac.key").exists()


def test_keyfile_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_AUDIT_KEY_FILE", str(tmp_path / "env.key"))
    assert default_key_path() == tmp_path / "env.key"
    key = load_or_create_key(None)
    assert (tmp_path / "env.key").read_bytes() == key
    monkeypatch.delenv("REDIS_AUDIT_KEY_FILE")
    expected = "/var/lib/redis-audit/hmac.key" if os.geteuid() == 0 else ".local/share/redis-audit/hmac.key"
    assert str(default_key_path()).endswith(expected)


# --- fast path: static plans per request shape -------------------------------------------------

# requests of one command (of one argument count but for AUTH) whose secrets sit
# at different places, or only in one of them
SHAPE_PAIRS: list[tuple[list[str], list[str]]] = [
    (["AUTH", "bob", "x"], ["AUTH", CANARY]),
    (["AUTH", "x"], ["AUTH", "bob", CANARY]),
    (["AUTH", "bob", "x"], ["auth", "bob", CANARY, "extra"]),
    (["CONFIG", "SET", "maxmemory", "1gb"], ["CONFIG", "SET", "requirepass", CANARY]),
    (["config", "set", "maxmemory", "1gb"], ["config", "set", "masterauth", CANARY]),
    (["ACL", "SETUSER", "bob", "on", "~*"], ["ACL", "SETUSER", "bob", "on", f">{CANARY}"]),
    (["ACL", "SETUSER", "bob", "on"], ["ACL", "SETUSER", f">{CANARY}", "on"]),
    (["HELLO", "3", "SETNAME", "app", "x"], ["HELLO", "3", "AUTH", "bob", CANARY]),
    (["LPUSH", "l", "a", "b"], ["LPUSH", "l", "AUTH", CANARY]),
    (["LPUSH", "l", "a", "b"], ["lpush", "l", "auth", CANARY]),
    (["SET", "k", "v", "GET"], ["SET", "k", "AUTH", CANARY]),
    (["MIGRATE", "h", "1", "k", "0", "5", "COPY", "x"], ["MIGRATE", "h", "1", "k", "0", "5", "AUTH", CANARY]),
    (["MODULE", "LOADEX", "/m.so", "CONFIG", "a", "b"], ["MODULE", "LOADEX", "/m.so", "CONFIG", "m.pass", CANARY]),
]


@pytest.mark.parametrize("policy", list(KeysPolicy))
@pytest.mark.parametrize(("plain", "secret"), SHAPE_PAIRS, ids=[" ".join(p[1])[:40] for p in SHAPE_PAIRS])
def test_shape_cache_never_mixes_secret_positions(plain: list[str], secret: list[str], policy: KeysPolicy) -> None:
    """In every order, with plans built by the first: the request holding a
    secret never gets the plan of the one without (nor the other way round)."""
    red = Redactor(policy, HMAC_KEY)
    for order in ((plain, secret), (secret, plain), (plain, secret, plain, secret)):
        for args in order:
            r = red.row(ex(args))
            assert r == red._row(ex(args))
            if args is secret:
                assert CANARY not in repr(r) and "<secret>" in (r.args or [])


def _corpus() -> list[tuple[list[bytes], Status, bytes | None, list[int] | None]]:
    rnd = random.Random(11)
    table = all_commands()
    values = [b"xxx", b"", b"10", b"-5", b"abc", b"\xff\xfe", b"user@example.com", b"4111111111111111", b"AUTH"]
    values += [b"+14155552671", b"DE89370400440532013000", b"0123abcd" * 5, b"on", b">pw", b"~*", b"x" * 5000]
    out: list[tuple[list[bytes], Status, bytes | None, list[int] | None]] = []
    for name, info in sorted(table.items()):
        cmd, _, sub = name.partition("|")
        words = sorted(_plan(info).tokens)
        for _ in range(8):
            args = [rnd.choice([cmd.encode(), cmd.upper().encode(), cmd.capitalize().encode()])]
            if sub:
                args.append(rnd.choice([sub.encode(), sub.upper().encode()]))
            for _ in range(rnd.choice([0, 1, 2, 3, 5, 8, 40])):
                r = rnd.random()
                if r < 0.25 and words:
                    w = rnd.choice(words)
                    args.append(w if r < 0.15 else w.lower())
                elif r < 0.7:
                    args.append(rnd.choice(values))
                else:
                    args.append(f"key:{rnd.randint(0, 10**12):012d}".encode())
            status = rnd.choice([Status.OK, Status.OK, Status.ERROR, Status.NO_REPLY])
            error = None
            if status is Status.ERROR and rnd.random() < 0.7:
                quoted = rnd.choice(args)[:30]
                error = rnd.choice([b"ERR syntax error near '" + quoted + b"'", b"ERR value `" + quoted + b"` is bad"])
            lens = [len(a) + rnd.choice([0, 0, 7]) for a in args] if rnd.random() < 0.1 else None
            out.append((args, status, error, lens))
    return out


CORPUS = _corpus()


@pytest.mark.parametrize("policy", list(KeysPolicy))
def test_fast_path_equals_general_path(policy: KeysPolicy) -> None:
    """Every request of a corpus drawn from the whole command table (words in
    any case, values that look like words, truncated arguments, error
    replies) gives the same Row on the fast path as on the general one."""
    red = Redactor(policy, HMAC_KEY)
    for _ in range(2):  # the second round runs on built plans
        for args, status, error, lens in CORPUS:
            assert red.row(ex(args, status, error, lens)) == red._row(ex(args, status, error, lens)), args[:3]


def test_fast_path_covers_typical_commands() -> None:
    """The benchmark commands take the fast path (no general-path call)."""
    calls: list[object] = []

    class Spy(Redactor):
        __slots__ = ()

        def _row(self, e: Exchange) -> Row:
            calls.append(e)
            return super()._row(e)

    red = Spy(KeysPolicy.MASK)
    typical = ["SET key:000123 xxx", "GET key:000123", "INCR counter", "LPUSH l xxx", "HSET h f xxx"]
    typical += ["MSET a 1 b 2 c 3", "EXPIRE k 10", "set k v", "SET k v EX 10", "ZADD z NX 1 m", "SELECT 3"]
    for line in typical:
        for _ in range(2):
            red.row(ex(line.split()))
    assert calls == []


@pytest.mark.parametrize(
    "key",
    ["key:000123", "key:000000001234", "user:alice@example.com", "card:4111111111111111", "card:4111111111111112",
     "ssn:123-45-6789", "phone:+14155552671", "iban:DE89370400440532013000", "iban:GB82 WEST 1234 5698 7654 32",
     "order:12345678901234567890123", "a.b_c%d+e-f g", "k\xe9y:4111111111111111", "x" * 2000],
)  # fmt: skip
def test_mask_by_class_string_equals_mask_key(key: str) -> None:
    red = Redactor(KeysPolicy.MASK)
    for raw in (key.encode(), key.encode("latin-1", "replace")):
        want = mask_key(raw.decode("utf-8", "backslashreplace"))
        if len(want) > limits.MAX_KEY_CHARS:
            want = want[: limits.MAX_KEY_CHARS] + f"…<+{len(want) - limits.MAX_KEY_CHARS}>"
        for _ in range(2):
            assert red.key(raw) == want


def test_mask_by_class_string_random_keys() -> None:
    """Keys drawn from the characters the patterns care about: equal to mask_key."""
    rnd = random.Random(3)
    alphabet = "0123456789" * 4 + "abcXYZ" + "._%+- @:#" + "\xe9"
    red = Redactor(KeysPolicy.MASK)
    for _ in range(20000):
        key = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        raw = key.encode()
        assert red.key(raw) == mask_key(raw.decode("utf-8", "backslashreplace")), key


def test_hash_cache_bounded_and_equal() -> None:
    red = Redactor(KeysPolicy.HASH, HMAC_KEY)
    want = "hmac:" + hmac.new(HMAC_KEY, b"user:1", hashlib.sha256).hexdigest()[:32]
    assert red.key(b"user:1") == red.key(b"user:1") == want
    for i in range(redact._HASHED_MAX + 10):
        red.key(b"k%d" % i)
    assert len(red._hashed) <= redact._HASHED_MAX
    assert red.key(b"user:1") == want
    long_key = b"L" * (redact._HASHED_MAX_LEN + 1)
    assert red.key(long_key) == "hmac:" + hmac.new(HMAC_KEY, long_key, hashlib.sha256).hexdigest()[:32]
    assert long_key not in red._hashed

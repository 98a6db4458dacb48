#!/usr/bin/env python3
"""Capture the golden pcaps in tests/pcaps/ from a real redis-server, and write tests/pcaps/manifest.json.

Each scenario starts its own redis-server (tests/redis_fixtures.py) on a random port, captures loopback TCP
traffic of that port with tcpdump while real clients (redis-cli, redis-py, raw sockets) talk to it, and records
facts that do not depend on our parser: INFO commandstats / errorstats / connection counters taken before and
after (the helper's own Unix-socket admin calls subtracted), the error replies the clients received, and for raw
connections a transcript of what was sent and what kind of reply came back, in order.

Content is fixed (keys, values, passwords, random bytes from fixed seeds); timestamps, client ports, server
port, client ids and hash-table orders (SCAN, SMEMBERS, UNSUBSCRIBE without arguments) vary between runs.

Examples:
    .venv/bin/python scripts/make_golden_pcaps.py              # all captures, rewrites manifest.json
    .venv/bin/python scripts/make_golden_pcaps.py --only multi # one capture, other manifest entries kept
    .venv/bin/python scripts/make_golden_pcaps.py --list       # scenario names
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from redis_fixtures import (  # noqa: E402
    Attribute,
    BigNumber,
    Push,
    RedisError,
    RedisServer,
    RespConn,
    Tcpdump,
    Verbatim,
    encode_command,
    require_tool,
)

PCAP_DIR = REPO / "tests" / "pcaps"
MANIFEST = PCAP_DIR / "manifest.json"
MAX_TOTAL_BYTES = 3_500_000  # the brief: keep all captures together around 3 MB

# Container commands whose first argument is a subcommand (for transcripts only).
_CONTAINERS = {"ACL", "CLIENT", "CONFIG", "DEBUG", "COMMAND", "MEMORY", "OBJECT", "SCRIPT", "FUNCTION", "PUBSUB"}


# --------------------------------------------------------------------------- scenario plumbing


def summarize(reply: Any) -> str:
    """Kind of a reply as the client saw it, without its value: 'bulk 3', 'error WRONGTYPE ...', 'push message'."""
    if isinstance(reply, RedisError):
        return f"error {reply}"
    if isinstance(reply, Push):
        kind = reply.items[0] if reply.items else b""
        return f"push {kind.decode() if isinstance(kind, bytes) else kind} ({len(reply.items)})"
    if isinstance(reply, Attribute):
        return f"attribute {len(reply.attrs)} + {summarize(reply.reply)}"
    if isinstance(reply, bool):
        return "boolean"
    if isinstance(reply, int):
        return "integer"
    if isinstance(reply, float):
        return "double"
    if isinstance(reply, BigNumber):
        return "bignum"
    if isinstance(reply, Verbatim):
        return f"verbatim {reply.fmt}"
    if reply is None:
        return "null"
    if isinstance(reply, str):
        return "simple"
    if isinstance(reply, bytes):
        return f"bulk {len(reply)}"
    if isinstance(reply, (set, frozenset)):
        return f"set {len(reply)}"
    if isinstance(reply, dict):
        return f"map {len(reply)}"
    if isinstance(reply, list):
        return f"array {len(reply)}"
    raise TypeError(type(reply))


def command_label(args: tuple[bytes | str | int, ...]) -> str:
    words = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args[:2]]
    name = words[0].upper()
    if name in _CONTAINERS and len(words) > 1:
        return f"{name} {words[1].upper()}"
    return name


class Conn(RespConn):
    """A `RespConn` that writes a transcript: '> SET' for each command sent, '< simple' for each reply read."""

    def __init__(self, port: int, transcript: list[str] | None, errors: list[str]) -> None:
        super().__init__(port, errors=errors)
        self.transcript = transcript

    def _log(self, line: str) -> None:
        if self.transcript is not None:
            self.transcript.append(line)

    def send_command(self, *args: bytes | str | int) -> None:
        self._log(f"> {command_label(args)}")
        super().send_command(*args)

    def send_raw(self, data: bytes, note: str) -> None:
        """Send bytes as they are (inline commands, garbage); `note` describes them in the transcript."""
        self._log(f"> raw {len(data)} bytes: {note}")
        self.send(data)

    def read(self) -> Any:
        reply = super().read()
        self._log(f"< {summarize(reply)}")
        return reply

    def expect(self, *args: bytes | str | int, reply: Any = ...) -> Any:
        """`call`, and check the reply when `reply` is given (a type for 'any value of this type')."""
        got = self.call(*args)
        check(got, reply, command_label(args))
        return got

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        data = super().read_until_closed(timeout)
        self._log(f"< {len(data)} more bytes, then {'closed by server' if self.peer_closed else 'still open'}")
        return data

    def close(self) -> None:
        self._log("> close")
        super().close()


def check(got: Any, want: Any, what: str) -> None:
    if want is ...:
        return
    if isinstance(want, type):
        ok = isinstance(got, want)
    elif isinstance(want, str) and isinstance(got, RedisError):
        ok = str(got).startswith(want)
    else:
        ok = got == want
    if not ok:
        raise AssertionError(f"{what}: unexpected reply {summarize(got)!r} (wanted {want!r})")


@dataclass
class Ctx:
    """What a scenario gets: the server, and places to record what the clients saw."""

    server: RedisServer
    errors: list[str] = field(default_factory=list)
    transcripts: dict[str, list[str]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def conn(self, label: str | None = None) -> Conn:
        """A raw connection; with a `label` its transcript goes into the manifest."""
        transcript = None
        if label is not None:
            assert label not in self.transcripts, label
            transcript = self.transcripts[label] = []
        return Conn(self.server.port, transcript, self.errors)

    def cli(self, *args: str, input: str | None = None, extra: tuple[str, ...] = ()) -> str:
        """redis-cli (human output), its '(error) ...' lines recorded as errors seen."""
        out = self.server.cli("--no-raw", *args, input=input, extra=extra).stdout
        self.errors += [line.removeprefix("(error) ") for line in out.splitlines() if line.startswith("(error) ")]
        return out


@contextlib.contextmanager
def redis_py_commands(into: list[str]) -> Iterator[None]:
    """Record the commands redis-py sends one by one (its connection handshake; pipelines are packed apart)."""
    from redis.connection import AbstractConnection

    original = AbstractConnection.send_command

    def send_command(self: Any, *args: Any, **kwargs: Any) -> None:
        into.append(command_label(args))
        original(self, *args, **kwargs)

    AbstractConnection.send_command = send_command  # type: ignore[method-assign]
    try:
        yield
    finally:
        AbstractConnection.send_command = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[Ctx], None]
    config: tuple[str, ...] = ()
    password: str | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, description: str, config: tuple[str, ...] = (), password: str | None = None):
    def register(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        SCENARIOS[name] = Scenario(name, description, fn, config, password)
        return fn

    return register


# --------------------------------------------------------------------------- scenarios

BASIC_SESSION = """\
PING
ECHO "hello world"
SET user:1:name alice
GET user:1:name
MSET k1 v1 k2 v2 k3 v3
MGET k1 k2 missing
INCR counter
INCR counter
EXPIRE user:1:name 3600
TTL user:1:name
TYPE user:1:name
DEL k3
HSET user:1 name alice email alice@example.com
HGETALL user:1
LPUSH queue a b c
LRANGE queue 0 -1
SADD tags red green blue
ZADD scores 1 one 2 two 3.5 three
ZRANGE scores 0 -1 WITHSCORES
SET login:alice@example.com 1
SET card:4111111111111111 on-file
SCAN 0 COUNT 100
TYPE queue
INCR user:1
NOSUCHCMD arg1 arg2
GET user:1:name
"""


@scenario(
    "basic",
    "redis-cli: one interactive session fed on stdin (redis-cli 7.0 first sends COMMAND DOCS, ~170 kB reply), "
    "common commands of every type, a WRONGTYPE error, an unknown command; then two one-shot redis-cli runs.",
)
def basic(ctx: Ctx) -> None:
    out = ctx.cli(input=BASIC_SESSION)
    ctx.cli("GET", "user:1:name")
    ctx.cli("DBSIZE")
    assert "WRONGTYPE" in out and "unknown command" in out, out
    ctx.facts["session_commands"] = [line.split()[0].upper() for line in BASIC_SESSION.splitlines()]
    ctx.facts["pii_keys"] = ["login:alice@example.com", "card:4111111111111111"]
    ctx.facts["connections_by_client"] = {"redis-cli session (stdin)": 1, "redis-cli one-shot": 2}


@scenario(
    "pipeline",
    "redis-py (default protocol: HELLO 3 handshake) pipeline of 500 SET + 500 GET with transaction=False, "
    "then a raw socket writing 300 pipelined commands (100 x SET/INCR/GET) in one sendall.",
)
def pipeline(ctx: Ctx) -> None:
    import redis

    handshake: list[str] = []
    r = ctx.server.client()
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"pipe:{i:03d}", f"value-{i:03d}")
    for i in range(500):
        pipe.get(f"pipe:{i:03d}")
    with redis_py_commands(handshake):
        results = pipe.execute()
    assert results[:500] == [True] * 500 and results[500:] == [f"value-{i:03d}".encode() for i in range(500)]
    r.close()

    blob = b"".join(
        encode_command(*args)
        for i in range(100)
        for args in (("SET", f"raw:{i:03d}", f"v{i:03d}"), ("INCR", "raw:ctr"), ("GET", f"raw:{i:03d}"))
    )
    c = ctx.conn()
    c.send(blob)
    replies = [c.read() for _ in range(300)]
    assert replies[0::3] == ["OK"] * 100 and replies[1::3] == list(range(1, 101)), replies[:6]
    c.close()
    ctx.facts["redis_py"] = {
        "version": redis.__version__,
        "handshake": handshake,
        "handshake_note": "sent one by one before the pipeline; Redis 7.0 answers each CLIENT subcommand with "
        "'ERR unknown subcommand' (in errorstats ERR, absent from commandstats); redis-py ignores these errors",
        "pipelined_commands": 1000,
    }
    ctx.facts["raw_pipeline"] = {"commands": 300, "bytes_in_one_write": len(blob)}
    ctx.facts["connections_by_client"] = {"redis-py": 1, "raw": 1}


CANARIES = {
    "default_password": "default-CANARY-pw-90",
    "alice_password": "alice-CANARY-pw-91",
    "bob_password": "bob-CANARY-pw-92",
    "new_requirepass": "CANARY-NEW-pw-93",
    "secret_value": "CANARY-VALUE-94",
    "carol_password": "carol-CANARY-pw-95",
    "bob_password_2": "bob-CANARY-pw-96",
    "wrong_default_password": "wrong-CANARY-pw-97",
    "wrong_alice_password": "wrong-CANARY-pw-98",
    "wrong_hello_password": "bad-CANARY-pw-99",
}
CAROL_HASH = hashlib.sha256(CANARIES["carol_password"].encode()).hexdigest()


@scenario(
    "auth_acl",
    "requirepass + ACL user alice: NOAUTH before AUTH, WRONGPASS, AUTH alice, NOPERM (key and command), "
    "AUTH default, HELLO 3 AUTH, ACL SETUSER (>pass, #hash, <pass), CONFIG SET/GET requirepass, redis-py and "
    "redis-cli logins. Every secret contains 'CANARY' (see canaries).",
    config=(f"user alice on >{CANARIES['alice_password']} ~app:* +@read +@write -@dangerous",),
    password=CANARIES["default_password"],
)
def auth_acl(ctx: Ctx) -> None:
    k = CANARIES
    a = ctx.conn("1-default-then-alice-then-default")
    a.expect("PING", reply="NOAUTH")
    a.expect("SET", "app:x", "1", reply="NOAUTH")
    a.expect("AUTH", k["wrong_default_password"], reply="WRONGPASS")
    a.expect("AUTH", "alice", k["wrong_alice_password"], reply="WRONGPASS")
    a.expect("AUTH", "alice", k["alice_password"], reply="OK")
    a.expect("SET", "app:secret", k["secret_value"], reply="OK")
    a.expect("GET", "app:secret", reply=k["secret_value"].encode())
    a.expect("GET", "other:1", reply="NOPERM")  # key outside ~app:*
    a.expect("FLUSHALL", reply="NOPERM")  # @dangerous
    a.expect("AUTH", "default", k["default_password"], reply="OK")
    a.expect("ACL", "WHOAMI", reply=b"default")
    a.expect("ACL", "SETUSER", "bob", "on", f">{k['bob_password']}", "~*", "+@read", reply="OK")
    a.expect("ACL", "SETUSER", "carol", "on", f"#{CAROL_HASH}", "~*", "+@read", reply="OK")
    a.expect("ACL", "SETUSER", "bob", f"<{k['bob_password']}", f">{k['bob_password_2']}", reply="OK")
    a.expect("CONFIG", "SET", "requirepass", k["new_requirepass"], reply="OK")
    ctx.server.password = k["new_requirepass"]
    a.expect("CONFIG", "GET", "requirepass", reply=[b"requirepass", k["new_requirepass"].encode()])
    a.close()

    b = ctx.conn("2-hello3-auth-alice")
    b.expect("HELLO", "3", "AUTH", "alice", k["alice_password"], reply=dict)
    b.expect("GET", "app:secret", reply=k["secret_value"].encode())
    b.expect("PING", reply="NOPERM")  # alice has no @connection
    b.expect("HELLO", "3", "AUTH", "alice", k["wrong_hello_password"], reply="WRONGPASS")
    b.close()

    c = ctx.conn("3-bob")
    c.expect("AUTH", "bob", k["bob_password"], reply="WRONGPASS")  # removed by <pass
    c.expect("AUTH", "bob", k["bob_password_2"], reply="OK")
    c.expect("GET", "app:secret", reply=k["secret_value"].encode())
    c.expect("SET", "app:x", "1", reply="NOPERM")
    c.close()

    d = ctx.conn("4-default-new-password")
    d.expect("AUTH", k["default_password"], reply="WRONGPASS")  # changed by CONFIG SET requirepass
    d.expect("AUTH", k["new_requirepass"], reply="OK")
    d.expect("DBSIZE", reply=1)
    d.close()

    handshake: list[str] = []
    r = ctx.server.client(username="alice", password=k["alice_password"])
    with redis_py_commands(handshake):
        assert r.get("app:secret") == k["secret_value"].encode()
    r.close()
    ctx.facts["redis_py_commands"] = handshake
    ctx.cli("GET", "app:secret", extra=("--user", "bob", "--pass", k["bob_password_2"]))
    ctx.cli("DBSIZE", extra=("-a", k["new_requirepass"]))

    ctx.facts["canaries"] = sorted(k.values())
    ctx.facts["canary_substring"] = "CANARY"
    ctx.facts["secret_hashes"] = {"carol_password_sha256": CAROL_HASH}
    ctx.facts["secret_locations"] = [
        "AUTH <pass>, AUTH <user> <pass>, HELLO 3 AUTH <user> <pass> arguments",
        "ACL SETUSER >pass, <pass, #sha256 arguments",
        "CONFIG SET requirepass <pass> argument; CONFIG GET requirepass reply",
        "SET app:secret value and the GET replies carrying it",
    ]
    ctx.facts["connections_by_client"] = {
        "raw": 4,
        "redis-py (HELLO 3 AUTH alice)": 1,
        "redis-cli --user bob": 1,
        "redis-cli -a": 1,
    }
    ctx.facts["users_after_auth"] = {
        "1-default-then-alice-then-default": ["default (not authenticated)", "alice", "default"],
        "2-hello3-auth-alice": ["alice"],
        "3-bob": ["bob"],
        "4-default-new-password": ["default"],
    }


@scenario(
    "multi",
    "MULTI/EXEC with SELECT inside, DISCARD, EXECABORT after a queued syntax error, EXEC with a runtime error "
    "inside, EXEC/DISCARD without MULTI, nested MULTI, WATCH + concurrent change from a 2nd connection -> null EXEC.",
)
def multi(ctx: Ctx) -> None:
    a = ctx.conn("A")
    a.expect("MULTI", reply="OK")
    a.expect("SET", "m:a", "1", reply="QUEUED")
    a.expect("INCR", "m:counter", reply="QUEUED")
    a.expect("SELECT", "2", reply="QUEUED")
    a.expect("SET", "m:b", "2", reply="QUEUED")
    a.expect("EXEC", reply=["OK", 1, "OK", "OK"])
    a.expect("GET", "m:b", reply=b"2")  # db 2 now
    a.expect("SELECT", "0", reply="OK")
    a.expect("MULTI", reply="OK")
    a.expect("SET", "m:d", "x", reply="QUEUED")
    a.expect("DISCARD", reply="OK")
    a.expect("MULTI", reply="OK")
    a.expect("SET", "m:c", reply="ERR wrong number of arguments")
    a.expect("INCR", "m:counter", reply="QUEUED")
    a.expect("EXEC", reply="EXECABORT")
    a.expect("MULTI", reply="OK")
    a.expect("SET", "m:s", "abc", reply="QUEUED")
    a.expect("INCR", "m:s", reply="QUEUED")
    got = a.expect("EXEC", reply=list)
    assert got[0] == "OK" and str(got[1]).startswith("ERR value is not an integer"), got
    ctx.errors.append(str(got[1]))  # an error inside the EXEC array
    a.expect("EXEC", reply="ERR EXEC without MULTI")
    a.expect("DISCARD", reply="ERR DISCARD without MULTI")
    a.expect("MULTI", reply="OK")
    a.expect("MULTI", reply="ERR MULTI calls can not be nested")
    a.expect("WATCH", "m:w", reply="ERR WATCH inside MULTI is not allowed")
    a.expect("DISCARD", reply="OK")
    a.expect("WATCH", "m:w", reply="OK")
    a.expect("GET", "m:w", reply=None)
    b = ctx.conn("B")
    b.expect("SET", "m:w", "theirs", reply="OK")
    b.close()
    a.expect("MULTI", reply="OK")
    a.expect("SET", "m:w", "mine", reply="QUEUED")
    a.expect("EXEC", reply=None)  # *-1: the watched key changed
    a.expect("GET", "m:w", reply=b"theirs")
    a.close()
    ctx.facts["final_db"] = {"A": 0}
    ctx.facts["exec_results"] = ["array 4", "EXECABORT", "array 2 with an error", "null (watch)"]


@scenario(
    "pubsub2",
    "RESP2 pub/sub: SUBSCRIBE 2 channels, PSUBSCRIBE a pattern, PUBLISHes from another connection, PING and a "
    "refused GET in subscribe mode, UNSUBSCRIBE/PUNSUBSCRIBE without arguments, then normal commands.",
)
def pubsub2(ctx: Ctx) -> None:
    s = ctx.conn("sub")
    s.send_command("SUBSCRIBE", "news", "sports")
    check(s.read(), [b"subscribe", b"news", 1], "subscribe")
    check(s.read(), [b"subscribe", b"sports", 2], "subscribe")
    s.expect("PSUBSCRIBE", "w:*", reply=[b"psubscribe", b"w:*", 3])
    p = ctx.conn("pub")
    published = [
        ("news", "hello-1", 1),
        ("sports", "goal-2", 1),
        ("w:eu", "rain-3", 1),
        ("news", "hello-4", 1),
        ("nobody", "lost-5", 0),
    ]
    for channel, message, receivers in published:
        p.expect("PUBLISH", channel, message, reply=receivers)
    p.close()
    check(s.read(), [b"message", b"news", b"hello-1"], "message")
    check(s.read(), [b"message", b"sports", b"goal-2"], "message")
    check(s.read(), [b"pmessage", b"w:*", b"w:eu", b"rain-3"], "pmessage")
    check(s.read(), [b"message", b"news", b"hello-4"], "message")
    s.expect("PING", reply=[b"pong", b""])
    s.expect("PING", "hi", reply=[b"pong", b"hi"])
    s.expect("GET", "ps:k", reply="ERR Can't execute 'get'")
    s.send_command("UNSUBSCRIBE")
    left = sorted([s.read(), s.read()], key=lambda x: x[2])  # order follows the server's dict, varies
    check([x[:2] for x in left], [[b"unsubscribe", left[0][1]], [b"unsubscribe", left[1][1]]], "unsubscribe")
    s.expect("PUNSUBSCRIBE", reply=[b"punsubscribe", b"w:*", 0])
    s.expect("SET", "ps:k", "v", reply="OK")
    s.expect("GET", "ps:k", reply=b"v")
    s.expect("UNSUBSCRIBE", reply=[b"unsubscribe", None, 0])  # not subscribed: still a 3-element reply
    s.close()
    ctx.facts["messages_delivered_to_sub"] = 4
    ctx.facts["publishes"] = [{"channel": c, "receivers": n} for c, _, n in published]


@scenario(
    "pubsub3",
    "RESP3 (HELLO 3) pub/sub: SUBSCRIBE, PUBLISH from the same connection (push arrives before the :1 reply), "
    "SSUBSCRIBE/SPUBLISH, PING/GET while subscribed, a PUBLISH from another connection, CLIENT TRACKING ON with "
    "invalidation pushes (other client's write: push alone; own write: +OK then push), UNSUBSCRIBE pushes.",
)
def pubsub3(ctx: Ctx) -> None:
    s = ctx.conn("sub")
    s.expect("HELLO", "3", reply=dict)
    s.expect("SUBSCRIBE", "ch3", reply=Push([b"subscribe", b"ch3", 1]))
    s.send_command("PUBLISH", "ch3", "m1")
    check(s.read(), Push([b"message", b"ch3", b"m1"]), "own publish: push first")
    check(s.read(), 1, "own publish: then the reply")
    s.expect("SSUBSCRIBE", "sh1", reply=Push([b"ssubscribe", b"sh1", 1]))
    s.send_command("SPUBLISH", "sh1", "m2")
    check(s.read(), Push([b"smessage", b"sh1", b"m2"]), "own spublish: push first")
    check(s.read(), 1, "own spublish: then the reply")
    s.expect("PING", reply="PONG")  # RESP3: a normal reply even in subscribe mode
    s.expect("GET", "ps3:missing", reply=None)
    p = ctx.conn("other")
    p.expect("PUBLISH", "ch3", "m3", reply=1)
    check(s.read(), Push([b"message", b"ch3", b"m3"]), "push from other publisher")
    s.expect("CLIENT", "TRACKING", "ON", reply="OK")
    s.expect("GET", "ps3:t", reply=None)
    p.expect("SET", "ps3:t", "v1", reply="OK")
    check(s.read(), Push([b"invalidate", [b"ps3:t"]]), "invalidation")
    s.expect("GET", "ps3:t", reply=b"v1")
    s.send_command("SET", "ps3:t", "v2")
    check(s.read(), "OK", "own write: reply first")
    check(s.read(), Push([b"invalidate", [b"ps3:t"]]), "own write: then invalidation")
    p.close()
    s.expect("UNSUBSCRIBE", reply=Push([b"unsubscribe", b"ch3", 0]))  # shard channels are counted apart
    s.expect("SUNSUBSCRIBE", reply=Push([b"sunsubscribe", b"sh1", 0]))
    s.expect("PUNSUBSCRIBE", reply=Push([b"punsubscribe", None, 0]))  # nothing to leave: still a push
    s.expect("CLIENT", "TRACKING", "OFF", reply="OK")
    s.expect("GET", "ps3:t", reply=b"v2")
    s.close()
    ctx.facts["pushes_to_sub"] = {"subscribe-type": 6, "message": 2, "smessage": 1, "invalidate": 2}


@scenario(
    "hello3",
    "HELLO 3 then RESP3 reply types: map (HGETALL), set (SMEMBERS), double (ZSCORE), pairs (ZRANGE WITHSCORES), "
    "null, and via DEBUG PROTOCOL: boolean, bignum, verbatim, attribute, push+reply; HELLO 4 (NOPROTO); "
    "HELLO 2 and the same commands in RESP2.",
    config=("enable-debug-command local",),
)
def hello3(ctx: Ctx) -> None:
    c = ctx.conn("A")
    c.expect("HELLO", "3", reply=dict)
    c.expect("HSET", "h3", "f1", "v1", "f2", "v2", reply=2)
    c.expect("HGETALL", "h3", reply={b"f1": b"v1", b"f2": b"v2"})
    c.expect("SADD", "s3", "a", "b", "c", reply=3)
    c.expect("SMEMBERS", "s3", reply={b"a", b"b", b"c"})
    c.expect("ZADD", "z3", "1.5", "one", "2", "two", reply=2)
    c.expect("ZSCORE", "z3", "one", reply=1.5)
    c.expect("ZRANGE", "z3", "0", "-1", "WITHSCORES", reply=[[b"one", 1.5], [b"two", 2.0]])
    c.expect("GET", "missing", reply=None)
    c.expect("DEBUG", "PROTOCOL", "true", reply=True)
    c.expect("DEBUG", "PROTOCOL", "false", reply=False)
    c.expect("DEBUG", "PROTOCOL", "null", reply=None)
    c.expect("DEBUG", "PROTOCOL", "bignum", reply=BigNumber("1234567999999999999999999999999999999"))
    c.expect("DEBUG", "PROTOCOL", "verbatim", reply=Verbatim("txt", b"This is a verbatim\nstring"))
    c.expect(
        "DEBUG",
        "PROTOCOL",
        "attrib",
        reply=Attribute({b"key-popularity": [b"key:123", 90]}, b"Some real reply following the attribute"),
    )
    c.expect("DEBUG", "PROTOCOL", "push", reply=Push([b"server-cpu-usage", 42]))
    check(c.read(), b"Some real reply following the push reply", "the reply after the push")
    c.expect("HELLO", "4", reply="NOPROTO")
    c.expect("HELLO", "2", reply=list)
    c.expect("HGETALL", "h3", reply=[b"f1", b"v1", b"f2", b"v2"])
    c.expect("ZSCORE", "z3", "one", reply=b"1.5")
    c.expect("ZRANGE", "z3", "0", "-1", "WITHSCORES", reply=[b"one", b"1.5", b"two", b"2"])
    c.expect("DEBUG", "PROTOCOL", "true", reply=1)
    c.expect("DEBUG", "PROTOCOL", "map", reply=[0, 0, 1, 1, 2, 0])
    c.expect("DEBUG", "PROTOCOL", "push", reply="ERR RESP2 is not supported by this command")
    c.expect("GET", "missing", reply=None)
    c.close()
    ctx.facts["resp_version_by_reply"] = "replies up to HELLO 2 are RESP3 (HELLO 4 fails and keeps RESP3); after: RESP2"
    ctx.facts["debug_protocol_push"] = "RESP3: a push frame, then the real reply (2 frames for 1 command)"


@scenario(
    "client_reply",
    "CLIENT REPLY OFF, then SETs and a failing INCR with no reply, CLIENT REPLY ON (+OK), CLIENT REPLY SKIP + SET "
    "(no reply for either), GETs.",
)
def client_reply(ctx: Ctx) -> None:
    c = ctx.conn("A")
    c.send_command("CLIENT", "REPLY", "OFF")
    c.send_command("SET", "cr:1", "a")
    c.send_command("SET", "cr:2", "b")
    c.send_command("INCR", "cr:1")  # error, not sent either
    c.expect("CLIENT", "REPLY", "ON", reply="OK")
    c.send_command("CLIENT", "REPLY", "SKIP")
    c.send_command("SET", "cr:3", "c")
    c.expect("GET", "cr:1", reply=b"a")
    c.expect("GET", "cr:3", reply=b"c")
    c.expect("MGET", "cr:1", "cr:2", "cr:3", reply=[b"a", b"b", b"c"])
    c.close()
    ctx.facts["commands_without_reply"] = ["CLIENT REPLY OFF", "SET", "SET", "INCR (error)", "CLIENT REPLY SKIP", "SET"]
    ctx.facts["commands_with_reply"] = ["CLIENT REPLY ON", "GET", "GET", "MGET"]


BIG_VALUE = b"0123456789abcdef" * 65536  # 1 MiB


@scenario("bigvalue", "SET of a 1 MiB value, GET it back (1 MiB reply), SETRANGE, STRLEN, GETRANGE.")
def bigvalue(ctx: Ctx) -> None:
    c = ctx.conn("A")
    c.expect("SET", "big:1", BIG_VALUE, reply="OK")
    c.expect("GET", "big:1", reply=BIG_VALUE)
    c.expect("SETRANGE", "big:1", "0", "HEAD", reply=len(BIG_VALUE))
    c.expect("STRLEN", "big:1", reply=len(BIG_VALUE))
    c.expect("GETRANGE", "big:1", "0", "7", reply=b"HEAD4567")
    c.close()
    ctx.facts["value_length"] = len(BIG_VALUE)
    ctx.facts["set_request_bytes"] = len(b"*3\r\n$3\r\nSET\r\n$5\r\nbig:1\r\n$1048576\r\n") + len(BIG_VALUE) + 2
    ctx.facts["get_reply_bytes"] = len(b"$1048576\r\n") + len(BIG_VALUE) + 2


MALFORMED = [
    (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
    (b'SET "unbalanced\r\n', "ERR Protocol error: unbalanced quotes in request"),
    (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*1\r\nPING\r\n", "ERR Protocol error: expected '$', got 'P'"),
]


@scenario(
    "inline",
    "Inline commands on one connection (PING, SET k v, GET k, quoted args, escapes, bare LF, empty lines, two "
    "commands in one write, a RESP command in between); then 4 malformed requests, each on its own connection, "
    "answered with '-ERR Protocol error: ...' and closed by Redis.",
)
def inline(ctx: Ctx) -> None:
    c = ctx.conn("inline")

    def step(data: bytes, *replies: Any) -> None:
        c.send_raw(data, repr(data)[2:-1])
        for want in replies:
            check(c.read(), want, repr(data))

    step(b"PING\r\n", "PONG")
    step(b"SET k v\r\n", "OK")
    step(b"GET k\r\n", b"v")
    step(b"SET \"a b\" 'c d'\r\n", "OK")
    step(b'\r\n\r\n\nGET "a b"\r\n', b"c d")
    step(b'ECHO "tab\\there \\x41"\n', b"tab\there A")
    step(b"   PING    hello   \r\n", b"hello")
    step(b"*1\r\n$4\r\nPING\r\n", "PONG")
    step(b'EXISTS k "a b"\r\nDBSIZE\r\n', 2, 2)
    c.close()
    for i, (data, error) in enumerate(MALFORMED, 1):
        m = ctx.conn(f"malformed-{i}")
        m.send_raw(data, repr(data)[2:-1])
        check(m.read(), error, repr(data))
        rest = m.read_until_closed()
        assert rest == b"" and m.peer_closed, rest
        m.close()
    ctx.facts["malformed"] = [{"request": d.decode(), "error": e, "server_closes": True} for d, e in MALFORMED]


@scenario(
    "select",
    "SELECT 1, SET, SELECT 15, GET, SET, SELECT 99 and SELECT abc (errors, db unchanged), SWAPDB 1 15, GET; "
    "redis-cli -n 3 / -n 15 (SELECT sent before the command).",
)
def select(ctx: Ctx) -> None:
    c = ctx.conn("A")
    c.expect("SELECT", "1", reply="OK")
    c.expect("SET", "sel:k", "one", reply="OK")
    c.expect("SELECT", "15", reply="OK")
    c.expect("GET", "sel:k", reply=None)
    c.expect("SET", "sel:k", "fifteen", reply="OK")
    c.expect("SELECT", "99", reply="ERR DB index is out of range")
    c.expect("GET", "sel:k", reply=b"fifteen")  # still db 15
    c.expect("SELECT", "abc", reply="ERR value is not an integer")
    c.expect("SWAPDB", "1", "15", reply="OK")
    c.expect("GET", "sel:k", reply=b"one")  # db 15 now holds what was db 1
    c.expect("SELECT", "0", reply="OK")
    c.expect("DBSIZE", reply=0)
    c.close()
    ctx.cli("SET", "sel:cli", "x", extra=("-n", "3"))
    ctx.cli("GET", "sel:k", extra=("-n", "15"))
    ctx.facts["db_per_command_A"] = [None, 1, 1, 15, 15, 15, 15, 15, 15, 15, 15, 0]
    ctx.facts["db_note"] = "db_per_command_A: db in effect when each command of A ran (None: before SELECT 1 = 0)"


@scenario(
    "monitor_quit",
    'A MONITOR connection sees 4 commands of another client (AUTH arguments shown as "(redacted)" by Redis), '
    "then RESET ends monitoring; QUIT on a connection (+OK, server closes); RESET after SELECT 5 and CLIENT "
    "REPLY OFF (+RESET is sent, db back to 0).",
)
def monitor_quit(ctx: Ctx) -> None:
    m = ctx.conn("monitor")
    m.expect("MONITOR", reply="OK")
    c = ctx.conn("client")
    c.expect("SET", "mq:1", "v1", reply="OK")
    c.expect("GET", "mq:1", reply=b"v1")
    c.expect("INCR", "mq:n", reply=1)
    c.expect("AUTH", "nobody", "not-a-secret", reply="WRONGPASS")
    c.close()
    lines = [m.read() for _ in range(4)]
    assert all(isinstance(x, str) for x in lines), lines
    assert '"AUTH" "(redacted)" "(redacted)"' in lines[3], lines[3]
    m.expect("RESET", reply="RESET")
    m.expect("PING", reply="PONG")
    m.close()
    q = ctx.conn("quit")
    q.expect("SET", "mq:q", "1", reply="OK")
    q.expect("QUIT", reply="OK")
    assert q.read_until_closed() == b"" and q.peer_closed
    q.close()
    r = ctx.conn("reset")
    r.expect("SELECT", "5", reply="OK")
    r.expect("SET", "mq:r", "1", reply="OK")
    r.send_command("CLIENT", "REPLY", "OFF")
    r.expect("RESET", reply="RESET")
    r.expect("GET", "mq:r", reply=None)  # db 0 again
    r.expect("DBSIZE", reply=3)
    r.close()
    ctx.facts["monitor_lines"] = 4
    ctx.facts["monitor_line_format"] = '+<unix ts.us> [<db> <client addr:port>] "<CMD>" "<arg>"...'


def tls_client_hello(sni: str = "redis.example") -> bytes:
    """A fixed TLS 1.3-style ClientHello record (what a TLS client sends to a plain-text Redis port)."""
    host = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0x0000, len(host) + 5, len(host) + 3, 0, len(host)) + host
    versions = struct.pack("!HHBH", 0x002B, 3, 2, 0x0304)
    groups = struct.pack("!HHHH", 0x000A, 4, 2, 0x001D)
    exts = sni_ext + versions + groups
    ciphers = struct.pack("!H5H", 10, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F)
    body = b"\x03\x03" + b"\x5a" * 32 + b"\x00" + ciphers + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


GARBAGE_SEED = 2024


@scenario(
    "garbage",
    "Non-Redis traffic to the Redis port: an HTTP GET (Redis drops the connection at 'Host:' and its pending "
    "error reply is lost), an HTTP POST (dropped at once), 1024 seeded random bytes, a TLS ClientHello; then a "
    "normal PING shows the server is fine.",
)
def garbage(ctx: Ctx) -> None:
    outcomes = {}
    rnd = random.Random(GARBAGE_SEED).randbytes(1024)
    cases = [
        ("http-get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP GET"),
        ("http-post", b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", "HTTP POST"),
        ("random", rnd, f"random.Random({GARBAGE_SEED}).randbytes(1024)"),
        ("tls", tls_client_hello(), "TLS ClientHello, SNI redis.example"),
    ]
    for label, data, note in cases:
        g = ctx.conn(label)
        g.send_raw(data, note)
        reply = g.read_until_closed(timeout=1.0)
        closed = g.peer_closed
        g.close()
        outcomes[label] = {
            "sent_bytes": len(data),
            "reply": reply.decode(errors="replace"),
            "server_closed": closed,
        }
        ctx.errors += [line[1:] for line in reply.decode(errors="replace").split("\r\n") if line.startswith("-")]
    p = ctx.conn("after")
    p.expect("PING", reply="PONG")
    p.close()
    ctx.facts["outcomes"] = outcomes


# --------------------------------------------------------------------------- capture + manifest


def pcap_summary(path: Path, server_port: int) -> dict[str, Any]:
    """Packets, TCP connections (SYNs) and payload bytes per direction, read with dpkt (not our parser)."""
    packets = syns = 0
    payload = {"to_server": 0, "to_client": 0}
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for _ts, buf in reader:
            packets += 1
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
                syns += 1
            payload["to_server" if tcp.dport == server_port else "to_client"] += len(tcp.data)
    return {"packets": packets, "linktype": linktype, "tcp_connections": syns, "payload_bytes": payload}


def run_scenario(sc: Scenario) -> dict[str, Any]:
    out = PCAP_DIR / f"{sc.name}.pcap"
    tmp = out.with_suffix(".pcap.tmp")  # renamed only when every check passed: file and manifest stay in step
    with RedisServer(extra_config=list(sc.config), password=sc.password) as server:
        ctx = Ctx(server)
        before = server.snapshot()
        with Tcpdump(tmp, port=server.port) as dump:
            sc.run(ctx)
        after = server.snapshot()
        port = server.port
    delta = after.delta(before)
    if dump.stats.get("dropped by kernel", 0):
        raise RuntimeError(f"{sc.name}: tcpdump dropped packets: {dump.stats}")
    summary = pcap_summary(tmp, port)
    if summary["packets"] != dump.stats.get("captured"):
        raise RuntimeError(f"{sc.name}: file has {summary['packets']} packets, tcpdump said {dump.stats}")
    if summary["tcp_connections"] != delta["connections"]:
        raise RuntimeError(f"{sc.name}: {summary['tcp_connections']} SYNs but Redis accepted {delta['connections']}")
    tmp.replace(out)
    entry: dict[str, Any] = {
        "file": out.name,
        "description": sc.description,
        "server": {"addr": "127.0.0.1", "port": port},
        "server_ports": [port],
        "redis_config": list(sc.config) + ([f"requirepass {sc.password}"] if sc.password else []),
        "expected": {**delta, "errors_seen": ctx.errors},
        "facts": ctx.facts,
        "transcripts": ctx.transcripts,
        "capture": {
            **summary,
            "bytes": out.stat().st_size,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "tcpdump": dump.stats,
        },
    }
    if not entry["transcripts"]:
        del entry["transcripts"]
    return entry


def tool_versions() -> dict[str, str]:
    import redis

    def first_line(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]

    return {
        "redis-server": first_line(require_tool("redis-server"), "--version"),
        "redis-cli": first_line(require_tool("redis-cli"), "--version"),
        "redis-py": redis.__version__,
        "tcpdump": first_line(require_tool("tcpdump"), "--version"),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n".join(__doc__.splitlines()[-4:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), metavar="NAME", help="capture only NAME (repeatable)"
    )
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    args = ap.parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:14} {sc.description}")
        return 0
    names = args.only or list(SCENARIOS)
    manifest: dict[str, Any] = {"captures": {}}
    if MANIFEST.exists():
        manifest = json.loads(MANIFEST.read_text())
    manifest.update(
        {
            "generator": "scripts/make_golden_pcaps.py",
            "regenerate": ".venv/bin/python scripts/make_golden_pcaps.py [--only NAME]",
            "tools": tool_versions(),
            "notes": [
                "Captured on loopback (linktype 1, Ethernet with zero MACs): tcpdump -i lo 'tcp port <server port>'.",
                "expected.* comes from Redis itself: INFO commandstats/errorstats/stats deltas around the capture, "
                "minus the generator's own admin calls (made over a Unix socket, so not in the pcap).",
                "expected.connections = total_connections_received delta = TCP connections in the pcap.",
                "expected.commands_processed counts executed commands only: NOAUTH/NOPERM/unknown/"
                "protocol-error requests are not in it (see rejected_calls and errorstats).",
                "errors_seen: error replies as the clients read them, in order (redis-py's own are not included).",
                "transcripts: per raw connection, '> CMD' sent and '< kind' read, in order; values left out.",
                "Varies between runs: timestamps, ports, client ids, SCAN/SMEMBERS/UNSUBSCRIBE order.",
            ],
        }
    )
    captures = manifest.setdefault("captures", {})
    for name in names:
        print(f"{name} ...", end=" ", flush=True)
        captures[name] = run_scenario(SCENARIOS[name])
        c = captures[name]
        print(f"port {c['server']['port']}, {c['capture']['packets']} packets, {c['capture']['bytes']} bytes")
    manifest["captures"] = {k: captures[k] for k in SCENARIOS if k in captures}
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
    total = sum(c["capture"]["bytes"] for c in manifest["captures"].values())
    print(f"total {total} bytes in {len(manifest['captures'])} captures; manifest: {MANIFEST.relative_to(REPO)}")
    if total > MAX_TOTAL_BYTES:
        print(f"warning: captures exceed {MAX_TOTAL_BYTES} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

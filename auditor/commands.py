"""The Redis command table: command name -> key positions, ACL categories and
the role of every argument (what redaction keeps, masks or hides).

Input: a request's arguments (``list[bytes]``). Output: ``CommandInfo`` (from
``lookup``), key positions (``key_positions``) and one ``Role`` per argument
(``arg_roles``). The table is ``auditor/data/commands.json``, generated from a
real redis-server by ``scripts/gen_commands.py`` (COMMAND INFO + COMMAND DOCS);
the secret / identifier rules that the docs cannot express are in
``_NAMED_ROLES`` and ``_FIXUPS`` below.

Hot path: ``lookup`` is one dict get (the name as sent, in lower or upper
case; other cases are lower-cased first); ``key_positions`` walks the key specs
(precomputed positions for the fixed-position commands); ``arg_roles`` walks a
plan compiled once per command from its argument tree, and results for short
requests are cached by the request's token "shape" (never by its values).
``static_roles`` gives, per command and argument count, the roles shared by
every request in which a few probed arguments are no word of the command: the
redactor's fast path renders most requests from those without a walk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import cache
from importlib import resources
from operator import itemgetter
from typing import Any

from . import limits


class Role(IntEnum):
    """What an argument is, for redaction."""

    COMMAND = 0
    SUBCOMMAND = 1
    KEY = 2
    TOKEN = 3  # a documented option keyword (NX, EX, WITHSCORES): kept upper-cased
    VALUE = 4  # data: replaced by <redacted:N>
    SECRET = 5  # password / password hash: replaced by <secret>, no length
    SCRIPT = 6  # Lua script / function library: replaced by its SHA1
    IDENT = 7  # non-secret identifier kept in clear (user name, db index, sha1, numkeys)


_KEY, _TOKEN, _VALUE, _SECRET, _SCRIPT, _IDENT = Role.KEY, Role.TOKEN, Role.VALUE, Role.SECRET, Role.SCRIPT, Role.IDENT


class KeySpec:
    """One COMMAND INFO key specification (begin_search + find_keys)."""

    __slots__ = ("bs", "find", "firstkey", "flags", "index", "keynumidx", "keystep", "keyword", "lastkey", "limit")

    def __init__(self, d: dict[str, Any]) -> None:
        bs, fk = d["begin_search"], d["find_keys"]
        self.flags: frozenset[str] = frozenset(f.lower() for f in d.get("flags", ()))
        self.bs: str = bs["type"]  # index | keyword | unknown
        # index: position; keyword: startfrom (negative: search backwards from the end)
        self.index: int = bs.get("index", bs.get("startfrom", 0))
        self.keyword: bytes = bs.get("keyword", "").lower().encode()
        self.find: str = fk["type"]  # range | keynum | unknown
        self.lastkey: int = fk.get("lastkey", 0)
        self.keystep: int = fk.get("keystep", 1) or 1
        self.limit: int = fk.get("limit", 0)
        self.keynumidx: int = fk.get("keynumidx", 0)
        self.firstkey: int = fk.get("firstkey", 1)

    @property
    def fixed(self) -> bool:
        """Positions do not depend on the arguments (besides their count)."""
        return self.bs == "index" and self.find == "range" and self.lastkey >= 0 and "incomplete" not in self.flags

    def __repr__(self) -> str:
        return f"KeySpec(bs={self.bs}, find={self.find}, flags={sorted(self.flags)})"


class CommandInfo:
    """One command or subcommand of the table (read-only)."""

    __slots__ = (
        "_fixed_keys",
        "_keys_by_count",
        "_plan",
        "_role_cache",
        "_subs",
        "acl_categories",
        "arguments",
        "arity",
        "command",
        "first_key",
        "flags",
        "group",
        "key_specs",
        "key_step",
        "last_key",
        "name",
        "subcommand",
        "subcommands",
    )

    def __init__(self, name: str, d: dict[str, Any]) -> None:
        self.name = name  # table name, lower case: "set", "config|set"
        cmd, _, sub = name.partition("|")
        self.command = cmd.upper()
        self.subcommand = sub.upper() or None
        self.arity: int = d["arity"]
        self.flags: frozenset[str] = frozenset(d.get("flags", ()))
        self.acl_categories: tuple[str, ...] = tuple(d.get("acl_categories", ()))
        self.first_key: int = d.get("first", 0)
        self.last_key: int = d.get("last", 0)
        self.key_step: int = d.get("step", 0) or 1
        self.key_specs: tuple[KeySpec, ...] = tuple(KeySpec(k) for k in d.get("key_specs", ()))
        self.arguments: tuple[dict[str, Any], ...] = tuple(d.get("arguments", ()))
        self.subcommands: tuple[str, ...] = tuple(d.get("subcommands", ()))
        self.group: str | None = d.get("group")
        specs = [s for s in self.key_specs if "not_key" not in s.flags]
        # Positions when every spec is a fixed index range (SET, GET, LMOVE...).
        self._fixed_keys: tuple[int, ...] | None = None
        if specs and all(s.fixed for s in specs) and self.name not in _GETKEYS:
            pos = set()
            for s in specs:
                pos.update(range(s.index, s.index + s.lastkey + 1, s.keystep))
            self._fixed_keys = tuple(sorted(pos))
        elif not specs and self.first_key <= 0:
            self._fixed_keys = ()
        # True when the key positions depend only on the number of arguments
        # (index + range specs, or the legacy first/last/step), never on their content
        self._keys_by_count: bool = self.name not in _GETKEYS and all(
            s.bs == "index" and s.find == "range" and "incomplete" not in s.flags for s in specs
        )
        self._subs: dict[bytes, CommandInfo] = {}  # subcommand as sent (lower / upper case) -> entry
        self._plan: _Plan | None = None
        self._role_cache: dict[tuple[Any, ...], tuple[tuple[Role, ...], tuple[tuple[int, int], ...]]] = {}

    @property
    def is_container(self) -> bool:
        return bool(self.subcommands)

    def __repr__(self) -> str:
        return f"CommandInfo({self.name!r})"


# ---------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------


@cache
def _table() -> tuple[dict[bytes, CommandInfo], str]:
    text = resources.files("auditor").joinpath("data/commands.json").read_text(encoding="utf-8")
    data = json.loads(text)
    table = {name.encode(): CommandInfo(name, d) for name, d in data["commands"].items()}
    # exact-bytes fast paths: a request's name as sent in lower or upper case
    # (nearly all traffic) is found without .lower()
    for name, info in table.items():
        _EXACT[name] = _EXACT[name.upper()] = info
        cmd, bar, sub = name.partition(b"|")
        if bar:
            parent = table.get(cmd)
            if parent is not None:
                parent._subs[sub] = parent._subs[sub.upper()] = info
    return table, data["redis_version"]


# name as sent -> entry (lower / upper case variants of every table name)
_EXACT: dict[bytes, CommandInfo] = {}


def table_version() -> str:
    """Version of the redis-server the table was generated from."""
    return _table()[1]


def all_commands() -> dict[str, CommandInfo]:
    """Every command and subcommand of the table, by table name."""
    return {k.decode(): v for k, v in _table()[0].items()}


def lookup(args: Sequence[bytes]) -> CommandInfo | None:
    """The table entry for a request, or None for an unknown command.

    Case-insensitive. For container commands (CONFIG, CLIENT, ACL, XINFO...)
    the subcommand is resolved from ``args[1]``; an unknown or missing
    subcommand returns the container itself (its ``subcommand`` is None).
    """
    if not args:
        return None
    name = args[0]
    info = _EXACT.get(name)
    if info is None:
        if len(name) > _MAX_NAME:
            return None
        info = _table()[0].get(name.lower())
        if info is None:
            return None
    if info.subcommands and len(args) > 1:
        a1 = args[1]
        subs = info._subs
        sub = subs.get(a1)
        if sub is None and len(a1) <= _MAX_NAME:
            sub = subs.get(a1.lower())
        if sub is not None:
            return sub
    return info


# Longest command / subcommand name considered for lookup (real ones are < 32).
_MAX_NAME = 64


# ---------------------------------------------------------------------------
# key positions
# ---------------------------------------------------------------------------


def _parse_ll(b: bytes) -> int | None:
    """Redis string2ll: optional '-', digits, no spaces or '+'."""
    if not b or len(b) > 20:
        return None
    digits = b[1:] if b[:1] == b"-" else b
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        return None
    return int(b)


def _spec_positions(spec: KeySpec, args: Sequence[bytes], n: int) -> list[int] | None:
    """Positions found by one key spec, as redis getKeysUsingKeySpecs does it.
    [] when a keyword is absent; None when the spec is invalid for these args."""
    if spec.bs == "index":
        first = spec.index
    elif spec.bs == "keyword":
        first = 0
        if spec.index > 0:
            start, end, step = spec.index, n - 1, 1
        else:
            start, end, step = n + spec.index, 1, -1
        i = start
        kw = spec.keyword
        while i != end:
            if i >= n or i < 1:
                break
            a = args[i]
            if len(a) == len(kw) and a.lower() == kw:
                first = i + 1
                break
            i += step
        if not first:
            return []
    else:
        return None
    if spec.find == "range":
        step = spec.keystep
        if spec.lastkey >= 0:
            last = first + spec.lastkey
        elif not spec.limit:
            last = n + spec.lastkey
        else:
            last = first + ((n - first) // spec.limit + spec.lastkey)
    elif spec.find == "keynum":
        idx = first + spec.keynumidx
        if idx >= n:
            return None
        numkeys = _parse_ll(args[idx])
        if numkeys is None or numkeys < 0:
            return None
        first += spec.firstkey
        last = first + numkeys - 1
        step = spec.keystep
    else:
        return None
    if last >= n or last < first or first >= n:
        return None
    return list(range(first, last + 1, step))


def _sort_keys(args: Sequence[bytes]) -> list[int]:
    """sortGetKeys: the sorted key, and the key after the last STORE (skipping
    the arguments of LIMIT, GET and BY)."""
    n = len(args)
    if n < 2:
        return []
    pos = [1]
    store = None
    i = 2
    while i < n:
        a = args[i].lower()
        if a == b"limit":
            i += 2
        elif a in (b"get", b"by"):
            i += 1
        elif a == b"store" and i + 1 < n:
            store = i + 1
        i += 1
    if store is not None:
        pos.append(store)
    return pos


def _sort_ro_keys(args: Sequence[bytes]) -> list[int]:
    return [1] if len(args) > 1 else []


def _migrate_keys(args: Sequence[bytes]) -> list[int]:
    """migrateGetKeys: argv[3], or everything after KEYS when argv[3] is ""."""
    n = len(args)
    skip = {b"copy": 0, b"replace": 0, b"auth": 1, b"auth2": 2}
    i = 6
    while i < n:
        a = args[i].lower()
        if a == b"keys":
            if len(args[3]) > 0:
                return []
            return list(range(i + 1, n))
        i += skip.get(a, 0) + 1
    return [3] if n > 3 else []


# Commands whose key specs are incomplete or unknown: redis falls back to a
# per-command procedure; these are their equivalents.
_GETKEYS: dict[str, Callable[[Sequence[bytes]], list[int]]] = {
    "sort": _sort_keys,
    "sort_ro": _sort_ro_keys,
    "migrate": _migrate_keys,
}


def key_positions(info: CommandInfo | None, args: Sequence[bytes]) -> list[int]:
    """Indexes of the key arguments in ``args``, ascending.

    Key specs exactly as redis-server walks them; when a spec is incomplete or
    unknown, the command's own procedure (SORT, MIGRATE); a spec that does not
    fit the arguments (a syntax error redis will reject) contributes nothing
    while the others still count. Without key specs, the legacy
    first/last/step. Unknown commands: no keys.
    """
    if info is None:
        return []
    n = len(args)
    fixed = info._fixed_keys
    if fixed is not None:
        if not fixed or fixed[-1] < n:
            return list(fixed)
        return [p for p in fixed if p < n]
    proc = _GETKEYS.get(info.name)
    if proc is not None:
        return proc(args)
    specs = info.key_specs
    if specs:
        out: set[int] = set()
        for spec in specs:
            if "not_key" in spec.flags:
                continue
            pos = _spec_positions(spec, args, n)
            if pos:
                out.update(pos)
        return sorted(out)
    if info.first_key <= 0:
        return []
    last = info.last_key if info.last_key >= 0 else n + info.last_key
    if last >= n:
        return []
    return list(range(info.first_key, last + 1, info.key_step))


# ---------------------------------------------------------------------------
# argument roles
# ---------------------------------------------------------------------------

# (table name or "*", argument name) -> role, for what the docs cannot say.
# "*" applies to every command. Everything not named here is KEY for key
# arguments, TOKEN for documented keywords and VALUE otherwise.
_NAMED_ROLES: dict[tuple[str, str], Role] = {
    ("*", "password"): _SECRET,
    ("*", "username"): _IDENT,
    ("*", "numkeys"): _IDENT,
    ("eval", "script"): _SCRIPT,
    ("eval_ro", "script"): _SCRIPT,
    ("script|load", "script"): _SCRIPT,
    ("function|load", "function-code"): _SCRIPT,
    ("evalsha", "sha1"): _IDENT,
    ("evalsha_ro", "sha1"): _IDENT,
    ("script|exists", "sha1"): _IDENT,
    ("fcall", "function"): _IDENT,
    ("fcall_ro", "function"): _IDENT,
    ("function|delete", "library-name"): _IDENT,
    ("select", "index"): _IDENT,
    ("swapdb", "index1"): _IDENT,
    ("swapdb", "index2"): _IDENT,
    ("move", "db"): _IDENT,
    ("copy", "destination-db"): _IDENT,
    ("client|setname", "connection-name"): _IDENT,
    ("client|kill", "*"): _IDENT,  # ip:port, ID, USER, ADDR, LADDR, SKIPME values
    ("hello", "protover"): _IDENT,
    ("hello", "clientname"): _IDENT,
    ("config|get", "parameter"): _IDENT,
    ("acl|cat", "categoryname"): _IDENT,
    ("migrate", "host"): _IDENT,
    ("migrate", "port"): _IDENT,
    ("migrate", "destination-db"): _IDENT,
    ("replicaof", "host"): _IDENT,
    ("replicaof", "port"): _IDENT,
    ("slaveof", "host"): _IDENT,
    ("slaveof", "port"): _IDENT,
    ("failover", "host"): _IDENT,
    ("failover", "port"): _IDENT,
    ("cluster|meet", "ip"): _IDENT,
    ("cluster|meet", "port"): _IDENT,
    ("module|load", "path"): _IDENT,
    ("module|loadex", "path"): _IDENT,
    ("module|unload", "name"): _IDENT,
    ("command|info", "command-name"): _IDENT,
    ("command|docs", "command-name"): _IDENT,
}

# Arguments right after these words are passwords (MIGRATE AUTH, HELLO AUTH,
# SENTINEL / module commands): any VALUE within two positions becomes SECRET.
_AUTH_WORDS = (b"AUTH", b"AUTH2")

_LEAF, _PURE, _ONEOF, _BLOCK = 0, 1, 2, 3
_KINDS = {"oneof": _ONEOF, "block": _BLOCK, "pure-token": _PURE}


class _Node:
    """One argument of the COMMAND DOCS tree, compiled for matching."""

    __slots__ = (
        "alts",
        "any_start",
        "check",
        "children",
        "first",
        "is_key",
        "kind",
        "minlen",
        "mtoken",
        "multiple",
        "optional",
        "reserve",
        "role",
        "segments",
        "stop",
        "tok",
        "untok_alt",
    )

    def __init__(self, d: dict[str, Any], cmd: str, secret_ctx: bool) -> None:
        self.kind = _KINDS.get(d["type"], _LEAF)
        tok = d.get("token")
        self.tok: bytes | None = None if tok is None else tok.upper().encode()
        self.optional: bool = bool(d.get("optional"))
        self.multiple: bool = bool(d.get("multiple"))
        self.mtoken: bool = bool(d.get("multiple_token"))
        self.is_key = self.kind == _LEAF and d["type"] == "key"
        name = d["name"]
        secret_ctx = secret_ctx or self.tok in _AUTH_WORDS
        role = _KEY if self.is_key else _VALUE
        named = _NAMED_ROLES.get((cmd, name)) or _NAMED_ROLES.get(("*", name))
        if named is None and not self.is_key:
            named = _NAMED_ROLES.get((cmd, "*"))
        if named is not None:
            role = named
        if secret_ctx and self.kind == _LEAF and role is not _IDENT:
            role = _SECRET
        self.role: Role = role
        # identifiers of a constrained form are kept only in that form (a
        # password typed where a db index belongs stays a value)
        self.check = 0
        if role is _IDENT:
            self.check = _CHECK_INT if d["type"] == "integer" else _CHECK_HEX if name == "sha1" else 0
        self.children = [_Node(c, cmd, secret_ctx) for c in d.get("arguments", ())]
        # first tokens that can start this node; any_start: may start with a free value
        if self.tok is not None:
            self.first: frozenset[bytes] = frozenset((self.tok,))
            self.any_start = False
        elif self.kind == _ONEOF:
            self.first = frozenset().union(*(c.first for c in self.children))
            self.any_start = any(c.any_start for c in self.children)
        elif self.kind == _BLOCK:
            first: set[bytes] = set()
            self.any_start = False
            for c in self.children:
                first |= c.first
                self.any_start = self.any_start or c.any_start
                if not c.optional:
                    break
            self.first = frozenset(first)
        else:
            self.first = frozenset()
            self.any_start = True
        content = 0
        if self.kind == _LEAF:
            content = 1
        elif self.kind == _ONEOF:
            content = min((c.minlen for c in self.children), default=0)
        elif self.kind == _BLOCK:
            content = sum(c.minlen for c in self.children if not c.optional)
        self.minlen = content + (self.tok is not None)
        # oneof: alternative by first token, and the one taking a free value
        self.alts: dict[bytes, _Node] = {}
        self.untok_alt: _Node | None = None
        if self.kind == _ONEOF:
            for c in self.children:
                for t in c.first:
                    self.alts.setdefault(t, c)
                if c.any_start and self.untok_alt is None:
                    self.untok_alt = c
        self.stop: frozenset[bytes] = frozenset()
        self.reserve = 0
        self.segments: list[_Node | _Group] = []


class _Group:
    """A run of sibling arguments that may come in any order: documented
    keywords (matched by token) and optional free arguments (in order)."""

    __slots__ = ("reserve", "tokmap", "untok")

    def __init__(self) -> None:
        self.tokmap: dict[bytes, _Node] = {}
        self.untok: list[_Node] = []
        self.reserve = 0


def _plan_seq(children: list[_Node], outer_stop: frozenset[bytes], outer_reserve: int) -> list[_Node | _Group]:
    """Split a sequence into positional anchors and any-order groups, and give
    every node its stop tokens and the minimum count of arguments after it."""
    segs: list[_Node | _Group] = []
    after = [0] * (len(children) + 1)
    stops: list[frozenset[bytes]] = [outer_stop] * (len(children) + 1)
    after[-1] = outer_reserve
    for k in range(len(children) - 1, -1, -1):
        c = children[k]
        after[k] = after[k + 1] + (0 if c.optional else c.minlen)
        stops[k] = stops[k + 1] | c.first
    group: _Group | None = None
    group_stop: frozenset[bytes] = frozenset()
    for k, c in enumerate(children):
        positional = not c.optional and c.any_start
        if positional:
            group = None
            c.stop, c.reserve = stops[k + 1], after[k + 1]
            segs.append(c)
        else:
            if group is None:
                group = _Group()
                # arguments needed after the whole run of any-order members
                j = k
                while j < len(children) and (children[j].optional or not children[j].any_start):
                    j += 1
                group.reserve = after[j]
                # the tokens of the whole run (and of what follows) stop
                # repetitions inside any member
                group_stop = stops[k]
                segs.append(group)
            if c.first and not c.any_start:
                for t in c.first:
                    group.tokmap.setdefault(t, c)
            else:
                group.untok.append(c)
            c.stop, c.reserve = group_stop, after[k + 1]
        _plan_node(c)
    return segs


def _plan_node(node: _Node) -> None:
    if node.kind == _BLOCK:
        node.segments = _plan_seq(node.children, node.stop, node.reserve)
    elif node.kind == _ONEOF:
        for c in node.children:
            c.stop, c.reserve = node.stop, node.reserve
            _plan_node(c)


class _Plan:
    __slots__ = ("cut", "fixup", "maxtok", "segments", "start", "tokens")

    def __init__(self, info: CommandInfo) -> None:
        nodes = [_Node(a, info.name, False) for a in info.arguments]
        self.segments = _plan_seq(nodes, frozenset(), 0)
        toks: set[bytes] = set(_AUTH_WORDS)

        def collect(ns: list[_Node]) -> None:
            for x in ns:
                if x.tok is not None:
                    toks.add(x.tok)
                collect(x.children)

        collect(nodes)
        # every word that changes how a request is read (its "shape")
        self.tokens: dict[bytes, int] = {t: i for i, t in enumerate(sorted(toks))}
        self.maxtok = max(len(t) for t in toks)
        self.cut = itemgetter(slice(0, self.maxtok + 1))
        self.start = 2 if info.subcommand else 1
        self.fixup = _FIXUPS.get(info.name)


class _Walk:
    """One matching pass over a request (state for the recursive match)."""

    __slots__ = ("args", "checks", "keys", "maxtok", "n", "roles", "seen")

    def __init__(
        self,
        args: Sequence[bytes],
        n: int,
        roles: list[Role],
        keys: frozenset[int],
        maxtok: int,
        seen: set[int] | None = None,
    ) -> None:
        self.args, self.n, self.roles, self.keys, self.maxtok = args, n, roles, keys, maxtok
        self.checks: list[tuple[int, int]] = []
        self.seen = seen  # when set: every position whose content the walk looked at

    def up(self, i: int) -> bytes | None:
        if self.seen is not None:
            self.seen.add(i)
        a = self.args[i]
        return a.upper() if len(a) <= self.maxtok else None

    def seq(self, segments: list[_Node | _Group], i: int) -> int:
        n = self.n
        for seg in segments:
            if i >= n:
                break
            if isinstance(seg, _Node):
                i = self.node(seg, i)
                continue
            ptr, untok = 0, seg.untok
            while i < n and n - i > seg.reserve:
                m = seg.tokmap.get(self.up(i))
                if m is not None:
                    j = self.node(m, i)
                    if j == i:
                        break
                    i = j
                    continue
                while ptr < len(untok) and untok[ptr].is_key and i not in self.keys:
                    ptr += 1
                if ptr == len(untok):
                    break
                i = self.node(untok[ptr], i)
                ptr += 1
        return i

    def node(self, node: _Node, i: int) -> int:
        n = self.n
        if node.tok is not None:
            if i >= n or self.up(i) != node.tok:
                return i
            self.roles[i] = _TOKEN
            i += 1
            if node.kind == _PURE:
                if node.multiple and node.mtoken:
                    while i < n and self.up(i) == node.tok:
                        self.roles[i] = _TOKEN
                        i += 1
                return i
        i = self.content(node, i)
        if not node.multiple:
            return i
        if node.tok is not None and node.mtoken:
            while i < n and self.up(i) == node.tok:
                self.roles[i] = _TOKEN
                i = self.content(node, i + 1)
            return i
        while i < n:
            if node.is_key:
                if i not in self.keys:
                    break
            elif node.tok is None and not node.any_start:
                if self.up(i) not in node.first:
                    break
            elif n - i <= node.reserve or self.up(i) in node.stop:
                break
            j = self.content(node, i)
            if j == i:
                break
            i = j
        return i

    def content(self, node: _Node, i: int) -> int:
        if i >= self.n:
            return i
        kind = node.kind
        if kind == _LEAF:
            self.roles[i] = node.role
            if node.check:
                self.checks.append((i, node.check))
            return i + 1
        if kind == _BLOCK:
            return self.seq(node.segments, i)
        if kind == _ONEOF:
            alt = node.alts.get(self.up(i))
            if alt is None:
                alt = node.untok_alt
            return i if alt is None else self.node(alt, i)
        return i


def _plan(info: CommandInfo) -> _Plan:
    p = info._plan
    if p is None:
        p = info._plan = _Plan(info)
    return p


def arg_roles(info: CommandInfo | None, args: Sequence[bytes], keys: Sequence[int] | None = None) -> list[Role]:
    """One Role per argument (``len(args)`` of them).

    The fixed leading arguments are matched positionally, documented keywords
    case-insensitively wherever they may appear; anything not recognised is
    VALUE. Key positions (``keys``, computed if not given) are KEY, except
    that secrets win. Unknown commands: COMMAND then VALUEs, with arguments
    after AUTH-like words (or parameters named like passwords) SECRET.
    """
    n = len(args)
    if info is None:
        roles = [_VALUE] * n
        if n:
            roles[0] = Role.COMMAND
        _secret_after_words(args, roles, 0, n)
        _secret_after_passlike(args, roles, 1, n)
        return roles
    plan = _plan(info)
    if keys is None:
        keys = key_positions(info, args)
    # requests of up to 16 arguments are cached by their shape: which
    # arguments are documented words, and where the keys are
    shape: tuple[Any, ...] | None = None
    if n <= _CACHE_MAX_ARGS:
        # (cutting to maxtok+1 bytes keeps a longer argument unequal to any token)
        shape = (tuple(keys), tuple(map(plan.tokens.get, map(bytes.upper, map(plan.cut, args)))))
        hit = info._role_cache.get(shape)
        if hit is not None:
            roles = list(hit[0])
            if hit[1]:
                _apply_checks(args, roles, hit[1])
            if plan.fixup is not None:
                plan.fixup(args, roles, plan.start)
            return roles
    roles, checks = _walk_roles(plan, args, n, keys)
    if shape is not None:
        cache_ = info._role_cache
        if len(cache_) >= limits.ROLE_CACHE_PER_COMMAND:
            cache_.clear()
        cache_[shape] = (tuple(roles), checks)
    if checks:
        _apply_checks(args, roles, checks)
    if plan.fixup is not None:
        plan.fixup(args, roles, plan.start)
    return roles


def _walk_roles(
    plan: _Plan, args: Sequence[bytes], n: int, keys: Sequence[int], seen: set[int] | None = None
) -> tuple[list[Role], tuple[tuple[int, int], ...]]:
    """Roles from the documented argument tree alone (before the content
    checks and fixups), and the checks the identifiers found need."""
    roles = [_VALUE] * n
    if n:
        roles[0] = Role.COMMAND
    if plan.start == 2 and n > 1:
        roles[1] = Role.SUBCOMMAND
    keyset = frozenset(keys)
    walk = _Walk(args, n, roles, keyset, plan.maxtok, seen)
    walk.seq(plan.segments, plan.start)
    for i in range(plan.start, n):
        r = roles[i]
        if r is _KEY and i not in keyset:
            roles[i] = _VALUE
        elif i in keyset and r is not _SECRET:
            roles[i] = _KEY
    _secret_after_words(args, roles, 0, n)
    return roles, tuple(walk.checks)


class StaticRoles:
    """The roles of every request of one command with ``n`` arguments whose
    arguments at ``probe`` are no documented word of the command (``is_word``),
    exactly as ``key_positions`` and ``arg_roles`` give them (``checks``: the
    identifiers that must still have their documented form, as in
    ``arg_roles``). From ``with_words``: the roles of every request of that
    count with the same ``signature``; ``words`` then names the word at each
    TOKEN position. Holds no argument bytes besides those words of the table."""

    __slots__ = ("checks", "info", "keys", "n", "plan", "probe", "roles", "sizes", "tokens", "words")

    def __init__(
        self,
        info: CommandInfo,
        plan: _Plan,
        n: int,
        roles: tuple[Role, ...],
        keys: tuple[int, ...],
        checks: tuple[tuple[int, int], ...],
        probe: tuple[int, ...],
        words: dict[int, str] | None = None,
    ) -> None:
        self.info, self.plan, self.n, self.roles, self.keys, self.checks = info, plan, n, roles, keys, checks
        self.probe = probe
        self.words = words or {}
        self.tokens = frozenset(plan.tokens)
        self.sizes = frozenset(map(len, plan.tokens))  # lengths of the words

    def is_word(self, a: bytes) -> bool:
        return len(a) in self.sizes and a.upper() in self.tokens

    def signature(self, args: Sequence[bytes]) -> tuple[int | None, ...]:
        """Which word of the command each argument is (None: none). Equal
        signatures (and counts) give equal roles."""
        word = self.plan.tokens.get
        sizes = self.sizes
        return tuple([word(a.upper()) if len(a) in sizes else None for a in args])

    def roles_of(self, args: Sequence[bytes]) -> list[Role]:
        """``arg_roles`` of a request these roles are for."""
        roles = list(self.roles)
        if self.checks:
            _apply_checks(args, roles, self.checks)
        return roles

    def with_words(self, args: Sequence[bytes]) -> StaticRoles | None:
        """The roles of every request of this count with the signature of
        ``args`` (None: they hold a script, whose rendering needs its bytes)."""
        roles, checks = _walk_roles(self.plan, args, self.n, self.keys)
        if _SCRIPT in roles:
            return None
        # a TOKEN is an argument equal (case aside) to a word of the table
        words = {i: args[i].upper().decode("ascii") for i, r in enumerate(roles) if r is Role.TOKEN}
        return StaticRoles(self.info, self.plan, self.n, tuple(roles), self.keys, checks, (), words)

    def __repr__(self) -> str:
        return f"StaticRoles({self.info.name!r}, n={self.n})"


def static_roles(info: CommandInfo, n: int) -> StaticRoles | None:
    """The roles of every request of ``n`` arguments to ``info`` in which no
    argument at the returned ``probe`` positions is a documented word (or
    AUTH / AUTH2), or None when they depend on more than the words (key
    positions found by keyword or key count, per-command fixups such as AUTH
    or CONFIG SET, scripts).

    How: the documented tree is walked once over placeholder arguments that
    are no word at all, recording every position whose content the walk
    looks at; the AUTH-word scan looks at every position that is not a key.
    The walk is deterministic and sees an argument only through the word it
    is (if any): a request with no word at those positions takes the same
    path to the same roles.
    """
    if not info._keys_by_count or n < 1:
        return None
    plan = _plan(info)
    start = plan.start
    if plan.fixup is not None or n < start:
        return None
    filler = b"\0" * (plan.maxtok + 1)  # longer than every word: never one
    head = [info.command.encode()]
    if info.subcommand is not None:
        head.append(info.subcommand.encode())
    args = head + [filler] * (n - len(head))
    keys = key_positions(info, args)
    seen: set[int] = set()
    roles, checks = _walk_roles(plan, args, n, keys, seen)
    if _SCRIPT in roles or Role.TOKEN in roles:
        return None
    # the AUTH-word scan reads every non-key position but the last
    seen.update(i for i in range(start, n - 1) if roles[i] is not _KEY)
    probe = tuple(sorted(i for i in seen if i >= start))
    return StaticRoles(info, plan, n, tuple(roles), tuple(keys), checks, probe)


_CACHE_MAX_ARGS = 16

_CHECK_INT, _CHECK_HEX = 1, 2
# check kind -> what an identifier of that form must fully match (else it is a VALUE)
IDENT_CHECKS: dict[int, Callable[[bytes], re.Match[bytes] | None]] = {
    _CHECK_INT: re.compile(rb"-?[0-9]{1,20}").fullmatch,
    _CHECK_HEX: re.compile(rb"[0-9A-Fa-f]{1,40}").fullmatch,
}
_CHECKS = IDENT_CHECKS


def _apply_checks(args: Sequence[bytes], roles: list[Role], checks: tuple[tuple[int, int], ...]) -> None:
    for pos, kind in checks:
        if roles[pos] is _IDENT and _CHECKS[kind](args[pos]) is None:
            roles[pos] = _VALUE


def _secret_after_words(args: Sequence[bytes], roles: list[Role], lo: int, n: int) -> None:
    """VALUE arguments within two positions after AUTH / AUTH2 become SECRET."""
    for i in range(lo, n - 1):
        a = args[i]
        if (len(a) == 4 or len(a) == 5) and roles[i] is not _KEY and a.upper() in _AUTH_WORDS:
            for j in (i + 1, i + 2):
                if j < n and roles[j] is _VALUE:
                    roles[j] = _SECRET


def _passlike(name: bytes) -> bool:
    low = name.lower()
    return b"pass" in low or b"auth" in low


def _secret_after_passlike(args: Sequence[bytes], roles: list[Role], lo: int, n: int) -> None:
    """Unknown commands (SENTINEL SET m auth-pass x, module configs): the
    argument after a short one that names a password is SECRET."""
    for i in range(lo, n - 1):
        a = args[i]
        if len(a) <= 64 and _passlike(a) and roles[i + 1] is _VALUE:
            roles[i + 1] = _SECRET


# --- per-command fixups (content-dependent; run after the cached walk) -------


def _fix_auth(args: Sequence[bytes], roles: list[Role], start: int) -> None:
    """AUTH [username] password: with any other count, everything is SECRET."""
    n = len(args)
    for i in range(1, n):
        roles[i] = _SECRET
    if n == 3:
        roles[1] = _IDENT


# what a configuration parameter name looks like (else it is kept as a value)
_CONFIG_NAME = re.compile(rb"[A-Za-z0-9._-]{1,64}").fullmatch


def _fix_config_set(args: Sequence[bytes], roles: list[Role], start: int) -> None:
    """CONFIG SET parameter value [parameter value ...]: names kept, values
    of parameters named like passwords (requirepass, masterauth,
    tls-key-file-pass...) SECRET, other values VALUE."""
    n = len(args)
    for i in range(start, n, 2):
        name = args[i]
        roles[i] = _IDENT if _CONFIG_NAME(name) is not None else _VALUE
        if i + 1 < n:
            roles[i + 1] = _SECRET if _passlike(name) else _VALUE


def _fix_module_loadex(args: Sequence[bytes], roles: list[Role], start: int) -> None:
    """MODULE LOADEX path [CONFIG name value ...]: password-like config values SECRET."""
    n = len(args)
    for i in range(start, n - 2):
        if roles[i] is _TOKEN and args[i].upper() == b"CONFIG" and _passlike(args[i + 1]):
            roles[i + 2] = _SECRET


_ACL_WORDS = frozenset(
    b"on off nopass resetpass reset resetkeys resetchannels allkeys allchannels allcommands nocommands "
    b"skip-sanitize-payload sanitize-payload clearselectors".split()
)
_ACL_PASSWORD_IN_SELECTOR = re.compile(rb"(?:^|[\s(])[<>#!]")


def _acl_rule_role(rule: bytes) -> Role:
    """A rule is kept only when it is one of the known non-secret forms;
    anything else (>pass <pass #hash !hash, a typo, a stray password) is SECRET."""
    first = rule[:1]
    if first in (b"~", b"%", b"&", b"+", b"-") or rule.lower() in _ACL_WORDS:
        return _IDENT
    if first == b"(" and _ACL_PASSWORD_IN_SELECTOR.search(rule) is None:
        return _IDENT
    return _SECRET


def _fix_acl_setuser(args: Sequence[bytes], roles: list[Role], start: int) -> None:
    """ACL SETUSER username [rule ...]: >pass <pass #hash !hash SECRET, the
    privilege rules (on, off, ~pattern, +@all, nopass, resetpass...) kept."""
    n = len(args)
    if n > start:
        roles[start] = _SECRET if args[start][:1] in (b">", b"<", b"#", b"!") else _IDENT
    for i in range(start + 1, n):
        roles[i] = _acl_rule_role(args[i])


_FIXUPS: dict[str, Callable[[Sequence[bytes], list[Role], int], None]] = {
    "auth": _fix_auth,
    "config|set": _fix_config_set,
    "module|loadex": _fix_module_loadex,
    "acl|setuser": _fix_acl_setuser,
}

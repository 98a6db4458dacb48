"""Redaction: ``Exchange`` (raw request bytes) -> ``Row`` (safe to write).

A pure stage: no I/O, no state besides the policy and caches (bounded, in
memory) of what depends on a request's shape only, plus the HMACs of recent
keys under ``--keys hash``. Sinks accept only Rows, so what is not put into a
Row here cannot reach disk (DESIGN.md §4):

- secrets (AUTH / HELLO AUTH / MIGRATE AUTH passwords, ACL SETUSER >pass
  <pass #hash !hash, CONFIG SET *pass* / masterauth values) become
  ``<secret>`` under every option, without their length;
- script bodies (EVAL, SCRIPT LOAD, FUNCTION LOAD) become ``<sha1:HEX>``;
- values become ``<redacted:N>`` (N = true length in bytes);
- option keywords are kept upper-cased, identifiers (user names, db indexes,
  config parameter names, script SHAs) are kept;
- keys follow ``KeysPolicy``: plain, mask (default: e-mail addresses, card
  numbers, SSNs, phone numbers and IBANs inside keys are masked), hash
  (keyed HMAC-SHA256, so equal keys stay joinable), drop;
- error replies keep their text, but every quoted segment that is not the
  command's name or an argument already kept is replaced;
- an unknown command that Redis rejected (or whose reply was not seen) is
  ``<unknown:N>``: its name may be a password pasted at the prompt.

Hot path (``Redactor.row``): a request of a known command whose key positions
depend on the argument count only, with at most 32 arguments, is rendered from
a plan built once per (name as sent, count) from ``commands.static_roles``:
the plan holds positions, table names and markers, never argument bytes. When
one of its probed arguments is a word of the command (SET k v EX 10), the plan
for that request's word signature is used instead. Everything else (unknown
commands, AUTH / CONFIG SET / ACL SETUSER, scripts, keys found by keyword or
count) takes the general path ``Redactor._row``; both give equal Rows
(tests/test_redact.py checks it over the whole command table).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal

from . import limits
from .commands import IDENT_CHECKS, CommandInfo, Role, StaticRoles, arg_roles, key_positions, lookup, static_roles
from .types import ConnMeta, Event, Exchange, Request, Row, Source, Status


class KeysPolicy(StrEnum):
    """What ``--keys`` does to key names."""

    PLAIN = "plain"
    MASK = "mask"
    HASH = "hash"
    DROP = "drop"


_KEY, _TOKEN, _VALUE, _SECRET, _SCRIPT, _IDENT = Role.KEY, Role.TOKEN, Role.VALUE, Role.SECRET, Role.SCRIPT, Role.IDENT
_MAX_ROLE_ARGS, _MAX_ROW_KEYS, _MAX_ROW_ARGS = limits.MAX_ROLE_ARGS, limits.MAX_ROW_KEYS, limits.MAX_ROW_ARGS
_MAX_KEY_CHARS = limits.MAX_KEY_CHARS
# Row is a NamedTuple: tuple.__new__ with the 32 columns in order skips its
# Python-level __new__ (same object, half the cost)
_new_row = tuple.__new__
# enum member -> plain str (a dict lookup is cheaper than the .value descriptor)
_PLAIN: dict[StrEnum | str, str] = {e: e.value for cls in (Event, Source, Status) for e in cls}
# An Exchange without connection metadata (not made by the pipeline): source "unknown", no addresses.
_PLAIN["unknown"] = "unknown"
_NO_META = ConnMeta("unknown")  # type: ignore[arg-type]

# --- key masking ----------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_NUMBERS = re.compile(
    r"(?P<phone>(?<![0-9])\+[0-9](?:[ .\-]?[0-9]){7,14}(?![0-9]))"
    r"|(?P<ssn>(?<![0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9\-]))"
    r"|(?P<card>(?<![0-9])[0-9](?:[ \-]?[0-9]){12,18}(?![0-9]))"
)
_DIGIT = re.compile(r"[0-9]")


def luhn_ok(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if k % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_sub(m: re.Match[str]) -> str:
    return "<iban>" if _iban_ok(m.group(0)) else m.group(0)


def _number_sub(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "phone":
        return "<phone>"
    if kind == "ssn":
        return "<ssn>"
    text = m.group(0)
    digits = text.replace(" ", "").replace("-", "")
    return "<card>" if luhn_ok(digits) else text


def mask_key(text: str) -> str:
    """Mask PII inside a key name: e-mail addresses, IBANs (mod-97 checked),
    phone numbers (+ and 8-15 digits), US SSNs (ddd-dd-dddd) and card numbers
    (13-19 digits, optional space/dash separators, Luhn checked)."""
    if "@" in text:
        text = _EMAIL.sub("<email>", text)
    if _DIGIT.search(text) is None:
        return text
    text = _IBAN.sub(_iban_sub, text)
    return _NUMBERS.sub(_number_sub, text)


# Whether masking can change a key depends only on its character classes:
# every pattern above is built from letters, digits and the characters
# ._%+- @ (a pattern added there must keep it so; the tests compare with
# mask_key). Keys are mapped to their class string and the answer is
# remembered per class string ("key:000123" and "key:987654" share
# "aaa#999999").
def _char_class(c: int) -> int:
    ch = chr(c)
    if c >= 128:
        return ord("~")  # non-ASCII: such keys are masked directly
    if ch.isalpha():
        return ord("a")
    if ch.isdigit():
        return ord("9")
    return c if ch in "._%+- @" else ord("#")


_CLASS_OF = bytes(map(_char_class, range(256)))
_MASK_NOOP: dict[bytes, bool] = {}  # class string -> masking leaves such keys as they are
_MASK_NOOP_MAX = 16384
_MASK_NOOP_MAX_LEN = min(128, _MAX_KEY_CHARS)  # longer keys are masked directly (and not remembered)


def _mask_noop(cls: bytes) -> bool:
    """``mask_key`` leaves every key of class string ``cls`` as it is: no
    pattern it tries can match (the same guards, on the class string)."""
    if cls.find(b"~") >= 0:
        return False  # non-ASCII: decoded with escapes, masked directly
    text = cls.decode("ascii")
    if "@" in text and _EMAIL.search(text) is not None:
        return False
    return "9" not in text or (_IBAN.search(text) is None and _NUMBERS.search(text) is None)


def _plain_key(raw: bytes) -> str:
    try:
        text = raw.decode()  # (as _text, inlined)
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= _MAX_KEY_CHARS else _clip(text, _MAX_KEY_CHARS)


def _mask_key1(raw: bytes) -> str:
    try:
        text = raw.decode()  # (as _text, inlined)
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
    if len(raw) <= _MASK_NOOP_MAX_LEN:
        cls = raw.translate(_CLASS_OF)
        noop = _MASK_NOOP.get(cls)
        if noop is None:
            noop = _mask_noop(cls)
            if len(_MASK_NOOP) >= _MASK_NOOP_MAX:
                _MASK_NOOP.clear()
            _MASK_NOOP[cls] = noop
        if noop:
            return text  # ASCII: as long as raw, within MAX_KEY_CHARS
    text = mask_key(text)
    return text if len(text) <= _MAX_KEY_CHARS else _clip(text, _MAX_KEY_CHARS)


# --- text helpers -----------------------------------------------------------------


def _text(raw: bytes) -> str:
    """UTF-8, invalid bytes as \\xNN escapes."""
    try:
        return raw.decode()  # (no arguments: the fastest call; same text when valid)
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def _clip(text: str, max_chars: int, missing: int = 0) -> str:
    """Cap ``text``; the marker counts what is not shown (characters cut plus
    bytes never captured)."""
    if len(text) <= max_chars and not missing:
        return text
    cut = text[:max_chars]
    return f"{cut}…<+{len(text) - len(cut) + missing}>"


# Quoted segments of an error text ('...' or `...`). A quote inside a word
# ("couldn't") opens nothing; a segment closes at a quote not followed by a
# letter or digit (so 'it's' is one segment), or runs to the end when the
# reply was truncated.
_QUOTED = re.compile(
    r"(?<![A-Za-z0-9])'(.*?)(?:'(?![A-Za-z0-9])|$)|(?<![A-Za-z0-9])`(.*?)(?:`(?![A-Za-z0-9])|$)",
    re.DOTALL,
)
_UNKNOWN_PREFIXES = ("ERR unknown command", "ERR unknown subcommand")
_ARGS_ECHO = "with args beginning with:"


# --- static plans: what every request of one shape shares --------------------------

_NRED = limits.MAX_ARG_KEEP + 1
_REDACTED = [f"<redacted:{k}>" for k in range(_NRED)]  # value markers, precomputed for small lengths


def _redacted(size: int) -> str:
    return _REDACTED[size] if size < _NRED else f"<redacted:{size}>"


# requests of up to this many arguments get a static plan per (command, count)
_SHAPE_MAX_ARGS = 32
# names (and subcommand names) as sent remembered for the fast path; odd-cased
# variants beyond this take the general path, which is equivalent
_MAX_NAMES = 4096
# plans for requests with words (SET k v EX 10, ZADD z NX 1 m): (plan of the
# shape, word signature) -> plan; bounded, as signatures are many
_VARIANTS: dict[tuple[_Shape, tuple[int | None, ...]], _Shape | Literal[False]] = {}
_MAX_VARIANTS = 16384


class _Shape:
    """A ``StaticRoles`` compiled for rendering: the row's command columns and,
    per argument, what to put in ``args`` (never a byte of a value or secret
    held here: only positions, table names and fixed markers)."""

    __slots__ = (
        "acl",
        "acts",
        "command",
        "keys",
        "probe",
        "sizes",
        "static",
        "subcommand",
        "tokens",
        "values",
    )

    def __init__(self, st: StaticRoles, acl: list[str] | None = None) -> None:
        info = st.info
        self.static = st
        self.command = info.command
        self.subcommand = info.subcommand
        # one list shared by every row of this command (the sink only reads it)
        self.acl: list[str] = list(info.acl_categories) if acl is None else acl
        self.keys = st.keys
        self.probe = st.probe
        self.tokens = st.tokens
        self.sizes = st.sizes
        # what to put in ``args`` for each argument that is not a key, in
        # order: a position (a value: its length), a str (a word as sent,
        # upper-cased, or the secret marker) or (position, check) for an
        # identifier (kept when of its documented form)
        checks = dict(st.checks)
        start = 1 if info.subcommand is None else 2
        acts: list[int | str | tuple[int, Callable[[bytes], object] | None]] = []
        for i in range(start, st.n):
            r = st.roles[i]
            if r is _KEY:
                continue
            if r is _VALUE:
                acts.append(i)
            elif r is _TOKEN:
                acts.append(st.words[i])
            elif r is _SECRET:
                acts.append("<secret>")
            elif r is _IDENT:
                kind = checks.get(i)
                acts.append((i, None if kind is None else IDENT_CHECKS[kind]))
            else:  # StaticRoles hold no SCRIPT (nor COMMAND / SUBCOMMAND after start)
                raise AssertionError(f"role {r.name} in a static plan")
        self.acts = tuple(acts)
        # nearly every shape: arguments that are all values
        self.values: tuple[int, ...] | None = None
        if all(a.__class__ is int for a in acts):
            self.values = tuple(acts)  # type: ignore[arg-type]

    def with_words(self, args: list[bytes]) -> _Shape | Literal[False]:
        """The plan for a request of this shape in which a probed argument is
        a word (False: none, general path)."""
        key = (self, self.static.signature(args))
        shape = _VARIANTS.get(key)
        if shape is None:
            st = self.static.with_words(args)
            shape = False if st is None else _Shape(st, self.acl)  # type: ignore[assignment]
            if len(_VARIANTS) >= _MAX_VARIANTS:
                _VARIANTS.clear()
            _VARIANTS[key] = shape
        return shape

    def __repr__(self) -> str:
        return f"_Shape({self.command!r}, {self.subcommand!r}, keys={self.keys})"


_Plans = list[_Shape | Literal[False] | None]

# request name as sent -> plans by argument count (index: count; None: not
# built yet, False: no static plan); container commands (CONFIG, CLIENT...)
# are in _CONTAINERS: their name as sent -> subcommand name as sent -> plans
_BY_NAME: dict[bytes, _Plans] = {}
_CONTAINERS: dict[bytes, dict[bytes, _Plans]] = {}
_PLANS: dict[CommandInfo, _Plans] = {}


def _plans(info: CommandInfo) -> _Plans:
    plans = _PLANS.get(info)
    if plans is None:
        plans = _PLANS[info] = [None] * (_SHAPE_MAX_ARGS + 1)
    return plans


def _find_plans(args: list[bytes]) -> _Plans | None:
    """Plans for a request whose name is not in _BY_NAME: a command name seen
    for the first time (remembered there), or a container command's
    subcommand (remembered in _CONTAINERS). None: unknown command or
    subcommand, or a table name such as ``config|set`` sent as a name:
    general path."""
    name = args[0]
    subs = _CONTAINERS.get(name)
    if subs is None:
        if len(_BY_NAME) + len(_CONTAINERS) >= _MAX_NAMES:
            return None
        info = lookup(args[:1])
        if info is None or info.subcommand is not None:
            return None
        if not info.subcommands:
            plans = _BY_NAME[name] = _plans(info)
            return plans
        subs = _CONTAINERS[name] = {}
    if len(args) < 2:
        return None
    found = subs.get(args[1])
    if found is None:
        if len(subs) >= _MAX_NAMES:
            return None
        info = lookup(args)
        if info is None or info.subcommand is None:
            return None
        found = subs[args[1]] = _plans(info)
    return found


def _build(plans: _Plans, info: CommandInfo, n: int) -> _Shape | Literal[False]:
    st = static_roles(info, n)
    shape: _Shape | Literal[False] = False if st is None else _Shape(st)
    plans[n] = shape
    return shape


def _render(sh: _Shape, args: list[bytes], lens: list[int] | None) -> list[str]:
    """``args`` of a request under a static plan (``lens``: the true lengths
    when the parser truncated an argument)."""
    red = _REDACTED
    out: list[str] = []
    act: Any
    for act in sh.acts:
        if act.__class__ is int:
            size = len(args[act]) if lens is None else lens[act]
            out.append(red[size] if size < _NRED else _redacted(size))
        elif act.__class__ is str:
            out.append(act)
        else:
            i, check = act
            a = args[i]
            size = len(a) if lens is None else lens[i]
            if check is not None and check(a) is None:
                out.append(_redacted(size))  # an identifier not of its documented form
            else:
                out.append(_clip(_text(a), limits.MAX_IDENT_CHARS, size - len(a)))
    return out


# --keys hash: HMACs remembered per Redactor (memory only, bounded)
_HASHED_MAX = 16384
_HASHED_MAX_LEN = 128


class Redactor:
    """Turns Exchanges into Rows under one keys policy (see module doc)."""

    __slots__ = ("_drop", "_hashed", "_hmac_key", "_inner", "_key1", "_outer", "keys")

    def __init__(self, keys: KeysPolicy | str = KeysPolicy.MASK, hmac_key: bytes | None = None) -> None:
        self.keys = KeysPolicy(keys)
        self._drop = self.keys is KeysPolicy.DROP
        if self.keys is KeysPolicy.HASH and not hmac_key:
            raise ValueError("--keys hash needs an HMAC key (auditor.keyfile.load_or_create_key)")
        self._hmac_key = hmac_key
        # HMAC-SHA256 (RFC 2104) with the keyed inner/outer states computed
        # once: copying them is about twice as fast as hmac.new per key.
        self._inner = self._outer = None
        if hmac_key:
            k = hashlib.sha256(hmac_key).digest() if len(hmac_key) > 64 else hmac_key
            k = k.ljust(64, b"\0")
            self._inner = hashlib.sha256(bytes(x ^ 0x36 for x in k))
            self._outer = hashlib.sha256(bytes(x ^ 0x5C for x in k))
        # recent key names -> their HMAC (hot keys repeat; an HMAC costs ~1 µs)
        self._hashed: dict[bytes, str] = {}
        # one complete key name (not truncated by the parser) -> its text
        self._key1 = {
            KeysPolicy.PLAIN: _plain_key,
            KeysPolicy.MASK: _mask_key1,
            KeysPolicy.HASH: self._hash_key1,
            KeysPolicy.DROP: _plain_key,  # never called
        }[self.keys]

    def __repr__(self) -> str:
        return f"Redactor(keys={self.keys.value}, hmac_key={'<set>' if self._hmac_key else None})"

    # -- public ----------------------------------------------------------------

    def row(self, ex: Exchange) -> Row:
        # Fast path: a request whose shape has a static plan (the role of
        # every argument known from the command, the argument count and which
        # arguments are words of the command, see commands.static_roles).
        # Anything else takes ``_row``; both give equal Rows.
        req = ex.request
        if req is None or (m := ex.meta) is None:
            return self._row(ex)
        args = req.args
        n = len(args)
        if not 0 < n <= _SHAPE_MAX_ARGS:
            return self._row(ex)
        plans = _BY_NAME.get(args[0])
        if plans is None:
            plans = _find_plans(args)
            if plans is None:
                return self._row(ex)
        found = plans[n]
        if found.__class__ is not _Shape:
            if found is None:
                found = _build(plans, lookup(args), n)  # type: ignore[arg-type]
            if found is False:
                return self._row(ex)
        sh: _Shape = found  # type: ignore[assignment]
        probe = sh.probe
        if probe:
            tokens = sh.tokens
            sizes = sh.sizes
            for i in probe:
                a = args[i]
                if len(a) in sizes and a.upper() in tokens:
                    found = sh.with_words(args)
                    if found is False:
                        return self._row(ex)
                    sh = found
                    break

        # (explicit loops: a comprehension costs a function call in 3.11)
        kpos = sh.keys
        lens = req.lens
        if lens is not None:  # the parser truncated an argument
            keys: list[str] = []
            if not self._drop:
                key = self.key
                for i in kpos:
                    keys.append(key(args[i], lens[i]))
            out = _render(sh, args, lens)
        else:
            if self._drop or not kpos:
                keys = []
            elif len(kpos) == 1:
                keys = [self._key1(args[kpos[0]])]
            else:
                key1 = self._key1
                keys = []
                for i in kpos:
                    keys.append(key1(args[i]))
            values = sh.values
            if values is None:
                out = _render(sh, args, None)
            elif len(values) == 1:
                size = len(args[values[0]])
                out = [_REDACTED[size] if size < _NRED else _redacted(size)]
            else:
                red = _REDACTED
                out = []
                for i in values:
                    size = len(args[i])
                    out.append(red[size] if size < _NRED else _redacted(size))
        error = None
        if ex.error is not None:  # (rare: scrubbing costs more than the rest)
            st = sh.static
            error = self._error(ex.error, st.info, req, st.roles_of(args), False)
        status = ex.status
        rts = ex.reply_ts_ns
        return _new_row(
            Row,
            (
                ex.ts_ns,
                _PLAIN[ex.event],
                _PLAIN[m.source],
                ex.conn,
                ex.seq,
                m.client_addr,
                m.client_port,
                m.server_addr,
                m.server_port,
                m.server_pid,
                m.server_uid,
                m.client_pid,
                m.client_uid,
                m.client_comm,
                ex.user,
                ex.db,
                sh.command,
                sh.subcommand,
                keys,
                out,
                None if status is None else _PLAIN[status],
                error,
                None if rts is None else (rts - req.ts_ns) / 1000,
                req.nbytes,
                ex.reply_bytes,
                ex.reply_type,
                ex.resp,
                ex.tx,
                sh.acl,
                ex.detail,
                ex.lost_bytes,
                ex.lost_events,
            ),
        )

    def _row(self, ex: Exchange) -> Row:
        """Any Exchange (the general path)."""
        m = ex.meta
        req = ex.request
        status = ex.status
        command = subcommand = keys = args = acl = error = None
        request_bytes = latency_us = None
        if req is not None:
            request_bytes = req.nbytes
            if ex.reply_ts_ns is not None:
                latency_us = (ex.reply_ts_ns - req.ts_ns) / 1000
            if req.args:
                command, subcommand, keys, args, acl, error = self._command(ex, req)
            elif ex.error is not None:
                error = self._error(ex.error, None, None, None, True)
        elif ex.error is not None:
            error = self._error(ex.error, None, None, None, True)
        if m is None:
            m = _NO_META
        return _new_row(
            Row,
            (
                ex.ts_ns,
                _PLAIN[ex.event],
                _PLAIN[m.source],
                ex.conn,
                ex.seq,
                m.client_addr,
                m.client_port,
                m.server_addr,
                m.server_port,
                m.server_pid,
                m.server_uid,
                m.client_pid,
                m.client_uid,
                m.client_comm,
                ex.user,
                ex.db,
                command,
                subcommand,
                keys,
                args,
                None if status is None else _PLAIN[status],
                error,
                latency_us,
                request_bytes,
                ex.reply_bytes,
                ex.reply_type,
                ex.resp,
                ex.tx,
                acl,
                ex.detail,
                ex.lost_bytes,
                ex.lost_events,
            ),
        )

    def _hash_key1(self, raw: bytes) -> str:
        text = self._hashed.get(raw)
        if text is None:
            inner = self._inner.copy()  # type: ignore[union-attr]
            inner.update(raw)
            outer = self._outer.copy()  # type: ignore[union-attr]
            outer.update(inner.digest())
            text = "hmac:" + outer.hexdigest()[:32]
            if len(raw) <= _HASHED_MAX_LEN:
                hashed = self._hashed
                if len(hashed) >= _HASHED_MAX:
                    hashed.clear()
                hashed[raw] = text
        return text

    def key(self, raw: bytes, true_len: int | None = None) -> str:
        """One key name under this policy (``true_len``: its length on the wire
        when ``raw`` was truncated by the parser). Not for DROP."""
        missing = 0 if true_len is None else max(0, true_len - len(raw))
        if not missing:
            return self._key1(raw)
        if self.keys is KeysPolicy.HASH:
            return f"{self._hash_key1(raw)}…<+{missing}>"
        text = raw.decode("utf-8", "backslashreplace")
        if self.keys is KeysPolicy.MASK:
            text = mask_key(text)
        return _clip(text, limits.MAX_KEY_CHARS, missing)

    # -- internals -----------------------------------------------------------

    def _command(
        self, ex: Exchange, req: Request
    ) -> tuple[str, str | None, list[str], list[str], list[str] | None, str | None]:
        """(command, subcommand, keys, args, acl_categories, error)."""
        args = req.args
        n = len(args)
        info = lookup(args)
        keys = key_positions(info, args)
        view = args
        if n > _MAX_ROLE_ARGS:
            view = args[:_MAX_ROLE_ARGS]
            roles = arg_roles(info, view, [p for p in keys if p < _MAX_ROLE_ARGS])
        else:
            roles = arg_roles(info, view, keys)
        lens = req.lens
        hidden = False
        if info is not None:
            command = info.command
            subcommand = info.subcommand
            acl: list[str] | None = list(info.acl_categories)
        else:
            # An unknown name is kept only when Redis ran it (module command,
            # rename-command); otherwise it may be a password typed at a prompt.
            status = ex.status
            hidden = not (
                status is Status.OK
                or (status is Status.ERROR and ex.error is not None and not ex.error.startswith(b"ERR unknown command"))
            )
            true0 = req.arg_len(0)
            if hidden:
                command = f"<unknown:{true0}>"
            else:
                command = _clip(_text(args[0].upper()), limits.MAX_COMMAND_CHARS, true0 - len(args[0]))
            subcommand = None
            acl = None
        start = 1 if subcommand is None else 2

        # keys
        nkeys = len(keys)
        if self._drop:
            out_keys: list[str] = []
        else:
            key = self.key
            if nkeys > _MAX_ROW_KEYS:
                out_keys = [key(args[p], None if lens is None else lens[p]) for p in keys[:_MAX_ROW_KEYS]]
                out_keys.append(f"<+{nkeys - _MAX_ROW_KEYS} more>")
            elif lens is None:
                out_keys = [key(args[p]) for p in keys]
            else:
                out_keys = [key(args[p], lens[p]) for p in keys]

        # arguments other than command, subcommand and keys
        max_args = _MAX_ROW_ARGS
        rendered: list[str] = []
        append = rendered.append
        for i in range(start, len(view)):
            r = roles[i]
            if r is _VALUE:
                if len(rendered) >= max_args:
                    break
                append(f"<redacted:{len(args[i]) if lens is None else lens[i]}>")
            elif r is _TOKEN:
                if len(rendered) >= max_args:
                    break
                append(args[i].upper().decode("utf-8", "backslashreplace"))
            elif r is not _KEY:
                if len(rendered) >= max_args:
                    break
                append(self._arg(req, i, r))
        if keys and keys[0] < start:  # cannot happen with the table, but never miscount
            nkeys = sum(1 for p in keys if p >= start)
        nonkey_total = n - start - nkeys
        if nonkey_total > len(rendered):
            append(f"<+{nonkey_total - len(rendered)} more>")

        error = None if ex.error is None else self._error(ex.error, info, req, roles, hidden)
        return command, subcommand, out_keys, rendered, acl, error

    @staticmethod
    def _arg(req: Request, i: int, role: Role) -> str:
        if role is _VALUE:
            return f"<redacted:{req.arg_len(i)}>"
        if role is _TOKEN:
            return _text(req.args[i].upper())
        if role is _SECRET:
            return "<secret>"
        if role is _IDENT:
            a = req.args[i]
            return _clip(_text(a), limits.MAX_IDENT_CHARS, req.arg_len(i) - len(a))
        if role is _SCRIPT:
            a = req.args[i]
            n = req.arg_len(i)
            if n != len(a) or req.gap_bytes:
                return f"<script:{n}>"  # not all of it was captured: a SHA would be wrong
            return f"<sha1:{hashlib.sha1(a).hexdigest()}>"
        return f"<redacted:{req.arg_len(i)}>"  # COMMAND/SUBCOMMAND never land here

    @staticmethod
    def _error(
        err: bytes,
        info: CommandInfo | None,
        req: Request | None,
        roles: list[Role] | None,
        hidden: bool,
    ) -> str:
        """Error text with every quoted segment replaced unless it is the
        command's own name or an argument already kept (keyword, identifier)."""
        text = _text(err)
        keep: set[str] = set()
        if req is not None and roles is not None:
            if info is not None:
                keep.update((info.command.lower(), info.name, info.name.split("|")[0]))
            elif not hidden:
                keep.add(_text(req.args[0]).lower())
            for i in range(1, min(len(roles), 64)):
                if roles[i] is _TOKEN or roles[i] is _IDENT or roles[i] is Role.SUBCOMMAND:
                    keep.add(_text(req.args[i]).lower())
        if text.startswith(_UNKNOWN_PREFIXES):
            # "ERR unknown command 'x', with args beginning with: 'a' 'b' ":
            # drop the echoed arguments, and the name exactly as sent (it may
            # itself contain quotes)
            k = text.find(_ARGS_ECHO)
            if k >= 0:
                text = text[: k + len(_ARGS_ECHO)] + " <redacted>"
            if req is not None:
                idx = 0 if text.startswith("ERR unknown command") else 1
                if idx < len(req.args) and (idx == 1 or hidden):
                    name = _text(req.args[idx][:128])
                    for q in ("'", "`"):
                        text = text.replace(f"{q}{name}{q}", f"{q}<redacted:{req.arg_len(idx)}>{q}", 1)

        def sub(m: re.Match[str]) -> str:
            single = m.group(1) is not None
            inner = m.group(1) if single else m.group(2)
            if inner.startswith("<redacted:") or inner.lower() in keep:
                return m.group(0)
            q = "'" if single else "`"
            return f"{q}<redacted:{len(inner.encode())}>{q}"

        text = _QUOTED.sub(sub, text)
        if len(text) > limits.MAX_ERROR_CHARS:
            text = text[: limits.MAX_ERROR_CHARS - 1] + "…"
        return text

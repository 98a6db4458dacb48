"""Redaction: ``Exchange`` (raw request bytes) -> ``Row`` (safe to write).

A pure stage: no I/O, no state besides the policy. Sinks accept only Rows, so
what is not put into a Row here cannot reach disk (DESIGN.md §4):

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
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

from . import limits
from .commands import CommandInfo, Role, arg_roles, key_positions, lookup
from .types import Event, Exchange, Request, Row, Source, Status


class KeysPolicy(StrEnum):
    """What ``--keys`` does to key names."""

    PLAIN = "plain"
    MASK = "mask"
    HASH = "hash"
    DROP = "drop"


_KEY, _TOKEN, _VALUE, _SECRET, _SCRIPT, _IDENT = Role.KEY, Role.TOKEN, Role.VALUE, Role.SECRET, Role.SCRIPT, Role.IDENT
_MAX_ROLE_ARGS, _MAX_ROW_KEYS, _MAX_ROW_ARGS = limits.MAX_ROLE_ARGS, limits.MAX_ROW_KEYS, limits.MAX_ROW_ARGS
# enum member -> plain str (a dict lookup is cheaper than the .value descriptor)
_PLAIN: dict[StrEnum, str] = {e: e.value for cls in (Event, Source, Status) for e in cls}

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


# --- text helpers -----------------------------------------------------------------


def _text(raw: bytes) -> str:
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


class Redactor:
    """Turns Exchanges into Rows under one keys policy (see module doc)."""

    __slots__ = ("_drop", "_hmac_key", "_inner", "_outer", "keys")

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

    def __repr__(self) -> str:
        return f"Redactor(keys={self.keys.value}, hmac_key={'<set>' if self._hmac_key else None})"

    # -- public ----------------------------------------------------------------

    def row(self, ex: Exchange) -> Row:
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
            return Row(
                ex.ts_ns,
                _PLAIN[ex.event],
                "unknown",
                ex.conn,
                seq=ex.seq,
                user=ex.user,
                db=ex.db,
                command=command,
                subcommand=subcommand,
                keys=keys,
                args=args,
                status=None if status is None else _PLAIN[status],
                error=error,
                latency_us=latency_us,
                request_bytes=request_bytes,
                reply_bytes=ex.reply_bytes,
                reply_type=ex.reply_type,
                resp=ex.resp,
                tx=ex.tx,
                acl_categories=acl,
                detail=ex.detail,
                lost_bytes=ex.lost_bytes,
                lost_events=ex.lost_events,
            )
        return Row(
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
        )

    def key(self, raw: bytes, true_len: int | None = None) -> str:
        """One key name under this policy (``true_len``: its length on the wire
        when ``raw`` was truncated by the parser). Not for DROP."""
        missing = 0 if true_len is None else max(0, true_len - len(raw))
        policy = self.keys
        if policy is KeysPolicy.HASH:
            inner = self._inner.copy()  # type: ignore[union-attr]
            inner.update(raw)
            outer = self._outer.copy()  # type: ignore[union-attr]
            outer.update(inner.digest())
            digest = outer.hexdigest()[:32]
            return f"hmac:{digest}" if not missing else f"hmac:{digest}…<+{missing}>"
        text = raw.decode("utf-8", "backslashreplace")
        if policy is KeysPolicy.MASK:
            text = mask_key(text)
        if missing or len(text) > limits.MAX_KEY_CHARS:
            return _clip(text, limits.MAX_KEY_CHARS, missing)
        return text

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

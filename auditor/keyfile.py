"""The per-install secret for ``--keys hash`` (HMAC-SHA256 of key names).

Input: an optional path. Output: the key bytes. The file holds 32 random
bytes, is created atomically on first use with mode 0600, and is refused when
group or others can read or write it, when it is not a regular file owned by
the current user, or when it lies inside the trail directory (the trail is
meant to be shared; the key is not: whoever holds both can test guesses of
key names against the hashes).

Default location: ``/var/lib/redis-audit/hmac.key`` when running as root,
else ``~/.local/share/redis-audit/hmac.key``; ``REDIS_AUDIT_KEY_FILE``
overrides it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

ENV_VAR = "REDIS_AUDIT_KEY_FILE"
SYSTEM_PATH = Path("/var/lib/redis-audit/hmac.key")
KEY_BYTES = 32
# A key file shorter than this is not a key we wrote (or was truncated).
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096


class KeyFileError(Exception):
    """The key file cannot be used safely (message says why and how to fix)."""


def default_key_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_PATH
    return Path.home() / ".local" / "share" / "redis-audit" / "hmac.key"


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _check(fd: int, path: Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"HMAC key file {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise KeyFileError(
            f"HMAC key file {path} is owned by uid {st.st_uid}, not by the current user ({os.geteuid()})"
        )
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"HMAC key file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _check(fd, path)
        data = os.read(fd, MAX_KEY_BYTES + 1)
    finally:
        os.close(fd)
    if not MIN_KEY_BYTES <= len(data) <= MAX_KEY_BYTES:
        raise KeyFileError(
            f"HMAC key file {path} has {len(data)} bytes; expected {KEY_BYTES} (remove it to make a new one)"
        )
    return data


def _create(path: Path) -> None:
    """Write a new key next to ``path`` and link it into place; if another
    process won the race, its key is used."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)


def load_or_create_key(path: Path | None = None, *, trail_dir: Path | None = None) -> bytes:
    """The HMAC key at ``path`` (default: ``default_key_path()``), created on
    first use. Raises KeyFileError when it cannot be used safely."""
    path = Path(path) if path is not None else default_key_path()
    if trail_dir is not None and _inside(path, Path(trail_dir)):
        raise KeyFileError(
            f"HMAC key file {path} is inside the trail directory {trail_dir}; keep it elsewhere (set {ENV_VAR})"
        )
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    _create(path)
    return _read(path)

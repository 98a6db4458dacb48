"""Real `redis-server` and `tcpdump` helpers shared by the tests and by `scripts/make_golden_pcaps.py`.

- `RedisServer`: a throw-away redis-server on 127.0.0.1 (random free port) plus a Unix socket, no persistence.
  Admin traffic of the helper itself (readiness PING, INFO snapshots, SHUTDOWN) goes over the Unix socket, so a
  capture of the TCP port contains only what a test sent, and `Snapshot.delta` subtracts the helper's own calls.
- `Tcpdump`: a context manager around `tcpdump -w`, started only once it is really capturing and stopped with
  SIGINT so the file is complete.
- `RespConn` / `read_reply`: a minimal RESP2/RESP3 client over a raw socket, for byte-exact scenarios.

Everything fails loudly (`ToolMissing`, `RedisStartError`, ...) instead of skipping: a missing redis-server or
tcpdump is a broken test machine, not a reason to test less.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 10.0  # redis-server starts in ~10 ms here; 10 s covers a loaded CI machine
STOP_TIMEOUT_S = 10.0  # SHUTDOWN NOSAVE / SIGTERM without persistence is immediate; then SIGKILL
TCPDUMP_START_TIMEOUT_S = 10.0
TCPDUMP_SETTLE_S = 0.3  # let the kernel hand the last packets (FIN/ACK) to tcpdump before SIGINT
# --immediate-mode makes libpcap use a frame-per-packet ring whose frames are sized by the snaplen (256 KiB):
# tcpdump's default 2 MiB buffer then holds ~8 packets and loopback bursts get "dropped by kernel".
# 64 MiB holds ~250 full-size frames.
TCPDUMP_BUFFER_KIB = 65536
PORT_ATTEMPTS = 5  # a "free" port can be taken between probing and binding; retry with another one


class ToolMissing(RuntimeError):
    """A required executable (redis-server, redis-cli, tcpdump) is not installed."""


class RedisStartError(RuntimeError):
    """redis-server did not come up; the message carries the tail of its log."""


class RedisError(Exception):
    """An error reply (`-ERR ...` / RESP3 `!`) read by `read_reply`; `str()` is the error text."""


def require_tool(name: str) -> str:
    """Absolute path of executable `name`, or raise `ToolMissing`."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found in PATH; install it (Debian: apt-get install redis-server tcpdump)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- RESP over a raw socket


@dataclass(frozen=True)
class Push:
    """A RESP3 push frame (`>`): pub/sub messages, invalidations."""

    items: list[Any]


@dataclass(frozen=True)
class Verbatim:
    """A RESP3 verbatim string (`=`): format (e.g. `txt`) and text."""

    fmt: str
    text: bytes


@dataclass(frozen=True)
class BigNumber:
    """A RESP3 big number (`(`), kept as its decimal text."""

    digits: str


@dataclass(frozen=True)
class Attribute:
    """A RESP3 attribute (`|`) followed by the reply it annotates."""

    attrs: dict[Any, Any]
    reply: Any


class _Reader:
    """Buffered reads from a socket: lines and exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by peer")
        self.buf += data

    def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[: n + 2]
        return out


def read_reply(reader: _Reader) -> Any:
    """Read one RESP2/RESP3 reply. Error replies are returned as `RedisError` instances (not raised)."""
    line = reader.line()
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else reader.exact(n)
    if kind in (b"*", b"~", b">"):
        n = int(rest)
        if n < 0:
            return None
        items = [read_reply(reader) for _ in range(n)]
        if kind == b"~":
            return set(items) if all(isinstance(x, (bytes, str, int, float)) for x in items) else items
        return Push(items) if kind == b">" else items
    if kind in (b"%", b"|"):
        n = int(rest)
        pairs = {}
        for _ in range(n):
            k = read_reply(reader)
            pairs[k if not isinstance(k, list) else tuple(k)] = read_reply(reader)
        return Attribute(pairs, read_reply(reader)) if kind == b"|" else pairs
    if kind == b"_":
        return None
    if kind == b"#":
        return rest == b"t"
    if kind == b",":
        return float(rest)
    if kind == b"(":
        return BigNumber(rest.decode())
    if kind == b"!":
        return RedisError(reader.exact(int(rest)).decode(errors="replace"))
    if kind == b"=":
        body = reader.exact(int(rest))
        return Verbatim(body[:3].decode(), body[4:])
    raise ValueError(f"unexpected RESP type byte {kind!r} (line of {len(line)} bytes)")


def encode_command(*args: bytes | str | int) -> bytes:
    """RESP2 multibulk encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespConn:
    """A raw RESP connection: send exact bytes, read replies one at a time.

    Every error reply read is also appended to `errors` (a list shared by the caller if given), so a scenario
    can report the exact error texts Redis sent without a parser of our own.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        unix_path: str | None = None,
        timeout: float = 10.0,
        errors: list[str] | None = None,
    ) -> None:
        if unix_path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix_path)
        else:
            assert port is not None
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _Reader(self.sock)
        self.errors = errors if errors is not None else []
        self.peer_closed = False  # set by read_until_closed

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_command(self, *args: bytes | str | int) -> None:
        self.send(encode_command(*args))

    def read(self) -> Any:
        reply = read_reply(self.reader)
        if isinstance(reply, RedisError):
            self.errors.append(str(reply))
        return reply

    def call(self, *args: bytes | str | int) -> Any:
        """Send one command and read one reply (which may be a `RedisError`)."""
        self.send_command(*args)
        return self.read()

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything the server still sends until it closes the connection (`peer_closed`) or `timeout` passes."""
        self.sock.settimeout(timeout)
        data = bytes(self.reader.buf)
        self.reader.buf.clear()
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
            self.peer_closed = True
        except ConnectionResetError:
            self.peer_closed = True
        except TimeoutError:
            pass
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RespConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- INFO parsing


@dataclass(frozen=True)
class CommandStat:
    """One `cmdstat_<name>` line of INFO commandstats (`name` is lower case, `parent|sub` for subcommands)."""

    calls: int
    usec: int
    rejected_calls: int = 0
    failed_calls: int = 0


def parse_info(text: str) -> dict[str, str]:
    """INFO output as a flat `field -> raw value` dict (section headers and blank lines dropped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        out[k] = v
    return out


def _kv(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def parse_commandstats(text: str) -> dict[str, CommandStat]:
    """`cmdstat_set:calls=3,usec=10,usec_per_call=3.33,rejected_calls=0,failed_calls=0` -> {'set': CommandStat}."""
    stats = {}
    for k, v in parse_info(text).items():
        if k.startswith("cmdstat_"):
            f = _kv(v)
            stats[k.removeprefix("cmdstat_")] = CommandStat(
                calls=int(f["calls"]),
                usec=int(f.get("usec", 0)),
                rejected_calls=int(f.get("rejected_calls", 0)),
                failed_calls=int(f.get("failed_calls", 0)),
            )
    return stats


def parse_errorstats(text: str) -> dict[str, int]:
    """`errorstat_WRONGTYPE:count=1` -> {'WRONGTYPE': 1}."""
    return {
        k.removeprefix("errorstat_"): int(_kv(v)["count"])
        for k, v in parse_info(text).items()
        if k.startswith("errorstat_")
    }


@dataclass(frozen=True)
class Snapshot:
    """Server counters at one moment, plus what the helper's own admin connection had run before it."""

    commandstats: dict[str, CommandStat]
    errorstats: dict[str, int]
    total_connections_received: int
    total_commands_processed: int
    admin_calls: Counter[str]
    admin_connections: int

    def delta(self, before: Snapshot) -> dict[str, Any]:
        """Counters that changed between `before` and `self`, minus the helper's own admin traffic.

        Returns `{"commandstats": {cmd: {"calls", "rejected_calls", "failed_calls"}}, "errorstats": {code: n},
        "connections": n, "commands_processed": n}` with zero entries left out.
        """
        admin = self.admin_calls - before.admin_calls
        cmds: dict[str, dict[str, int]] = {}
        for name in sorted(set(self.commandstats) | set(before.commandstats)):
            a = self.commandstats.get(name, CommandStat(0, 0))
            b = before.commandstats.get(name, CommandStat(0, 0))
            d = {
                "calls": a.calls - b.calls - admin.get(name, 0),
                "rejected_calls": a.rejected_calls - b.rejected_calls,
                "failed_calls": a.failed_calls - b.failed_calls,
            }
            if any(d.values()):
                cmds[name] = d
        errs = {
            code: n
            for code in sorted(set(self.errorstats) | set(before.errorstats))
            if (n := self.errorstats.get(code, 0) - before.errorstats.get(code, 0))
        }
        return {
            "commandstats": cmds,
            "errorstats": errs,
            "connections": self.total_connections_received
            - before.total_connections_received
            - (self.admin_connections - before.admin_connections),
            "commands_processed": self.total_commands_processed - before.total_commands_processed - sum(admin.values()),
        }


# --------------------------------------------------------------------------- redis-server


@dataclass
class RedisServer:
    """A real redis-server on 127.0.0.1:<random port> and a Unix socket, without persistence.

    `extra_config` lines go verbatim into the generated redis.conf (e.g. `user alice on >pw ~app:* +@read`).
    `password` sets `requirepass` and is what the helper's admin connection authenticates with; if a test changes
    the default user's password, assign `server.password` so the helper can still talk to the server.
    """

    extra_config: list[str] = field(default_factory=list)
    password: str | None = None
    port: int = 0  # 0: pick a free one at start
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    workdir: Path | None = field(default=None, init=False)
    _admin: RespConn | None = field(default=None, init=False, repr=False)
    _admin_calls: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _admin_connections: int = field(default=0, init=False, repr=False)

    # -- lifecycle

    def start(self) -> RedisServer:
        exe = require_tool("redis-server")
        if self.workdir is None:
            # Short path on purpose: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not.
            self.workdir = Path(tempfile.mkdtemp(prefix="ra-redis-"))
        fixed_port = self.port != 0
        last_error: Exception | None = None
        for _ in range(1 if fixed_port else PORT_ATTEMPTS):
            if not fixed_port:
                self.port = free_port()
            try:
                self._spawn(exe)
                return self
            except RedisStartError as e:
                last_error = e
                if "Address already in use" not in str(e):
                    break
        assert last_error is not None
        raise last_error

    def _spawn(self, exe: str) -> None:
        assert self.workdir is not None
        conf = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"unixsocket {self.unix_path}",
            "unixsocketperm 777",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            f"pidfile {self.workdir / 'redis.pid'}",
        ]
        if self.password is not None:
            conf.append(f"requirepass {self.password}")
        conf += self.extra_config
        conf_path = self.workdir / "redis.conf"
        conf_path.write_text("\n".join(conf) + "\n")
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        self.proc = subprocess.Popen([exe, str(conf_path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RedisStartError(f"redis-server exited at start (port {self.port}):\n{self.log_tail()}")
            try:
                self._admin_connect()
                pong = self.admin("PING")
                if pong == "PONG":
                    return
            except (OSError, ConnectionError):
                pass
            time.sleep(0.02)
        self.kill()
        raise RedisStartError(f"redis-server did not answer PING within {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def _admin_connect(self) -> None:
        if self._admin is not None:
            return
        conn = RespConn(unix_path=self.unix_path, timeout=10.0)
        self._admin_connections += 1
        self._admin = conn
        if self.password is not None:
            reply = self.admin("AUTH", self.password)
            if reply != "OK":
                raise RedisStartError(f"admin AUTH failed: {reply}")

    def admin(self, *args: str | bytes | int) -> Any:
        """Run one command on the helper's own Unix-socket connection; its calls are excluded from `delta`."""
        if self._admin is None:
            self._admin_connect()
        assert self._admin is not None
        reply = self._admin.call(*args)
        name = str(args[0]).lower() if not isinstance(args[0], bytes) else args[0].decode().lower()
        if name in {"config", "client", "acl", "debug", "command", "memory", "script", "function"} and len(args) > 1:
            sub = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
            name = f"{name}|{sub.lower()}"
        self._admin_calls[name] += 1
        return reply

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL; always reaps the process. Idempotent."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ConnectionError, AssertionError):
            assert self._admin is not None
            self._admin.send_command("SHUTDOWN", "NOSAVE")
        self._close_admin()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S / 2)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S / 2)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL and reap, for failure paths."""
        self._close_admin()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, socket and config (data is lost: no persistence).

        Counters restart from zero too: do not compute a `Snapshot.delta` across a restart.
        """
        self.stop()
        self._spawn(require_tool("redis-server"))

    def cleanup(self) -> None:
        """Stop (kill if needed) and delete the work directory."""
        try:
            self.stop()
        finally:
            self.kill()
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def __enter__(self) -> RedisServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- accessors

    @property
    def unix_path(self) -> str:
        assert self.workdir is not None
        return str(self.workdir / "redis.sock")

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "redis.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not running"
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no log)"

    # -- clients

    def cli(
        self,
        *args: str,
        input: str | bytes | None = None,
        unix: bool = False,
        check: bool = True,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run `redis-cli -h 127.0.0.1 -p PORT [extra...] args...` (or `-s SOCKET` if `unix`); text output.

        No password is passed: the traffic is exactly what the arguments say. Give `extra=("--user", ...)`
        or `("-a", ...)` to authenticate.
        """
        exe = require_tool("redis-cli")
        target = ["-s", self.unix_path] if unix else ["-h", "127.0.0.1", "-p", str(self.port)]
        cmd = [exe, *target, "--no-auth-warning", *extra, *args]
        data = input.decode() if isinstance(input, bytes) else input
        return subprocess.run(cmd, input=data, capture_output=True, text=True, check=check, timeout=60)

    def client(self, **kwargs: Any) -> Any:
        """A redis-py `Redis` over TCP to this server (kwargs go to `redis.Redis`)."""
        import redis

        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", self.port)
        return redis.Redis(**kwargs)

    def raw(self, **kwargs: Any) -> RespConn:
        """A raw `RespConn` over TCP to this server."""
        return RespConn(self.port, **kwargs)

    # -- counters

    def info(self, *sections: str) -> str:
        reply = self.admin("INFO", *sections)
        if isinstance(reply, RedisError):
            raise reply
        return reply.decode()

    def commandstats(self) -> dict[str, CommandStat]:
        """INFO commandstats, parsed: `{'set': CommandStat(calls=..., rejected_calls=..., ...)}`."""
        return parse_commandstats(self.info("commandstats"))

    def snapshot(self) -> Snapshot:
        """Counters for a before/after `Snapshot.delta` (one INFO call on the admin connection)."""
        admin_calls = Counter(self._admin_calls)  # taken before our own INFO runs: that one counts in the next
        admin_connections = self._admin_connections
        text = self.info("commandstats", "errorstats", "stats")
        fields = parse_info(text)
        return Snapshot(
            commandstats=parse_commandstats(text),
            errorstats=parse_errorstats(text),
            total_connections_received=int(fields["total_connections_received"]),
            total_commands_processed=int(fields["total_commands_processed"]),
            admin_calls=admin_calls,
            admin_connections=admin_connections,
        )


# --------------------------------------------------------------------------- tcpdump


_TCPDUMP_STATS = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


class Tcpdump:
    """`with Tcpdump(path, port=P): ...` captures loopback TCP traffic of port P into a pcap file.

    Starts `tcpdump -i lo -U --immediate-mode -w FILE FILTER`, returns from `__enter__` only after tcpdump
    printed "listening on", and on exit waits `TCPDUMP_SETTLE_S`, sends SIGINT and waits for tcpdump to finish
    the file. `stats` then holds tcpdump's own counters (`captured`, `received by filter`, `dropped by kernel`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        port: int | None = None,
        bpf_filter: str | None = None,
        interface: str = "lo",
    ) -> None:
        if bpf_filter is None:
            if port is None:
                raise ValueError("give port or bpf_filter")
            bpf_filter = f"tcp port {port}"
        self.path = Path(path)
        self.bpf_filter = bpf_filter
        self.interface = interface
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_lines: list[str] = []
        self.stats: dict[str, int] = {}
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> Tcpdump:
        exe = require_tool("tcpdump")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "-i", self.interface, "-U", "--immediate-mode", "-B", str(TCPDUMP_BUFFER_KIB), "-s", "0"]
        cmd += ["-Z", "root", "-w", str(self.path)]
        self.proc = subprocess.Popen(
            [*cmd, self.bpf_filter], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + TCPDUMP_START_TIMEOUT_S
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reap(kill=True)
                raise RuntimeError(f"tcpdump did not start capturing: {' | '.join(self.stderr_lines) or '(no output)'}")
        return self

    @property
    def dropped(self) -> int:
        """Packets tcpdump reported as "dropped by kernel" (known after the capture stopped)."""
        return self.stats.get("dropped by kernel", 0)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.stderr_lines.append(line)
            if "listening on" in line:
                self._listening.set()
            for m in _TCPDUMP_STATS.finditer(line):
                self.stats[m.group(2)] = int(m.group(1))

    def stop(self) -> None:
        if self.proc is None:
            return
        time.sleep(TCPDUMP_SETTLE_S)
        self._reap(kill=False)

    def _reap(self, *, kill: bool) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.proc = None

    def __enter__(self) -> Tcpdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

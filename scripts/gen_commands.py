#!/usr/bin/env python3
"""Generate auditor/data/commands.json from a real redis-server.

Starts ``redis-server`` on a free loopback port (no persistence, nothing on
disk), asks it ``COMMAND INFO`` and ``COMMAND DOCS`` for every command, stops
it, and writes a compact, deterministic JSON table: per command and per
subcommand (``config|set``) the arity, flags, ACL categories, key specs, the
legacy first/last/step, and the COMMAND DOCS argument tree condensed to what
key extraction and redaction need. The JSON is data: regenerate it with this
script, never edit it by hand.

    python scripts/gen_commands.py                       # redis-server from PATH
    python scripts/gen_commands.py --redis-server /opt/redis/bin/redis-server
    python scripts/gen_commands.py --out /tmp/commands.json

Talks RESP3 over a plain socket (no client library needed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "auditor" / "data" / "commands.json"

# Argument fields kept from COMMAND DOCS (everything else is prose or history).
ARG_FLAGS = ("optional", "multiple", "multiple_token")


# --- a minimal RESP3 client -------------------------------------------------


class Resp3:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rf = sock.makefile("rb")

    def call(self, *args: str) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _line(self) -> bytes:
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by redis-server")
        return line[:-2]

    def _read(self) -> Any:
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"("):
            return rest.decode()
        if t == b"-":
            raise RuntimeError(f"redis-server error: {rest.decode(errors='replace')}")
        if t == b":":
            return int(rest)
        if t == b",":
            return float(rest)
        if t == b"#":
            return rest == b"t"
        if t == b"_":
            return None
        if t in (b"$", b"=", b"!"):
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)[:-2]
            if t == b"=":
                data = data[4:]  # "txt:" prefix of verbatim strings
            if t == b"!":
                raise RuntimeError(f"redis-server error: {data.decode(errors='replace')}")
            return data.decode()
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        if t == b"%":
            n = int(rest)
            d = {}
            for _ in range(n):
                k = self._read()
                d[k] = self._read()
            return d
        if t == b"|":  # attribute: read and drop, then the real reply follows
            n = int(rest)
            for _ in range(2 * n):
                self._read()
            return self._read()
        raise RuntimeError(f"unexpected RESP type byte {t!r}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, workdir: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start redis-server on a free loopback port; retry if the port was taken."""
    last_err: Exception | None = None
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--daemonize", "no", "--logfile", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                return proc, socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as e:
                last_err = e
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"could not start {binary}: {last_err}")


# --- condensing --------------------------------------------------------------


def condense_key_spec(ks: dict[str, Any]) -> dict[str, Any]:
    bs, fk = ks["begin_search"], ks["find_keys"]
    out_bs: dict[str, Any] = {"type": bs["type"]}
    if bs["type"] == "index":
        out_bs["index"] = bs["spec"]["index"]
    elif bs["type"] == "keyword":
        out_bs["keyword"] = bs["spec"]["keyword"]
        out_bs["startfrom"] = bs["spec"]["startfrom"]
    out_fk: dict[str, Any] = {"type": fk["type"]}
    if fk["type"] == "range":
        out_fk.update(lastkey=fk["spec"]["lastkey"], keystep=fk["spec"]["keystep"], limit=fk["spec"]["limit"])
    elif fk["type"] == "keynum":
        out_fk.update(keynumidx=fk["spec"]["keynumidx"], firstkey=fk["spec"]["firstkey"], keystep=fk["spec"]["keystep"])
    return {"flags": sorted(ks.get("flags") or []), "begin_search": out_bs, "find_keys": out_fk}


def condense_arg(a: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": a["name"], "type": a["type"]}
    if "token" in a:
        out["token"] = a["token"]
    if "key_spec_index" in a:
        out["key_spec_index"] = a["key_spec_index"]
    for f in a.get("flags") or []:
        if f in ARG_FLAGS:
            out[f] = True
    if a.get("arguments"):
        out["arguments"] = [condense_arg(c) for c in a["arguments"]]
    return out


def condense(info: list[Any], docs: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """One COMMAND INFO entry (and its docs) -> {name: entry} incl. subcommands."""
    name, arity, flags, first, last, step, acl = info[:7]
    name = name.lower()  # module commands (Redis 8's vector sets: VADD...) are named in upper case
    key_specs = info[8] if len(info) > 8 else []
    subs = info[9] if len(info) > 9 else []
    docs = docs or {}
    entry: dict[str, Any] = {
        "arity": arity,
        "flags": sorted(flags),
        "acl_categories": sorted(acl),
        "first": first,
        "last": last,
        "step": step,
        "key_specs": [condense_key_spec(ks) for ks in key_specs or []],
        "arguments": [condense_arg(a) for a in docs.get("arguments") or []],
    }
    if docs.get("group"):
        entry["group"] = docs["group"]
    out = {name: entry}
    sub_docs = docs.get("subcommands") or {}
    if subs:
        entry["subcommands"] = sorted(s[0] for s in subs)
        for s in subs:
            out.update(condense(s, sub_docs.get(s[0])))
    return out


def dump(version: str, commands: dict[str, dict[str, Any]]) -> str:
    """Deterministic, one command per line (reviewable diffs)."""
    lines = [
        "{",
        '"generator": "scripts/gen_commands.py",',
        f'"redis_version": {json.dumps(version)},',
        '"commands": {',
    ]
    names = sorted(commands)
    for i, n in enumerate(names):
        body = json.dumps(commands[n], sort_keys=True, separators=(",", ":"))
        lines.append(f"{json.dumps(n)}:{body}{',' if i < len(names) - 1 else ''}")
    lines.append("}}")
    return "\n".join(lines) + "\n"


def generate(binary: str) -> tuple[str, dict[str, dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="gen-commands-") as workdir:
        proc, sock = start_server(binary, workdir)
        try:
            client = Resp3(sock)
            hello = client.call("HELLO", "3")
            version = hello["version"]
            infos = client.call("COMMAND", "INFO")
            docs = client.call("COMMAND", "DOCS")
            with contextlib.suppress(ConnectionError, RuntimeError):
                client.call("SHUTDOWN", "NOSAVE")  # closes the connection
        finally:
            sock.close()
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
    commands: dict[str, dict[str, Any]] = {}
    for info in infos:
        if info is None:
            continue
        commands.update(condense(info, docs.get(info[0])))
    return version, commands


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    opts = ap.parse_args(argv)
    if shutil.which(opts.redis_server) is None:
        ap.error(f"redis-server not found: {opts.redis_server} (apt-get install redis-server, or --redis-server PATH)")
    version, commands = generate(opts.redis_server)
    text = dump(version, commands)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.out.with_name(opts.out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, opts.out)
    top = sum(1 for n in commands if "|" not in n)
    print(f"{opts.out}: {top} commands, {len(commands) - top} subcommands, redis {version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

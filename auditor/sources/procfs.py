"""What /proc says about processes and their sockets (Linux only).

Used by the eBPF source to find redis-server / valkey-server processes, to
seed connections that existed before the probes were attached, and as a
fallback when a socket cannot be duplicated with pidfd_getfd. Input: pids and
fd numbers; output: plain values (no payload ever passes through here).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

SERVER_COMMS = frozenset({"redis-server", "valkey-server"})

# /proc/net/tcp "st" column
TCP_LISTEN = 0x0A
# /proc/net/unix "St" column: SS_UNCONNECTED=1 (listening sockets), SS_CONNECTED=3
UNIX_CONNECTED = 3


@dataclass(frozen=True, slots=True)
class SockInfo:
    """One socket as /proc/net lists it. ``path`` is set for Unix sockets."""

    inode: int
    family: int
    listening: bool
    local_addr: str | None = None
    local_port: int | None = None
    remote_addr: str | None = None
    remote_port: int | None = None
    path: str | None = None


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return None


def uid(pid: int) -> int | None:
    """Real uid of a process."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mapped_library(pid: int, prefix: str) -> str | None:
    """Path (as the process sees it) of the first mapped file whose name starts with ``prefix``
    (``libssl.so``), from /proc/PID/maps; None if there is none or the process is gone."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            for line in f:
                path = line.rstrip(b"\n").split(maxsplit=5)[5:]
                if path and path[0].rsplit(b"/", 1)[-1].startswith(prefix.encode()):
                    return path[0].decode("utf-8", "surrogateescape")
    except OSError:
        return None
    return None


def find_servers(comms: frozenset[str] = SERVER_COMMS) -> list[int]:
    """Pids (tgids) of every process whose comm is one of ``comms``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and comm(int(name)) in comms:
            pids.append(int(name))
    return sorted(pids)


def socket_fds(pid: int) -> dict[int, int]:
    """fd -> socket inode for every socket a process holds."""
    out = {}
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[int(name)] = int(target[8:-1])
    return out


def socket_inode(pid: int, fd: int) -> int | None:
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    return int(target[8:-1]) if target.startswith("socket:[") else None


def _hex_addr(text: str) -> tuple[str, int]:
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:
        # four 32-bit words, each in host (little-endian) order
        ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return format_ip(ip), int(port, 16)


def format_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Text form; v4-mapped IPv6 addresses (dual-stack listeners) as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def net_sockets(pid: int) -> dict[int, SockInfo]:
    """inode -> SockInfo from /proc/PID/net/{tcp,tcp6,unix} (the process's
    network namespace)."""
    out: dict[int, SockInfo] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    inode = int(parts[9])
                    if inode == 0:
                        continue
                    laddr, lport = _hex_addr(parts[1])
                    raddr, rport = _hex_addr(parts[2])
                    out[inode] = SockInfo(inode, family, int(parts[3], 16) == TCP_LISTEN, laddr, lport, raddr, rport)
        except OSError:
            continue
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f, None)
            for line in f:
                parts = line.split(maxsplit=7)
                if len(parts) < 7:
                    continue
                # Num RefCount Protocol Flags Type St Inode [Path]
                inode = int(parts[6])
                flags = int(parts[3], 16)
                path = parts[7].strip() if len(parts) > 7 else None
                out[inode] = SockInfo(inode, socket.AF_UNIX, bool(flags & 0x10000), path=path)
    except OSError:
        pass
    return out


def inode_owners(inodes: set[int]) -> dict[int, int]:
    """socket inode -> pid holding it, for the given inodes (one walk over
    every process's fds: milliseconds, so only at attach)."""
    found: dict[int, int] = {}
    if not inodes:
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for ino in socket_fds(int(name)).values():
            if ino in inodes and ino not in found:
                found[ino] = int(name)
        if len(found) == len(inodes):
            break
    return found

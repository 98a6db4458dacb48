"""Addresses and peers of a server's sockets, read from user space.

Input: a server pid and one of its fd numbers (or raw sockaddr bytes from an
accept record); output: ``Endpoint`` values, and the ``ConnMeta`` of a
connection the probes did not see start. Sockets are duplicated into this
process with pidfd_getfd(2) (Linux 5.6; needs ptrace access, i.e. root), so
getsockname / getpeername / SO_PEERCRED work on them without touching the
server; /proc/PID/net is the fallback. Nothing here runs per event: once per
connection at most, off the kernel's hot path.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from auditor.sources import procfs
from auditor.types import ConnMeta, Source

_SYS_PIDFD_GETFD = 438  # x86_64 and asm-generic
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_UCRED = struct.Struct("iII")  # pid, uid, gid
_WILDCARD = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Both ends of one socket, as the server sees them. For Unix sockets
    ``path`` is the server's socket path and peer_* come from SO_PEERCRED."""

    family: int
    listening: bool = False
    local_addr: str | None = None
    local_port: int | None = None
    peer_addr: str | None = None
    peer_port: int | None = None
    path: str | None = None
    peer_pid: int | None = None
    peer_uid: int | None = None
    inode: int | None = None

    @property
    def wildcard(self) -> bool:
        return self.local_addr in _WILDCARD


def pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def pidfd_getfd(pidfd: int, fd: int) -> int | None:
    """A duplicate of another process's fd, or None (closed, no permission)."""
    r = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    if r < 0:
        e = ctypes.get_errno()
        if e not in (errno.EBADF, errno.ESRCH, errno.EPERM, errno.ENOSYS, errno.EINVAL):
            raise OSError(e, os.strerror(e))
        return None
    return r


def _inet(addr: tuple) -> tuple[str, int]:
    return procfs.format_ip(ipaddress.ip_address(addr[0].split("%")[0])), addr[1]


def endpoint_of(fd: int) -> Endpoint | None:
    """Describe a socket this process holds (takes ownership of ``fd``)."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
    with s:
        try:
            if s.type != socket.SOCK_STREAM:
                return None
            listening = bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            inode = os.fstat(s.fileno()).st_ino
            if s.family == socket.AF_UNIX:
                name = s.getsockname()
                if isinstance(name, bytes):  # abstract namespace: shown as "@name", like ss
                    name = "@" + name[1:].decode("utf-8", "replace") if name[:1] == b"\0" else name.decode()
                path = name
                pid = uid = None
                if not listening:
                    pid, uid, _ = _UCRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
                return Endpoint(
                    socket.AF_UNIX,
                    listening,
                    path=path or None,
                    peer_pid=pid or None,
                    peer_uid=uid,
                    inode=inode,
                )
            if s.family in (socket.AF_INET, socket.AF_INET6):
                laddr, lport = _inet(s.getsockname())
                paddr = pport = None
                if not listening:
                    paddr, pport = _inet(s.getpeername())
                return Endpoint(s.family, listening, laddr, lport, paddr, pport, inode=inode)
        except OSError:
            return None
    return None


def endpoint(pidfd: int | None, pid: int, fd: int) -> Endpoint | None:
    """Describe fd ``fd`` of process ``pid``: via pidfd_getfd, else /proc."""
    if pidfd is not None:
        dup = pidfd_getfd(pidfd, fd)
        if dup is not None:
            return endpoint_of(dup)
    inode = procfs.socket_inode(pid, fd)
    if inode is None:
        return None
    info = procfs.net_sockets(pid).get(inode)
    if info is None:
        return None
    return Endpoint(
        info.family,
        info.listening,
        info.local_addr,
        info.local_port,
        info.remote_addr,
        info.remote_port,
        path=info.path,
        inode=inode,
    )


def _ntop6(raw: bytes) -> str:
    text = socket.inet_ntop(socket.AF_INET6, raw)
    # v4-mapped (a v4 client of a dual-stack listener) as plain IPv4
    return text[7:] if text.startswith("::ffff:") and "." in text else text


def decode_sockaddr(raw: bytes, length: int) -> tuple[int, str | None, int | None]:
    """(family, address, port) of a struct sockaddr as accept() filled it.
    Unix peers are usually unbound: address None."""
    if length < 2:
        return 0, None, None
    family = int.from_bytes(raw[:2], "little")
    if family == socket.AF_INET and length >= 8:
        return family, socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6 and length >= 24:
        return family, _ntop6(raw[8:24]), int.from_bytes(raw[2:4], "big")
    if family == socket.AF_UNIX:
        path = raw[2:length].split(b"\0", 1)[0]
        return family, path.decode("utf-8", "replace") or None, None
    return family, None, None


def ip_from16(raw: bytes) -> str:
    """A 16-byte address from the probes (IPv4 stored v4-mapped)."""
    return _ntop6(raw)


def conn_meta(
    server_pid: int,
    server_uid: int | None,
    server_comm: str | None,
    ep: Endpoint | None,
    client_pid: int | None = None,
) -> ConnMeta:
    """ConnMeta of an accepted connection from its socket (``client_pid``:
    the local TCP client, if known; Unix sockets carry their own)."""
    server = {"server_pid": server_pid, "server_uid": server_uid, "server_comm": server_comm}
    if ep is None:
        return ConnMeta(Source.EBPF, **server)
    if ep.family == socket.AF_UNIX:
        addr = f"unix:{ep.path or ''}"
        return ConnMeta(
            Source.EBPF,
            client_addr=addr,
            server_addr=addr,
            client_pid=ep.peer_pid,
            client_uid=ep.peer_uid,
            client_comm=procfs.comm(ep.peer_pid) if ep.peer_pid else None,
            **server,
        )
    return ConnMeta(
        Source.EBPF,
        client_addr=ep.peer_addr,
        client_port=ep.peer_port,
        server_addr=ep.local_addr,
        server_port=ep.local_port,
        client_pid=client_pid,
        client_uid=procfs.uid(client_pid) if client_pid else None,
        client_comm=procfs.comm(client_pid) if client_pid else None,
        **server,
    )


def local_tcp_clients(server_pid: int, conns: set[tuple]) -> dict[tuple[str, int], int]:
    """(client addr, port) -> client pid, for the given (client addr, client
    port, server addr, server port) whose client end is a socket on this host
    (in the server's network namespace). Walks every process's fds: once, at
    attach."""
    if not conns:
        return {}
    want = {}
    for info in procfs.net_sockets(server_pid).values():
        key = (info.local_addr, info.local_port, info.remote_addr, info.remote_port)
        if key in conns:
            want[info.inode] = (info.local_addr, info.local_port)
    owners = procfs.inode_owners(set(want))
    return {want[ino]: owner for ino, owner in owners.items() if owner != server_pid}

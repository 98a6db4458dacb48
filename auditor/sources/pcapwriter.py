"""Captured packets -> pcap files, for ``--write-pcap`` (so a CI job can ``replay`` exactly what was audited).

Input: one call per packet (timestamp in ns, the captured bytes from the link header on, the length on the
wire). Output: classic pcap files with the nanosecond magic (``a1b23c4d``, little-endian), one link type,
snaplen 262144, readable by ``redis-audit replay``, tcpdump and Wireshark.

Rotation by size: the first file is ``FILE`` itself, then ``FILE.1``, ``FILE.2``, ... in capture order (the
highest number is the newest; unlike logrotate nothing is renamed, so a file never changes name while a reader
holds it). A file is rotated before the packet that would take it past ``max_bytes`` (<= 0: never); each file is
a complete pcap with its own header and at least one packet. Existing files of those names are overwritten and
nothing is ever deleted: budget the disk for the whole capture. ``replay`` reads each file on its own, so a
connection that spans two files is joined mid-stream in the second (user and db unknown, a command cut by the
rotation is a parse error): for an exact replay keep ``--pcap-max-mb`` above the capture's size.

Writes are buffered; ``flush()`` (called by the sniffer after every poll) hands them to the kernel, ``close()``
also fsyncs, so what the audit trail saw is on disk when the capture stops.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

PCAP_SNAPLEN = 262144  # tcpdump's default; a record is never longer (the sniffer cuts to its ring block)
_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_MAGIC_NS = 0xA1B23C4D
_BUFFER = 1024 * 1024


class RotatingPcapWriter:
    """``add(ts_ns, data, wirelen)`` per packet; ``files`` lists what was written, oldest first."""

    def __init__(self, path: str | os.PathLike[str], linktype: int, max_bytes: int) -> None:
        self.path = Path(path)
        self.linktype = linktype
        self.max_bytes = max_bytes if max_bytes > 0 else 1 << 62  # <= 0: one file, never rotated
        self.files: list[Path] = []
        self.packets = 0
        self.bytes_written = 0
        self._size = 0
        self._records = 0
        self._f = self._open(self.path)

    def _open(self, path: Path) -> io.BufferedWriter:
        f = open(path, "wb", buffering=_BUFFER)  # noqa: SIM115 - kept open across calls, closed in close()
        f.write(_HEADER.pack(_MAGIC_NS, 2, 4, 0, 0, PCAP_SNAPLEN, self.linktype))
        self.files.append(path)
        self._size = _HEADER.size
        self._records = 0
        return f

    def add(self, ts_ns: int, data: bytes, wirelen: int) -> None:
        n = len(data)
        if self._records and self._size + _RECORD.size + n > self.max_bytes:
            self._rotate()
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        f = self._f
        f.write(_RECORD.pack(sec, nsec, n, wirelen if wirelen > n else n))
        f.write(data)
        self._size += _RECORD.size + n
        self._records += 1
        self.packets += 1
        self.bytes_written += _RECORD.size + n

    def _rotate(self) -> None:
        self._f.close()
        self._f = self._open(self.path.with_name(f"{self.path.name}.{len(self.files)}"))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        f = self._f
        if f.closed:
            return
        f.flush()
        os.fsync(f.fileno())
        f.close()

    def __repr__(self) -> str:
        return f"RotatingPcapWriter(path={str(self.path)!r}, files={len(self.files)}, packets={self.packets})"

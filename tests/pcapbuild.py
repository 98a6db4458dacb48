"""Build pcap files of TCP conversations quickly, for hostile-input tests.

Raw Ethernet/IPv4/TCP frames with struct (no scapy: 100,000 commands must
build in well under a second). Addresses are documentation addresses.
"""

from __future__ import annotations

import struct
from pathlib import Path

CLIENT, SERVER = bytes([192, 0, 2, 10]), bytes([192, 0, 2, 1])
SEG = 60_000  # payload bytes per segment (IPv4 total length stays < 65535)


class Capture:
    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.t_us = 1_700_000_000 * 1_000_000

    def _frame(self, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes):
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(data), 0, 0x4000, 64, 6, 0, src, dst)
        eth = b"\x00" * 12 + b"\x08\x00"
        pkt = eth + ip + tcp + data
        self.t_us += 10
        hdr = struct.pack("<IIII", self.t_us // 1_000_000, self.t_us % 1_000_000, len(pkt), len(pkt))
        self.records.append(hdr + pkt)

    def conversation(self, exchanges: list[tuple[bytes, bytes]], cport: int = 40000, sport: int = 6379) -> None:
        """Handshake, then for each (client bytes, server bytes) both in order, then FIN both ways."""
        cseq, sseq = 1000, 5000
        self._frame(CLIENT, SERVER, cport, sport, cseq, 0, 0x02, b"")
        self._frame(SERVER, CLIENT, sport, cport, sseq, cseq + 1, 0x12, b"")
        cseq += 1
        sseq += 1
        for c, s in exchanges:
            for i in range(0, len(c), SEG):
                self._frame(CLIENT, SERVER, cport, sport, cseq, sseq, 0x18, c[i : i + SEG])
                cseq += len(c[i : i + SEG])
            for i in range(0, len(s), SEG):
                self._frame(SERVER, CLIENT, sport, cport, sseq, cseq, 0x18, s[i : i + SEG])
                sseq += len(s[i : i + SEG])
        self._frame(CLIENT, SERVER, cport, sport, cseq, sseq, 0x11, b"")
        self._frame(SERVER, CLIENT, sport, cport, sseq, cseq + 1, 0x11, b"")

    def write(self, path: Path) -> Path:
        head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
        path.write_bytes(head + b"".join(self.records))
        return path


def cmd(*args: str | bytes) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

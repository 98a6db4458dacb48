"""Which TCP ports of a capture carry Redis, for ``replay`` without ``--port``.

Input: capture files and the ports already taken as Redis (6379). Output: the other server ports on which a
client sends RESP commands, with how many such segments were seen, found in the first
``limits.PORT_SURVEY_BYTES`` of each file (Redis in the cloud listens on ports like 10625; a capture made
elsewhere does not say which). A port counts only for a segment that starts with a whole RESP command header
naming a command in the table (``*3\\r\\n$3\\r\\nSET\\r\\n``): an HTTP request or TLS never looks like one. A
segment that comes *from* a Redis port (a replication stream, a pub/sub reply such as ``subscribe``) does not
make its client's port a server port.

The survey reads packets with the pcap reader's own decoder (every link type it knows), in Python: ~1 µs a
packet, so it is capped; traffic on another port that only starts later in a big file is not found (the
replay's summary counts packets on other ports and says how to pass ``--port``).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable

from auditor import limits
from auditor.commands import lookup
from auditor.sources.pcap import CaptureError, PcapStats, _check_header, _Input, _read_pcap, _read_pcapng, make_decoder
from auditor.types import SourceEvent

__all__ = ["detect_ports", "looks_like_command"]

_HEAD = re.compile(rb"\*[1-9][0-9]{0,6}\r\n\$([1-9][0-9]{0,2})\r\n")


def looks_like_command(payload: bytes) -> bool:
    """True if ``payload`` starts with a RESP array whose first element names a known command."""
    m = _HEAD.match(payload)
    if m is None:
        return False
    start, n = m.end(), int(m.group(1))
    name = payload[start : start + n]
    return len(name) == n and payload[start + n : start + n + 2] == b"\r\n" and lookup([name]) is not None


class _Enough(Exception):
    """The survey has read its share of the file."""


class _CappedInput(_Input):
    def refill(self, buf: bytes, off: int, need: int) -> bytes:
        if self.st.bytes_read >= limits.PORT_SURVEY_BYTES:
            raise _Enough
        return _Input.refill(self, buf, off, need)


class _Survey:
    """Stands in for the TCP tracker: the decoder calls ``feed`` for every TCP segment."""

    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.found: dict[int, int] = {}

    def feed(
        self,
        out: list[SourceEvent],
        ts_ns: int,
        src_ip: bytes,
        sport: int,
        dst_ip: bytes,
        dport: int,
        seq: int,
        flags: int,
        payload: bytes,
        orig_len: int,
        ack: int = 0,
    ) -> None:
        if payload[:1] != b"*" or dport in self.known or sport in self.known or sport in self.found:
            return
        if looks_like_command(payload):
            self.found[dport] = self.found.get(dport, 0) + 1


def detect_ports(files: Iterable[os.PathLike[str] | str], known: set[int]) -> dict[int, int]:
    """Server ports not in ``known`` on which clients send RESP commands -> segments seen. Unreadable files
    are skipped here (the replay itself reports them)."""
    survey = _Survey(set(known))
    for path in files:
        try:
            kind = _check_header(os.fspath(path))
            with open(path, "rb") as f:
                st = PcapStats()
                inp = _CappedInput(f, os.fstat(f.fileno()).st_size, None, st)
                decode = make_decoder(survey, st)  # type: ignore[arg-type]  # it only calls feed()
                for _batch in _read_pcap(inp, st, decode) if kind == "pcap" else _read_pcapng(inp, st, decode):
                    pass
        except (_Enough, CaptureError, OSError, ValueError, IndexError, struct.error):
            continue
    return survey.found

"""redis-audit: a passive audit trail for Redis (eBPF, packet capture, pcap replay)."""

import os

__version__ = "0.1.0"


def native_enabled() -> bool:
    """The C accelerators (auditor/_native/) are used unless REDIS_AUDIT_PURE is set (to anything but 0)."""
    return os.environ.get("REDIS_AUDIT_PURE", "") in ("", "0")

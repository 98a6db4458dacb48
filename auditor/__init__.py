"""redis-audit: a passive audit trail for Redis (eBPF, packet capture, pcap replay)."""

__version__ = "0.1.0"

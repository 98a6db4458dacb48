"""A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) read through mmap, no callbacks.

Input: the map's fd and size; output: records as offsets into ``data``.

bcc's reader calls a Python function through ctypes for every record, which
costs microseconds each. Here the consumer page is mapped read-write and the
producer page plus data pages read-only, the data pages twice in a row (as
the kernel lays them out), so a record that wraps around the end is still
contiguous: ``data[off : off + n]`` is always the whole record. The caller
walks the records itself, inline (see ``EbpfSource._drain``): a generator or
a call per record would cost more than the record's own work.

Layout (kernel/bpf/ringbuf.c): each record has an 8-byte header, a u32 length
with BUSY_BIT (not yet submitted) and DISCARD_BIT, then the payload, padded to
8 bytes. Positions only grow; offset = position & (size - 1). The kernel
publishes with store-release; plain loads in program order are enough on
x86-64 (TSO), the only architecture this targets (DESIGN.md §6).
"""

from __future__ import annotations

import mmap
import select

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
LEN_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF
HDR_SIZE = 8


class MappedRingBuffer:
    """mmap of a BPF ring buffer map; ``data`` offsets start at ``base``."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {size}")
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self._cons = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # producer page, then the data pages mapped twice
        self.data = mmap.mmap(map_fd, page + 2 * size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=page)
        self.base = page
        # Positions are read and written as one 8-byte access (a memoryview
        # cast to 'Q' copies with one aligned load/store): struct.pack_into
        # writes byte by byte, and the kernel could read a torn consumer
        # position, think the ring full and drop records.
        self._cons_q = memoryview(self._cons).cast("B").cast("Q")
        self._prod_q = memoryview(self.data)[:8].cast("B").cast("Q")
        self._ep = select.epoll()
        # Edge-triggered: woken only when the kernel sends a wakeup (the
        # probes ask for one when the ring is filling up), not whenever data
        # is pending, so the consumer can batch on a timer.
        self._ep.register(map_fd, select.EPOLLIN | select.EPOLLET)

    @property
    def consumer_pos(self) -> int:
        return self._cons_q[0]

    @consumer_pos.setter
    def consumer_pos(self, pos: int) -> None:
        self._cons_q[0] = pos

    @property
    def producer_pos(self) -> int:
        return self._prod_q[0]

    def pending(self) -> int:
        """Bytes written by the kernel and not yet consumed."""
        return self.producer_pos - self.consumer_pos

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the kernel's wakeup or the timeout; True if woken."""
        return bool(self._ep.poll(timeout_s, 1))

    def close(self) -> None:
        self._cons_q.release()
        self._prod_q.release()
        self._ep.close()
        self.data.close()
        self._cons.close()

"""Every cap the auditor applies, in one place, each with its reason.

Anything a cap drops is counted and becomes a ``gap`` or ``parse_error`` row
(DESIGN.md §5); nothing here is allowed to lose data silently.
"""

# --- RESP parsing -----------------------------------------------------------
# Redis itself refuses bulk strings over proto-max-bulk-len (512 MiB default);
# a declared length above that means the bytes are not RESP (or are hostile).
MAX_BULK_LEN = 512 * 1024 * 1024
# Redis refuses multibulk requests with more than 1024*1024*1024 arguments;
# replies can be larger in theory, but a count above 2**32 is misclassified
# traffic. Requests above this are a parse_error, not an allocation.
MAX_ARRAY_LEN = 1024 * 1024 * 1024
# A length/size line longer than this many digits cannot be RESP ("indicates
# traffic is misclassified as Redis", as Pixie puts it): 2**63 has 19 digits.
MAX_LENGTH_DIGITS = 20
# Inline commands and simple strings / errors are single lines. Redis caps an
# inline request at 64 KiB (PROTO_INLINE_MAX_SIZE); lines longer than that are
# not Redis traffic.
MAX_INLINE_LEN = 64 * 1024
MAX_LINE_LEN = 64 * 1024
# Nesting depth of aggregate replies kept on the parser's explicit stack.
# Real replies nest a few levels (EXEC of EVAL of arrays); 10,000 deep is an
# attack on recursive parsers. Deeper input is a parse_error and a resync.
MAX_NESTING = 128
# Bytes of one argument kept in memory for redaction / key extraction. The
# true length is always kept; values are redacted to their length anyway, and
# keys longer than this are stored truncated (with a marker).
MAX_ARG_KEEP = 4096
# Bytes of one reply scalar kept (enough for error texts, "message" /
# "subscribe" markers, HELLO's "proto"); reply values are never stored.
MAX_REPLY_KEEP = 512
# Children of an aggregate reply kept for the session (EXEC results, pub/sub
# markers); beyond this only the count and size are known.
MAX_REPLY_CHILDREN = 65536

# --- Streams (reassembly) -----------------------------------------------------
# Out-of-order bytes buffered per connection direction while waiting for a
# hole to fill. Beyond this the hole is declared a gap and skipped.
MAX_OOO_BYTES = 4 * 1024 * 1024
# Out-of-order segments per direction (bounds per-segment overhead too).
MAX_OOO_SEGMENTS = 4096
# Bytes buffered by a decoder for one incomplete frame header/line before it
# is declared invalid (a bulk payload itself is streamed, not buffered).
MAX_DECODER_BUFFER = 1024 * 1024

# --- Sessions -----------------------------------------------------------------
# Requests waiting for a reply per connection (pipelining). redis-benchmark -P
# 1000 stays below this; above it the oldest are flushed as status 'unknown'
# and counted as evictions (their replies, which come first, are skipped so the
# rest still pair with their own).
MAX_PENDING_REQUESTS = 100_000
# Commands queued inside one MULTI before they are flushed as 'unknown'.
MAX_QUEUED_IN_MULTI = 100_000
# Connections tracked at once (pcap replay / sniff). Beyond this the least
# recently active is closed with reason 'evicted' (counted).
MAX_CONNECTIONS = 65536
# A connection idle this long in a live capture is closed with reason 'idle'.
IDLE_TIMEOUT_NS = 3600 * 1_000_000_000

# --- Rows and sink ----------------------------------------------------------------
# Characters of a key stored in the trail (after masking); longer keys end in
# a "...<+N>" marker.
MAX_KEY_CHARS = 1024
# Keys / args listed in one row (MSET with a million pairs); the rest is
# summarised as a "<+N more>" marker, and the count is in nargs.
MAX_ROW_KEYS = 1000
MAX_ROW_ARGS = 1000
# Characters of an error reply stored.
MAX_ERROR_CHARS = 512
# Rows buffered before a Parquet file is written (bounds memory).
SINK_ROWS_PER_FILE = 200_000
# Rows kept as Python objects before the sink encodes them to an Arrow batch
# (the file is written from the batches). Holding all SINK_ROWS_PER_FILE rows as
# Python objects took ~280 MB per 200k rows and ~1 µs a row of page faults as the
# allocator gave memory back and took it again; batches of this size: ~110 MB.
SINK_BATCH_ROWS = 16_384
# Seconds between file flushes in live modes, so a crash loses little.
SINK_FLUSH_SECONDS = 10.0

# --- eBPF -------------------------------------------------------------------------
# Payload bytes copied per read/write/recvfrom/sendto (readv/writev/recvmsg/
# sendmsg: twice that, see EBPF_MAX_IOV). The true length
# always travels with the event; the rest becomes a gap inside a bulk string.
# Redis 7 reads at least 16 KiB at a time but asks for all the free
# room of its (greedily grown) query buffer: measured 16-32 KiB per read under
# pipelining (redis-benchmark -P 16/100, a 300-command pipeline read 19.6 KiB),
# more after a big value grew the buffer. A cut there would lose whole
# pipelined commands, so copy 64 KiB; values of 32 KiB and more
# (PROTO_MBULK_BIG_ARG) get reads of their own, whose cut tail is only value.
EBPF_CAPTURE_BYTES = 65536
# Ring buffer size (bytes, power of two pages).
EBPF_RINGBUF_BYTES = 64 * 1024 * 1024

# --- pcap/stream (added) -------------------------------------------------------
# A closed TCP tuple is remembered this long so that late packets (the last ACK, a
# retransmitted FIN) do not open a phantom mid-stream connection. Linux keeps a
# closed socket in TIME_WAIT for 60 s; a reuse of the tuple sooner starts with a
# SYN, which always opens a new connection.
TCP_CLOSED_LINGER_NS = 60 * 1_000_000_000
# Closed tuples remembered at once (oldest forgotten first): enough for a
# connection-per-command client at ~1,000 connections/s for the linger time.
TCP_CLOSED_REMEMBERED = 65536
# Largest capture record (pcap record / pcapng block) accepted. Real packets are
# at most 256 KiB (tcpdump's default snaplen) and Wireshark refuses pcapng blocks
# over 16 MiB; a larger length field is a corrupt or hostile file, and reading it
# would mean buffering that much memory.
MAX_CAPTURE_RECORD = 16 * 1024 * 1024
# Bytes read from a capture file at a time (a record spanning the end of a block
# is completed with the next read). Large enough that the per-read overhead
# vanishes, small enough to stay out of the way of memory limits.
CAPTURE_READ_BLOCK = 1024 * 1024
# Redis's port: what `sniff` and `replay` watch when --port is not given.
DEFAULT_PORT = 6379
# `replay` without --port also looks for RESP commands on other server ports in this
# many bytes at the start of each file (in Python, ~1 µs a packet: ~0.1 s here).
PORT_SURVEY_BYTES = 8 * 1024 * 1024
# VLAN tags (802.1Q / 802.1ad QinQ / 0x9100) walked in one Ethernet frame. Real
# networks stack two; more is a crafted frame.
MAX_VLAN_TAGS = 8
# IPv6 extension headers walked before the TCP header. RFC 8200 allows each at
# most once or twice (~8 kinds); more is a crafted packet (and a CPU trap).
MAX_IPV6_EXT_HEADERS = 16

# --- commands/redact (added) ----------------------------------------------------
# Characters of a command name stored for an unknown command that Redis
# accepted (module command, rename-command); real names are under 32 chars, so
# anything longer is more likely pasted data than a command.
MAX_COMMAND_CHARS = 64
# Characters of an identifier kept in clear (user name, db index, script SHA1,
# config parameter name, CLIENT KILL filter); longer ones end in "...<+N>".
MAX_IDENT_CHARS = 256
# Arguments of one request whose roles are worked out (MSET with a million
# pairs): enough to fill MAX_ROW_KEYS and MAX_ROW_ARGS; the rest are only
# counted in the "<+N more>" markers, so nothing unredacted can hide there.
MAX_ROLE_ARGS = MAX_ROW_KEYS + MAX_ROW_ARGS + 8
# Distinct request shapes (which arguments are option keywords, where the
# keys are) whose roles are cached per command; a shape holds no values.
ROLE_CACHE_PER_COMMAND = 1024

# --- ebpf (added) -------------------------------------------------------------------
# Payload bytes per ring buffer record: copies above this go in several records
# ("pieces"). The BPF scratch buffer is a per-CPU array value, and the kernel caps
# those at 32 KiB (records of iovec syscalls hold up to 16,352 bytes: their
# buffer takes two).
EBPF_PIECE_BYTES = 16384
# iovecs walked per readv/writev/recvmsg/sendmsg (IOV_MAX). Their bytes are
# copied as one stream into records of up to a piece, up to twice
# EBPF_CAPTURE_BYTES per syscall: redis 7 writev()s up to ~84 KiB at a time
# (NET_MAX_WRITES_PER_EVENT plus one ~20 KiB reply block), and for replies whose
# length is only known at the end (COMMAND, XRANGE, CONFIG GET...) hundreds of
# tiny blocks (COMMAND: 279 iovecs). A structured reply cut there loses its
# framing, so the whole of it is copied; bytes past this are a counted gap.
EBPF_MAX_IOV = 512
# Client sockets tracked at once across all targets (kernel hash map). redis's
# maxclients defaults to 10,000; an accept that finds the map full is counted and
# its connection is not captured.
EBPF_MAX_CONNS = 65536
# The kernel wakes the consumer only when this much is pending in the ring buffer
# (bpf_ringbuf_query); otherwise the consumer drains on its poll timer, so there
# is no wakeup per event (a wakeup per event costs more than the event). A
# sixteenth of the ring leaves room for a slow consumer to catch up.
EBPF_WAKEUP_BYTES = EBPF_RINGBUF_BYTES // 16
# The consumer drains the ring buffer at most this often when it is not woken
# (latency of an event; larger batches cost less per event).
EBPF_POLL_INTERVAL_MS = 20
# Ring buffer bytes drained per poll() call at most (bounds the batch handed
# downstream, ~50k small records, and the time between poll() returns under a
# flood; the rest stays in the ring for the next call).
EBPF_MAX_BATCH_BYTES = 4 * 1024 * 1024

# --- resp (added) ---------------------------------------------------------------
# Grandchildren of one top-level reply built as Reply objects (the children of
# its aggregate children: EXEC of LRANGE, XRANGE entries). The session reads
# only the top level and its children; without this cap a hostile or
# misclassified reply of 65536 arrays of 65536 elements would build 4 billion
# objects. Beyond it elements are only counted (``count``), not kept.
MAX_REPLY_GRANDCHILDREN = 65536

# --- sniff (added) -----------------------------------------------------------------
# Kernel capture ring per packet socket (TPACKET_V3, locked kernel memory). A small
# request or reply takes ~240 bytes in it (frame header, address, headers, payload), so
# 64 MiB holds ~280k packets: about 1.5 s of redis-benchmark -c 50 on loopback (~180k
# packets/s), the longest the reader thread (at nice 19, behind a saturated Redis on 2
# cores) was seen to go unscheduled; 32 MiB dropped packets in one benchmark round of three.
SNIFF_RING_BYTES = 64 * 1024 * 1024
# One ring block: the kernel hands packets over a block at a time. It must hold the
# largest packet whole (loopback MTU 64 KiB, GSO packets up to 64 KiB); larger packets are
# cut to the block and the rest becomes a gap.
SNIFF_BLOCK_BYTES = 1024 * 1024
# A block that is not full is handed over after this long: the latency of a quiet capture
# (and how long close() waits for the last packets).
SNIFF_BLOCK_TIMEOUT_MS = 20
# Ring blocks handled per poll() at most (~5k small packets each): bounds the batch handed
# downstream and the time between poll() returns under a flood; the rest stays in the ring.
SNIFF_MAX_BLOCKS_PER_POLL = 4
# Ports in the in-kernel filter (two instructions per port per direction); with more the
# filter keeps all TCP and the tracker drops other ports (counted as other_port).
SNIFF_MAX_FILTER_PORTS = 256
# Captured blocks waiting for the pipeline (sniff's reader thread empties the kernel ring
# into this as soon as a block is handed over). Sized for bursts: redis-benchmark -c 50
# -n 200000 -t set,get (400k commands, ~80 MB of ring blocks) fits whole while the pipeline
# runs behind. When full the ring fills and the kernel drops, counted as gap rows.
SNIFF_BACKLOG_BYTES = 256 * 1024 * 1024

# The C fast lane (auditor/fastlane.py) holds at most this much of one
# connection before it hands the connection back to the Python stages, which
# stream bigger frames and keep only MAX_ARG_KEEP bytes of each argument.
LANE_MAX_FRAME = 1024 * 1024  # bytes of one unfinished request frame
LANE_MAX_REPLY = 4 * 1024 * 1024  # bytes of one unfinished reply
LANE_MAX_PENDING_BYTES = 256 * 1024 * 1024  # request frames kept for their replies (and for handing back)

# CPython's cyclic GC: a young-generation pass every GC_THRESHOLD allocations
# instead of 700. Replay and live capture allocate a few objects per packet
# and keep rows alive until the sink encodes them (SINK_BATCH_ROWS; the fast
# lane's rows are not tracked at all); with the default thresholds the
# collector re-walked them about a million times per replay, ~40% of its CPU.
# Cycles are still collected (rare here: the stages build none).
GC_THRESHOLD = (200_000, 20, 100)

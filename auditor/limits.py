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
# and counted as evictions.
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
# Seconds between file flushes in live modes, so a crash loses little.
SINK_FLUSH_SECONDS = 10.0

# --- eBPF -------------------------------------------------------------------------
# Payload bytes copied per syscall (per iovec for readv/writev). The true
# length always travels with the event; the rest becomes a gap inside a bulk
# string. Redis reads 16 KiB at a time.
EBPF_CAPTURE_BYTES = 16384
# Ring buffer size (bytes, power of two pages).
EBPF_RINGBUF_BYTES = 64 * 1024 * 1024

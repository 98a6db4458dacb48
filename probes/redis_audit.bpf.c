/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redis_audit.bpf.c - capture what redis-server / valkey-server processes
 * read from and write to their client sockets (loaded with bcc by
 * auditor/sources/ebpf.py).
 *
 * Only syscall, sock and sched tracepoints: no kprobes and no kernel struct
 * layouts (DESIGN.md §6). Filtering happens here, cheapest test first:
 *   - `target_bits`: a bitmap of server tgids (an array lookup the verifier
 *     inlines), filled by user space and by exec (RA_AUTO_TARGET); every
 *     other process pays only this test on its read/write syscalls;
 *   - `socks`: (tgid, fd) of connected client sockets, filled by accept
 *     results here and seeded by user space from /proc at attach; close()
 *     removes the entry, so a recycled fd number (redis reads /proc/self/stat
 *     on them) is never captured and fd reuse gets a new connection id.
 * Only sys_exit is probed (close aside): it reads the syscall's arguments
 * from the saved user registers and copies `ret` bytes of the buffer (the
 * true length travels with every record, the copy is capped). Records go
 * to one ring buffer without a wakeup unless it is filling up (the consumer
 * drains on a short timer); records the ring refuses are counted globally
 * and per connection.
 *
 * Configuration (-D, from auditor/limits.py):
 *   RA_CAPTURE_BYTES   payload bytes copied per read/write/recvfrom/sendto
 *   RA_IOV_CAPTURE_BYTES  the same for readv/writev/recvmsg/sendmsg
 *   RA_PIECE_BYTES     payload bytes per record (copies go in pieces)
 *   RA_MAX_IOV         iovecs walked per readv/writev/recvmsg/sendmsg
 *   RA_MAX_CONNS       size of the socks map
 *   RA_PID_WORDS       u64 words in the target bitmap (pid_max / 64)
 *   RA_RINGBUF_PAGES   ring buffer size in pages
 *   RA_WAKEUP_BYTES    wake the consumer when this much data is pending
 *   RA_AUTO_TARGET     1: exec of redis-server/valkey-server adds the tgid
 *   RA_HAVE_GROUP_DEAD 1: sched_process_exit has the group_dead field
 *   RA_HAVE_UNIX_PEER  1: sock:sk_data_ready and sock:sock_recv_length exist
 *                      (Linux 6.6); else Unix clients have no pid
 *   RA_SSL_PROBES      1: `run --tls`, the SSL_read/SSL_write uprobe programs
 *                      (0: none, and no lookup for them on the data path)
 */
#include <uapi/linux/ptrace.h>

#include "redis_audit.h"

#ifndef RA_CAPTURE_BYTES
#define RA_CAPTURE_BYTES 16384
#endif
#ifndef RA_PIECE_BYTES
#define RA_PIECE_BYTES 16384
#endif
#ifndef RA_IOV_CAPTURE_BYTES
#define RA_IOV_CAPTURE_BYTES (2 * RA_CAPTURE_BYTES)
#endif
#ifndef RA_MAX_IOV
#define RA_MAX_IOV 512 /* IOV_MAX is 1024: more steps than the verifier takes */
#endif
#ifndef RA_MAX_CONNS
#define RA_MAX_CONNS 65536
#endif
#ifndef RA_PID_WORDS
#define RA_PID_WORDS 65536 /* PID_MAX_LIMIT (4194304) / 64 */
#endif
#ifndef RA_RINGBUF_PAGES
#define RA_RINGBUF_PAGES 4096
#endif
#ifndef RA_WAKEUP_BYTES
#define RA_WAKEUP_BYTES (1 << 20)
#endif
#ifndef RA_AUTO_TARGET
#define RA_AUTO_TARGET 1
#endif
#ifndef RA_HAVE_GROUP_DEAD
#define RA_HAVE_GROUP_DEAD 0
#endif
#ifndef RA_HAVE_UNIX_PEER
#define RA_HAVE_UNIX_PEER 1
#endif
#ifndef RA_SSL_PROBES
#define RA_SSL_PROBES 1
#endif

/* records per copied buffer; with RA_CAPTURE_BYTES 0 one record carries
 * the length only */
#define RA_PIECES (RA_CAPTURE_BYTES ? (RA_CAPTURE_BYTES + RA_PIECE_BYTES - 1) / RA_PIECE_BYTES : 1)
/* Payload bytes per record of an iovec syscall: its records are filled at a
 * variable offset, so the buffer holds two of them (a per-CPU value is at
 * most 32 KiB, header included). */
#define RA_IOV_PIECE_MAX ((32768 - 128) / 2)
#define RA_IOV_PIECE (RA_PIECE_BYTES < RA_IOV_PIECE_MAX ? RA_PIECE_BYTES : RA_IOV_PIECE_MAX)
/* loop steps of an iovec copy: one to read each iovec, one per copy (an
 * iovec's bytes, or the part that fills a record) */
#define RA_IOV_STEPS (2 * RA_MAX_IOV + RA_IOV_CAPTURE_BYTES / RA_IOV_PIECE + 1)

#define RA_AF_UNIX 1
#define RA_AF_INET 2
#define RA_AF_INET6 10
#define RA_TCP_ESTABLISHED 1
#define RA_TCP_SYN_SENT 2
#define RA_IPPROTO_TCP 6
#define RA_CLONE_THREAD 0x00010000

/* What the syscall's arguments are, for io_exit. */
enum ra_kind {
	RA_PLAIN = 1, /* buf, count: read/write/recvfrom/sendto */
	RA_IOV = 2,   /* struct iovec *, iovcnt: readv/writev */
	RA_MSG = 3,   /* struct user_msghdr *: recvmsg/sendmsg */
};

/* The first three arguments of the current syscall, from the user register
 * frame saved at syscall entry (bpf_task_pt_regs): the syscalls traced here
 * leave it as it was, except the return value register. So sys_exit alone
 * has the arguments: no sys_enter probe and no per-thread storage, and
 * other processes pay one program run per read/write, not two. */
struct ra_args {
	__u64 fd;
	__u64 a1;
	__u64 a2;
};

#if defined(__x86_64__)
#define RA_NR_READ 0
#define RA_NR_READV 19
#define RA_NR_RECVFROM 45
#define RA_NR_RECVMSG 47
static __always_inline int ra_args_get(struct ra_args *a)
{
	/* a trusted BTF pointer: plain loads, no copy helper */
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs((struct task_struct *)bpf_get_current_task_btf());

	a->fd = r->di;
	a->a1 = r->si;
	a->a2 = r->dx;
	return r->orig_ax; /* the syscall number */
}
#else
#error "redis_audit.bpf.c reads syscall arguments from x86-64 pt_regs; this architecture is not supported yet"
#endif

/* Key of the peers map: the client end of a local TCP connection. IPv4
 * addresses are stored v4-mapped so a v4 client of a dual-stack (::)
 * listener matches the AF_INET6 address accept() returns. */
struct ra_peer_key {
	__u8 addr[16];
	__u16 port;
	__u16 pad[3];
};

struct ra_data_event {
	struct ra_data_hdr hdr;
	__u8 data[RA_PIECE_BYTES];
};

struct ra_iovec {
	__u64 base;
	__u64 len;
};

/* struct user_msghdr as the 64-bit syscall ABI lays it out */
struct ra_msghdr {
	__u64 name;
	__s32 namelen;
	__s32 pad;
	__u64 iov;
	__u64 iovlen;
	__u64 control;
	__u64 controllen;
	__u32 flags;
};

BPF_RINGBUF_OUTPUT(events, RA_RINGBUF_PAGES);
BPF_ARRAY(target_bits, __u64, RA_PID_WORDS);
BPF_HASH(socks, struct ra_sock_key, struct ra_sock, RA_MAX_CONNS);
/* every TCP connect() on the host passes here: LRU, sized so that an entry
 * outlives the few microseconds to milliseconds until the server accepts */
BPF_TABLE("lru_hash", __u64, struct ra_client, connecting, 16384);
BPF_TABLE("lru_hash", struct ra_peer_key, struct ra_client, peers, 16384);
/* Unix socket (struct sock *) -> the last process that woke it with data */
BPF_TABLE("lru_hash", __u64, struct ra_client, writers, 4096);
BPF_PERCPU_ARRAY(scratch, struct ra_data_event, 1);
/* The cursor of emit_iov lives here, not in registers: the verifier does not
 * track what is stored in a map value, so every path through an iteration
 * ends in the same state and the loop is verified in linear time. */
struct ra_iov_cursor {
	__u64 base; /* next byte of the current iovec */
	__u64 left; /* bytes left in it */
	__u64 idx;  /* iovecs read */
	__u64 done; /* bytes copied */
	__u64 fill; /* bytes in the record being filled */
};

struct ra_iov_event {
	struct ra_iov_cursor c;
	struct ra_data_hdr hdr; /* the record: hdr, then data */
	__u8 data[2 * RA_IOV_PIECE];
};
BPF_PERCPU_ARRAY(iov_scratch, struct ra_iov_event, 1);
BPF_PERCPU_ARRAY(counters, __u64, RA_CNT_MAX);
BPF_ARRAY(next_cid, __u64, 1);

#if RA_SSL_PROBES
/* TLS (OpenSSL's SSL_read / SSL_write, uprobes that user space attaches per
 * target process): a thread inside one of them, what it was called with. */
struct ra_ssl_call {
	__u64 ssl;
	__u64 buf;
	__s64 fd; /* the socket its syscalls used; -1 until one ran */
	__u32 dir;
	__u32 handshake;
};
struct ra_ssl_key {
	__u64 tgid;
	__u64 ssl;
};
BPF_HASH(ssl_calls, __u64, struct ra_ssl_call, 4096); /* pid_tgid -> the call */
/* SSL * -> its socket: an SSL_read served from OpenSSL's buffer makes no syscall */
BPF_TABLE("lru_hash", struct ra_ssl_key, __s64, ssl_fds, 65536);
/* tgids in which an SSL call ran: only their syscalls look up ssl_calls */
BPF_ARRAY(tls_bits, __u64, RA_PID_WORDS);
#endif

/*
 * Notification: no wakeup per record (the consumer drains on a short timer);
 * the one record that makes the pending data cross RA_WAKEUP_BYTES wakes it
 * early. Not every record above the mark: a wakeup is an irq_work (a
 * self-IPI, a VM exit here), and a consumer that is behind would make redis
 * pay one per record.
 *
 * bcc (0.26) has no map.ringbuf_query(), so every map.ringbuf_output()
 * below is first rewritten by bcc to bpf_ringbuf_output(); this macro then
 * applies to the rewritten call, where the map pointer is visible. The flags
 * written at the call sites are ignored.
 */
static __always_inline __u64 ra_wakeup_flags(__u64 avail, __u64 size)
{
	return avail < RA_WAKEUP_BYTES && avail + size >= RA_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

#define bpf_ringbuf_output(map, data, size, flags) \
	bpf_ringbuf_output(map, data, size, ra_wakeup_flags(bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA), size))

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *c = counters.lookup(&idx);

	if (c)
		*c += n;
}

static __always_inline int is_target(__u32 tgid)
{
	__u32 word = tgid / 64;
	__u64 *w = target_bits.lookup(&word);

	return w && (*w >> (tgid & 63)) & 1;
}

#if RA_AUTO_TARGET
static __always_inline void mark_target(__u32 tgid)
{
	__u32 word = tgid / 64;
	__u64 *w = target_bits.lookup(&word);

	if (w)
		__sync_fetch_and_or(w, 1ULL << (tgid & 63));
}
#endif

#if RA_SSL_PROBES
static __always_inline int uses_tls(__u32 tgid)
{
	__u32 word = tgid / 64;
	__u64 *w = tls_bits.lookup(&word);

	return w && (*w >> (tgid & 63)) & 1;
}
#endif

/* ------------------------------------------------------------------------
 * Data: at sys_exit, copy ret bytes of the syscall's buffer.
 * ------------------------------------------------------------------------ */

/* Submit the record at h, whose h->len payload bytes follow it (at most
 * `max`, a constant: the room after h in its buffer). A record the ring
 * refuses is counted, globally and on the connection's direction, and the
 * next record of that direction carries the count (its bytes are the hole
 * before its pos). */
static __always_inline void submit(struct ra_sock *s, __u8 dir, struct ra_data_hdr *h, const __u32 max)
{
	__u32 lost_events = s->lost_events[dir & 1];
	__u64 lost_bytes = s->lost_bytes[dir & 1];
	__u32 len = h->len;

	if (len > max) /* for the verifier */
		len = max;
	h->lost_events = lost_events;
	h->lost_bytes = lost_bytes;
	if (events.ringbuf_output(h, sizeof(*h) + len, 0)) {
		s->lost_events[dir & 1] += 1;
		s->lost_bytes[dir & 1] += h->orig_len;
		count(RA_CNT_LOST_DATA, 1);
		count(RA_CNT_LOST_BYTES, h->orig_len);
	} else if (lost_events) {
		s->lost_events[dir & 1] -= lost_events;
		s->lost_bytes[dir & 1] -= lost_bytes;
	}
}

/* Emit the n bytes at ubuf (n = true length; at most `limit` of them are
 * copied, in up to `pieces` records of RA_PIECE_BYTES). Both are constants
 * at each call site: the verifier walks every iteration of every call. */
static __always_inline void emit(struct ra_sock *s, __u8 dir, __u64 ubuf, __u64 n, __u64 pos, __u64 limit,
				 const int pieces)
{
	__u32 zero = 0;
	struct ra_data_event *e = scratch.lookup(&zero);
	/* ubuf 0: nothing to copy, one record with the length only (a gap) */
	__u64 cap = !ubuf ? 0 : n < limit ? n : limit;

	if (!e)
		return;
	dir &= 1;
	for (int i = 0; i < pieces; i++) {
		__u64 off = (__u64)i * RA_PIECE_BYTES;
		__u32 len;

		if (i > 0 && off >= cap)
			break;
		len = cap - off > RA_PIECE_BYTES ? RA_PIECE_BYTES : cap - off;
		if (len > RA_PIECE_BYTES) /* for the verifier */
			len = RA_PIECE_BYTES;
		if (len && bpf_probe_read_user(e->data, len, (void *)(ubuf + off)))
			len = 0; /* unreadable: the length only, a gap */
		e->hdr.type = RA_DATA;
		e->hdr.dir = dir;
		e->hdr.len = len;
		e->hdr.cid = s->cid;
		e->hdr.ts = bpf_ktime_get_ns();
		e->hdr.pos = pos + off;
		/* the last piece also carries the length that was not copied */
		e->hdr.orig_len = off + RA_PIECE_BYTES >= cap ? n - off : RA_PIECE_BYTES;
		submit(s, dir, &e->hdr, RA_PIECE_BYTES);
	}
}

/* Submit the record emit_iov has filled (its bytes end at the cursor's done). */
static __always_inline void iov_submit(struct ra_sock *s, __u8 dir, struct ra_iov_event *e, __u64 pos)
{
	volatile struct ra_iov_cursor *c = &e->c;
	__u64 fill = c->fill;

	e->hdr.type = RA_DATA;
	e->hdr.dir = dir & 1;
	e->hdr.len = fill;
	e->hdr.cid = s->cid;
	e->hdr.ts = bpf_ktime_get_ns();
	e->hdr.pos = pos + c->done - fill;
	e->hdr.orig_len = fill;
	submit(s, dir, &e->hdr, 2 * RA_IOV_PIECE);
	c->fill = 0;
}

/* The n bytes an iovec syscall moved, as one byte stream: iovec after
 * iovec into records of up to RA_IOV_PIECE bytes, so small iovecs share a
 * record and a big one spans several. redis writev()s up to ~84 KiB at a
 * time: its reply blocks (~20 KiB each) and, for replies whose length is
 * only known at the end (COMMAND, XRANGE, CONFIG GET...), hundreds of tiny
 * ones. A record per iovec capped at a piece cut those replies' framing.
 * Returns the bytes copied (the caller reports the rest as a gap). */
static __always_inline __u64 emit_iov(struct ra_sock *s, __u8 dir, __u64 iov, __u64 iovcnt, __u64 n, __u64 pos)
{
	__u32 zero = 0;
	struct ra_iov_event *e = iov_scratch.lookup(&zero);
	volatile struct ra_iov_cursor *c;
	__u64 budget = n < RA_IOV_CAPTURE_BYTES ? n : RA_IOV_CAPTURE_BYTES;

	if (!e)
		return 0;
	c = &e->c;
	c->base = 0;
	c->left = 0;
	c->idx = 0;
	c->done = 0;
	c->fill = 0;
	for (int step = 0; step < RA_IOV_STEPS; step++) {
		__u64 take, fill, done = c->done;

		if (done >= budget)
			break;
		if (c->left == 0) {
			struct ra_iovec v = {};
			__u64 idx = c->idx;

			if (idx >= iovcnt || idx >= RA_MAX_IOV)
				break;
			if (bpf_probe_read_user(&v, sizeof(v), (void *)(iov + idx * sizeof(v))))
				break;
			c->idx = idx + 1;
			c->base = v.base;
			c->left = v.len;
			continue; /* (an iovec costs a step of its own: a simpler loop to verify) */
		}
		fill = c->fill;
		take = c->left;
		if (take > budget - done)
			take = budget - done;
		if (take > RA_IOV_PIECE - fill)
			take = RA_IOV_PIECE - fill;
		if (fill >= RA_IOV_PIECE || take > RA_IOV_PIECE) /* for the verifier */
			break;
		if (bpf_probe_read_user(&e->data[fill], take, (void *)c->base))
			break; /* unreadable: the rest is a gap */
		c->fill = fill + take;
		c->base += take;
		c->left -= take;
		c->done = done + take;
		if (fill + take == RA_IOV_PIECE)
			iov_submit(s, dir, e, pos);
	}
	if (c->fill)
		iov_submit(s, dir, e, pos);
	return c->done;
}

/* The first bytes of a direction are a TLS record header (handshake, alert,
 * change-cipher-spec or data; version 3.x): never a RESP frame. */
static __always_inline int not_resp(__u64 buf, long n)
{
	__u8 h[4] = {};

	if (n >= 4 ? bpf_probe_read_user(h, 4, (void *)buf) : bpf_probe_read_user(h, 3, (void *)buf))
		return 0;
	if (h[0] >= 0x14 && h[0] <= 0x17 && h[1] == 0x03 && h[2] <= 0x04)
		return RA_TLS; /* a TLS record header: content type, version 3.x */
	if (h[0] == 'R' && h[1] == 'C' && h[2] == 'm' && h[3] == 'b')
		return RA_BUS; /* clusterMsg's signature: the cluster bus between nodes (port + 10000) */
	return 0;
}

/* A TLS connection whose handshake no SSL probe saw (`run` without --tls, a
 * server whose OpenSSL is not probed, or a handshake before the attach): its
 * ciphertext is not captured, and user space writes one row saying so. A
 * Redis Cluster bus link (node-to-node messages, no client command) is not
 * captured either: user space ends the connection there (RA_BUS). */
static __always_inline void not_resp_found(struct ra_sock *s, __u32 tgid, __u8 dir, __u16 what)
{
	struct ra_tls *e;

	s->tls = 1; /* (nothing more is captured) */
	count(what == RA_TLS ? RA_CNT_TLS_CONNS : RA_CNT_BUS_CONNS, 1);
	e = events.ringbuf_reserve(sizeof(struct ra_tls));
	if (!e) {
		count(RA_CNT_LOST_CTRL, 1);
		return;
	}
	e->type = what;
	e->dir = dir;
	e->tgid = tgid;
	e->cid = s->cid;
	e->ts = bpf_ktime_get_ns();
	events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline int io_exit(long ret, __u8 kind, __u8 dir)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct ra_args a;
	struct ra_sock_key key;
	struct ra_sock *s;
	__u64 pos, done, iov, iovcnt;

	if (ret <= 0 || !is_target(tgid))
		return 0;
	ra_args_get(&a);
	key.tgid = tgid;
	key.fd = a.fd;
	s = socks.lookup(&key);
	if (!s)
		return 0; /* not a client socket: a file, a pipe, /proc/self/stat */
#if RA_SSL_PROBES
	if (s->tls || uses_tls(tgid)) {
		__u64 id = bpf_get_current_pid_tgid();
		struct ra_ssl_call *c = ssl_calls.lookup(&id);

		if (c) { /* ciphertext inside SSL_read/SSL_write/a handshake: the socket is this SSL's */
			struct ra_ssl_key k = {.tgid = tgid, .ssl = c->ssl};
			__s64 fd = a.fd;

			c->fd = fd;
			s->tls = 1;
			ssl_fds.update(&k, &fd);
			return 0;
		}
	}
#endif
	if (s->tls)
		return 0; /* ciphertext outside SSL calls (SSL_shutdown's close_notify, or no SSL probes) */
	if (kind == RA_PLAIN && ret >= 3 && !s->pos[dir]) {
		int what = not_resp(a.a1, ret);

		if (what) {
			not_resp_found(s, tgid, dir, what);
			return 0;
		}
	}
	pos = s->pos[dir];
	s->pos[dir] = pos + ret;
	s->events++;
	if (kind == RA_PLAIN) {
		emit(s, dir, a.a1, ret, pos, RA_CAPTURE_BYTES, RA_PIECES);
		return 0;
	}
	iov = a.a1;
	iovcnt = a.a2;
	if (kind == RA_MSG) {
		struct ra_msghdr m = {};

		if (bpf_probe_read_user(&m, sizeof(m), (void *)a.a1)) {
			emit(s, dir, 0, ret, pos, 0, 1);
			return 0;
		}
		iov = m.iov;
		iovcnt = m.iovlen;
	}
	done = emit_iov(s, dir, iov, iovcnt, ret, pos);
	if (done < ret) {
		/* past the copy budget, RA_MAX_IOV iovecs, or unreadable: the
		 * length only (a gap) */
		if (done < RA_IOV_CAPTURE_BYTES)
			count(RA_CNT_IOV_REST, 1);
		emit(s, dir, 0, ret - done, pos + done, 0, 1);
	}
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
	return io_exit(args->ret, RA_PLAIN, RA_TO_SERVER);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
	return io_exit(args->ret, RA_PLAIN, RA_TO_SERVER);
}
TRACEPOINT_PROBE(syscalls, sys_exit_readv)
{
	return io_exit(args->ret, RA_IOV, RA_TO_SERVER);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
	return io_exit(args->ret, RA_MSG, RA_TO_SERVER);
}
TRACEPOINT_PROBE(syscalls, sys_exit_write)
{
	return io_exit(args->ret, RA_PLAIN, RA_TO_CLIENT);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
	return io_exit(args->ret, RA_PLAIN, RA_TO_CLIENT);
}
TRACEPOINT_PROBE(syscalls, sys_exit_writev)
{
	return io_exit(args->ret, RA_IOV, RA_TO_CLIENT);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
	return io_exit(args->ret, RA_MSG, RA_TO_CLIENT);
}

/* ------------------------------------------------------------------------
 * Connections: accept adds (tgid, fd), close removes it.
 * ------------------------------------------------------------------------ */

static __always_inline int accept_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ra_args a;
	struct ra_sock_key key;
	struct ra_sock s = {};
	struct ra_accept *e;
	struct ra_peer_key pk = {};
	struct ra_client *c;
	__u64 sockaddr, addrlen_ptr, *next;
	__u32 zero = 0, listen_fd;
	int addrlen = 0, tracked;

	/* -EAGAIN is frequent: redis accepts until it fails */
	if (ret < 0 || !is_target(id >> 32))
		return 0;
	ra_args_get(&a);
	listen_fd = a.fd;
	sockaddr = a.a1;
	addrlen_ptr = a.a2;
	next = next_cid.lookup(&zero);
	if (!next)
		return 0;
	key.tgid = id >> 32;
	key.fd = ret;
	s.cid = __sync_fetch_and_add(next, 1);
	if (sockaddr && addrlen_ptr)
		bpf_probe_read_user(&addrlen, sizeof(addrlen), (void *)addrlen_ptr);
	if (addrlen > RA_SOCKADDR_LEN)
		addrlen = RA_SOCKADDR_LEN;
	if (addrlen >= 2) {
		__u16 family = 0;

		bpf_probe_read_user(&family, sizeof(family), (void *)sockaddr);
		s.need_peer = family == RA_AF_UNIX;
	}
	/* Reserve before the socket becomes visible to the data probes: ring
	 * order is reservation order, so no data record of this connection can
	 * come before its accept record. */
	e = events.ringbuf_reserve(sizeof(struct ra_accept));
	tracked = socks.update(&key, &s) == 0;
	if (!tracked)
		count(RA_CNT_SOCKS_FULL, 1);
	if (!e) {
		count(RA_CNT_LOST_CTRL, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = RA_ACCEPT;
	e->tracked = tracked;
	e->tgid = key.tgid;
	e->cid = s.cid;
	e->ts = bpf_ktime_get_ns();
	e->fd = ret;
	e->listen_fd = listen_fd;
	e->uid = bpf_get_current_uid_gid();
	/* the mask is for the verifier (RA_SOCKADDR_LEN is 128) */
	if (addrlen > 0 && bpf_probe_read_user(e->sockaddr, (__u32)addrlen & (RA_SOCKADDR_LEN - 1), (void *)sockaddr))
		addrlen = 0;
	e->addrlen = addrlen;
	e->family = addrlen >= 2 ? *(__u16 *)e->sockaddr : 0;
	/* A local TCP client: who connected, from the peers map. */
	if (e->family == RA_AF_INET) {
		pk.addr[10] = 0xff;
		pk.addr[11] = 0xff;
		__builtin_memcpy(&pk.addr[12], &e->sockaddr[4], 4);
	} else if (e->family == RA_AF_INET6) {
		__builtin_memcpy(pk.addr, &e->sockaddr[8], 16);
	}
	if (e->family == RA_AF_INET || e->family == RA_AF_INET6) {
		pk.port = (e->sockaddr[2] << 8) | e->sockaddr[3];
		c = peers.lookup(&pk);
		if (c) {
			e->client = *c;
			e->has_client = 1;
			peers.delete(&pk);
		}
	}
	events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
	return accept_exit(args->ret);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
	return accept_exit(args->ret);
}

/* Removed at sys_enter: from here on the fd number may be reused. */
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ra_sock_key key = { .tgid = id >> 32, .fd = args->fd };
	struct ra_close *e;
	struct ra_sock *s;

	if (!is_target(key.tgid))
		return 0;
	s = socks.lookup(&key);
	if (!s)
		return 0;
	e = events.ringbuf_reserve(sizeof(struct ra_close));
	if (!e) {
		count(RA_CNT_LOST_CTRL, 1);
		socks.delete(&key);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = RA_CLOSE;
	e->tgid = key.tgid;
	e->cid = s->cid;
	e->ts = bpf_ktime_get_ns();
	e->fd = key.fd;
	e->lost_events[0] = s->lost_events[0];
	e->lost_events[1] = s->lost_events[1];
	e->lost_bytes[0] = s->lost_bytes[0];
	e->lost_bytes[1] = s->lost_bytes[1];
	e->pos[0] = s->pos[0];
	e->pos[1] = s->pos[1];
	e->events = s->events;
	socks.delete(&key);
	events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

/* ------------------------------------------------------------------------
 * Local TCP clients: the connecting process, by socket then by 4-tuple.
 * TCP_SYN_SENT fires in connect(), in the client's context, before the
 * source port is chosen; SYN_SENT -> ESTABLISHED has the full tuple.
 * ------------------------------------------------------------------------ */

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	__u64 sk = (__u64)args->skaddr;
	struct ra_client *c;
	struct ra_peer_key pk = {};

	if (args->protocol != RA_IPPROTO_TCP)
		return 0;
	if (args->newstate == RA_TCP_SYN_SENT) {
		struct ra_client n = {};

		n.pid = bpf_get_current_pid_tgid() >> 32;
		n.uid = bpf_get_current_uid_gid();
		bpf_get_current_comm(n.comm, sizeof(n.comm));
		connecting.update(&sk, &n);
		return 0;
	}
	if (args->oldstate != RA_TCP_SYN_SENT)
		return 0;
	c = connecting.lookup(&sk);
	if (!c)
		return 0;
	if (args->newstate == RA_TCP_ESTABLISHED) {
		struct ra_client n = *c;

		if (args->family == RA_AF_INET) {
			pk.addr[10] = 0xff;
			pk.addr[11] = 0xff;
			__builtin_memcpy(&pk.addr[12], args->saddr, 4);
			n.daddr[10] = 0xff;
			n.daddr[11] = 0xff;
			__builtin_memcpy(&n.daddr[12], args->daddr, 4);
		} else {
			__builtin_memcpy(pk.addr, args->saddr_v6, 16);
			__builtin_memcpy(n.daddr, args->daddr_v6, 16);
		}
		pk.port = args->sport;
		n.dport = args->dport;
		peers.update(&pk, &n);
	}
	connecting.delete(&sk);
	return 0;
}

/* ------------------------------------------------------------------------
 * Unix socket clients: SO_PEERCRED is not reachable from a tracepoint, and a
 * one-shot client is gone before user space could ask. Instead: the client's
 * write wakes the server-side socket (sk_data_ready, in the writer's
 * context), then the server reads that same socket (sock_recv_length, inside
 * the read syscall, whose fd is in the saved registers): the socket pointer links the
 * two. Only connections accepted with a Unix peer ask for it, once.
 * ------------------------------------------------------------------------ */

#if RA_HAVE_UNIX_PEER
TRACEPOINT_PROBE(sock, sk_data_ready)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 sk = (__u64)args->skaddr;
	struct ra_client *w, n = {};

	if (args->family != RA_AF_UNIX || is_target(id >> 32))
		return 0;
	w = writers.lookup(&sk);
	if (w && w->pid == id >> 32)
		return 0;
	n.pid = id >> 32;
	n.uid = bpf_get_current_uid_gid();
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	writers.update(&sk, &n);
	return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 sk = (__u64)args->sk;
	struct ra_args a;
	struct ra_sock_key key;
	struct ra_sock *s;
	struct ra_client *w;
	int nr;
	struct ra_peer *e;

	if (args->family != RA_AF_UNIX || args->ret <= 0 || !is_target(id >> 32))
		return 0;
	/* inside one of the read-like syscalls: their first argument is the fd */
	nr = ra_args_get(&a);
	if (nr != RA_NR_READ && nr != RA_NR_READV && nr != RA_NR_RECVFROM && nr != RA_NR_RECVMSG)
		return 0;
	key.tgid = id >> 32;
	key.fd = a.fd;
	s = socks.lookup(&key);
	if (!s || !s->need_peer)
		return 0;
	w = writers.lookup(&sk);
	if (!w)
		return 0;
	s->need_peer = 0;
	e = events.ringbuf_reserve(sizeof(struct ra_peer));
	if (!e) {
		count(RA_CNT_LOST_CTRL, 1);
		return 0;
	}
	e->type = RA_PEER;
	e->pad = 0;
	e->tgid = key.tgid;
	e->cid = s->cid;
	e->ts = bpf_ktime_get_ns();
	e->pid = w->pid;
	e->uid = w->uid;
	__builtin_memcpy(e->comm, w->comm, sizeof(e->comm));
	events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
#endif /* RA_HAVE_UNIX_PEER */

/* ------------------------------------------------------------------------
 * Processes: new redis-server / valkey-server, exit of a target.
 * ------------------------------------------------------------------------ */

static __always_inline int is_server_comm(const char *c)
{
	/* "redis-server" or "valkey-server", NUL-terminated */
	if (c[0] == 'r')
		return c[1] == 'e' && c[2] == 'd' && c[3] == 'i' && c[4] == 's' && c[5] == '-' && c[6] == 's' &&
		       c[7] == 'e' && c[8] == 'r' && c[9] == 'v' && c[10] == 'e' && c[11] == 'r' && c[12] == 0;
	if (c[0] == 'v')
		return c[1] == 'a' && c[2] == 'l' && c[3] == 'k' && c[4] == 'e' && c[5] == 'y' && c[6] == '-' &&
		       c[7] == 's' && c[8] == 'e' && c[9] == 'r' && c[10] == 'v' && c[11] == 'e' && c[12] == 'r' &&
		       c[13] == 0;
	return 0;
}

/* exec, fork and exit records are rare and wake the consumer at once (a new
 * server's SSL probes are attached then; `daemonize yes`: see task_newtask). */
static __always_inline void proc_record(struct ra_proc *e)
{
	struct ra_proc *r = events.ringbuf_reserve(sizeof(struct ra_proc));

	if (!r) {
		count(RA_CNT_LOST_CTRL, 1);
		return;
	}
	__builtin_memcpy(r, e, sizeof(struct ra_proc));
	events.ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	struct ra_proc e = {};
	__u64 id = bpf_get_current_pid_tgid();

	bpf_get_current_comm(e.comm, sizeof(e.comm));
	if (!is_server_comm(e.comm))
		return 0;
	e.type = RA_EXEC;
	e.tgid = id >> 32;
	e.ts = bpf_ktime_get_ns();
	e.uid = bpf_get_current_uid_gid();
#if RA_AUTO_TARGET
	/* Track at once so that no accept is missed; user space confirms it
	 * (with --pid this is compiled out: only the given pids are targets). */
	mark_target(e.tgid);
#endif
	proc_record(&e);
	return 0;
}

#if RA_AUTO_TARGET
/* A target's fork (not a thread: CLONE_THREAD is clear) is a target at once:
 * with `daemonize yes` the exec'd redis-server forks the server and exits, and
 * the server accepts its first clients before user space could find it. A
 * BGSAVE / AOF-rewrite child is one too; it touches no client socket of its
 * own (the socks map is per tgid), and user space drops it when it exits. */
TRACEPOINT_PROBE(task, task_newtask)
{
	struct ra_proc e = {};
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = args->pid;

	if (args->clone_flags & RA_CLONE_THREAD || !is_target(parent))
		return 0;
	mark_target(child);
	e.type = RA_FORK;
	e.tgid = child;
	e.parent = parent;
	e.ts = bpf_ktime_get_ns();
	e.uid = bpf_get_current_uid_gid();
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	proc_record(&e);
	return 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	struct ra_proc e = {};
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, word = tgid / 64;
	__u64 *w;

#if RA_HAVE_GROUP_DEAD
	if (!args->group_dead)
		return 0;
#else
	if ((__u32)id != tgid)
		return 0;
#endif
	if (!is_target(tgid))
		return 0;
	w = target_bits.lookup(&word);
	if (w)
		__sync_fetch_and_and(w, ~(1ULL << (tgid & 63)));
	e.type = RA_EXIT;
	e.tgid = tgid;
	e.ts = bpf_ktime_get_ns();
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	proc_record(&e);
	return 0;
}

/* ------------------------------------------------------------------------
 * TLS: the plaintext at OpenSSL's API. Entry stashes the call; the syscalls
 * inside it name the socket (io_exit above) and are not captured; the return
 * copies the `ret` plaintext bytes as the connection's data. A handshake
 * (SSL_do_handshake, SSL_accept) only names the socket, so its ciphertext
 * is not captured either. User space attaches these to the libssl each target
 * maps, for that process only.
 * ------------------------------------------------------------------------ */

#if RA_SSL_PROBES
static __always_inline int ssl_enter(struct pt_regs *ctx, __u32 dir, __u32 handshake)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ra_ssl_call c = {};

	if (!is_target(tgid))
		return 0;
	if (!uses_tls(tgid)) {
		__u32 word = tgid / 64;
		__u64 *w = tls_bits.lookup(&word);

		if (w)
			__sync_fetch_and_or(w, 1ULL << (tgid & 63));
	}
	c.ssl = PT_REGS_PARM1(ctx);
	c.buf = PT_REGS_PARM2(ctx);
	c.fd = -1;
	c.dir = dir;
	c.handshake = handshake;
	ssl_calls.update(&id, &c);
	return 0;
}

static __always_inline int ssl_exit(struct pt_regs *ctx, __u32 handshake)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ra_ssl_call *c = ssl_calls.lookup(&id);
	struct ra_sock_key key = {};
	struct ra_sock *s;
	/* SSL_read / SSL_write return an int: only eax is theirs (-1 in eax is 4294967295 in rax) */
	long ret = (int)PT_REGS_RC(ctx);
	__s64 fd;
	__u64 buf, pos;
	__u32 dir;

	if (!c || c->handshake != handshake)
		return 0;
	fd = c->fd;
	buf = c->buf;
	dir = c->dir & 1;
	if (fd < 0) {
		struct ra_ssl_key k = {.tgid = tgid, .ssl = c->ssl};
		__s64 *f = ssl_fds.lookup(&k);

		if (f)
			fd = *f;
	}
	ssl_calls.delete(&id);
	if (handshake || ret <= 0)
		return 0;
	if (fd < 0) {
		count(RA_CNT_TLS_NOFD, 1);
		return 0;
	}
	key.tgid = tgid;
	key.fd = fd;
	s = socks.lookup(&key);
	if (!s)
		return 0;
	s->tls = 1;
	pos = s->pos[dir];
	s->pos[dir] = pos + ret;
	s->events++;
	emit(s, dir, buf, ret, pos, RA_CAPTURE_BYTES, RA_PIECES);
	return 0;
}

int ssl_read_enter(struct pt_regs *ctx) { return ssl_enter(ctx, 0, 0); }
int ssl_write_enter(struct pt_regs *ctx) { return ssl_enter(ctx, 1, 0); }
int ssl_handshake_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (ssl_calls.lookup(&id))
		return 0; /* inside SSL_read/SSL_write (renegotiation), or SSL_accept -> SSL_do_handshake: theirs */
	return ssl_enter(ctx, 0, 1);
}
int ssl_io_exit(struct pt_regs *ctx) { return ssl_exit(ctx, 0); }
int ssl_handshake_exit(struct pt_regs *ctx) { return ssl_exit(ctx, 1); }
#endif /* RA_SSL_PROBES */

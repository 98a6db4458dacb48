/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redis_audit.h - records shared by redis_audit.bpf.c and its loader
 * (auditor/sources/ebpf.py mirrors every layout below with struct.Struct
 * formats; keep the two in step).
 *
 * Every ring buffer record starts with a __u16 type. Data records are the hot
 * path: a fixed 48-byte header followed by `len` captured payload bytes.
 */
#ifndef REDIS_AUDIT_H
#define REDIS_AUDIT_H

#define RA_COMM_LEN 16
#define RA_SOCKADDR_LEN 128 /* sizeof(struct sockaddr_storage) */

enum ra_type {
	RA_DATA = 1,   /* bytes read from / written to a tracked socket */
	RA_ACCEPT = 2, /* accept/accept4 of a target returned a new socket */
	RA_CLOSE = 3,  /* close() of a tracked socket */
	RA_EXEC = 4,   /* a redis-server / valkey-server process exec'd */
	RA_EXIT = 5,   /* a target process exited (all threads) */
	RA_PEER = 6,   /* the client process of a Unix socket connection */
	RA_FORK = 7,   /* a target forked a process (not a thread): a daemon's server, or a BGSAVE child */
	RA_TLS = 8,    /* a connection's first bytes are a TLS record: encrypted, not captured */
	RA_BUS = 9,    /* a connection's first bytes are a Redis Cluster bus message ("RCmb"): not captured */
};

enum ra_dir {
	RA_TO_SERVER = 0, /* read, readv, recvfrom, recvmsg by the server */
	RA_TO_CLIENT = 1, /* write, writev, sendto, sendmsg by the server */
};

/* Indexes of the per-CPU `counters` array. */
enum ra_counter {
	RA_CNT_LOST_DATA = 0,  /* data records the ring buffer refused */
	RA_CNT_LOST_BYTES = 1, /* payload bytes (true length) in them */
	RA_CNT_LOST_CTRL = 2,  /* accept/close/exec/exit/peer records refused */
	RA_CNT_SOCKS_FULL = 3, /* accepted sockets not tracked: map full */
	RA_CNT_IOV_REST = 4,   /* syscalls with iovecs past RA_MAX_IOV (a gap) */
	RA_CNT_TLS_NOFD = 5,   /* SSL_read/SSL_write bytes of an SSL whose socket is unknown */
	RA_CNT_TLS_CONNS = 6,  /* connections whose first bytes were a TLS record (RA_TLS) */
	RA_CNT_BUS_CONNS = 7,  /* connections whose first bytes were a cluster bus message (RA_BUS) */
	RA_CNT_MAX = 8,
};

/* socks map: (tgid, fd) -> connection. Filled by accept results in the
 * kernel and seeded by user space at attach; close() removes it. */
struct ra_sock_key {
	__u32 tgid;
	__u32 fd;
};

struct ra_sock {
	__u64 cid;            /* connection id, unique across runs */
	__u64 pos[2];         /* next byte offset per direction = bytes seen */
	__u64 lost_bytes[2];  /* not yet reported, per direction */
	__u32 lost_events[2]; /* not yet reported, per direction */
	__u64 events;         /* syscalls captured */
	__u32 need_peer;      /* Unix socket whose client is not known yet */
	__u32 tls;            /* TLS: the syscalls carry ciphertext; the data come from SSL_read/SSL_write */
};

/* Data record header (48 bytes); `len` payload bytes follow. `orig_len`
 * is the true length of this piece of the syscall's bytes: orig_len > len
 * means bytes after the captured ones were not copied (a gap). lost_* count
 * earlier records of this connection and direction the ring buffer refused
 * (their bytes are the hole before `pos`). */
struct ra_data_hdr {
	__u16 type;
	__u16 dir;
	__u32 len;
	__u64 cid;
	__u64 ts;
	__u64 pos;
	__u32 orig_len;
	__u32 lost_events;
	__u64 lost_bytes;
};

/* Client of a local TCP connection, learnt from sock:inet_sock_set_state in
 * the connecting process's context. */
struct ra_client {
	__u32 pid;
	__u32 uid;
	char comm[RA_COMM_LEN];
	__u8 daddr[16]; /* server address as the client dialled it (v4-mapped) */
	__u16 dport;
	__u16 pad[3];
};

struct ra_accept {
	__u16 type;
	__u16 family;     /* from the peer sockaddr */
	__u32 tgid;
	__u64 cid;
	__u64 ts;
	__u32 fd;         /* the new socket */
	__u32 listen_fd;
	__u32 uid;        /* server uid */
	__u32 tracked;    /* 0: the socks map was full, no data will follow */
	__u32 has_client; /* client below is valid (local TCP client) */
	__u32 addrlen;
	struct ra_client client;
	__u8 sockaddr[RA_SOCKADDR_LEN];
};

struct ra_close {
	__u16 type;
	__u16 pad;
	__u32 tgid;
	__u64 cid;
	__u64 ts;
	__u32 fd;
	__u32 lost_events[2];
	__u32 pad2;
	__u64 lost_bytes[2];
	__u64 pos[2];
	__u64 events;
};

/* A connection found to carry TLS by its first bytes (not inside an SSL call
 * the probes saw): its ciphertext is not captured from then on. */
struct ra_tls { /* also RA_BUS */
	__u16 type;
	__u16 dir;
	__u32 tgid;
	__u64 cid;
	__u64 ts;
};

/* The process that wrote the first bytes the server read from a Unix socket
 * connection (sock:sk_data_ready in the writer's context, then
 * sock:sock_recv_length in the server's read of the same socket). */
struct ra_peer {
	__u16 type;
	__u16 pad;
	__u32 tgid;
	__u64 cid;
	__u64 ts;
	__u32 pid;
	__u32 uid;
	char comm[RA_COMM_LEN];
};

struct ra_proc {
	__u16 type;
	__u16 pad;
	__u32 tgid;
	__u64 ts;
	__u32 uid;
	__u32 parent; /* RA_FORK: the forking target's tgid */
	char comm[RA_COMM_LEN];
};

#endif /* REDIS_AUDIT_H */

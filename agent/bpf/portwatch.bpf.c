// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* portwatch's kernel program: tells the agent the moment a listener opens or
 * closes, so a listener that lives between two scans is still recorded.
 *
 * - TCP: the `sock:inet_sock_set_state` tracepoint (BTF-typed, `tp_btf`):
 *   entering LISTEN opens a listener, LISTEN to CLOSE closes one. Exact.
 *   Not every transition out of LISTEN is a listener closing: a connection's
 *   child socket is cloned from its listener, state LISTEN included, and its
 *   first transition is LISTEN -> SYN_RECV, with the listener's address and
 *   port. Taken as a close, every connection accepted by a listener bound to
 *   one address would close that listener.
 * - Inbound connections, for the peers of each listener (`peers = true`): a
 *   socket going SYN_RECV -> ESTABLISHED is a connection a listener accepted
 *   (only a passive open takes that path); one leaving ESTABLISHED has ended.
 *   Both are told only when the socket's namespace and local port are a
 *   listener's (`peer_ports`, which this program fills as listeners open and
 *   the agent fills with those that were open before it loaded), so that
 *   outbound connections cost nothing but that lookup. These events have a counter of
 *   their own in `lost`: losing one resyncs the peers, not the listeners.
 * - UDP bind: `raw_syscalls:sys_exit` of a successful bind(2): the socket is
 *   read from the caller's fd table. A socket bound implicitly (sendto(2)
 *   without bind) is not seen here; the safety scan finds it.
 * - UDP release: no tracepoint marks it, and this kernel class (no kprobes,
 *   no fentry) offers no hook, so the program sends hints instead: a close(2)
 *   of an fd that a tracked bind returned, and the exit of a process that
 *   bound one. The agent confirms the release with a socket dump.
 *
 * Every event carries the kernel's CLOCK_MONOTONIC time; events that do not
 * fit the ring buffer are counted in `lost`, and the agent rescans. */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_DGRAM 2
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

/* Event kinds: keep in step with agent/src/events/parse.rs. */
#define PW_TCP_LISTEN 1
#define PW_TCP_UNLISTEN 2
#define PW_UDP_BIND 3
#define PW_UDP_CLOSE_HINT 4
#define PW_EXIT_HINT 5
#define PW_TCP_ACCEPTED 6
#define PW_TCP_ENDED 7

/* Slots of `lost`. */
#define PW_LOST_LISTENERS 0
#define PW_LOST_PEERS 1

struct pw_event {
	__u64 ktime_ns;
	__u64 netns;
	__u64 inode;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 fd;
	__u16 port;
	__u8 kind;
	__u8 family;
	__u8 v6only;
	__u8 pad;
	__u16 remote_port;
	__u8 addr[16];
	char comm[16];
	__u8 remote_addr[16];
};

/* 256 KiB: some 2,500 records between two drains of the reader, which the
 * kernel wakes as records come. The agent maps the data twice (the kernel's
 * way of making the ring contiguous), so each KiB here is two of its
 * resident memory once the ring has gone round. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} events SEC(".maps");

/* Events that did not fit the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Set by the loader when the agent counts peers (`peers = true`); off, the
 * verifier drops the connection paths as dead code. */
volatile const __u8 peers_on = 0;

struct port_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

/* (network namespace, port) of the TCP listeners whose connections are told,
 * with the time the pair was added (or last listened on). Never emptied by
 * the program: the agent removes a pair at a full scan once nothing listens
 * on it, unless added since the scan began. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct port_key);
	__type(value, __u64);
} peer_ports SEC(".maps");

struct fd_key {
	__u32 tgid;
	__u32 fd;
};

/* (tgid, fd) of each UDP socket bound by bind(2), until that fd is closed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fd_key);
	__type(value, __u64);
} udp_fds SEC(".maps");

/* Processes that bound a UDP socket: their exit is a release hint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} udp_tgids SEC(".maps");

static __always_inline void count_lost(__u32 slot)
{
	__u64 *count = bpf_map_lookup_elem(&lost, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
}

static __always_inline struct pw_event *reserve(__u8 kind)
{
	struct pw_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(kind >= PW_TCP_ACCEPTED ? PW_LOST_PEERS : PW_LOST_LISTENERS);
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	__builtin_memset(e, 0, sizeof(*e));
	e->ktime_ns = bpf_ktime_get_ns();
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->kind = kind;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/* The socket's identity and address, read with probe reads so that one
 * function serves a BTF pointer and a pointer read from an fd table. */
static __always_inline void fill(struct pw_event *e, struct sock *sk)
{
	struct socket_alloc *sa = (struct socket_alloc *)BPF_CORE_READ(sk, sk_socket);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->uid = BPF_CORE_READ(sk, sk_uid.val);
	if (sa)
		e->inode = BPF_CORE_READ(sa, vfs_inode.i_ino);
	if (e->family == AF_INET) {
		__be32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(e->addr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&e->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		e->v6only = BPF_CORE_READ_BITFIELD_PROBED(&sk->__sk_common, skc_ipv6only);
	}
}

/* The remote end of a connection. */
static __always_inline void fill_remote(struct pw_event *e, struct sock *sk)
{
	e->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET) {
		__be32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->remote_addr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&e->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline struct port_key port_of(struct sock *sk)
{
	struct port_key key = {
		.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
	};
	return key;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state, struct sock *sk, int oldstate, int newstate)
{
	__u8 kind;
	if (newstate == TCP_LISTEN)
		kind = PW_TCP_LISTEN;
	else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE)
		kind = PW_TCP_UNLISTEN;
	else if (peers_on && oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED)
		kind = PW_TCP_ACCEPTED;
	else if (peers_on && oldstate == TCP_ESTABLISHED)
		kind = PW_TCP_ENDED;
	else
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (peers_on && kind == PW_TCP_LISTEN) {
		struct port_key key = port_of(sk);
		__u64 now = bpf_ktime_get_ns();
		if (bpf_map_update_elem(&peer_ports, &key, &now, BPF_ANY) != 0)
			count_lost(PW_LOST_PEERS);
	} else if (kind >= PW_TCP_ACCEPTED) {
		struct port_key key = port_of(sk);
		if (!bpf_map_lookup_elem(&peer_ports, &key))
			return 0;
	}
	struct pw_event *e = reserve(kind);
	if (!e)
		return 0;
	fill(e, sk);
	if (kind >= PW_TCP_ACCEPTED)
		fill_remote(e, sk);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline struct sock *fd_sock(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return 0;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	return BPF_CORE_READ(sock, sk);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_exit, struct pt_regs *regs, long ret)
{
	long nr = PW_SYSCALL_NR(regs);
	if (ret != 0 || (nr != PW_NR_BIND && nr != PW_NR_CLOSE))
		return 0;
	struct fd_key key = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.fd = (__u32)PW_SYSCALL_ARG0(regs),
	};
	if (nr == PW_NR_CLOSE) {
		if (bpf_map_delete_elem(&udp_fds, &key) != 0)
			return 0;
		struct pw_event *e = reserve(PW_UDP_CLOSE_HINT);
		if (!e)
			return 0;
		e->fd = key.fd;
		bpf_ringbuf_submit(e, 0);
		return 0;
	}
	struct sock *sk = fd_sock(key.fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP || BPF_CORE_READ(sk, sk_type) != SOCK_DGRAM)
		return 0;
	struct pw_event *e = reserve(PW_UDP_BIND);
	if (!e)
		return 0;
	fill(e, sk);
	e->fd = key.fd;
	__u64 inode = e->inode;
	bpf_ringbuf_submit(e, 0);
	__u32 one = 1;
	bpf_map_update_elem(&udp_fds, &key, &inode, BPF_ANY);
	bpf_map_update_elem(&udp_tgids, &key.tgid, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(process_exit, struct task_struct *task)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if ((__u32)id != tgid || bpf_map_delete_elem(&udp_tgids, &tgid) != 0)
		return 0;
	struct pw_event *e = reserve(PW_EXIT_HINT);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

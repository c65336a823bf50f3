/* The few kernel types portwatch.bpf.c reads, declared by hand for CO-RE:
 * `preserve_access_index` makes every field access a relocation that libbpf-
 * compatible loaders (aya) resolve against the running kernel's BTF, so only
 * the names matter here, not the offsets or the full layouts. */
#ifndef PORTWATCH_KERNEL_H
#define PORTWATCH_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0 };

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};
struct ns_common {
	unsigned int inum;
};
struct net {
	struct ns_common ns;
};
typedef struct {
	struct net *net;
} possible_net_t;
typedef struct {
	__u32 val;
} kuid_t;
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_reuse : 4;
	unsigned char skc_reuseport : 1;
	unsigned char skc_ipv6only : 1;
	unsigned char skc_net_refcnt : 1;
	unsigned short skc_num;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};
struct socket;
struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
	kuid_t sk_uid;
	struct socket *sk_socket;
};
struct inode {
	unsigned long i_ino;
};
struct socket {
	struct sock *sk;
};
struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
};
struct file {
	void *private_data;
};
struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};
struct files_struct {
	struct fdtable *fdt;
};
struct task_struct {
	struct files_struct *files;
};

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long di;
	unsigned long orig_ax;
};
#define PW_SYSCALL_NR(regs) ((regs)->orig_ax)
#define PW_SYSCALL_ARG0(regs) ((regs)->di)
#define PW_NR_BIND 49
#define PW_NR_CLOSE 3
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	__u64 regs[31];
	__u64 orig_x0;
	__s32 syscallno;
};
#define PW_SYSCALL_NR(regs) ((regs)->syscallno)
#define PW_SYSCALL_ARG0(regs) ((regs)->orig_x0)
#define PW_NR_BIND 200
#define PW_NR_CLOSE 57
#else
#error "portwatch.bpf.c knows the syscall registers of x86_64 and arm64 only"
#endif

#pragma clang attribute pop

#endif

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Terminating connected UDP sockets whose backend was removed (datapath-notes §4.1).
 *
 * Socket LB pins a connected UDP socket to one backend at connect() time (sock_lb.c records
 * it in the socket's own storage, sl_sock_fe_v1). When that backend leaves its service the
 * socket would keep sending to a dead pod. This UDP socket iterator walks the sockets of one
 * network namespace (the one the iterator fd was created in; the controller runs it once per
 * namespace) and destroys each connected UDP socket that
 *   - is connected to a backend listed in sl_terminate_backends (filled by the controller
 *     before each walk), and
 *   - was load-balanced there by us: its storage names that same backend.
 * Sockets that reach the backend directly (no storage) or were balanced elsewhere are left
 * alone. A destroyed socket is disconnected with sk_err = ECONNABORTED: a blocked or next
 * recv() returns ECONNABORTED, the next send() EDESTADDRREQ, and the application reconnects
 * through the service.
 *
 * For every destroyed socket the iterator writes its struct sl_sock_frontend (frontend asked
 * for, backend it got) to the iterator's output: the controller counts the records and logs
 * them, per namespace, without any shared counter.
 *
 * Needs bpf_sock_destroy (kfunc, 6.5+); the loader probes the kernel BTF for it and does not
 * load this object when it is missing.
 *
 * No vmlinux.h: the few kernel types used are declared below with preserve_access_index, so
 * libbpf relocates every field offset against the running kernel's BTF (CO-RE) and the build
 * does not depend on the build machine's kernel. Anonymous unions of the kernel types are
 * flattened here; libbpf matches members by name through them.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "swiftlane/abi.h"
#include "swiftlane/maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Not in the UAPI headers available to BPF builds: include/linux/socket.h and
 * include/net/tcp_states.h (a connected UDP socket is TCP_ESTABLISHED). */
#define SL_AF_INET 2
#define SL_AF_INET6 10
#define SL_TCP_ESTABLISHED 1

/* Backends being removed, keyed like the backend map's value (proto = IPPROTO_UDP,
 * flags = 0); the value is unused. Owned by this object (not pinned): the controller fills
 * it, walks every namespace, and empties it again. Larger sets are walked in chunks. */
#define SL_TERMINATE_BACKENDS_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_backend);
	__type(value, __u8);
	__uint(max_entries, SL_TERMINATE_BACKENDS_MAX);
} sl_terminate_backends SEC(".maps");

// MARK: - Kernel types (CO-RE)

struct seq_file;
struct udp_sock;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

/* The UDP iterator's context (kernel name required: CO-RE matches it by name). */
struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
	int bucket;
} __attribute__((preserve_access_index));

struct in6_addr {
	union {
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

/* The head of every struct sock (udp_sock -> inet_sock -> sock -> sock_common). */
struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

// MARK: - Worker

static __always_inline int sl_addr_equal(const __be32 a[4], const __be32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* The socket's current peer as a backend-map key (IPv4 v4-mapped, as in the ABI).
 * Returns 0 for a socket that is not a connected IPv4/IPv6 socket. */
static __always_inline int sl_connected_peer(struct sock_common *sk, struct sl_backend *peer)
{
	unsigned short family = sk->skc_family;

	if (sk->skc_state != SL_TCP_ESTABLISHED)
		return 0;
	if (family == SL_AF_INET) {
		peer->addr[0] = 0;
		peer->addr[1] = 0;
		peer->addr[2] = bpf_htonl(0x0000ffff);
		peer->addr[3] = sk->skc_daddr;
	} else if (family == SL_AF_INET6 && bpf_core_field_exists(sk->skc_v6_daddr)) {
		/* A dual-stack socket connected to an IPv4 address holds it v4-mapped here. */
		peer->addr[0] = sk->skc_v6_daddr.in6_u.u6_addr32[0];
		peer->addr[1] = sk->skc_v6_daddr.in6_u.u6_addr32[1];
		peer->addr[2] = sk->skc_v6_daddr.in6_u.u6_addr32[2];
		peer->addr[3] = sk->skc_v6_daddr.in6_u.u6_addr32[3];
	} else {
		return 0;
	}
	peer->port = sk->skc_dport;
	peer->proto = IPPROTO_UDP;
	peer->flags = 0;
	return 1;
}

/* Destroys the socket if it is connected to a backend being removed and our connect hook
 * sent it there. Returns 1 when destroyed (and *record holds its storage), else 0. */
static __always_inline int sl_terminate(struct sock_common *sk, struct sl_sock_frontend *record)
{
	const struct sl_sock_frontend *stored;
	struct sl_backend peer;

	/* The hash lookup first: it rules out almost every socket without a helper call. */
	if (!sl_connected_peer(sk, &peer) || !bpf_map_lookup_elem(&sl_terminate_backends, &peer))
		return 0;
	stored = bpf_sk_storage_get(&sl_sock_fe_v1, sk, 0, 0);
	if (!stored || stored->backend_port != peer.port ||
	    !sl_addr_equal(stored->backend_addr, peer.addr))
		return 0;
	__builtin_memcpy(record, stored, sizeof(*record));
	/* UDP's diag_destroy (udp_abort) cannot fail; only a protocol without one would. */
	return bpf_sock_destroy(sk) == 0;
}

// MARK: - Entry point

SEC("iter/udp")
int sl_terminate_udp(struct bpf_iter__udp *ctx)
{
	/* Pass the context's pointer itself, unmodified: bpf_sock_destroy takes only trusted
	 * pointers, and the first members of udp_sock lead to sock_common (offset 0), which is
	 * how the verifier matches the kfunc's argument type. */
	struct sock_common *sk = (struct sock_common *)ctx->udp_sk;
	struct sl_sock_frontend record;

	/* The iterator calls once more with no socket at the end of the walk. */
	if (!sk)
		return 0;
	if (sl_terminate(sk, &record))
		bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
	return 0;
}

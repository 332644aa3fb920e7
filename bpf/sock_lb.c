// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level load balancing: cgroup sock_addr hooks that rewrite a frontend address
 * (ClusterIP:port) to a backend before the socket ever sends a packet, and rewrite it
 * back where the application can observe it (recvmsg source, getpeername).
 *
 * Each SEC() entry point is a thin wrapper over one worker that returns 0 or a negative
 * errno; only the entry point turns that into the hook's verdict.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "swiftlane/abi.h"
#include "swiftlane/maps.h"
#include "swiftlane/lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader after probing the kernel (libbpf_probe_bpf_helper). Without
 * bpf_set_retval (< 5.18) a refused connect() surfaces as EPERM instead of ECONNREFUSED;
 * the verifier never visits the dead branch, so the program still loads there. */
const volatile __u8 sl_have_set_retval = 1;

/* Verdicts of cgroup sock_addr programs: 1 lets the syscall proceed, 0 fails it. */
#define SL_SYSCALL_PROCEED 1
#define SL_SYSCALL_FAIL 0

struct sl_dest {
	__be32 addr[4];
	__be16 port;
};

static __always_inline void sl_dest_from_v4(struct sl_dest *dest, __be32 addr, __u32 port)
{
	dest->addr[0] = 0;
	dest->addr[1] = 0;
	dest->addr[2] = bpf_htonl(0x0000ffff);
	dest->addr[3] = addr;
	dest->port = (__be16)port;
}

static __always_inline void sl_dest_from_v6(struct sl_dest *dest, struct bpf_sock_addr *ctx)
{
	dest->addr[0] = ctx->user_ip6[0];
	dest->addr[1] = ctx->user_ip6[1];
	dest->addr[2] = ctx->user_ip6[2];
	dest->addr[3] = ctx->user_ip6[3];
	dest->port = (__be16)ctx->user_port;
}

static __always_inline int sl_addr_is_v4_mapped(const __be32 addr[4])
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0x0000ffff);
}

/* sessionAffinity ClientIP for sockets of this node: the client is the socket's network
 * namespace (its netns cookie): a pod, or the host. */
static __always_inline const struct sl_backend_slot *sl_pick_with_affinity(struct bpf_sock_addr *ctx,
									   const struct sl_service_value *master,
									   __u8 proto)
{
	struct sl_affinity_key key = {};

	key.client = bpf_get_netns_cookie(ctx);
	key.rev_nat_id = master->rev_nat_id;
	key.proto = proto;
	return sl_lb_pick_affine(&key, master, SL_REASON_SOCK_AFFINITY_HIT, SL_REASON_SOCK_AFFINITY_NEW,
				 SL_REASON_SOCK_SLOT_MISSING);
}

static __always_inline int sl_addr_equal(const __be32 a[4], const __be32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* connect(): remember in the socket's own storage which frontend it asked for. Only
 * written when it changes, so a connected UDP socket that reconnects to the same
 * backend costs a lookup. */
static __always_inline void sl_record_connected(struct bpf_sock_addr *ctx, const struct sl_backend_slot *slot,
						__u32 rev_nat_id, const struct sl_dest *frontend)
{
	struct sl_sock_frontend *stored;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	stored = bpf_sk_storage_get(&sl_sock_fe_v1, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!stored) {
		sl_count(SL_REASON_SOCK_REVNAT_FAILED);
		return;
	}
	/* The rev-NAT id names the frontend (address and port), so it and the backend are
	 * all there is to compare. */
	if (stored->rev_nat_id == rev_nat_id && stored->backend_port == slot->port &&
	    sl_addr_equal(stored->backend_addr, slot->addr))
		return;
	__builtin_memcpy(stored->frontend_addr, frontend->addr, sizeof(stored->frontend_addr));
	__builtin_memcpy(stored->backend_addr, slot->addr, sizeof(stored->backend_addr));
	stored->frontend_port = frontend->port;
	stored->backend_port = slot->port;
	stored->rev_nat_id = rev_nat_id;
}

/* sendmsg() on an unconnected UDP socket: each datagram may go elsewhere, so remember
 * (socket, backend) -> frontend in the LRU map. Skips the write when already there. */
static __always_inline void sl_record_datagram(struct bpf_sock_addr *ctx, const struct sl_backend_slot *slot, __u32 rev_nat_id,
					       const struct sl_dest *frontend)
{
	struct sl_sock_revnat_key key = {};
	struct sl_sock_revnat_value value = {};
	const struct sl_sock_revnat_value *known;

	key.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(key.addr, slot->addr, sizeof(key.addr));
	key.port = slot->port;
	known = bpf_map_lookup_elem(&sl_sock_rnat_v1, &key);
	if (known && known->rev_nat_id == rev_nat_id && known->port == frontend->port &&
	    sl_addr_equal(known->addr, frontend->addr))
		return;
	__builtin_memcpy(value.addr, frontend->addr, sizeof(value.addr));
	value.port = frontend->port;
	value.rev_nat_id = rev_nat_id;
	if (bpf_map_update_elem(&sl_sock_rnat_v1, &key, &value, BPF_ANY) != 0)
		sl_count(SL_REASON_SOCK_REVNAT_FAILED);
}

/* The worker behind connect and sendmsg: on success *dest holds the backend.
 * Returns 0 (translated or not a frontend) or -ECONNREFUSED / -EPERM. */
static __always_inline int sl_translate(struct bpf_sock_addr *ctx, struct sl_dest *dest, int want_v4, int connecting)
{
	const struct sl_service_value *master;
	const struct sl_backend_slot *slot;
	__u8 proto = ctx->protocol;
	struct sl_service_key key;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
		sl_count(SL_REASON_SOCK_PROTO_UNSUPPORTED);
		return 0;
	}
	/* Every byte of the key is assigned (no padding), so no memset is needed. */
	key.addr[0] = dest->addr[0];
	key.addr[1] = dest->addr[1];
	key.addr[2] = dest->addr[2];
	key.addr[3] = dest->addr[3];
	key.port = dest->port;
	key.proto = proto;
	key.scope = SL_SCOPE_DEFAULT;

	master = bpf_map_lookup_elem(&sl_services_v2, &key);
	if (!master) {
		sl_count(SL_REASON_SOCK_NOT_SERVICE);
		return 0;
	}
	/* externalTrafficPolicy=Local: traffic from this node short-circuits to the Cluster
	 * set, which lives in a second entry. Only flagged frontends pay the second lookup. */
	if (master->flags & SL_SVC_F_NODE_SCOPE) {
		key.scope = SL_SCOPE_NODE;
		master = bpf_map_lookup_elem(&sl_services_v2, &key);
		if (!master) {
			sl_count(SL_REASON_SOCK_REJECT);
			return -ECONNREFUSED;
		}
	}
	if (master->flags & SL_SVC_F_DROP) {
		sl_count(SL_REASON_SOCK_DROP);
		return -EPERM;
	}
	if ((master->flags & SL_SVC_F_REJECT) || master->count == 0) {
		sl_count(SL_REASON_SOCK_REJECT);
		return -ECONNREFUSED;
	}
	if (master->flags & SL_SVC_F_AFFINITY)
		slot = sl_pick_with_affinity(ctx, master, proto);
	else
		slot = sl_lb_pick_slot(master, SL_REASON_SOCK_SLOT_MISSING);
	if (!slot) {
		sl_count(SL_REASON_SOCK_REJECT);
		return -ECONNREFUSED;
	}
	/* An IPv4 socket can only reach an IPv4 backend; the controller never mixes
	 * families in one frontend, this guards against a corrupted entry. */
	if (want_v4 && !sl_addr_is_v4_mapped(slot->addr)) {
		sl_count(SL_REASON_SOCK_BACKEND_MISSING);
		return -ECONNREFUSED;
	}
	if (connecting)
		sl_record_connected(ctx, slot, master->rev_nat_id, dest);
	else
		sl_record_datagram(ctx, slot, master->rev_nat_id, dest);
	__builtin_memcpy(dest->addr, slot->addr, sizeof(dest->addr));
	dest->port = slot->port;
	sl_count(SL_REASON_SOCK_FORWARD);
	return 0;
}

static __always_inline int sl_verdict(int err)
{
	if (err == 0)
		return SL_SYSCALL_PROCEED;
	if (err == -ECONNREFUSED && sl_have_set_retval)
		bpf_set_retval(-ECONNREFUSED);
	return SL_SYSCALL_FAIL;
}

static __always_inline int sl_forward4(struct bpf_sock_addr *ctx, int connecting)
{
	struct sl_dest dest;
	int err;

	sl_dest_from_v4(&dest, ctx->user_ip4, ctx->user_port);
	err = sl_translate(ctx, &dest, 1, connecting);
	if (err == 0) {
		ctx->user_ip4 = dest.addr[3];
		ctx->user_port = (__u32)dest.port;
	}
	return sl_verdict(err);
}

static __always_inline int sl_forward6(struct bpf_sock_addr *ctx, int connecting)
{
	struct sl_dest dest;
	int err;

	sl_dest_from_v6(&dest, ctx);
	err = sl_translate(ctx, &dest, 0, connecting);
	if (err == 0) {
		ctx->user_ip6[0] = dest.addr[0];
		ctx->user_ip6[1] = dest.addr[1];
		ctx->user_ip6[2] = dest.addr[2];
		ctx->user_ip6[3] = dest.addr[3];
		ctx->user_port = (__u32)dest.port;
	}
	return sl_verdict(err);
}

/* The reverse direction: if this socket reached *peer as a backend of a frontend,
 * replace *peer with that frontend. Connected sockets are answered from their own
 * storage; unconnected UDP sockets from the cookie-keyed LRU map. Returns 1 when
 * rewritten. */
static __always_inline int sl_reverse(struct bpf_sock_addr *ctx, struct sl_dest *peer)
{
	struct sl_sock_revnat_key key = {};
	const struct sl_sock_revnat_value *value;
	struct sl_sock_frontend *stored = NULL;
	struct bpf_sock *sk = ctx->sk;

	if (sk)
		stored = bpf_sk_storage_get(&sl_sock_fe_v1, sk, 0, 0);
	if (stored && stored->backend_port == peer->port && sl_addr_equal(stored->backend_addr, peer->addr)) {
		__builtin_memcpy(peer->addr, stored->frontend_addr, sizeof(peer->addr));
		peer->port = stored->frontend_port;
		return 1;
	}
	key.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(key.addr, peer->addr, sizeof(key.addr));
	key.port = peer->port;
	value = bpf_map_lookup_elem(&sl_sock_rnat_v1, &key);
	if (!value)
		return 0;
	__builtin_memcpy(peer->addr, value->addr, sizeof(peer->addr));
	peer->port = value->port;
	return 1;
}

static __always_inline void sl_reverse4(struct bpf_sock_addr *ctx, __u32 reason)
{
	struct sl_dest peer;

	sl_dest_from_v4(&peer, ctx->user_ip4, ctx->user_port);
	if (sl_reverse(ctx, &peer) && sl_addr_is_v4_mapped(peer.addr)) {
		ctx->user_ip4 = peer.addr[3];
		ctx->user_port = (__u32)peer.port;
		sl_count(reason);
	}
}

static __always_inline void sl_reverse6(struct bpf_sock_addr *ctx, __u32 reason)
{
	struct sl_dest peer;

	sl_dest_from_v6(&peer, ctx);
	if (sl_reverse(ctx, &peer)) {
		ctx->user_ip6[0] = peer.addr[0];
		ctx->user_ip6[1] = peer.addr[1];
		ctx->user_ip6[2] = peer.addr[2];
		ctx->user_ip6[3] = peer.addr[3];
		ctx->user_port = (__u32)peer.port;
		sl_count(reason);
	}
}

// MARK: - Entry points

SEC("cgroup/connect4")
int sl_connect4(struct bpf_sock_addr *ctx)
{
	return sl_forward4(ctx, 1);
}

SEC("cgroup/sendmsg4")
int sl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sl_forward4(ctx, 0);
}

/* recvmsg and getpeername cannot fail the syscall: they must return 1. */
SEC("cgroup/recvmsg4")
int sl_recvmsg4(struct bpf_sock_addr *ctx)
{
	sl_reverse4(ctx, SL_REASON_SOCK_REPLY_REWRITTEN);
	return SL_SYSCALL_PROCEED;
}

SEC("cgroup/getpeername4")
int sl_getpeername4(struct bpf_sock_addr *ctx)
{
	sl_reverse4(ctx, SL_REASON_SOCK_PEER_REWRITTEN);
	return SL_SYSCALL_PROCEED;
}

SEC("cgroup/connect6")
int sl_connect6(struct bpf_sock_addr *ctx)
{
	return sl_forward6(ctx, 1);
}

SEC("cgroup/sendmsg6")
int sl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sl_forward6(ctx, 0);
}

SEC("cgroup/recvmsg6")
int sl_recvmsg6(struct bpf_sock_addr *ctx)
{
	sl_reverse6(ctx, SL_REASON_SOCK_REPLY_REWRITTEN);
	return SL_SYSCALL_PROCEED;
}

SEC("cgroup/getpeername6")
int sl_getpeername6(struct bpf_sock_addr *ctx)
{
	sl_reverse6(ctx, SL_REASON_SOCK_PEER_REWRITTEN);
	return SL_SYSCALL_PROCEED;
}

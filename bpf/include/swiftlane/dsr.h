/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Direct server return (nodePort.mode: dsr) for bpf/nodeport.c. Included by nodeport.c
 * after its parser and rewrite helpers (struct sl_packet, sl_rewrite_to, sl_fib,
 * sl_fib6, sl_backend_egress; the IPv6 carrier's layout, struct sl_dsr_opt6, which the
 * parser reads). What resizes a packet (adding or removing the carrier with
 * bpf_skb_adjust_room) runs in the tc programs only; XDP hands those packets to tc.
 *
 * The node that receives a client's packet for a frontend (node A) sends it to a remote
 * backend DNATed but not source-NATed, with the frontend (address, port) in a carrier
 * placed right after the fixed header: an 8-byte IPv4 option, or for IPv6 a 24-byte
 * Destination Options header. The backend's node (node B, same program on its devices)
 * records (backend, client) -> frontend in sl_dsr_v1, removes the carrier and delivers
 * the packet; the backend's replies leaving node B get the frontend as their source on
 * egress and go straight to the client. Node A keeps only a FORWARD entry (flag
 * SL_NAT_F_DSR) so later packets of the flow take the same backend.
 *
 * Which packets carry it: a TCP flow's SYNs only (node B's entry then lasts the
 * connection, so full-size segments never grow past the MTU); every UDP datagram (node B
 * has no other way to learn a flow whose first datagram was lost) that still fits the
 * egress device's MTU with the carrier's bytes more. IPv4 option layout (as Cilium's):
 * type 0x9a (copied on fragmentation, class 0, number 26), length 8, port, address. The
 * IPv6 option: type 0x1e (RFC 4727 experimental; skipped by a host that does not know
 * it), length 20, address, port, 2 zero bytes (see nodeport.c's struct sl_dsr_opt6).
 *
 * Any node accepts carriers, whatever its own mode: the mode is the receiving node's
 * choice. A carrier naming no frontend of the cluster is dropped (a forged option would
 * otherwise let anyone choose the source address of a pod's replies).
 */
#ifndef SWIFTLANE_DSR_H
#define SWIFTLANE_DSR_H

#include "maps.h"

/* 1: remote backends are reached by DSR instead of SNAT. Set by the loader. */
const volatile __u8 sl_dsr_mode = 0;

#define SL_DSR_OPT_TYPE 0x9a
#define SL_DSR_OPT_LEN 8

struct sl_dsr_opt {
	__u8 type;
	__u8 len;
	__be16 port;
	__be32 addr;
};

/* The first 32-bit word of an IPv4 header: version/IHL, TOS, total length. */
struct sl_dsr_ip_word {
	__u8 version_ihl;
	__u8 tos;
	__be16 tot_len;
};

/* Whether the client lies behind the backend's next hop: the FIB's next hop towards the
 * backend (its gateway, or the backend itself when on-link) is also the next hop towards
 * the client, through the same device. Fills *backend_dev (0: unroutable). */
static __always_inline int sl_dsr_client_behind_backend(void *ctx, int hook, const struct sl_packet *pkt,
							const __be32 backend[4], __u32 *backend_dev)
{
	/* One lookup struct for both questions: the new-flow path is near the stack's limit. */
	struct bpf_fib_lookup fib;
	__be32 hop[4];
	int rc;

	rc = pkt->ipv6 ? sl_fib6(ctx, hook, pkt, pkt->daddr6, backend, &fib, 0)
		       : sl_fib(ctx, hook, pkt, pkt->daddr, backend[3], &fib, 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return 0;
	*backend_dev = fib.ifindex;
	__builtin_memcpy(hop, fib.ipv6_dst, sizeof(hop)); /* ipv4_dst is ipv6_dst[0] */
	rc = pkt->ipv6 ? sl_fib6(ctx, hook, pkt, pkt->daddr6, pkt->saddr6, &fib, 0)
		       : sl_fib(ctx, hook, pkt, pkt->daddr, pkt->saddr, &fib, 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return 0;
	if (fib.ifindex != *backend_dev)
		return 0;
	if (pkt->ipv6)
		return sl_addr_equal(fib.ipv6_dst, hop);
	return fib.ipv4_dst == hop[0];
}

/* The bytes the carrier adds: the IPv4 option, or the IPv6 destination options header. */
static __always_inline __u32 sl_dsr_carrier_len(const struct sl_packet *pkt)
{
	return pkt->ipv6 ? SL_DSR_OPT6_LEN : SL_DSR_OPT_LEN;
}

/* Whether the packet (each of its segments, for a GSO skb) still fits the MTU of
 * `ifindex` with the carrier added (tc only). */
static __always_inline int sl_dsr_fits(struct __sk_buff *skb, const struct sl_packet *pkt, __u32 ifindex)
{
	__u32 mtu_len = pkt->mtu_len;

	return !ifindex || bpf_check_mtu(skb, ifindex, &mtu_len, sl_dsr_carrier_len(pkt), 0) == BPF_MTU_CHK_RET_SUCCESS;
}

/* Node A, new flow to a remote backend: DSR, or SNAT when the carrier has no place (an
 * IPv4 packet with IP options already, an IPv6 fragment) or the client lies behind the
 * backend's next hop (a pod or the node hosting the backend, even the backend itself):
 * its replies would never leave that node through a device, so nothing could give them
 * the frontend as source. */
static __always_inline int sl_dsr_wanted(void *ctx, int hook, const struct sl_packet *pkt, const __be32 backend[4])
{
	__u32 backend_dev = 0;

	if (!sl_dsr_mode)
		return 0;
	if (pkt->ipv6 ? pkt->frag != SL_FRAG_NONE : pkt->ihl_bytes != sizeof(struct iphdr))
		goto snat;
	if (sl_dsr_client_behind_backend(ctx, hook, pkt, backend, &backend_dev))
		goto snat;
	/* A flow opened by a first fragment, which mostly fills the MTU already: without room
	 * for the option node B would never learn the flow, as the option goes in first
	 * fragments only. (Fragments reach tc only: sl_parse_fragment.) */
	if (hook == SL_HOOK_TC && pkt->frag && !sl_dsr_fits(ctx, pkt, backend_dev))
		goto snat;
	return 1;
snat:
	sl_count(SL_REASON_NP_DSR_SNAT_FALLBACK);
	return 0;
}

/* Rewrites the header's first word (IHL and total length) after the option was added or
 * removed, folding that change and the option's bytes (`added`: 1 added, 0 removed) into
 * the header checksum. */
static __always_inline int sl_dsr_fix_header(struct __sk_buff *skb, struct sl_packet *pkt, struct sl_dsr_opt *opt,
					     int added)
{
	struct sl_dsr_ip_word old_word = {}, new_word = {};
	__u32 ihl_bytes = added ? pkt->ihl_bytes + SL_DSR_OPT_LEN : pkt->ihl_bytes - SL_DSR_OPT_LEN;
	__u16 tot_len = added ? pkt->tot_len + SL_DSR_OPT_LEN : pkt->tot_len - SL_DSR_OPT_LEN;
	__s64 diff;

	old_word.version_ihl = 0x40 | (pkt->ihl_bytes / 4);
	old_word.tos = pkt->tos;
	old_word.tot_len = bpf_htons(pkt->tot_len);
	new_word.version_ihl = 0x40 | (ihl_bytes / 4);
	new_word.tos = pkt->tos;
	new_word.tot_len = bpf_htons(tot_len);
	diff = bpf_csum_diff((__be32 *)&old_word, sizeof(old_word), (__be32 *)&new_word, sizeof(new_word), 0);
	if (diff < 0)
		return -EFAULT;
	diff = added ? bpf_csum_diff(NULL, 0, (__be32 *)opt, sizeof(*opt), (__wsum)diff)
		     : bpf_csum_diff((__be32 *)opt, sizeof(*opt), NULL, 0, (__wsum)diff);
	if (diff < 0)
		return -EFAULT;
	if (bpf_skb_store_bytes(skb, pkt->l3_off, &new_word, sizeof(new_word), 0) ||
	    bpf_l3_csum_replace(skb, pkt->l3_off + offsetof(struct iphdr, check), 0, (__u32)diff, 0))
		return -EFAULT;
	pkt->ihl_bytes = (__u8)ihl_bytes;
	pkt->tot_len = tot_len;
	pkt->l4_off = pkt->l3_off + ihl_bytes;
	return 0;
}

/* Whether a DSR flow's packet carries the option: a TCP flow's SYNs, every UDP datagram
 * (in its first fragment: node B learns the flow from the ports, which a later fragment
 * does not carry; later fragments are a plain DNAT). IPv6 fragments carry none: the
 * destination options would have to go behind the fragment header, which node B does
 * not parse; node B knows the flow from its earlier datagrams. */
static __always_inline int sl_dsr_carries_option(const struct sl_packet *pkt)
{
	if (pkt->frag == SL_FRAG_LATER || (pkt->ipv6 && pkt->frag))
		return 0;
	return pkt->proto != IPPROTO_TCP || (pkt->tcp_flags & SL_TCP_SYN);
}

/* The IPv6 header's payload length and next header after a carrier was added or removed
 * (IPv6 has no header checksum; the L4 checksum's pseudo header does not see extension
 * headers). */
static __always_inline int sl_dsr_fix_header6(struct __sk_buff *skb, struct sl_packet *pkt, __u8 nexthdr, int added)
{
	__u16 tot_len = added ? pkt->tot_len + SL_DSR_OPT6_LEN : pkt->tot_len - SL_DSR_OPT6_LEN;
	__be16 payload_len = bpf_htons(tot_len - sizeof(struct ipv6hdr));

	if (bpf_skb_store_bytes(skb, pkt->l3_off + offsetof(struct ipv6hdr, payload_len), &payload_len,
				sizeof(payload_len), 0) ||
	    bpf_skb_store_bytes(skb, pkt->l3_off + offsetof(struct ipv6hdr, nexthdr), &nexthdr, sizeof(nexthdr), 0))
		return -EFAULT;
	pkt->tot_len = tot_len;
	pkt->l4_off = added ? pkt->l4_off + SL_DSR_OPT6_LEN : pkt->l4_off - SL_DSR_OPT6_LEN;
	return 0;
}

/* IPv6: the destination options header naming the frontend (the packet's destination
 * still), right after the fixed header. */
static __always_inline int sl_dsr_push6(struct __sk_buff *skb, struct sl_packet *pkt)
{
	struct sl_dsr_opt6 opt = {
		.nexthdr = pkt->proto,
		.hdrlen = SL_DSR_OPT6_LEN / 8 - 1,
		.type = SL_DSR_OPT6_TYPE,
		.len = SL_DSR_OPT6_LEN - 4,
		.port = pkt->dport,
	};

	__builtin_memcpy(opt.addr, pkt->daddr6, sizeof(opt.addr));
	if (bpf_skb_adjust_room(skb, SL_DSR_OPT6_LEN, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_store_bytes(skb, pkt->l3_off + sizeof(struct ipv6hdr), &opt, sizeof(opt), 0))
		return -EFAULT;
	return sl_dsr_fix_header6(skb, pkt, SL_IPPROTO_DSTOPTS, 1);
}

/* Node A, before the DNAT of a DSR flow's packet (tc only: it resizes the packet): adds
 * the option naming the frontend
 * (still the packet's destination) when the packet should carry it. A packet that would
 * no longer fit the MTU towards `backend` goes without it (counted). */
static __always_inline int sl_dsr_push(struct __sk_buff *skb, struct sl_packet *pkt, const __be32 backend[4])
{
	struct sl_dsr_opt opt = { .type = SL_DSR_OPT_TYPE, .len = SL_DSR_OPT_LEN, .port = pkt->dport, .addr = pkt->daddr };

	if (!sl_dsr_carries_option(pkt))
		return 0;
	if (!pkt->ipv6 && pkt->ihl_bytes != sizeof(struct iphdr))
		goto no_room;
	if (!sl_dsr_fits(skb, pkt, sl_backend_egress(skb, SL_HOOK_TC, pkt, backend)))
		goto no_room;
	if (pkt->ipv6) {
		if (sl_dsr_push6(skb, pkt))
			goto fail;
	} else if (bpf_skb_adjust_room(skb, SL_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0) ||
		   bpf_skb_store_bytes(skb, pkt->l3_off + sizeof(struct iphdr), &opt, sizeof(opt), 0) ||
		   sl_dsr_fix_header(skb, pkt, &opt, 1)) {
		goto fail;
	}
	sl_count(SL_REASON_NP_DSR_CARRIED);
	return 0;
fail:
	sl_count(SL_REASON_NP_REWRITE_FAILED);
	return -EFAULT;
no_room:
	sl_count(SL_REASON_NP_DSR_NO_ROOM);
	return 0;
}

/* Whether (addr, port, proto) is a frontend served to external clients somewhere: an
 * exact externalIP / LB VIP entry, or a NodePort (on any node's address, the wildcard
 * of the address's family). */
static __always_inline int sl_dsr_known_frontend(const __be32 addr[4], __be16 port, __u8 proto, int ipv6)
{
	const struct sl_service_value *master;
	struct sl_service_key key = {};

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	key.port = port;
	key.proto = proto;
	key.scope = SL_SCOPE_DEFAULT;
	master = bpf_map_lookup_elem(&sl_services_v2, &key);
	if (master)
		return master->kind != SL_KIND_CLUSTER_IP;
	if (ipv6)
		__builtin_memset(key.addr, 0, sizeof(key.addr));
	else
		sl_v4_mapped(key.addr, 0);
	master = bpf_map_lookup_elem(&sl_services_v2, &key);
	return master && master->kind == SL_KIND_NODE_PORT;
}

/* The key of a packet from the client to the backend (node B's ingress). */
static __always_inline void sl_dsr_key_of_inbound(struct sl_dsr_key *key, const struct sl_packet *pkt)
{
	sl_addr_of(key->backend_addr, pkt, 1);
	sl_addr_of(key->client_addr, pkt, 0);
	key->backend_port = pkt->dport;
	key->client_port = pkt->sport;
	key->proto = pkt->proto;
}

/* Node B, ingress: a packet whose first IP option is the frontend option is recorded and
 * stripped. Returns 0 (no such option: carry on), 1 (handled: pass to the stack) or
 * -errno (drop, counted). */
static __always_inline int sl_dsr_receive(struct __sk_buff *skb, struct sl_packet *pkt)
{
	struct sl_dsr_entry entry = {};
	struct sl_dsr_key key = {};
	struct sl_dsr_opt opt;

	if (pkt->ihl_bytes == sizeof(struct iphdr) ||
	    bpf_skb_load_bytes(skb, pkt->l3_off + sizeof(struct iphdr), &opt, 2) || opt.type != SL_DSR_OPT_TYPE)
		return 0;
	/* The parser checked that the header (ihl_bytes) lies inside the packet. */
	if (opt.len != SL_DSR_OPT_LEN || pkt->ihl_bytes < sizeof(struct iphdr) + SL_DSR_OPT_LEN ||
	    bpf_skb_load_bytes(skb, pkt->l3_off + sizeof(struct iphdr), &opt, sizeof(opt))) {
		sl_count(SL_REASON_NP_DSR_MALFORMED);
		return -EINVAL;
	}
	sl_v4_mapped(entry.frontend_addr, opt.addr);
	if (!sl_dsr_known_frontend(entry.frontend_addr, opt.port, pkt->proto, 0)) {
		sl_count(SL_REASON_NP_DSR_UNKNOWN_FRONTEND);
		return -EPERM;
	}
	sl_dsr_key_of_inbound(&key, pkt);
	entry.frontend_port = opt.port;
	entry.last_seen_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&sl_dsr_v1, &key, &entry, BPF_ANY)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -ENOMEM;
	}
	/* Removed so that the pod's stack, and anything between, sees a plain packet. */
	if (bpf_skb_adjust_room(skb, -SL_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0) || sl_dsr_fix_header(skb, pkt, &opt, 0)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -EFAULT;
	}
	sl_count(SL_REASON_NP_DSR_RECEIVED);
	return 1;
}

/* Node B, ingress, IPv6: a packet the parser found a carrier in (sl_dsr_carrier6) is
 * recorded like an IPv4 one and the destination options header is taken out. Returns as
 * sl_dsr_receive. */
static __always_inline int sl_dsr_receive6(struct __sk_buff *skb, struct sl_packet *pkt)
{
	struct sl_dsr_entry entry = {};
	struct sl_dsr_key key = {};
	struct sl_dsr_opt6 opt;

	if (bpf_skb_load_bytes(skb, pkt->l3_off + sizeof(struct ipv6hdr), &opt, sizeof(opt))) {
		sl_count(SL_REASON_NP_DSR_MALFORMED);
		return -EINVAL;
	}
	if (!sl_dsr_known_frontend(opt.addr, opt.port, pkt->proto, 1)) {
		sl_count(SL_REASON_NP_DSR_UNKNOWN_FRONTEND);
		return -EPERM;
	}
	sl_dsr_key_of_inbound(&key, pkt);
	__builtin_memcpy(entry.frontend_addr, opt.addr, sizeof(entry.frontend_addr));
	entry.frontend_port = opt.port;
	entry.last_seen_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&sl_dsr_v1, &key, &entry, BPF_ANY)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -ENOMEM;
	}
	if (bpf_skb_adjust_room(skb, -SL_DSR_OPT6_LEN, BPF_ADJ_ROOM_NET, 0) ||
	    sl_dsr_fix_header6(skb, pkt, opt.nexthdr, 0)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -EFAULT;
	}
	sl_count(SL_REASON_NP_DSR_RECEIVED);
	return 1;
}

/* Node B, egress: a backend's reply of a recorded flow leaves with the frontend as its
 * source. Returns SL_NP_PASS (also when not such a reply) or -errno. */
static __always_inline int sl_dsr_reply(struct __sk_buff *skb, struct sl_packet *pkt)
{
	struct sl_dsr_entry *entry;
	struct sl_dsr_key key = {};

	sl_addr_of(key.backend_addr, pkt, 0);
	sl_addr_of(key.client_addr, pkt, 1);
	key.backend_port = pkt->sport;
	key.client_port = pkt->dport;
	key.proto = pkt->proto;
	entry = bpf_map_lookup_elem(&sl_dsr_v1, &key);
	if (!entry)
		return SL_NP_PASS;
	entry->last_seen_ns = bpf_ktime_get_ns();
	if ((pkt->tcp_flags & (SL_TCP_FIN | SL_TCP_RST)) && !(entry->flags & SL_NAT_F_CLOSING))
		entry->flags |= SL_NAT_F_CLOSING;
	/* A fragmented reply: its later fragments find the ports recorded here. */
	if (pkt->frag == SL_FRAG_FIRST)
		sl_frag_record(pkt);
	if (sl_rewrite_to(skb, SL_HOOK_TC, pkt, 0, entry->frontend_addr, entry->frontend_port))
		return -EFAULT;
	sl_count(SL_REASON_NP_DSR_REPLY);
	if (pkt->frag)
		sl_count(SL_REASON_NP_FRAGMENT_TRACKED);
	return SL_NP_PASS;
}

/* Node B, ingress: a TCP FIN or RST from the client of a recorded flow (node A forwards
 * every segment after the SYN as a plain DNAT, addressed to the backend) marks the flow
 * closing, as the backend's own FIN or RST does on egress: the controller's collection
 * then gives it the short timeout whichever side closed, also when the backend never
 * answers (a client's RST). Called for such segments only, which no frontend claimed. */
static __always_inline void sl_dsr_client_closing(const struct sl_packet *pkt)
{
	struct sl_dsr_entry *entry;
	struct sl_dsr_key key = {};

	sl_dsr_key_of_inbound(&key, pkt);
	entry = bpf_map_lookup_elem(&sl_dsr_v1, &key);
	if (entry && !(entry->flags & SL_NAT_F_CLOSING))
		entry->flags |= SL_NAT_F_CLOSING;
}

/* Node B, egress: a backend's ICMP error about a DSR flow quotes client -> backend, a
 * packet the client never sent; nodeport.c's sl_icmp_translate_view gives it the
 * frontend recorded here, as for a local backend's flow. */

#endif /* SWIFTLANE_DSR_H */

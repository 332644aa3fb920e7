// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * External traffic: NodePort, externalIPs and LoadBalancer VIPs on tc (clsact), IPv4 and
 * IPv6, SNAT mode, or DSR mode for remote backends (swiftlane/dsr.h).
 *
 * Attached to the node's external devices (those carrying its addresses):
 *  - ingress (sl_nodeport_ingress): a packet that is
 *      1. the reply of a translated flow (sl_nat_v2, dir REPLY) is translated back and
 *         forwarded to the client;
 *      2. a packet of a tracked flow (dir FORWARD) gets that flow's translation;
 *      3. a new flow to a frontend (externalIP / LB VIP by exact address; NodePort by the
 *         wildcard entry on a node address) gets a random backend of the frontend's
 *         active set. A backend reached through one of the external devices is remote:
 *         the flow is also source-NATed to that device's address (and a free port), so
 *         the reply comes back here. A local backend is reached without SNAT (the reply
 *         passes through this node anyway) and keeps the client's address;
 *    every translated packet is forwarded with bpf_fib_lookup + bpf_redirect(_neigh),
 *    bypassing the node's stack; one longer than its route's MTU is answered with ICMP
 *    fragmentation needed / ICMPv6 Packet Too Big instead (sl_too_big). A frontend
 *    without usable backend answers with ICMP port unreachable; one whose policy drops
 *    (eTP=Local without local endpoint) drops;
 *      4. an ICMP or ICMPv6 error about a tracked flow is translated for the host whose
 *         packet it quotes, client or backend, and forwarded (sl_icmp_translate_view).
 *  - egress (sl_nodeport_egress): replies of local backends, routed by the node's stack
 *    towards the client, get the frontend as their source, and their ICMP errors quote
 *    the frontend.
 * Everything else passes untouched (TC_ACT_OK), among it ICMPv6 Neighbour Discovery and
 * IPv6 packets with extension headers other than a lone fragment header or a DSR
 * carrier's destination options (dsr.h).
 *
 * IP fragments of TCP/UDP datagrams (IPv4; IPv6 with a fragment header as the first
 * extension header): a first fragment carries the L4 header and meets the steps above like
 * a whole packet (its L4 checksum covers the reassembled datagram, and the translation's
 * change to it is the same). When it is translated, its ports are recorded in sl_frag_v1
 * under (addresses, IP id, protocol), which every fragment of the datagram carries. A later
 * fragment takes the ports from there and goes through the same decisions (reply, tracked
 * flow; never a new flow), with only its addresses (and IPv4 header checksum) rewritten;
 * without a record (first fragment not seen yet, or not ours) it passes to the stack,
 * counted np_fragment_untracked. Egress records and translates reply fragments alike, DSR
 * replies on the backend's node too. XDP hands every fragment to tc.
 *
 * Malformed packets are dropped; every outcome is
 * counted (enum sl_reason). Each family is its own dataplane (kube-proxy A.7): an IPv6
 * packet only ever meets IPv6 frontends, backends and node addresses.
 *
 * Each SEC() entry point is thin: one worker returns 0 (pass), a negative errno (drop;
 * the reason is counted where it is found), or 1 with a forwarding decision that the
 * entry point carries out.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <linux/if_link.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "swiftlane/abi.h"
#include "swiftlane/maps.h"
#include "swiftlane/lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Source ports for SNAT, host order, inclusive. Set by the loader; the default stays
 * clear of Linux's ephemeral range (32768-60999) so node sockets and NAT never collide. */
const volatile __u16 sl_snat_port_min = 61000;
const volatile __u16 sl_snat_port_max = 65535;
/* A port held by a closed flow (FIN or RST seen) may be taken over once that flow has been
 * idle this long (ns). Set by the loader. */
const volatile __u64 sl_snat_reclaim_ns = 1000000000ULL;

/* Tries for a free SNAT port before the flow is dropped (bounded for the verifier). */
#define SL_SNAT_PORT_TRIES 16

/* last_seen_ns of a REPLY entry while one CPU hands its SNAT port to a new flow. */
#define SL_NAT_CLAIMING (~0ULL)

#define SL_AF_INET 2 /* include/linux/socket.h, not in the UAPI headers */
#define SL_AF_INET6 10
/* linux/icmp.h drags in libc headers (via linux/if.h) that a BPF build cannot use. */
#define SL_ICMP_DEST_UNREACH 3
#define SL_ICMP_PORT_UNREACH 3
#define SL_ICMP_FRAG_NEEDED 4
#define SL_IP_DF 0x4000
#define SL_IP_MF 0x2000
#define SL_IP_OFFSET 0x1fff
#define SL_IPPROTO_ICMPV6 58
#define SL_IPPROTO_DSTOPTS 60
#define SL_ICMPV6_DEST_UNREACH 1
#define SL_ICMPV6_PORT_UNREACH 4
#define SL_ICMPV6_PACKET_TOO_BIG 2

/* What the worker asks the entry point to do with a packet. */
enum sl_np_action {
	SL_NP_PASS = 0,     /* tc: TC_ACT_OK; XDP: XDP_PASS, the tc program decides */
	SL_NP_FORWARD = 1,  /* redirect out of `ifindex` (MACs written, or resolved by neigh) */
};

/* The hook a worker runs on: a constant after inlining, so each program keeps only the
 * helpers of its own type. tc works on skbs (helpers that pull non-linear data and handle
 * CHECKSUM_PARTIAL); XDP on the frame as received, with checksums updated by hand.
 *
 * XDP takes the fast part only: it translates and redirects packets of new and tracked
 * flows whose translated destination routes out of one of the configured devices with a
 * resolved neighbour. Everything else (ICMP errors to build or translate, local backends
 * behind a bridge, unresolved neighbours, packets for the stack) passes unchanged to the
 * tc program on the same device, which decides exactly as without XDP; pass outcomes are
 * therefore counted by tc, and by XDP only as np_xdp_pass_to_tc. */
#define SL_HOOK_TC 0
#define SL_HOOK_XDP 1

struct sl_np_forward {
	__u32 ifindex;
	__u8 resolve_neigh; /* 1: bpf_redirect_neigh to nexthop; 0: MACs written, bpf_redirect */
	__u8 ipv6;          /* the next hop is nexthop6 */
	__be32 nexthop;
	__be32 nexthop6[4];
};

/* The parsed packet: offsets from the start of the frame and the 5-tuple. IPv4 packets
 * have their addresses in saddr/daddr, IPv6 ones (ipv6 = 1) in saddr6/daddr6; ttl is the
 * hop limit, tos the traffic class, ihl_bytes the 40-byte fixed header and tot_len the
 * header plus payload length for IPv6. */
struct sl_packet {
	__u32 l3_off;
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be32 saddr6[4];
	__be32 daddr6[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 ttl;
	__u8 tos;
	__u8 ihl_bytes;
	__u16 tot_len;
	/* The length the egress MTU must hold: tot_len, or for a GSO skb (segmentation
	 * offload: several segments in one skb, sent or received) its segments' length
	 * (sl_gso_segment_len). */
	__u16 mtu_len;
	__u8 tcp_flags; /* FIN, SYN, RST, … (byte 13 of the TCP header); 0 for UDP */
	__u8 dont_fragment; /* IPv4 DF; IPv6 packets are never fragmented on the way */
	__u8 ipv6;
	__u8 frag;      /* SL_FRAG_* */
	__be32 frag_id; /* fragments: the IPv4 identification (zero-extended) or IPv6 one */
};

/* sl_packet.frag. A later fragment has no L4 header: its ports are the ones its first
 * fragment recorded in sl_frag_v1, and only its addresses are rewritten. */
#define SL_FRAG_NONE 0
#define SL_FRAG_FIRST 1 /* offset 0, more fragments follow: the L4 header is here */
#define SL_FRAG_LATER 2 /* offset > 0 */

#define SL_TCP_FIN 0x01
#define SL_TCP_SYN 0x02
#define SL_TCP_RST 0x04
#define SL_TCP_ACK 0x10

// MARK: - Context primitives

/* `len` bytes at `off` of the packet (XDP frame, or the linear part of the skb) for direct
 * access, or NULL when they are not all there or lie beyond the first 256 bytes. Every
 * header the datapath rewrites is there (Ethernet, an IPv4 header with options or an IPv6
 * one, the ports and checksum: tc pulls them into the linear part first, see sl_parse).
 * A helper call per field (bpf_xdp_store_bytes, bpf_skb_store_bytes and their copies) cost
 * more than the rest of the program: a translated packet rewrites about twenty fields.
 * Pointers are derived anew on every call, as helpers that may move the data (checksum
 * and resizing helpers) invalidate the old ones. The mask is in asm so the compiler keeps
 * it and the verifier sees the offset bounded. */
static __always_inline void *sl_pkt_ptr(void *ctx, int hook, __u32 off, __u32 len)
{
	void *data, *data_end;

	if (hook == SL_HOOK_XDP) {
		data = (void *)(long)((struct xdp_md *)ctx)->data;
		data_end = (void *)(long)((struct xdp_md *)ctx)->data_end;
	} else {
		data = (void *)(long)((struct __sk_buff *)ctx)->data;
		data_end = (void *)(long)((struct __sk_buff *)ctx)->data_end;
	}
	if (off > 255)
		return NULL;
	asm volatile("%0 &= 0xff" : "+r"(off));
	if (data + off + len > data_end)
		return NULL;
	return data + off;
}

/* Writes packet bytes. A direct write is what bpf_skb_store_bytes with no flags does (tc
 * programs that write directly get an skb unshared first, as the helper would), so both
 * ways leave the same packet; the helpers remain for bytes beyond sl_pkt_ptr's reach. */
static __always_inline int sl_store(void *ctx, int hook, __u32 off, const void *from, __u32 len)
{
	void *to = sl_pkt_ptr(ctx, hook, off, len);

	if (to) {
		__builtin_memcpy(to, from, len);
		return 0;
	}
	return hook == SL_HOOK_XDP ? bpf_xdp_store_bytes(ctx, off, (void *)from, len)
				   : bpf_skb_store_bytes(ctx, off, from, len, 0);
}

/* The 16-bit checksum at `off`. */
static __always_inline int sl_load_check(void *ctx, int hook, __u32 off, __u16 *check)
{
	__u16 *at = sl_pkt_ptr(ctx, hook, off, sizeof(*check));

	if (at) {
		*check = *at;
		return 0;
	}
	return hook == SL_HOOK_XDP ? bpf_xdp_load_bytes(ctx, off, check, sizeof(*check))
				   : bpf_skb_load_bytes(ctx, off, check, sizeof(*check));
}

/* The device the packet arrived on. */
static __always_inline __u32 sl_ingress_ifindex(void *ctx, int hook)
{
	struct __sk_buff *skb = ctx;

	if (hook == SL_HOOK_XDP)
		return ((struct xdp_md *)ctx)->ingress_ifindex;
	return skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
}

static __always_inline __u16 sl_csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* A checksum after a 2- or 4-byte field covered by it changed from `from` to `to`
 * (RFC 1624: HC' = ~(~HC + ~m + m')). Words are taken in memory order throughout, which
 * the one's complement sum does not mind. */
static __always_inline __u16 sl_csum_update(__u16 check, __be32 from, __be32 to, __u32 size)
{
	__u64 sum = (__u16)~check;

	sum += (__u16)~(__u16)from + (__u16)to;
	if (size == 4)
		sum += (__u16)~(__u16)(from >> 16) + (__u16)(to >> 16);
	return sl_csum_fold(sum);
}

/* Folds a field change into the checksum at csum_off. l4_flags as for bpf_l4_csum_replace:
 * 0 for the IPv4 header, BPF_F_PSEUDO_HDR for an address in the L4 pseudo header,
 * BPF_F_MARK_MANGLED_0 for UDP (a checksum of 0 means none: it stays 0, and a computed 0
 * is sent as 0xffff). tc uses the skb helpers, which also handle CHECKSUM_PARTIAL skbs;
 * XDP sees frames as a NIC delivers them, with complete checksums. */
static __always_inline int sl_csum_replace(void *ctx, int hook, int l4, __u32 csum_off, __be32 from, __be32 to,
					   __u32 size, __u64 l4_flags)
{
	__u16 check;

	/* tc's L4 checksum depends on how the skb carries it (CHECKSUM_PARTIAL holds only the
	 * pseudo header's sum, CHECKSUM_COMPLETE has skb->csum to keep): the helper knows. The
	 * IPv4 header checksum is always complete: plain arithmetic, as for XDP. */
	if (hook == SL_HOOK_TC && l4)
		return bpf_l4_csum_replace(ctx, csum_off, from, to, l4_flags | size);
	if (sl_load_check(ctx, hook, csum_off, &check))
		return -EFAULT;
	if ((l4_flags & BPF_F_MARK_MANGLED_0) && check == 0)
		return 0;
	check = sl_csum_update(check, from, to, size);
	if ((l4_flags & BPF_F_MARK_MANGLED_0) && check == 0)
		check = 0xffff;
	return sl_store(ctx, hook, csum_off, &check, sizeof(check));
}

/* Counts an outcome that hands the packet to the stack. From XDP the packet goes to the tc
 * program first, which counts it: XDP counts np_xdp_pass_to_tc instead. */
static __always_inline void sl_count_pass(int hook, __u32 reason)
{
	if (hook == SL_HOOK_TC)
		sl_count(reason);
}

// MARK: - Parsing

/* Bytes pulled into the linear area so headers can be read directly: Ethernet, the
 * longest IPv4 header (60) and a TCP header (20); this also covers an IPv6 header (40)
 * and a TCP header. */
#define SL_PULL_LEN (ETH_HLEN + 60 + 20)

#define SL_PARSED_ICMP 2

/* The TCP or UDP header at `l4` (pkt->proto says which), of which the IP header says
 * `l4_len` bytes follow it. A first fragment must hold its whole L4 header, and its UDP
 * length is the reassembled datagram's, longer than the fragment. Returns 0 or -errno
 * (drop, counted). */
static __always_inline int sl_parse_l4(void *l4, void *data_end, __u32 l4_len, struct sl_packet *pkt)
{
	if (pkt->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end) {
			sl_count(SL_REASON_NP_TRUNCATED);
			return -EINVAL;
		}
		if (tcp->doff < 5 || (__u32)tcp->doff * 4 > l4_len) {
			sl_count(SL_REASON_NP_MALFORMED);
			return -EINVAL;
		}
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end) {
			sl_count(SL_REASON_NP_TRUNCATED);
			return -EINVAL;
		}
		if (bpf_ntohs(udp->len) < sizeof(*udp) ||
		    (pkt->frag ? l4_len < sizeof(*udp) : bpf_ntohs(udp->len) > l4_len)) {
			sl_count(SL_REASON_NP_MALFORMED);
			return -EINVAL;
		}
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
	}
	return 0;
}

/* tc: a GSO skb (the sender's or the receiving device's segmentation offload) is longer
 * than any MTU; what must fit the egress device are its segments, each with the headers
 * and gso_size bytes of payload. */
static __always_inline void sl_gso_segment_len(struct __sk_buff *skb, struct sl_packet *pkt)
{
	__u32 segment, l4_hdr_len = sizeof(struct udphdr);
	__u8 data_offset;

	if (!skb->gso_size)
		return;
	/* The TCP header's length, read here: only GSO skbs need it. */
	if (pkt->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, pkt->l4_off + 12, &data_offset, sizeof(data_offset)))
			return;
		l4_hdr_len = (data_offset >> 4) * 4;
	}
	segment = pkt->l4_off - pkt->l3_off + l4_hdr_len + skb->gso_size;
	if (segment < pkt->mtu_len)
		pkt->mtu_len = (__u16)segment;
}

static __always_inline int sl_frag_ports(int hook, struct sl_packet *pkt);

/* The L4 part of a fragment's parse (pkt->frag set, addresses and id filled): a first
 * fragment's header is parsed as a whole packet's, a later fragment gets its ports from
 * the first one's record. XDP validates a first fragment as tc would (the same drops)
 * and passes every fragment on to tc: recording and translating fragments is tc's, so the
 * fragment map is written and read by one hook only. Returns as sl_parse. */
static __always_inline int sl_parse_fragment(int hook, void *l4, void *data_end, __u32 l4_len, struct sl_packet *pkt)
{
	int rc = 0;

	if (pkt->frag == SL_FRAG_FIRST)
		rc = sl_parse_l4(l4, data_end, l4_len, pkt);
	if (rc || hook == SL_HOOK_XDP)
		return rc ? rc : 1;
	if (pkt->frag == SL_FRAG_LATER)
		return sl_frag_ports(hook, pkt);
	return 0;
}

/* An IPv6 fragment header (RFC 8200 section 4.5). */
struct sl_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3, bit 0: more fragments */
	__be32 id;
};

#define SL_IPV6_FRAG_OFFSET 0xfff8
#define SL_IPV6_FRAG_MORE 0x0001

/* The packet's IPv6 fields; the L4 header follows the fixed header (the fragment parse
 * moves it past the fragment header). */
static __always_inline void sl_fill6(struct sl_packet *pkt, const struct ipv6hdr *ip6, __u32 payload, __u8 proto)
{
	pkt->ipv6 = 1;
	pkt->l3_off = ETH_HLEN;
	pkt->l4_off = ETH_HLEN + sizeof(*ip6);
	__builtin_memcpy(pkt->saddr6, &ip6->saddr, sizeof(pkt->saddr6));
	__builtin_memcpy(pkt->daddr6, &ip6->daddr, sizeof(pkt->daddr6));
	pkt->proto = proto;
	pkt->ttl = ip6->hop_limit;
	pkt->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	pkt->ihl_bytes = sizeof(*ip6);
	pkt->tot_len = (__u16)(sizeof(*ip6) + payload);
	pkt->mtu_len = pkt->tot_len;
}

/* A fragment header right after the fixed header (sl_parse6 checked that header and the
 * payload length): TCP or UDP behind it is parsed with the L4 header 8 bytes further; a
 * fragment of anything else passes (np_fragment; another extension header:
 * np_ipv6_ext_header). An atomic fragment (offset 0, no more fragments, RFC 6946) is a
 * whole datagram. Returns as sl_parse. */
static __always_inline int sl_parse6_fragment(int hook, struct ipv6hdr *ip6, void *data_end, __u32 payload,
					      struct sl_packet *pkt)
{
	struct sl_ipv6_frag_hdr *fh = (void *)(ip6 + 1);
	__u16 frag;

	if ((void *)(fh + 1) > data_end) {
		sl_count(SL_REASON_NP_TRUNCATED);
		return -EINVAL;
	}
	if (payload < sizeof(*fh)) {
		sl_count(SL_REASON_NP_MALFORMED);
		return -EINVAL;
	}
	switch (fh->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		break;
	case 0:
	case 43:
	case 44:
	case 51:
	case 60:
	case 135:
	case 139:
	case 140:
		sl_count_pass(hook, SL_REASON_NP_IPV6_EXT_HEADER);
		return 1;
	default:
		sl_count_pass(hook, SL_REASON_NP_FRAGMENT);
		return 1;
	}
	sl_fill6(pkt, ip6, payload, fh->nexthdr);
	pkt->l4_off += sizeof(*fh);
	frag = bpf_ntohs(fh->frag_off);
	if (!(frag & (SL_IPV6_FRAG_OFFSET | SL_IPV6_FRAG_MORE)))
		return sl_parse_l4(fh + 1, data_end, payload - sizeof(*fh), pkt);
	pkt->frag = (frag & SL_IPV6_FRAG_OFFSET) ? SL_FRAG_LATER : SL_FRAG_FIRST;
	pkt->frag_id = fh->id;
	return sl_parse_fragment(hook, fh + 1, data_end, payload - sizeof(*fh), pkt);
}

/* The IPv6 DSR carrier (dsr.h): a Destination Options header right after the fixed
 * header, holding one option with the frontend. Option type 0x1e is one of RFC 4727's
 * experimental types; its top bits 00 tell a host that does not know it to skip it, and
 * bit 3 clear that it does not change on the way. Its data: address, port, 2 zero bytes,
 * which pad the header to 24 bytes (3 units of 8). */
#define SL_DSR_OPT6_TYPE 0x1e
#define SL_DSR_OPT6_LEN 24

struct sl_dsr_opt6 {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-byte units after the first: 2 */
	__u8 type;
	__u8 len;    /* 20 */
	__be32 addr[4];
	__be16 port;
	__u16 pad;
};

/* Whether a parsed IPv6 packet has a DSR carrier: the only header the parser accepts
 * that puts the L4 header 24 bytes past the fixed one (a fragment header: 8). A field of
 * its own in struct sl_packet would cost stack the ingress path does not have. */
static __always_inline int sl_dsr_carrier6(const struct sl_packet *pkt)
{
	return pkt->ipv6 && pkt->l4_off == pkt->l3_off + sizeof(struct ipv6hdr) + SL_DSR_OPT6_LEN;
}

/* Destination options first after the fixed header: a DSR carrier before TCP or UDP is
 * parsed (tc only: taking it out resizes the packet; XDP passes it), with the L4 header
 * 24 bytes further (sl_dsr_carrier6 tells it by that offset). A carrier whose lengths
 * are wrong is dropped (np_dsr_malformed); other destination options pass as extension
 * headers. */
static __always_inline int sl_parse6_dstopts(int hook, struct ipv6hdr *ip6, void *data_end, __u32 payload,
					     struct sl_packet *pkt)
{
	struct sl_dsr_opt6 *opt = (void *)(ip6 + 1);

	if ((void *)opt + 4 > data_end || opt->type != SL_DSR_OPT6_TYPE) {
		sl_count_pass(hook, SL_REASON_NP_IPV6_EXT_HEADER);
		return 1;
	}
	if ((void *)(opt + 1) > data_end || payload < sizeof(*opt) || opt->hdrlen != SL_DSR_OPT6_LEN / 8 - 1 ||
	    opt->len != SL_DSR_OPT6_LEN - 4 || (opt->nexthdr != IPPROTO_TCP && opt->nexthdr != IPPROTO_UDP)) {
		sl_count(SL_REASON_NP_DSR_MALFORMED);
		return -EINVAL;
	}
	if (hook == SL_HOOK_XDP)
		return 1;
	sl_fill6(pkt, ip6, payload, opt->nexthdr);
	pkt->l4_off += sizeof(*opt);
	return sl_parse_l4(opt + 1, data_end, payload - sizeof(*opt), pkt);
}

/* IPv6 after an Ethernet header at `ip6`. TCP, UDP and ICMPv6 directly after the fixed
 * header are ours, and TCP and UDP after a fragment header that is the first extension
 * header; other extension headers and every other next header pass to the stack,
 * counted. Returns as sl_parse. */
static __always_inline int sl_parse6(int hook, struct ipv6hdr *ip6, void *data_end, __u32 len, struct sl_packet *pkt)
{
	__u32 payload;

	if ((void *)(ip6 + 1) > data_end) {
		sl_count(SL_REASON_NP_TRUNCATED);
		return -EINVAL;
	}
	if (ip6->version != 6) {
		sl_count(SL_REASON_NP_MALFORMED);
		return -EINVAL;
	}
	payload = bpf_ntohs(ip6->payload_len);
	if (ETH_HLEN + sizeof(*ip6) + payload > len) {
		sl_count(SL_REASON_NP_MALFORMED);
		return -EINVAL;
	}
	switch (ip6->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case SL_IPPROTO_ICMPV6:
		break;
	case 44: /* fragment */
		return sl_parse6_fragment(hook, ip6, data_end, payload, pkt);
	case SL_IPPROTO_DSTOPTS:
		return sl_parse6_dstopts(hook, ip6, data_end, payload, pkt);
	case 0:   /* hop-by-hop options */
	case 43:  /* routing */
	case 51:  /* authentication header */
	case 135: /* mobility */
	case 139: /* host identity protocol */
	case 140: /* shim6 */
		sl_count_pass(hook, SL_REASON_NP_IPV6_EXT_HEADER);
		return 1;
	default:
		sl_count_pass(hook, SL_REASON_NP_NOT_IPV4);
		return 1;
	}
	sl_fill6(pkt, ip6, payload, ip6->nexthdr);
	/* ICMPv6: the caller looks at errors about tracked flows (and passes the rest,
	 * Neighbour Discovery among it); not counted here. */
	if (pkt->proto == SL_IPPROTO_ICMPV6)
		return SL_PARSED_ICMP;
	return sl_parse_l4(ip6 + 1, data_end, payload, pkt);
}

static __always_inline void sl_fill4(struct sl_packet *pkt, const struct iphdr *ip, __u32 ihl_bytes)
{
	pkt->l3_off = ETH_HLEN;
	pkt->l4_off = ETH_HLEN + ihl_bytes;
	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->ttl = ip->ttl;
	pkt->tos = ip->tos;
	pkt->ihl_bytes = (__u8)ihl_bytes;
	pkt->tot_len = bpf_ntohs(ip->tot_len);
	pkt->mtu_len = pkt->tot_len;
	pkt->dont_fragment = (bpf_ntohs(ip->frag_off) & SL_IP_DF) != 0;
}

/* Parses Ethernet / IPv4 / TCP|UDP with a bounds check before every read.
 * Returns 0 (parsed), 1 (not ours: pass, counted), SL_PARSED_ICMP (an ICMP message whose
 * IPv4 header was checked, not counted), or -errno (drop, counted). A fragment is parsed
 * by sl_parse_fragment: 0 for a first fragment (pkt->frag says so) and for a later one
 * whose ports were recorded, which then fill sport and dport. Whole packets never reach
 * that code: the fragment test is the frag_off branch. */
static __always_inline int sl_parse(void *ctx, int hook, struct sl_packet *pkt)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 ihl_bytes, len;
	__u16 frag;

	if (hook == SL_HOOK_XDP) {
		struct xdp_md *xdp = ctx;

		/* Single-buffer XDP (no frags): the frame is linear. */
		data = (void *)(long)xdp->data;
		data_end = (void *)(long)xdp->data_end;
		len = (__u32)(data_end - data);
	} else {
		struct __sk_buff *skb = ctx;

		/* tc may see a non-linear skb: pull what the parser reads (at most the frame).
		 * Only when needed: the helper call costs on every packet, and most skbs
		 * already hold their headers in the linear part. */
		__u32 want = skb->len < SL_PULL_LEN ? skb->len : SL_PULL_LEN;

		if ((long)skb->data_end - (long)skb->data < (long)want)
			bpf_skb_pull_data(skb, want);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		len = skb->len;
	}

	eth = data;
	if ((void *)(eth + 1) > data_end) {
		sl_count(SL_REASON_NP_TRUNCATED);
		return -EINVAL;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return sl_parse6(hook, (void *)(eth + 1), data_end, len, pkt);
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		sl_count_pass(hook, SL_REASON_NP_NOT_IPV4);
		return 1;
	}
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end) {
		sl_count(SL_REASON_NP_TRUNCATED);
		return -EINVAL;
	}
	if (ip->version != 4 || ip->ihl < 5) {
		sl_count(SL_REASON_NP_MALFORMED);
		return -EINVAL;
	}
	ihl_bytes = (__u32)ip->ihl * 4;
	/* tot_len must cover the header and fit in the frame (padding after it is fine). */
	if (bpf_ntohs(ip->tot_len) < ihl_bytes || ETH_HLEN + (__u32)bpf_ntohs(ip->tot_len) > len) {
		sl_count(SL_REASON_NP_MALFORMED);
		return -EINVAL;
	}
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_ICMP) {
		sl_count_pass(hook, SL_REASON_NP_NOT_IPV4);
		return 1;
	}
	frag = bpf_ntohs(ip->frag_off);
	if (frag & (SL_IP_MF | SL_IP_OFFSET)) {
		/* ICMP fragments are the stack's (an ICMP error is never fragmented). */
		if (ip->protocol == IPPROTO_ICMP) {
			sl_count_pass(hook, SL_REASON_NP_FRAGMENT);
			return 1;
		}
		pkt->frag = (frag & SL_IP_OFFSET) ? SL_FRAG_LATER : SL_FRAG_FIRST;
		pkt->frag_id = ip->id;
		sl_fill4(pkt, ip, ihl_bytes);
		return sl_parse_fragment(hook, (void *)ip + ihl_bytes, data_end, pkt->tot_len - ihl_bytes, pkt);
	}
	sl_fill4(pkt, ip, ihl_bytes);

	/* ICMP: the caller looks at errors about tracked flows; not counted here. */
	if (pkt->proto == IPPROTO_ICMP)
		return SL_PARSED_ICMP;
	/* The verifier tracks ihl_bytes as 20..60 (a 4-bit field times 4), so one comparison
	 * bounds every read of the L4 header. */
	return sl_parse_l4((void *)ip + ihl_bytes, data_end, pkt->tot_len - ihl_bytes, pkt);
}

// MARK: - Addresses

static __always_inline void sl_v4_mapped(__be32 out[4], __be32 addr)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0x0000ffff);
	out[3] = addr;
}

/* The packet's source (which = 0) or destination (which = 1) as the maps store it. */
static __always_inline void sl_addr_of(__be32 out[4], const struct sl_packet *pkt, int which)
{
	if (pkt->ipv6)
		__builtin_memcpy(out, which ? pkt->daddr6 : pkt->saddr6, 16);
	else
		sl_v4_mapped(out, which ? pkt->daddr : pkt->saddr);
}

static __always_inline int sl_addr_equal(const __be32 a[4], const __be32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void sl_nat_key_of(struct sl_nat_key *key, const struct sl_packet *pkt, __u8 dir)
{
	sl_addr_of(key->saddr, pkt, 0);
	sl_addr_of(key->daddr, pkt, 1);
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->proto = pkt->proto;
	key->dir = dir;
	key->pad = 0;
}

// MARK: - Fragments

static __always_inline void sl_frag_key_of(struct sl_frag_key *key, const struct sl_packet *pkt)
{
	sl_addr_of(key->saddr, pkt, 0);
	sl_addr_of(key->daddr, pkt, 1);
	key->id = pkt->frag_id;
	key->proto = pkt->proto;
	key->pad[0] = 0;
	key->pad[1] = 0;
	key->pad[2] = 0;
}

/* A later fragment's ports, from its first fragment's record. None (the first fragment
 * came later or not through here, or was not translated): the stack gets it. */
static __always_inline int sl_frag_ports(int hook, struct sl_packet *pkt)
{
	const struct sl_frag_entry *ports;
	struct sl_frag_key key;

	sl_frag_key_of(&key, pkt);
	ports = bpf_map_lookup_elem(&sl_frag_v1, &key);
	if (!ports) {
		sl_count_pass(hook, SL_REASON_NP_FRAGMENT_UNTRACKED);
		return 1;
	}
	pkt->sport = ports->sport;
	pkt->dport = ports->dport;
	return 0;
}

/* Called with a first fragment about to be translated, before the rewrite: its datagram's
 * later fragments carry the same addresses, id and protocol, and find the ports here.
 * Only translated datagrams are recorded, so the node's own fragmented traffic does not
 * evict them. A failed write leaves the later fragments to the stack (counted there). */
static __always_inline void sl_frag_record(const struct sl_packet *pkt)
{
	struct sl_frag_entry ports = { .sport = pkt->sport, .dport = pkt->dport };
	struct sl_frag_key key;

	sl_frag_key_of(&key, pkt);
	bpf_map_update_elem(&sl_frag_v1, &key, &ports, BPF_ANY);
}

// MARK: - Rewriting

static __always_inline __u32 sl_l4_csum_off(const struct sl_packet *pkt)
{
	return pkt->l4_off + (pkt->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
}

/* An IPv4 UDP checksum of 0 means "none" and must stay 0 (BPF_F_MARK_MANGLED_0). */
static __always_inline __u64 sl_l4_csum_flags(const struct sl_packet *pkt)
{
	return pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Replaces the source (which = 0) or destination (which = 1) address and port, fixing
 * the IPv4 header checksum and the L4 checksum (whose pseudo header covers the address).
 * UDP and TCP keep their ports at the same offsets. A later fragment has no L4 header:
 * only its address and header checksum change (the first fragment's L4 checksum update
 * covers the whole datagram), and so in every rewrite below. */
static __always_inline int sl_rewrite(void *ctx, int hook, struct sl_packet *pkt, int which, __be32 addr, __be16 port)
{
	__u32 addr_off = pkt->l3_off + (which ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 port_off = pkt->l4_off + (which ? offsetof(struct tcphdr, dest) : offsetof(struct tcphdr, source));
	__be32 old_addr = which ? pkt->daddr : pkt->saddr;
	__be16 old_port = which ? pkt->dport : pkt->sport;
	__u32 csum_off = sl_l4_csum_off(pkt);
	__u64 l4_flags = sl_l4_csum_flags(pkt);

	if (old_addr != addr) {
		if ((pkt->frag != SL_FRAG_LATER &&
		     sl_csum_replace(ctx, hook, 1, csum_off, old_addr, addr, sizeof(addr), l4_flags | BPF_F_PSEUDO_HDR)) ||
		    sl_csum_replace(ctx, hook, 0, pkt->l3_off + offsetof(struct iphdr, check), old_addr, addr, sizeof(addr), 0) ||
		    sl_store(ctx, hook, addr_off, &addr, sizeof(addr)))
			goto fail;
	}
	if (old_port != port && pkt->frag != SL_FRAG_LATER) {
		if (sl_csum_replace(ctx, hook, 1, csum_off, old_port, port, sizeof(port), l4_flags) ||
		    sl_store(ctx, hook, port_off, &port, sizeof(port)))
			goto fail;
	}
	if (which) {
		pkt->daddr = addr;
		pkt->dport = port;
	} else {
		pkt->saddr = addr;
		pkt->sport = port;
	}
	return 0;
fail:
	sl_count(SL_REASON_NP_REWRITE_FAILED);
	return -EFAULT;
}

/* Folds a checksum difference (a one's-complement sum of ~old + new words, such as
 * bpf_csum_diff returns) into the L4 checksum at csum_off; l4_flags as for
 * sl_csum_replace, BPF_F_PSEUDO_HDR included when the fields are in the pseudo header. */
static __always_inline int sl_csum_add_flags(void *ctx, int hook, __u32 csum_off, __u32 diff, __u64 l4_flags)
{
	__u16 check;

	if (hook == SL_HOOK_TC)
		return bpf_l4_csum_replace(ctx, csum_off, 0, diff, l4_flags);
	if (sl_load_check(ctx, hook, csum_off, &check))
		return -EFAULT;
	if ((l4_flags & BPF_F_MARK_MANGLED_0) && check == 0)
		return 0;
	check = sl_csum_fold((__u16)~check + (diff & 0xffff) + (diff >> 16));
	if ((l4_flags & BPF_F_MARK_MANGLED_0) && check == 0)
		check = 0xffff;
	return sl_store(ctx, hook, csum_off, &check, sizeof(check));
}

static __always_inline int sl_csum_add(void *ctx, int hook, __u32 csum_off, __u32 diff, __u64 l4_flags)
{
	return sl_csum_add_flags(ctx, hook, csum_off, diff, l4_flags | BPF_F_PSEUDO_HDR);
}

/* sl_rewrite for IPv6: no header checksum, the 16-byte address changes the L4 checksum
 * through the pseudo header. (A UDP checksum is mandatory over IPv6; one of 0 is left
 * alone all the same, as the receiver drops it either way.) */
static __always_inline int sl_rewrite6(void *ctx, int hook, struct sl_packet *pkt, int which, const __be32 addr[4],
				       __be16 port)
{
	__u32 addr_off = pkt->l3_off + (which ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
	__u32 port_off = pkt->l4_off + (which ? offsetof(struct tcphdr, dest) : offsetof(struct tcphdr, source));
	__be32 *old_addr = which ? pkt->daddr6 : pkt->saddr6;
	__be16 old_port = which ? pkt->dport : pkt->sport;
	__u32 csum_off = sl_l4_csum_off(pkt);
	__u64 l4_flags = sl_l4_csum_flags(pkt);
	__be32 new_addr[4];
	__s64 diff;

	__builtin_memcpy(new_addr, addr, sizeof(new_addr));
	if (!sl_addr_equal(old_addr, new_addr)) {
		if (pkt->frag != SL_FRAG_LATER) {
			diff = bpf_csum_diff(old_addr, sizeof(new_addr), new_addr, sizeof(new_addr), 0);
			if (diff < 0 || sl_csum_add(ctx, hook, csum_off, (__u32)diff, l4_flags))
				goto fail;
		}
		if (sl_store(ctx, hook, addr_off, new_addr, sizeof(new_addr)))
			goto fail;
		__builtin_memcpy(old_addr, new_addr, sizeof(new_addr));
	}
	if (old_port != port && pkt->frag != SL_FRAG_LATER) {
		if (sl_csum_replace(ctx, hook, 1, csum_off, old_port, port, sizeof(port), l4_flags) ||
		    sl_store(ctx, hook, port_off, &port, sizeof(port)))
			goto fail;
		if (which)
			pkt->dport = port;
		else
			pkt->sport = port;
	}
	return 0;
fail:
	sl_count(SL_REASON_NP_REWRITE_FAILED);
	return -EFAULT;
}

/* The one's-complement difference (~old + new, per 16-bit word) of a 4-byte field. */
static __always_inline __u64 sl_word_diff4(__be32 from, __be32 to)
{
	return (__u16)~(__u16)from + (__u64)(__u16)to + (__u16)~(__u16)(from >> 16) + (__u16)(to >> 16);
}

static __always_inline __u32 sl_fold32(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)sum;
}

/* IPv4, both ends at once: new source and destination addresses and ports. The two
 * addresses change the L4 checksum through the pseudo header in one update and the IPv4
 * header checksum in another, the two ports the L4 checksum in a third; each pair of fields
 * is stored with one write. (sl_rewrite does a field at a time: three times the checksum
 * updates, and for tc each L4 one is a helper call.) */
static __always_inline int sl_rewrite4_both(void *ctx, int hook, struct sl_packet *pkt, __be32 saddr, __be16 sport,
					    __be32 daddr, __be16 dport)
{
	__u32 csum_off = sl_l4_csum_off(pkt);
	__u64 l4_flags = sl_l4_csum_flags(pkt);
	__u32 addr_diff = sl_fold32(sl_word_diff4(pkt->saddr, saddr) + sl_word_diff4(pkt->daddr, daddr));
	__u32 port_diff = sl_fold32((__u16)~(__u16)pkt->sport + (__u64)(__u16)sport + (__u16)~(__u16)pkt->dport +
				    (__u16)dport);
	__be32 addrs[2] = { saddr, daddr };
	__be16 ports[2] = { sport, dport };
	__u16 check;

	if (saddr != pkt->saddr || daddr != pkt->daddr) {
		if ((pkt->frag != SL_FRAG_LATER && sl_csum_add(ctx, hook, csum_off, addr_diff, l4_flags)) ||
		    sl_load_check(ctx, hook, pkt->l3_off + offsetof(struct iphdr, check), &check))
			goto fail;
		check = sl_csum_fold((__u16)~check + (__u64)(addr_diff & 0xffff) + (addr_diff >> 16));
		if (sl_store(ctx, hook, pkt->l3_off + offsetof(struct iphdr, check), &check, sizeof(check)) ||
		    sl_store(ctx, hook, pkt->l3_off + offsetof(struct iphdr, saddr), addrs, sizeof(addrs)))
			goto fail;
	}
	if ((sport != pkt->sport || dport != pkt->dport) && pkt->frag != SL_FRAG_LATER) {
		if (sl_csum_add_flags(ctx, hook, csum_off, port_diff, l4_flags) ||
		    sl_store(ctx, hook, pkt->l4_off, ports, sizeof(ports)))
			goto fail;
	}
	pkt->saddr = saddr;
	pkt->daddr = daddr;
	pkt->sport = sport;
	pkt->dport = dport;
	return 0;
fail:
	sl_count(SL_REASON_NP_REWRITE_FAILED);
	return -EFAULT;
}

/* Replaces the source (which = 0) or destination (which = 1) with a map-stored address
 * (v4-mapped for IPv4) and port, in the packet's family. */
static __always_inline int sl_rewrite_to(void *ctx, int hook, struct sl_packet *pkt, int which, const __be32 addr[4],
					 __be16 port)
{
	if (pkt->ipv6)
		return sl_rewrite6(ctx, hook, pkt, which, addr, port);
	return sl_rewrite(ctx, hook, pkt, which, addr[3], port);
}

/* IPv6: asks the FIB where a packet of `pkt`'s kind from saddr to daddr goes. */
static __always_inline int sl_fib6(void *ctx, int hook, const struct sl_packet *pkt, const __be32 saddr[4],
				   const __be32 daddr[4], struct bpf_fib_lookup *fib, int check_mtu)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = SL_AF_INET6;
	fib->l4_protocol = pkt->proto;
	fib->tot_len = check_mtu ? pkt->mtu_len : 0;
	__builtin_memcpy(fib->ipv6_src, saddr, sizeof(fib->ipv6_src));
	__builtin_memcpy(fib->ipv6_dst, daddr, sizeof(fib->ipv6_dst));
	fib->ifindex = sl_ingress_ifindex(ctx, hook);
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* Asks the FIB where a packet of `pkt`'s kind from saddr to daddr goes (fills *fib).
 * With check_mtu the route's MTU (path-MTU exceptions included) must hold pkt->mtu_len,
 * else the answer is BPF_FIB_LKUP_RET_FRAG_NEEDED with fib->mtu_result, and no device.
 * Without, only the device is wanted: XDP checks nothing, and tc at most the skb against
 * the device's MTU, which may answer FRAG_NEEDED with the device filled in. */
static __always_inline int sl_fib(void *ctx, int hook, const struct sl_packet *pkt, __be32 saddr, __be32 daddr,
				  struct bpf_fib_lookup *fib, int check_mtu)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = SL_AF_INET;
	fib->tos = pkt->tos;
	fib->l4_protocol = pkt->proto;
	fib->tot_len = check_mtu ? pkt->mtu_len : 0;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = sl_ingress_ifindex(ctx, hook);
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* Carries out the FIB's answer `rc` for the (translated) packet: on success the MACs are
 * written and *fwd names the egress device. Returns 1 (forward), 0 (the destination is
 * local: pass to the stack) or -errno (drop, counted). Decrements the TTL as a router
 * does. */
static __always_inline int sl_forward(void *ctx, int hook, struct sl_packet *pkt, const struct bpf_fib_lookup *fib,
				      int rc, struct sl_np_forward *fwd)
{
	__u32 ttl_off = pkt->l3_off + offsetof(struct iphdr, ttl);
	__be16 old_word, new_word;
	__u8 ttl;

	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return 0;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		sl_count(SL_REASON_NP_FIB_FAILED);
		return -EHOSTUNREACH;
	}
	if (pkt->ttl <= 1) {
		sl_count(SL_REASON_NP_TTL_EXCEEDED);
		return -ETIMEDOUT;
	}
	ttl = pkt->ttl - 1;
	if (pkt->ipv6) {
		/* The hop limit; IPv6 has no header checksum. */
		if (sl_store(ctx, hook, pkt->l3_off + offsetof(struct ipv6hdr, hop_limit), &ttl, sizeof(ttl))) {
			sl_count(SL_REASON_NP_REWRITE_FAILED);
			return -EFAULT;
		}
		goto macs;
	}
	/* TTL and protocol form one 16-bit word of the header checksum. */
	old_word = bpf_htons(((__u16)pkt->ttl << 8) | pkt->proto);
	new_word = bpf_htons(((__u16)ttl << 8) | pkt->proto);
	if (sl_csum_replace(ctx, hook, 0, pkt->l3_off + offsetof(struct iphdr, check), old_word, new_word,
			    sizeof(new_word), 0) ||
	    sl_store(ctx, hook, ttl_off, &ttl, sizeof(ttl))) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -EFAULT;
	}
macs:
	pkt->ttl = ttl;
	fwd->ifindex = fib->ifindex;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The kernel resolves the neighbour (ARP, IPv6 ND) and fills the MACs on transmit
		 * (tc only: XDP hands such packets to tc before translating them). */
		fwd->resolve_neigh = 1;
		fwd->ipv6 = pkt->ipv6;
		if (pkt->ipv6)
			__builtin_memcpy(fwd->nexthop6, fib->ipv6_dst, sizeof(fwd->nexthop6));
		else
			fwd->nexthop = fib->ipv4_dst;
		return 1;
	}
	if (sl_store(ctx, hook, offsetof(struct ethhdr, h_dest), fib->dmac, ETH_ALEN) ||
	    sl_store(ctx, hook, offsetof(struct ethhdr, h_source), fib->smac, ETH_ALEN)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -EFAULT;
	}
	fwd->resolve_neigh = 0;
	return 1;
}

/* Routes the (translated) packet: sl_forward of the FIB's answer for its addresses. */
static __always_inline int sl_route(void *ctx, int hook, struct sl_packet *pkt, struct sl_np_forward *fwd)
{
	struct bpf_fib_lookup fib;
	int rc = pkt->ipv6 ? sl_fib6(ctx, hook, pkt, pkt->saddr6, pkt->daddr6, &fib, 1)
			   : sl_fib(ctx, hook, pkt, pkt->saddr, pkt->daddr, &fib, 1);

	return sl_forward(ctx, hook, pkt, &fib, rc, fwd);
}

/* The egress device of a backend (a map-stored address), in the packet's family. */
static __always_inline __u32 sl_backend_egress(void *ctx, int hook, const struct sl_packet *pkt, const __be32 addr[4])
{
	struct bpf_fib_lookup fib;
	int rc = pkt->ipv6 ? sl_fib6(ctx, hook, pkt, pkt->saddr6, addr, &fib, 0)
			   : sl_fib(ctx, hook, pkt, pkt->saddr, addr[3], &fib, 0);

	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return fib.ifindex;
	default:
		return 0;
	}
}

// MARK: - Reject

/* The ICMP or ICMPv6 error header (type, code, checksum, 4 unused bytes). */
struct sl_icmp_head {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
};

/* The port unreachables this node builds are rate limited node-wide, as the kernel
 * limits its own errors (net.ipv4.icmp_msgs_per_sec / icmp_msgs_burst): a flood of
 * packets to a frontend without endpoints must not become a flood of errors, which
 * spoofed sources would aim at a third party. A token bucket of sl_icmp_errors_burst
 * tokens refilled at sl_icmp_errors_per_sec (0: no limit), set by the loader. One bucket
 * for all CPUs, updated without a lock like the kernel's: under contention a few more
 * errors than the rate may leave. An error over the limit is not sent and its packet is
 * dropped (np_icmp_rate_limited). Fragmentation needed and Packet Too Big are not
 * limited, as the kernel does not limit them ("don't limit PMTU discovery"): each
 * answers one oversized packet and is smaller than it, and a sender kept from learning
 * the path MTU would retransmit into the same black hole. Errors about tracked flows that
 * this node only translates are not its own and are not limited either. */
const volatile __u32 sl_icmp_errors_per_sec = 1000;
const volatile __u32 sl_icmp_errors_burst = 50;

struct sl_icmp_budget {
	__u64 refilled_ns; /* the time the tokens were last counted up to */
	__s64 tokens;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_icmp_budget);
} sl_icmp_budget SEC(".maps");

/* Whether one more error may be sent now; takes its token. */
static __always_inline int sl_icmp_error_allowed(void)
{
	struct sl_icmp_budget *budget;
	__u64 now, elapsed, earned;
	__s64 tokens;

	if (!sl_icmp_errors_per_sec)
		return 1;
	budget = bpf_map_lookup_elem(&sl_icmp_budget, &(__u32){ 0 });
	if (!budget)
		return 1;
	now = bpf_ktime_get_ns();
	elapsed = now - budget->refilled_ns;
	/* Past the time the bucket takes to fill, it is full; below it, elapsed * rate stays
	 * under burst * 1e9, far from overflowing. */
	if (elapsed >= (__u64)sl_icmp_errors_burst * 1000000000ULL / sl_icmp_errors_per_sec)
		earned = sl_icmp_errors_burst;
	else
		earned = elapsed * sl_icmp_errors_per_sec / 1000000000ULL;
	if (earned) {
		tokens = budget->tokens + (__s64)earned;
		budget->tokens = tokens > sl_icmp_errors_burst ? sl_icmp_errors_burst : tokens;
		/* Time for whole tokens only: the remainder counts towards the next one. */
		budget->refilled_ns = earned >= sl_icmp_errors_burst
					      ? now
					      : budget->refilled_ns + earned * 1000000000ULL / sl_icmp_errors_per_sec;
	}
	if (budget->tokens <= 0) {
		sl_count(SL_REASON_NP_ICMP_RATE_LIMITED);
		return 0;
	}
	__sync_fetch_and_add(&budget->tokens, -1);
	return 1;
}

/* Sends the error built in place of the packet back to the previous hop, out of the
 * device it came in on: the MACs (`macs`, as received) swapped; `reason` counted. */
static __always_inline int sl_reject_back(struct __sk_buff *skb, const __u8 macs[2 * ETH_ALEN], struct sl_np_forward *fwd,
					  __u32 reason)
{
	if (bpf_skb_store_bytes(skb, 0, macs + ETH_ALEN, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, macs, ETH_ALEN, 0)) {
		sl_count(SL_REASON_NP_REJECT_FAILED);
		return -EINVAL;
	}
	fwd->ifindex = skb->ifindex;
	fwd->resolve_neigh = 0;
	sl_count(reason);
	return 1;
}

/* The ICMP error as written after the Ethernet header: new IPv4 header, ICMP header,
 * then the offending packet's IPv4 header (without options) and the start of its L4
 * header (RFC 792 needs 8 bytes; for TCP the whole 20-byte header is quoted so that a
 * CHECKSUM_PARTIAL skb's checksum offset still falls inside the packet). */
struct sl_icmp_error {
	struct iphdr ip;
	struct sl_icmp_head icmp;
	struct iphdr quoted_ip;
	__u8 quoted_l4[20];
};

/* Turns the packet into an ICMP error back to its sender, sent out of the device it came
 * in on (MACs swapped): destination unreachable with `code` (port unreachable, or
 * fragmentation needed with the next hop's MTU in `mtu`), from the packet's destination.
 * Packets with IP options are not answered (their quoted header would not fit the fixed
 * layout): dropped, counted. `reason` is counted when the error is sent. */
static __always_inline int sl_icmp_back(struct __sk_buff *skb, struct sl_packet *pkt, __u8 code, __u16 mtu,
					__u32 reason, struct sl_np_forward *fwd)
{
	struct sl_icmp_error msg = {};
	__u8 macs[2 * ETH_ALEN];
	__u32 quoted_l4 = pkt->proto == IPPROTO_TCP ? 20 : 8;
	__u32 msg_len = sizeof(msg) - sizeof(msg.quoted_l4) + quoted_l4;
	__s64 sum;

	if (pkt->ihl_bytes != sizeof(struct iphdr))
		goto fail;
	if (reason == SL_REASON_NP_REJECT && !sl_icmp_error_allowed())
		return -EBUSY;
	/* The parser checked that the L4 header (20 bytes TCP, 8 UDP) is in the packet. */
	if (bpf_skb_load_bytes(skb, pkt->l3_off, &msg.quoted_ip, sizeof(msg.quoted_ip)))
		goto fail;
	if (quoted_l4 == 20 ? bpf_skb_load_bytes(skb, pkt->l4_off, msg.quoted_l4, 20)
			    : bpf_skb_load_bytes(skb, pkt->l4_off, msg.quoted_l4, 8))
		goto fail;
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
		goto fail;

	msg.icmp.type = SL_ICMP_DEST_UNREACH;
	msg.icmp.code = code;
	/* RFC 1191: the next-hop MTU in the low 16 bits of the unused word. */
	msg.icmp.unused = bpf_htonl(mtu);
	/* The verifier wants a constant size for a stack buffer passed to a helper, so each
	 * length gets its own call. */
	if (quoted_l4 == 20)
		sum = bpf_csum_diff(0, 0, (__be32 *)&msg.icmp, sizeof(msg.icmp) + sizeof(msg.quoted_ip) + 20, 0);
	else
		sum = bpf_csum_diff(0, 0, (__be32 *)&msg.icmp, sizeof(msg.icmp) + sizeof(msg.quoted_ip) + 8, 0);
	if (sum < 0)
		goto fail;
	msg.icmp.checksum = sl_csum_fold((__u64)sum);

	msg.ip.version = 4;
	msg.ip.ihl = 5;
	msg.ip.tos = 0xc0; /* internetwork control, as Linux sends ICMP errors */
	msg.ip.tot_len = bpf_htons((__u16)msg_len);
	msg.ip.ttl = 64;
	msg.ip.protocol = IPPROTO_ICMP;
	msg.ip.saddr = pkt->daddr;
	msg.ip.daddr = pkt->saddr;
	sum = bpf_csum_diff(0, 0, (__be32 *)&msg.ip, sizeof(msg.ip), 0);
	if (sum < 0)
		goto fail;
	msg.ip.check = sl_csum_fold((__u64)sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + msg_len, 0))
		goto fail;
	if (quoted_l4 == 20 ? bpf_skb_store_bytes(skb, ETH_HLEN, &msg, sizeof(msg), 0)
			    : bpf_skb_store_bytes(skb, ETH_HLEN, &msg, sizeof(msg) - 12, 0))
		goto fail;
	return sl_reject_back(skb, macs, fwd, reason);
fail:
	sl_count(SL_REASON_NP_REJECT_FAILED);
	return -EINVAL;
}

/* The ICMPv6 error as written after the Ethernet header, laid out as sl_icmp_error. What
 * follows the quoted fixed header is quoted as it was: a fragment header (8 bytes), when
 * the packet is a first fragment, then the L4 header's start (8 bytes UDP, 20 TCP). */
struct sl_icmp6_error {
	struct ipv6hdr ip;
	struct sl_icmp_head icmp;
	struct ipv6hdr quoted_ip;
	__u8 quoted_rest[28];
};

/* sl_icmp_back for IPv6: ICMPv6 `type` and `code` (destination unreachable, port
 * unreachable: type 1 code 4, which Linux turns into ECONNREFUSED for the client's
 * socket; Packet Too Big: type 2 code 0 with the MTU in `mtu`). */
static __always_inline int sl_icmp6_back(struct __sk_buff *skb, struct sl_packet *pkt, __u8 type, __u8 code, __u32 mtu,
					 __u32 reason, struct sl_np_forward *fwd)
{
	struct sl_icmp6_error msg = {};
	__u8 macs[2 * ETH_ALEN];
	/* The parser checked that the L4 header (20 bytes TCP, 8 UDP) is in the packet. */
	__u32 quoted = pkt->l4_off - pkt->l3_off - sizeof(struct ipv6hdr) + (pkt->proto == IPPROTO_TCP ? 20 : 8);
	__u32 icmp_len = sizeof(msg.icmp) + sizeof(msg.quoted_ip) + quoted;
	__s64 sum;

	/* Helpers reading or writing the message take its length as a register: the
	 * verifier wants it bounded, and never 0. */
	if (quoted < 8 || quoted > sizeof(msg.quoted_rest))
		goto fail;
	if (reason == SL_REASON_NP_REJECT && !sl_icmp_error_allowed())
		return -EBUSY;
	if (bpf_skb_load_bytes(skb, pkt->l3_off, &msg.quoted_ip, sizeof(msg.quoted_ip)) ||
	    bpf_skb_load_bytes(skb, pkt->l3_off + sizeof(struct ipv6hdr), msg.quoted_rest, quoted))
		goto fail;
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
		goto fail;

	msg.icmp.type = type;
	msg.icmp.code = code;
	msg.icmp.unused = bpf_htonl(mtu);
	msg.ip.version = 6;
	msg.ip.payload_len = bpf_htons((__u16)icmp_len);
	msg.ip.nexthdr = SL_IPPROTO_ICMPV6;
	msg.ip.hop_limit = 64;
	__builtin_memcpy(&msg.ip.saddr, pkt->daddr6, sizeof(msg.ip.saddr));
	__builtin_memcpy(&msg.ip.daddr, pkt->saddr6, sizeof(msg.ip.daddr));
	/* The checksum covers a pseudo header (RFC 8200 section 8.1): both addresses (as in
	 * the header, contiguous), the length and the next header as 32-bit words, whose
	 * upper halves are 0 (sums in memory order, as bpf_csum_diff's). */
	sum = bpf_csum_diff(0, 0, (__be32 *)&msg.ip.saddr, 2 * sizeof(msg.ip.saddr), 0);
	if (sum < 0)
		goto fail;
	sum += (__u16)bpf_htons((__u16)icmp_len) + (__u16)bpf_htons(SL_IPPROTO_ICMPV6);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = bpf_csum_diff(0, 0, (__be32 *)&msg.icmp, sizeof(msg.icmp) + sizeof(msg.quoted_ip) + quoted, (__u32)sum);
	if (sum < 0)
		goto fail;
	msg.icmp.checksum = sl_csum_fold(((__u64)sum & 0xffff) + ((__u64)sum >> 16));

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(msg.ip) + icmp_len, 0))
		goto fail;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &msg, sizeof(msg) - sizeof(msg.quoted_rest) + quoted, 0))
		goto fail;
	return sl_reject_back(skb, macs, fwd, reason);
fail:
	sl_count(SL_REASON_NP_REJECT_FAILED);
	return -EINVAL;
}

/* A frontend without usable backend: ICMP port unreachable to the client. */
static __always_inline int sl_reject(struct __sk_buff *skb, struct sl_packet *pkt, struct sl_np_forward *fwd)
{
	if (pkt->ipv6)
		return sl_icmp6_back(skb, pkt, SL_ICMPV6_DEST_UNREACH, SL_ICMPV6_PORT_UNREACH, 0, SL_REASON_NP_REJECT, fwd);
	return sl_icmp_back(skb, pkt, SL_ICMP_PORT_UNREACH, 0, SL_REASON_NP_REJECT, fwd);
}

/* A translated packet longer than its route's MTU `mtu`: a router answers a packet that
 * may not be fragmented (IPv4 DF, every IPv6 packet) with ICMP fragmentation needed /
 * Packet Too Big, which makes the sender's path-MTU discovery shrink its packets; the
 * error quotes the packet as the sender sent it (untranslated), so it matches the
 * sender's socket.
 * An IPv4 packet without DF (a fragment, or a datagram of a socket that does not do
 * path-MTU discovery) would be fragmented by a router. BPF cannot fragment, nor can the
 * stack forward a packet source-NATed to one of the node's own addresses. Dropping it
 * silently would lose every such datagram for good; it is answered the same way instead
 * (counted apart): the sender's stack takes the MTU for the destination from any
 * fragmentation needed that names its socket, whether DF was set or not (Linux does,
 * IP_PMTUDISC_DONT sockets included), and fragments its next datagrams to fit. This
 * packet is lost, as with the DF error. */
static __always_inline int sl_too_big(struct __sk_buff *skb, struct sl_packet *pkt, __u16 mtu, struct sl_np_forward *fwd)
{
	if (pkt->ipv6)
		return sl_icmp6_back(skb, pkt, SL_ICMPV6_PACKET_TOO_BIG, 0, mtu, SL_REASON_NP_TOO_BIG, fwd);
	return sl_icmp_back(skb, pkt, SL_ICMP_FRAG_NEEDED, mtu,
			    pkt->dont_fragment ? SL_REASON_NP_TOO_BIG : SL_REASON_NP_TOO_BIG_MAY_FRAGMENT, fwd);
}

// MARK: - Frontends

/* The frontend of a packet from outside: an exact entry (externalIP, LB VIP), else the
 * NodePort wildcard entry when the destination is a node address serving NodePorts.
 * ClusterIP entries are left to the stack. */
static __always_inline const struct sl_service_value *sl_lookup_frontend(const struct sl_packet *pkt,
									 struct sl_revnat *frontend)
{
	const struct sl_service_value *master;
	const struct sl_node_addr *node_addr;
	struct sl_node_addr_key node_key;
	struct sl_service_key key;

	sl_addr_of(key.addr, pkt, 1);
	key.port = pkt->dport;
	key.proto = pkt->proto;
	key.scope = SL_SCOPE_DEFAULT;
	master = bpf_map_lookup_elem(&sl_services_v2, &key);
	if (!master) {
		sl_addr_of(node_key.addr, pkt, 1);
		node_addr = bpf_map_lookup_elem(&sl_node_addrs_v1, &node_key);
		if (!node_addr || !(node_addr->flags & SL_NODE_ADDR_F_NODE_PORT))
			return NULL;
		/* The family's wildcard: ::ffff:0.0.0.0 for IPv4, :: for IPv6. */
		if (pkt->ipv6)
			__builtin_memset(key.addr, 0, sizeof(key.addr));
		else
			sl_v4_mapped(key.addr, 0);
		master = bpf_map_lookup_elem(&sl_services_v2, &key);
		if (!master || master->kind != SL_KIND_NODE_PORT)
			return NULL;
	} else if (master->kind == SL_KIND_CLUSTER_IP) {
		return NULL;
	}
	sl_addr_of(frontend->addr, pkt, 1);
	frontend->port = pkt->dport;
	frontend->pad = 0;
	return master;
}

/* sessionAffinity ClientIP (kube-proxy A.8) for clients outside the node, keyed by their
 * address (marked so it never meets a netns cookie of the socket path). */
static __always_inline const struct sl_backend_slot *sl_pick_affine(const struct sl_packet *pkt,
								    const struct sl_service_value *master)
{
	struct sl_affinity_key key = {};

	if (pkt->ipv6) {
		__u64 high = ((__u64)pkt->saddr6[0] << 32) | pkt->saddr6[1];
		__u64 low = ((__u64)pkt->saddr6[2] << 32) | pkt->saddr6[3];

		key.client = SL_AFFINITY_CLIENT_IPV6 | ((high ^ low) & (SL_AFFINITY_CLIENT_IPV6 - 1));
	} else {
		key.client = SL_AFFINITY_CLIENT_IPV4 | pkt->saddr;
	}
	key.rev_nat_id = master->rev_nat_id;
	key.proto = pkt->proto;
	return sl_lb_pick_affine(&key, master, SL_REASON_NP_AFFINITY_HIT, SL_REASON_NP_AFFINITY_NEW,
				 SL_REASON_NP_SLOT_MISSING);
}

/* loadBalancerSourceRanges: is the client inside one of the frontend's ranges? (The
 * controller adds the Service's own VIPs when the node's IP is inside a range, A.9.) */
static __always_inline int sl_source_allowed(const struct sl_packet *pkt, const struct sl_service_value *master)
{
	struct sl_source_range_key key = {};

	key.prefixlen = 32 + 128;
	key.rev_nat_id = master->rev_nat_id;
	sl_addr_of(key.addr, pkt, 0);
	return bpf_map_lookup_elem(&sl_src_range_v1, &key) != NULL;
}

/* Direct server return: option carrying the frontend to the backend's node. */
#include "swiftlane/dsr.h"

// MARK: - Connection tracking

/* Writes the REPLY entry of a new source-NATed flow under a free port of the SNAT range:
 * the port is drawn at random and retried on collision (BPF_NOEXIST makes the claim
 * atomic against other CPUs). A port held by a closed flow (FIN or RST seen either way,
 * idle for sl_snat_reclaim_ns), or by a flow whose FORWARD entry is gone or was replaced,
 * is taken over: without that, a burst of short connections to one backend would exhaust
 * the range long before the garbage collector runs.
 * Returns the port (network order) or 0. */
static __always_inline __be16 sl_claim_snat_port(struct sl_nat_key *reply, const struct sl_nat_entry *value, __u64 now)
{
	__u32 span = (__u32)sl_snat_port_max - sl_snat_port_min + 1;
	struct sl_nat_entry *holder, *partner;
	struct sl_nat_key forward;
	__u64 observed;
	int i;

	for (i = 0; i < SL_SNAT_PORT_TRIES; i++) {
		__u16 port = sl_snat_port_min + (__u16)(bpf_get_prandom_u32() % span);

		reply->dport = bpf_htons(port);
		if (bpf_map_update_elem(&sl_nat_v2, reply, value, BPF_NOEXIST) == 0)
			return reply->dport;
		holder = bpf_map_lookup_elem(&sl_nat_v2, reply);
		if (!holder || now - holder->last_seen_ns < sl_snat_reclaim_ns)
			continue;
		/* The holder's FORWARD entry: client -> frontend. */
		__builtin_memcpy(forward.saddr, holder->nat_addr, sizeof(forward.saddr));
		__builtin_memcpy(forward.daddr, holder->to_addr, sizeof(forward.daddr));
		forward.sport = holder->nat_port;
		forward.dport = holder->to_port;
		forward.proto = reply->proto;
		forward.dir = SL_NAT_DIR_FORWARD;
		forward.pad = 0;
		observed = holder->last_seen_ns;
		if (observed == SL_NAT_CLAIMING)
			continue;
		partner = bpf_map_lookup_elem(&sl_nat_v2, &forward);
		/* A live flow keeps its port unless it closed. A REPLY entry whose FORWARD entry
		 * is gone, or names another port (the client opened a new flow from the same port
		 * since: a client closing with RST reuses its ports at once), belongs to no flow
		 * any more: its port goes as if the flow had closed. */
		if (partner && partner->nat_port == reply->dport && !((holder->flags | partner->flags) & SL_NAT_F_CLOSING))
			continue;
		/* Of several CPUs reclaiming this port, exactly one swaps last_seen_ns to the
		 * CLAIMING marker (the others see it changed, or see the marker, and try another
		 * port). The winner rewrites the entry in place: never delete and re-insert, a
		 * delete by key could remove a fresh entry another CPU just wrote. (A packet of
		 * the old, closed flow arriving during the rewrite stamps last_seen_ns and could
		 * let a second CPU in; both would then hand out the port. Closed flows rarely
		 * send; the window is a few instructions.) 64-bit: older clang has no 32-bit
		 * BPF atomics without -mcpu=v3. */
		if (__sync_val_compare_and_swap(&holder->last_seen_ns, observed, SL_NAT_CLAIMING) != observed)
			continue;
		if (partner)
			bpf_map_delete_elem(&sl_nat_v2, &forward);
		__builtin_memcpy(holder->to_addr, value->to_addr, sizeof(holder->to_addr));
		__builtin_memcpy(holder->nat_addr, value->nat_addr, sizeof(holder->nat_addr));
		holder->to_port = value->to_port;
		holder->nat_port = value->nat_port;
		holder->rev_nat_id = value->rev_nat_id;
		holder->flags = value->flags; /* clears CLOSING */
		holder->last_seen_ns = now;   /* releases the claim */
		sl_count(SL_REASON_NP_SNAT_PORT_RECLAIMED);
		return reply->dport;
	}
	return 0;
}

/* Where a new flow's two entries are built: both would not fit beside the rest on the
 * 512-byte stack. Per CPU, and used within one program run only (programs do not nest on
 * a CPU), so never shared. Not pinned: nothing outside the program reads it. */
struct sl_new_flow_scratch {
	struct sl_nat_entry forward;
	struct sl_nat_entry reply;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_new_flow_scratch);
} sl_new_flow_scratch SEC(".maps");

/* A new flow to `master`: picks the backend, decides on SNAT, writes both entries, and
 * leaves the FORWARD entry in *fwd_entry. */
static __always_inline int sl_new_flow(void *ctx, int hook, const struct sl_packet *pkt,
				       const struct sl_service_value *master, const struct sl_revnat *frontend,
				       struct sl_nat_entry *fwd_entry, struct sl_nat_entry *reply_entry)
{
	const struct sl_backend_slot *slot;
	const struct sl_device *device = NULL;
	const __be32 *snat_addr;
	struct sl_nat_key key;
	__u64 now = bpf_ktime_get_ns();
	__u32 egress;

	slot = (master->flags & SL_SVC_F_AFFINITY) ? sl_pick_affine(pkt, master)
						     : sl_lb_pick_slot(master, SL_REASON_NP_SLOT_MISSING);
	if (!slot)
		return -ENOENT;
	/* externalTrafficPolicy=Local (NODE_SCOPE flag): the client's address is kept. */
	if (!(master->flags & SL_SVC_F_NODE_SCOPE)) {
		egress = sl_backend_egress(ctx, hook, pkt, slot->addr);
		if (egress)
			device = bpf_map_lookup_elem(&sl_devices_v2, &egress);
	}

	__builtin_memset(fwd_entry, 0, sizeof(*fwd_entry));
	__builtin_memset(reply_entry, 0, sizeof(*reply_entry));
	__builtin_memcpy(fwd_entry->to_addr, slot->addr, sizeof(fwd_entry->to_addr));
	fwd_entry->to_port = slot->port;
	fwd_entry->rev_nat_id = master->rev_nat_id;
	fwd_entry->last_seen_ns = now;

	__builtin_memcpy(reply_entry->to_addr, frontend->addr, sizeof(reply_entry->to_addr));
	reply_entry->to_port = frontend->port;
	reply_entry->rev_nat_id = master->rev_nat_id;
	reply_entry->last_seen_ns = now;

	__builtin_memcpy(key.saddr, slot->addr, sizeof(key.saddr));
	key.sport = slot->port;
	key.proto = pkt->proto;
	key.dir = SL_NAT_DIR_REPLY;
	key.pad = 0;
	/* The device's address of the packet's family (none: the backend is not remote). */
	snat_addr = !device ? NULL : pkt->ipv6 ? (device->snat_addr6[0] ? device->snat_addr6 : NULL)
					   : (device->snat_addr[3] ? device->snat_addr : NULL);
	if (snat_addr && sl_dsr_wanted(ctx, hook, pkt, slot->addr)) {
		/* DSR (dsr.h): the backend's node replies to the client itself; no REPLY entry. */
		fwd_entry->flags = SL_NAT_F_DSR;
	} else if (snat_addr) {
		/* Remote backend: the reply must come back through this node. */
		__builtin_memcpy(key.daddr, snat_addr, sizeof(key.daddr));
		sl_addr_of(reply_entry->nat_addr, pkt, 0);
		reply_entry->nat_port = pkt->sport;
		reply_entry->flags = SL_NAT_F_SNAT;
		fwd_entry->nat_port = sl_claim_snat_port(&key, reply_entry, now);
		if (!fwd_entry->nat_port) {
			sl_count(SL_REASON_NP_PORTS_EXHAUSTED);
			return -EADDRNOTAVAIL;
		}
		__builtin_memcpy(fwd_entry->nat_addr, snat_addr, sizeof(fwd_entry->nat_addr));
		fwd_entry->flags = SL_NAT_F_SNAT;
	} else {
		sl_addr_of(key.daddr, pkt, 0);
		key.dport = pkt->sport;
		if (bpf_map_update_elem(&sl_nat_v2, &key, reply_entry, BPF_ANY)) {
			sl_count(SL_REASON_NP_REWRITE_FAILED);
			return -ENOMEM;
		}
	}
	/* Written last: a packet of this flow on another CPU either finds no FORWARD entry
	 * (and creates a flow of its own, an orphaned REPLY entry ages out of the LRU) or
	 * finds one whose REPLY entry already exists. */
	sl_nat_key_of(&key, pkt, SL_NAT_DIR_FORWARD);
	if (bpf_map_update_elem(&sl_nat_v2, &key, fwd_entry, BPF_ANY)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -ENOMEM;
	}
	return 0;
}

/* Applies a FORWARD entry: destination to the backend, source to the SNAT address. */
static __always_inline int sl_apply_forward(void *ctx, int hook, struct sl_packet *pkt, const struct sl_nat_entry *entry)
{
	__be16 to_port = entry->to_port;
	__be16 nat_port = entry->nat_port;
	__u16 flags = entry->flags;

	/* DSR (dsr.h): the frontend option goes in while the destination still names it. XDP
	 * never gets here with a packet that needs it (sl_translate passes those to tc). */
	if (hook == SL_HOOK_TC && (flags & SL_NAT_F_DSR) && sl_dsr_push(ctx, pkt, entry->to_addr))
		return -EFAULT;
	if (!pkt->ipv6)
		return sl_rewrite4_both(ctx, hook, pkt, (flags & SL_NAT_F_SNAT) ? entry->nat_addr[3] : pkt->saddr,
					(flags & SL_NAT_F_SNAT) ? nat_port : pkt->sport, entry->to_addr[3], to_port);
	if (sl_rewrite_to(ctx, hook, pkt, 1, entry->to_addr, to_port))
		return -EFAULT;
	if ((flags & SL_NAT_F_SNAT) && sl_rewrite_to(ctx, hook, pkt, 0, entry->nat_addr, nat_port))
		return -EFAULT;
	return 0;
}

/* Applies a REPLY entry: source back to the frontend, destination back to the client. */
static __always_inline int sl_apply_reply(void *ctx, int hook, struct sl_packet *pkt, const struct sl_nat_entry *entry)
{
	__be16 to_port = entry->to_port;
	__be16 nat_port = entry->nat_port;
	__u16 flags = entry->flags;

	if (!pkt->ipv6)
		return sl_rewrite4_both(ctx, hook, pkt, entry->to_addr[3], to_port,
					(flags & SL_NAT_F_SNAT) ? entry->nat_addr[3] : pkt->daddr,
					(flags & SL_NAT_F_SNAT) ? nat_port : pkt->dport);
	if (sl_rewrite_to(ctx, hook, pkt, 0, entry->to_addr, to_port))
		return -EFAULT;
	if ((flags & SL_NAT_F_SNAT) && sl_rewrite_to(ctx, hook, pkt, 1, entry->nat_addr, nat_port))
		return -EFAULT;
	return 0;
}

/* The route of a flow's translated packets from saddr to daddr: the FIB's answer, kept in
 * the flow's entry (struct sl_nat_route) so that an established flow's packets skip the
 * lookup. Asked again after SL_ROUTE_RECHECK_NS (a changed route or neighbour applies to
 * established flows within that), for a packet longer than any the FIB allowed (its MTU
 * check), and for another ingress device or TOS (policy routing). Returns the FIB's code
 * with *fib's ifindex and MACs filled; *known_device says whether the egress device is one
 * of sl_devices_v2. Only such routes, with the neighbour resolved, are kept.
 * `now`: the packet's time, read once per packet (sl_touch).
 * The entry may be written by another CPU meanwhile: checked_ns is cleared while the
 * route is rewritten and read before and after the copy, so a torn copy is never used. */
static __always_inline int sl_flow_route(void *ctx, int hook, const struct sl_packet *pkt, struct sl_nat_entry *entry,
					 __be32 saddr, __be32 daddr, const __be32 *saddr6, const __be32 *daddr6,
					 __u64 now, struct bpf_fib_lookup *fib, int *known_device)
{
	volatile struct sl_nat_route *route = &entry->route;
	__u32 in_ifindex = sl_ingress_ifindex(ctx, hook);
	__u64 checked = route->checked_ns;
	int rc;

	if (checked && now - checked < SL_ROUTE_RECHECK_NS && route->in_ifindex == in_ifindex && route->tos == pkt->tos &&
	    pkt->mtu_len <= route->max_tot_len) {
		fib->ifindex = route->ifindex;
		__builtin_memcpy(fib->dmac, (const void *)route->dmac, ETH_ALEN);
		__builtin_memcpy(fib->smac, (const void *)route->smac, ETH_ALEN);
		if (route->checked_ns == checked) {
			*known_device = 1;
			return BPF_FIB_LKUP_RET_SUCCESS;
		}
	}
	rc = pkt->ipv6 ? sl_fib6(ctx, hook, pkt, saddr6, daddr6, fib, 1) : sl_fib(ctx, hook, pkt, saddr, daddr, fib, 1);
	*known_device = rc == BPF_FIB_LKUP_RET_SUCCESS && bpf_map_lookup_elem(&sl_devices_v2, &fib->ifindex);
	if (!*known_device)
		return rc;
	route->checked_ns = 0;
	route->ifindex = fib->ifindex;
	route->in_ifindex = in_ifindex;
	__builtin_memcpy((void *)route->dmac, fib->dmac, ETH_ALEN);
	__builtin_memcpy((void *)route->smac, fib->smac, ETH_ALEN);
	route->max_tot_len = pkt->mtu_len;
	route->tos = pkt->tos;
	route->checked_ns = now ? now : 1;
	return rc;
}

/* Translates the packet with a tracked entry (a FORWARD entry, or the REPLY entry of a
 * source-NATed flow; in the map, or just created) and forwards it; `reason` is counted
 * when it is forwarded. XDP first asks where the translated packet will go: unless that is
 * one of the configured devices (sl_devices_v2, where the loader made XDP redirects work)
 * with a resolved neighbour, the packet passes untouched to tc, which finds the same
 * entry. */
static __always_inline int sl_translate(void *ctx, int hook, struct sl_packet *pkt, struct sl_nat_entry *entry,
					__u64 now, int reply, __u32 reason, struct sl_np_forward *fwd)
{
	__be32 saddr = pkt->saddr, daddr = pkt->daddr;
	const __be32 *saddr6 = pkt->saddr6, *daddr6 = pkt->daddr6;
	int snat = entry->flags & SL_NAT_F_SNAT;
	struct bpf_fib_lookup fib;
	int rc, fib_rc = 0, known_device = 0;

	if (reply) {
		saddr = entry->to_addr[3];
		saddr6 = entry->to_addr;
		if (snat) {
			daddr = entry->nat_addr[3];
			daddr6 = entry->nat_addr;
		}
	} else {
		daddr = entry->to_addr[3];
		daddr6 = entry->to_addr;
		if (snat) {
			saddr = entry->nat_addr[3];
			saddr6 = entry->nat_addr;
		}
	}
	/* Adding the DSR option resizes the packet: tc's job. A DSR flow's other TCP segments
	 * are a plain DNAT, which XDP does. */
	if (hook == SL_HOOK_XDP && !reply && (entry->flags & SL_NAT_F_DSR) && sl_dsr_carries_option(pkt))
		return SL_NP_PASS;
	/* The route is asked before the rewrite, so that a packet too long for it can be
	 * answered as its sender sent it. (The DSR option, added after, is left off a packet
	 * it would make too long: sl_dsr_push.) */
	fib_rc = sl_flow_route(ctx, hook, pkt, entry, saddr, daddr, saddr6, daddr6, now, &fib, &known_device);
	if (fib_rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return hook == SL_HOOK_XDP ? SL_NP_PASS : sl_too_big(ctx, pkt, fib.mtu_result, fwd);
	/* XDP forwards only out of the devices it runs on, to a resolved neighbour. */
	if (hook == SL_HOOK_XDP && (fib_rc != BPF_FIB_LKUP_RET_SUCCESS || !known_device))
		return SL_NP_PASS;
	/* Fragments reach tc only (sl_parse_fragment). */
	if (pkt->frag == SL_FRAG_FIRST)
		sl_frag_record(pkt);
	rc = reply ? sl_apply_reply(ctx, hook, pkt, entry) : sl_apply_forward(ctx, hook, pkt, entry);
	if (rc)
		return rc;
	rc = sl_forward(ctx, hook, pkt, &fib, fib_rc, fwd);
	if (rc >= 0) {
		sl_count(reason);
		if (pkt->frag)
			sl_count(SL_REASON_NP_FRAGMENT_TRACKED);
	}
	return rc;
}

/* Marks a tracked entry as used now, and as closing once a FIN or RST passes, so the
 * controller's garbage collection gives it the short timeout and its SNAT port may be
 * reclaimed. (A SYN on a closing FORWARD entry starts a new flow instead, see
 * sl_from_netdev.) */
static __always_inline __u64 sl_touch(struct sl_nat_entry *entry, const struct sl_packet *pkt)
{
	/* The coarse clock (CLOCK_MONOTONIC_COARSE, a tick behind at most) is cheaper than a
	 * clock read per packet, and the entry is written only when it moved, so the flows of
	 * a busy node do not dirty their entries' cache lines on every packet. Idle times are
	 * compared in seconds. Returns the time, for the rest of the packet's path. */
	__u64 now = bpf_ktime_get_coarse_ns();

	if (entry->last_seen_ns != now)
		entry->last_seen_ns = now;
	if ((pkt->tcp_flags & (SL_TCP_FIN | SL_TCP_RST)) && !(entry->flags & SL_NAT_F_CLOSING))
		entry->flags |= SL_NAT_F_CLOSING;
	return now;
}

// MARK: - ICMP errors about tracked flows

#define SL_ICMP_TIME_EXCEEDED 11
#define SL_ICMPV6_TIME_EXCEEDED 3

/* The start of an ICMP error: its header, the offending packet's IPv4 header (without
 * options) and that packet's ports. */
struct sl_icmp_quote {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
	struct iphdr inner;
	__be16 sport;
	__be16 dport;
};

/* The same for ICMPv6: the quoted IPv6 header (without extension headers) and ports. */
struct sl_icmp6_quote {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
	struct ipv6hdr inner;
	__be16 sport;
	__be16 dport;
};

/* What an ICMP error about a tracked flow says, addresses as the maps store them: the
 * outer source and destination, then the quoted packet's. The translation rewrites a copy
 * and applies the difference. The layout is summed with bpf_csum_diff: 4-byte multiples. */
struct sl_icmp_view {
	__be32 outer_saddr[4];
	__be32 outer_daddr[4];
	__be32 inner_saddr[4];
	__be32 inner_daddr[4];
	__be16 inner_sport;
	__be16 inner_dport;
};

/* Which tracked packet an error quotes, and what the error becomes:
 *  - ingress, the quoted packet went node -> remote backend with SNAT (its flow's REPLY
 *    entry, keyed the other way): for the client, quoting client -> frontend;
 *  - ingress, the quoted packet is a reply this node sent to the client, frontend ->
 *    client (the flow's FORWARD entry, keyed the other way; SNAT, local backend or DSR):
 *    for the backend, quoting its own packet backend -> client (or -> SNAT address);
 *  - egress, a backend's error about a packet client -> backend: for the client, quoting
 *    client -> frontend. The frontend is the REPLY entry's (a local backend's flow,
 *    without SNAT) or, for a flow another node sent here by DSR, sl_dsr_v1's (dsr.h).
 * An outer source equal to the quoted destination (the error came from the end host, not
 * a router) becomes what that host is to the error's new receiver. Returns the reason to
 * count, or 0 when the error is about no tracked flow. */
static __always_inline __u32 sl_icmp_translate_view(struct sl_icmp_view *v, __u8 proto, int egress)
{
	struct sl_nat_entry *tracked;
	struct sl_nat_key key;
	int from_end_host = sl_addr_equal(v->outer_saddr, v->inner_daddr);

	__builtin_memcpy(key.saddr, v->inner_daddr, sizeof(key.saddr));
	__builtin_memcpy(key.daddr, v->inner_saddr, sizeof(key.daddr));
	key.sport = v->inner_dport;
	key.dport = v->inner_sport;
	key.proto = proto;
	key.dir = SL_NAT_DIR_REPLY;
	key.pad = 0;
	tracked = bpf_map_lookup_elem(&sl_nat_v2, &key);
	if (egress) {
		const __be32 *frontend;
		__be16 frontend_port;
		__u32 reason = SL_REASON_NP_ICMP_ERROR_REPLY;

		if (tracked && !(tracked->flags & SL_NAT_F_SNAT)) {
			frontend = tracked->to_addr;
			frontend_port = tracked->to_port;
		} else {
			struct sl_dsr_key dsr = { .backend_port = v->inner_dport, .client_port = v->inner_sport, .proto = proto };
			struct sl_dsr_entry *recorded;

			__builtin_memcpy(dsr.backend_addr, v->inner_daddr, sizeof(dsr.backend_addr));
			__builtin_memcpy(dsr.client_addr, v->inner_saddr, sizeof(dsr.client_addr));
			recorded = bpf_map_lookup_elem(&sl_dsr_v1, &dsr);
			if (!recorded)
				return 0;
			frontend = recorded->frontend_addr;
			frontend_port = recorded->frontend_port;
			reason = SL_REASON_NP_DSR_ICMP_ERROR;
		}
		__builtin_memcpy(v->inner_daddr, frontend, sizeof(v->inner_daddr));
		v->inner_dport = frontend_port;
		if (from_end_host)
			__builtin_memcpy(v->outer_saddr, frontend, sizeof(v->outer_saddr));
		return reason;
	}
	if (tracked && (tracked->flags & SL_NAT_F_SNAT)) {
		__builtin_memcpy(v->inner_saddr, tracked->nat_addr, sizeof(v->inner_saddr));
		v->inner_sport = tracked->nat_port;
		__builtin_memcpy(v->inner_daddr, tracked->to_addr, sizeof(v->inner_daddr));
		v->inner_dport = tracked->to_port;
		__builtin_memcpy(v->outer_daddr, tracked->nat_addr, sizeof(v->outer_daddr));
		if (from_end_host)
			__builtin_memcpy(v->outer_saddr, tracked->to_addr, sizeof(v->outer_saddr));
		return SL_REASON_NP_ICMP_ERROR_REPLY;
	}
	key.dir = SL_NAT_DIR_FORWARD;
	tracked = bpf_map_lookup_elem(&sl_nat_v2, &key);
	if (!tracked)
		return 0;
	__builtin_memcpy(v->inner_saddr, tracked->to_addr, sizeof(v->inner_saddr));
	v->inner_sport = tracked->to_port;
	__builtin_memcpy(v->outer_daddr, tracked->to_addr, sizeof(v->outer_daddr));
	if (tracked->flags & SL_NAT_F_SNAT) {
		__builtin_memcpy(v->inner_daddr, tracked->nat_addr, sizeof(v->inner_daddr));
		v->inner_dport = tracked->nat_port;
		__builtin_memcpy(v->outer_saddr, tracked->nat_addr, sizeof(v->outer_saddr));
	}
	return SL_REASON_NP_ICMP_ERROR_FORWARD;
}

static __always_inline int sl_store4(struct __sk_buff *skb, __u32 off, __be32 value, __u32 csum_off, __be32 old)
{
	if (value == old)
		return 0;
	if (bpf_l3_csum_replace(skb, csum_off, old, value, sizeof(value)) ||
	    bpf_skb_store_bytes(skb, off, &value, sizeof(value), 0))
		return -EFAULT;
	return 0;
}

/* ICMP (IPv4) errors about tracked flows, translated as sl_icmp_translate_view says.
 * Checksums: each quoted address change is compensated in the quoted header's checksum,
 * which leaves the ICMP checksum unchanged; quoted port changes are folded into the ICMP
 * checksum; the quoted TCP/UDP checksum is left alone (only its first 8 bytes need be
 * quoted, and no receiver checks it). Returns the reason to count, 0 when the message is
 * not such an error (nothing changed; *is_error says whether it is an error about TCP or
 * UDP at all), or -errno. */
static __always_inline int sl_icmp4_error(struct __sk_buff *skb, struct sl_packet *pkt, int egress, int *is_error)
{
	__u32 icmp_csum = pkt->l4_off + offsetof(struct sl_icmp_quote, checksum);
	__u32 inner_off = pkt->l4_off + offsetof(struct sl_icmp_quote, inner);
	__u32 inner_csum = inner_off + offsetof(struct iphdr, check);
	__u32 ports_off = pkt->l4_off + offsetof(struct sl_icmp_quote, sport);
	__u32 outer_csum = pkt->l3_off + offsetof(struct iphdr, check);
	struct sl_icmp_quote quote;
	struct sl_icmp_view v;
	__u32 reason;

	if (bpf_skb_load_bytes(skb, pkt->l4_off, &quote, sizeof(quote)) ||
	    (quote.type != SL_ICMP_DEST_UNREACH && quote.type != SL_ICMP_TIME_EXCEEDED) ||
	    quote.inner.version != 4 || quote.inner.ihl != 5 ||
	    (quote.inner.protocol != IPPROTO_TCP && quote.inner.protocol != IPPROTO_UDP))
		return 0;
	*is_error = 1;
	sl_v4_mapped(v.outer_saddr, pkt->saddr);
	sl_v4_mapped(v.outer_daddr, pkt->daddr);
	sl_v4_mapped(v.inner_saddr, quote.inner.saddr);
	sl_v4_mapped(v.inner_daddr, quote.inner.daddr);
	v.inner_sport = quote.sport;
	v.inner_dport = quote.dport;
	reason = sl_icmp_translate_view(&v, quote.inner.protocol, egress);
	if (!reason)
		return 0;
	if (sl_store4(skb, inner_off + offsetof(struct iphdr, saddr), v.inner_saddr[3], inner_csum, quote.inner.saddr) ||
	    sl_store4(skb, inner_off + offsetof(struct iphdr, daddr), v.inner_daddr[3], inner_csum, quote.inner.daddr) ||
	    bpf_l4_csum_replace(skb, icmp_csum, quote.sport, v.inner_sport, sizeof(v.inner_sport)) ||
	    bpf_l4_csum_replace(skb, icmp_csum, quote.dport, v.inner_dport, sizeof(v.inner_dport)) ||
	    bpf_skb_store_bytes(skb, ports_off, &v.inner_sport, 2 * sizeof(v.inner_sport), 0) ||
	    sl_store4(skb, pkt->l3_off + offsetof(struct iphdr, saddr), v.outer_saddr[3], outer_csum, pkt->saddr) ||
	    sl_store4(skb, pkt->l3_off + offsetof(struct iphdr, daddr), v.outer_daddr[3], outer_csum, pkt->daddr)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -EFAULT;
	}
	pkt->saddr = v.outer_saddr[3];
	pkt->daddr = v.outer_daddr[3];
	return reason;
}

/* ICMPv6 errors (destination unreachable, Packet Too Big, time exceeded) about tracked
 * flows, as sl_icmp4_error. The ICMPv6 checksum covers the quoted packet directly and the
 * outer addresses through its pseudo header: one difference each. */
static __always_inline int sl_icmp6_error(struct __sk_buff *skb, struct sl_packet *pkt, int egress, int *is_error)
{
	__u32 icmp_csum = pkt->l4_off + offsetof(struct sl_icmp6_quote, checksum);
	__u32 inner_off = pkt->l4_off + offsetof(struct sl_icmp6_quote, inner);
	struct sl_icmp6_quote quote;
	struct sl_icmp_view old, v;
	__s64 outer_diff, inner_diff;
	__u32 reason;

	if (bpf_skb_load_bytes(skb, pkt->l4_off, &quote, sizeof(quote)) ||
	    (quote.type != SL_ICMPV6_DEST_UNREACH && quote.type != SL_ICMPV6_PACKET_TOO_BIG &&
	     quote.type != SL_ICMPV6_TIME_EXCEEDED) ||
	    quote.inner.version != 6 || (quote.inner.nexthdr != IPPROTO_TCP && quote.inner.nexthdr != IPPROTO_UDP))
		return 0;
	*is_error = 1;
	__builtin_memcpy(old.outer_saddr, pkt->saddr6, sizeof(old.outer_saddr));
	__builtin_memcpy(old.outer_daddr, pkt->daddr6, sizeof(old.outer_daddr));
	__builtin_memcpy(old.inner_saddr, &quote.inner.saddr, sizeof(old.inner_saddr));
	__builtin_memcpy(old.inner_daddr, &quote.inner.daddr, sizeof(old.inner_daddr));
	old.inner_sport = quote.sport;
	old.inner_dport = quote.dport;
	v = old;
	reason = sl_icmp_translate_view(&v, quote.inner.nexthdr, egress);
	if (!reason)
		return 0;
	outer_diff = bpf_csum_diff(old.outer_saddr, 32, v.outer_saddr, 32, 0);
	inner_diff = bpf_csum_diff(old.inner_saddr, 36, v.inner_saddr, 36, 0);
	if (outer_diff < 0 || inner_diff < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)outer_diff, BPF_F_PSEUDO_HDR) ||
	    bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)inner_diff, 0) ||
	    bpf_skb_store_bytes(skb, inner_off + offsetof(struct ipv6hdr, saddr), v.inner_saddr, 32, 0) ||
	    bpf_skb_store_bytes(skb, pkt->l4_off + offsetof(struct sl_icmp6_quote, sport), &v.inner_sport, 4, 0) ||
	    bpf_skb_store_bytes(skb, pkt->l3_off + offsetof(struct ipv6hdr, saddr), v.outer_saddr, 32, 0)) {
		sl_count(SL_REASON_NP_REWRITE_FAILED);
		return -EFAULT;
	}
	__builtin_memcpy(pkt->saddr6, v.outer_saddr, sizeof(pkt->saddr6));
	__builtin_memcpy(pkt->daddr6, v.outer_daddr, sizeof(pkt->daddr6));
	return reason;
}

/* Ingress: an ICMP error about a tracked flow, translated and forwarded to the host whose
 * packet it is about (sl_icmp_translate_view). Anything else passes to the stack. Returns
 * SL_NP_PASS, 1 to forward, -errno to drop. */
static __always_inline int sl_icmp_error_reply(struct __sk_buff *skb, struct sl_packet *pkt, struct sl_np_forward *fwd)
{
	int is_error = 0;
	int reason = pkt->ipv6 ? sl_icmp6_error(skb, pkt, 0, &is_error) : sl_icmp4_error(skb, pkt, 0, &is_error);
	int rc;

	if (reason < 0)
		return reason;
	if (!reason) {
		/* Neighbour Discovery, echo, errors about other traffic: the stack's. */
		sl_count(is_error ? SL_REASON_NP_NOT_SERVICE : SL_REASON_NP_NOT_IPV4);
		return SL_NP_PASS;
	}
	rc = sl_route(skb, SL_HOOK_TC, pkt, fwd);
	if (rc >= 0)
		sl_count(reason);
	return rc;
}

// MARK: - Workers

/* Ingress of an external device. Returns SL_NP_PASS, SL_NP_FORWARD (*fwd filled) or
 * -errno (drop). */
static __always_inline int sl_from_netdev(void *ctx, int hook, struct sl_np_forward *fwd)
{
	const struct sl_service_value *master;
	struct sl_new_flow_scratch *created;
	struct sl_nat_entry *tracked;
	struct sl_revnat frontend;
	struct sl_packet pkt = {};
	struct sl_nat_key key;
	int rc;

	rc = sl_parse(ctx, hook, &pkt);
	if (rc == SL_PARSED_ICMP)
		return hook == SL_HOOK_XDP ? SL_NP_PASS : sl_icmp_error_reply(ctx, &pkt, fwd);
	if (rc)
		return rc > 0 ? SL_NP_PASS : rc;
	if (hook == SL_HOOK_TC)
		sl_gso_segment_len(ctx, &pkt);
	/* DSR (dsr.h): a packet carrying its frontend from the node that received it. Removing
	 * the option resizes the packet: XDP leaves every packet with IP options to tc. */
	if (pkt.ipv6)
		rc = hook == SL_HOOK_TC && sl_dsr_carrier6(&pkt) ? sl_dsr_receive6(ctx, &pkt) : 0;
	else
		rc = hook == SL_HOOK_TC ? sl_dsr_receive(ctx, &pkt) : pkt.ihl_bytes != sizeof(struct iphdr);
	if (rc)
		return rc > 0 ? SL_NP_PASS : rc;

	sl_nat_key_of(&key, &pkt, SL_NAT_DIR_REPLY);
	/* A reply of a source-NATed flow comes back to one of the SNAT ports: for any other
	 * destination port that lookup cannot hit, and is saved (client packets of
	 * NodePorts, externalIPs and LB IPs, the bulk of what arrives). */
	if (bpf_ntohs(pkt.dport) >= sl_snat_port_min && bpf_ntohs(pkt.dport) <= sl_snat_port_max) {
		tracked = bpf_map_lookup_elem(&sl_nat_v2, &key);
		if (tracked && (tracked->flags & SL_NAT_F_SNAT)) {
			return sl_translate(ctx, hook, &pkt, tracked, sl_touch(tracked, &pkt), 1, SL_REASON_NP_REPLY, fwd);
		}
	}

	key.dir = SL_NAT_DIR_FORWARD;
	tracked = bpf_map_lookup_elem(&sl_nat_v2, &key);
	/* A client reusing its port for a new connection (a SYN on a closed flow) gets a new
	 * flow: the old one's SNAT port may belong to another flow by now. */
	if (tracked && (tracked->flags & SL_NAT_F_CLOSING) && (pkt.tcp_flags & (SL_TCP_SYN | SL_TCP_ACK)) == SL_TCP_SYN)
		tracked = NULL;
	if (tracked) {
		return sl_translate(ctx, hook, &pkt, tracked, sl_touch(tracked, &pkt), 0, SL_REASON_NP_FORWARD, fwd);
	}
	/* A later fragment never opens a flow: without its first fragment's flow it is no
	 * datagram of ours. */
	if (pkt.frag == SL_FRAG_LATER) {
		sl_count_pass(hook, SL_REASON_NP_FRAGMENT_UNTRACKED);
		return SL_NP_PASS;
	}

	master = sl_lookup_frontend(&pkt, &frontend);
	if (!master) {
		/* This node as a DSR backend's node (dsr.h); XDP passes the segment to tc. */
		if (hook == SL_HOOK_TC && (pkt.tcp_flags & (SL_TCP_FIN | SL_TCP_RST)))
			sl_dsr_client_closing(&pkt);
		sl_count_pass(hook, SL_REASON_NP_NOT_SERVICE);
		return SL_NP_PASS;
	}
	/* The LB firewall comes before everything else (kube-proxy A.9); NodePorts and
	 * externalIPs of the same Service are never filtered. */
	if (master->kind == SL_KIND_LOAD_BALANCER && (master->flags & SL_SVC_F_SOURCE_RANGES) &&
	    !sl_source_allowed(&pkt, master)) {
		sl_count(SL_REASON_NP_SOURCE_RANGE_DENIED);
		return -EPERM;
	}
	/* Only a SYN opens a TCP flow. A stray segment of a flow whose entries are gone (its
	 * SNAT port was reclaimed after it closed, or GC removed it) would otherwise become
	 * a "flow" that never closes and holds a SNAT port. The stack answers it with a RST. */
	if (pkt.proto == IPPROTO_TCP && (pkt.tcp_flags & (SL_TCP_SYN | SL_TCP_ACK)) != SL_TCP_SYN) {
		sl_count_pass(hook, SL_REASON_NP_TCP_UNTRACKED);
		return SL_NP_PASS;
	}
	if (master->flags & SL_SVC_F_DROP) {
		sl_count(SL_REASON_NP_DROP);
		return -EPERM;
	}
	/* The ICMP error is built by tc (it resizes the packet). */
	if ((master->flags & SL_SVC_F_REJECT) || master->count == 0) {
		if (hook == SL_HOOK_XDP)
			return SL_NP_PASS;
		return sl_reject(ctx, &pkt, fwd);
	}
	created = bpf_map_lookup_elem(&sl_new_flow_scratch, &(__u32){ 0 });
	if (!created)
		return -ENOMEM;
	rc = sl_new_flow(ctx, hook, &pkt, master, &frontend, &created->forward, &created->reply);
	if (rc)
		return rc;
	rc = sl_translate(ctx, hook, &pkt, &created->forward, created->forward.last_seen_ns, 0,
			  SL_REASON_NP_FORWARD_NEW, fwd);
	/* A new flow XDP hands to tc was still created (its backend chosen) here: tc carries
	 * it out as a tracked flow (np_forward). */
	if (hook == SL_HOOK_XDP && rc == SL_NP_PASS)
		sl_count(SL_REASON_NP_FORWARD_NEW);
	return rc;
}

/* Egress of an external device: replies of flows that were not source-NATed (local
 * backends) leave with the frontend as their source. Never drops: a packet it cannot
 * parse is the node's own business. */
static __always_inline int sl_to_netdev(struct __sk_buff *skb)
{
	struct sl_nat_entry *tracked;
	struct sl_packet pkt = {};
	struct sl_nat_key key;
	__u32 arrived_on = skb->ingress_ifindex;
	int rc;

	/* What this hook translates comes from the node itself or its pods: replies of local
	 * backends. A packet that arrived on one of the external devices (forwarded by the
	 * ingress program or by the stack) is none of that, and is most of what leaves a
	 * busy node: it skips the parse and two lookups. */
	if (arrived_on && bpf_map_lookup_elem(&sl_devices_v2, &arrived_on))
		return SL_NP_PASS;
	rc = sl_parse(skb, SL_HOOK_TC, &pkt);
	if (rc == SL_PARSED_ICMP) {
		int is_error = 0;

		/* A backend's ICMP error about its flow (sl_icmp_translate_view). */
		rc = pkt.ipv6 ? sl_icmp6_error(skb, &pkt, 1, &is_error) : sl_icmp4_error(skb, &pkt, 1, &is_error);
		if (rc > 0)
			sl_count(rc);
		return rc < 0 ? rc : SL_NP_PASS;
	}
	if (rc)
		return SL_NP_PASS;
	sl_nat_key_of(&key, &pkt, SL_NAT_DIR_REPLY);
	tracked = bpf_map_lookup_elem(&sl_nat_v2, &key);
	/* DSR (dsr.h): a backend's reply to a client another node received the flow from. */
	if (!tracked)
		return sl_dsr_reply(skb, &pkt);
	if (tracked->flags & SL_NAT_F_SNAT)
		return SL_NP_PASS;
	sl_touch(tracked, &pkt);
	if (pkt.frag == SL_FRAG_FIRST)
		sl_frag_record(&pkt);
	if (sl_apply_reply(skb, SL_HOOK_TC, &pkt, tracked))
		return -EFAULT;
	sl_count(SL_REASON_NP_REPLY);
	if (pkt.frag)
		sl_count(SL_REASON_NP_FRAGMENT_TRACKED);
	return SL_NP_PASS;
}

// MARK: - Entry points

static __always_inline int sl_tc_verdict(int rc, const struct sl_np_forward *fwd)
{
	if (rc < 0)
		return TC_ACT_SHOT;
	if (rc == SL_NP_PASS)
		return TC_ACT_OK;
	if (fwd->resolve_neigh) {
		struct bpf_redir_neigh nh = { .nh_family = SL_AF_INET, .ipv4_nh = fwd->nexthop };

		if (fwd->ipv6) {
			nh.nh_family = SL_AF_INET6;
			__builtin_memcpy(nh.ipv6_nh, fwd->nexthop6, sizeof(nh.ipv6_nh));
		}
		return bpf_redirect_neigh(fwd->ifindex, &nh, sizeof(nh), 0);
	}
	return bpf_redirect(fwd->ifindex, 0);
}

SEC("tc")
int sl_nodeport_ingress(struct __sk_buff *skb)
{
	struct sl_np_forward fwd = {};

	return sl_tc_verdict(sl_from_netdev(skb, SL_HOOK_TC, &fwd), &fwd);
}

SEC("tc")
int sl_nodeport_egress(struct __sk_buff *skb)
{
	return sl_to_netdev(skb) < 0 ? TC_ACT_SHOT : TC_ACT_OK;
}

/* XDP in front of tc ingress on the same devices (nodePort.acceleration). */
SEC("xdp")
int sl_nodeport_xdp(struct xdp_md *ctx)
{
	struct sl_np_forward fwd = {};
	int rc = sl_from_netdev(ctx, SL_HOOK_XDP, &fwd);

	if (rc < 0)
		return XDP_DROP;
	if (rc == SL_NP_PASS) {
		sl_count(SL_REASON_NP_XDP_PASS_TO_TC);
		return XDP_PASS;
	}
	sl_count(SL_REASON_NP_XDP_REDIRECT);
	return bpf_redirect(fwd.ifindex, 0);
}

/* For a veth that native XDP redirects into: its peer must run an XDP program (or have GRO
 * on) for the veth to accept XDP frames. Attached to that peer, it changes nothing. */
SEC("xdp")
int sl_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

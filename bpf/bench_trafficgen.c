// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Traffic generator and sink for `swiftlane-bench forwarding` (not part of the datapath).
 *
 * The NodePort benchmark's socket sender and receiver cost far more per packet than the node
 * they measure, and all of them share this machine's two cores: their figures say little
 * about the node. Here the load comes from the kernel itself, as XDP frames, the way a NIC
 * delivers it, with no socket or skb on the sending side:
 *
 *  - a closed loop of frames: bench_loop, on a veth of the generator's namespace, writes each
 *    frame it receives from the template and sends it (bpf_redirect) to the node's device;
 *    bench_sink, a native XDP program on the far end of the node's other veth, counts what
 *    the node forwarded to the backends and sends it back to bench_loop over a veth pair
 *    between the sink's namespace and the generator's. A few hundred frames, put into the
 *    loop once, go round it for as long as it runs: no frame is allocated or freed on the
 *    way (an allocation and a cross-CPU free per frame would cost the node's core more than
 *    some of the datapaths it measures), and the rate is what the slowest stage, the node,
 *    sustains. (Kernels that allow BPF_F_TEST_XDP_LIVE_FRAMES could generate instead; this
 *    sandbox's test runs lack the capability it needs.)
 *  - bench_sink passes everything that is not to the backends (untranslated frames leave the
 *    loop there, counted).
 *
 * The loop stops when `running` is cleared: both programs then drop what they see.
 * bench_loop writes every header byte from the template on each turn (the node rewrote the
 * frame on its way), so a frame's variation (ports, addresses, checksums) is computed from
 * the template, never accumulated.
 *
 * Frames are Ethernet + IPv4 + UDP or TCP with valid checksums (the IPv4 one always; TCP's
 * too, because conntrack on the iptables path drops bad ones; UDP's is 0, "none"). Two
 * shapes of load:
 *  - established flows: `flows` 5-tuples cycled (source ports from the template's), so after
 *    the first round every frame hits existing NAT state;
 *  - new flows: every frame a new 5-tuple (source port, then source address advance), each
 *    one makes the node create conntrack and SNAT state: a SYN flood of distinct connections.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define BENCH_FRAME_BYTES 64
#define BENCH_NEW_FLOW_PORTS 60000

/* Shared with Sources/swiftlane-bench/XDPTrafficGenerator.swift (same field order). */
struct bench_gen_config {
	__u8 frame[BENCH_FRAME_BYTES]; /* header template; the packet is frame_len bytes */
	__u32 header_len;              /* bytes copied from the template on every run */
	__u32 flows;                   /* established mode: 5-tuples cycled */
	__u32 new_flows;               /* 1: every frame a new 5-tuple */
	__u32 l4_check_offset;         /* L4 checksum's offset in frame: even, 32..62; 0 = none */
	__u32 sink_daddr;              /* sink: count and drop IPv4 to daddr & sink_mask ... */
	__u32 sink_mask;               /* ... (both network order) */
	__u32 running;                 /* 0: the loop drops its frames and ends */
	__u32 to_node_ifindex;         /* bench_loop sends to this device (generator's netns) */
	__u32 return_ifindex;          /* bench_sink sends back on this one (sink's netns) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_gen_config);
} bench_config SEC(".maps");

/* The generator's frame sequence number, also its count of frames sent. One shared value,
 * not per CPU: the loop's NAPI may move between CPUs, and per-CPU sequences would repeat
 * 5-tuples that are meant to be new. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_sequence SEC(".maps");

/* Per CPU: the sink runs on whichever CPU the node's receive path runs on. */
enum { BENCH_SUNK, BENCH_PASSED, BENCH_COUNTERS };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BENCH_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} bench_counters SEC(".maps");

static __always_inline __u64 *counter(__u32 index)
{
	return bpf_map_lookup_elem(&bench_counters, &index);
}

/* RFC 1624 incremental update of a one's-complement checksum for one 16-bit word. */
static __always_inline __u16 csum_replace(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check + (__u32)(__u16)~from + to;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int bench_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct bench_gen_config *config = bpf_map_lookup_elem(&bench_config, &zero);
	__u64 *sequence = bpf_map_lookup_elem(&bench_sequence, &zero);

	if (!config || !sequence || !config->running)
		return XDP_DROP;
	/* Back to the template's size: the kernel's stack trims a frame's Ethernet padding on
	 * the way (iptables path), DSR adds an IP option. */
	long length = (long)end - (long)data;

	if (length != BENCH_FRAME_BYTES && bpf_xdp_adjust_tail(ctx, (int)(BENCH_FRAME_BYTES - length)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + BENCH_FRAME_BYTES > end)
		return XDP_DROP;
#pragma unroll
	for (int i = 0; i < BENCH_FRAME_BYTES; i++) {
		if (i < config->header_len)
			((__u8 *)data)[i] = config->frame[i];
	}
	__u64 n = __sync_fetch_and_add(sequence, 1);
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__be16 *ports = (void *)(ip + 1); /* [0] = source port; the template has no IP options */
	__be16 sport = ports[0], new_sport;
	__be16 *check = NULL;

	if (config->l4_check_offset >= 32) {
		/* An even offset in [32, 62]: masked in a way the verifier can follow, so the
		 * two-byte access stays inside the 64 bytes checked above. */
		__u32 offset = config->l4_check_offset - 32;

		asm volatile("" : "+r"(offset));
		check = data + 32 + (offset & 0x1e);
	}
	if (config->new_flows) {
		/* Source port, then the last 16 bits of the source address: 60000 × 65536 flows. */
		__u32 step = (__u32)(n / BENCH_NEW_FLOW_PORTS);
		__be16 *src_low = (__be16 *)&ip->saddr + 1;
		__be16 old_low = *src_low, new_low = bpf_htons(bpf_ntohs(old_low) + (__u16)step);

		new_sport = bpf_htons(1024 + (__u16)(n % BENCH_NEW_FLOW_PORTS));
		*src_low = new_low;
		ip->check = csum_replace(ip->check, old_low, new_low);
		if (check && (void *)(check + 1) <= end)
			*check = csum_replace(*check, old_low, new_low);
	} else {
		new_sport = bpf_htons(bpf_ntohs(sport) + (__u16)(n % (config->flows ? config->flows : 1)));
	}
	ports[0] = new_sport;
	if (check && (void *)(check + 1) <= end)
		*check = csum_replace(*check, sport, new_sport);
	return bpf_redirect(config->to_node_ifindex, 0);
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 zero = 0;
	struct bench_gen_config *config = bpf_map_lookup_elem(&bench_config, &zero);
	__u64 *count;

	if (!config || (void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    (ip->daddr & config->sink_mask) != config->sink_daddr) {
		count = counter(BENCH_PASSED);
		if (count)
			(*count)++;
		return XDP_PASS;
	}
	count = counter(BENCH_SUNK);
	if (count)
		(*count)++;
	return config->running ? bpf_redirect(config->return_ifindex, 0) : XDP_DROP;
}

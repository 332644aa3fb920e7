/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Swiftlane datapath ABI: every struct, flag and reason code shared by the BPF programs
 * (clang -target bpf) and the Swift controller (imported through the CLibBPF module).
 * This is the only copy. Only __u8/__u16/__u32/__u64/__be16/__be32 fields, explicit
 * padding, no bitfields; every struct's size is asserted here and its Swift
 * MemoryLayout is asserted by Tests/DatapathKernelTests/ABILayoutTests.swift.
 *
 * Addresses: always 16 bytes in network byte order. IPv4 is stored v4-mapped
 * (::ffff:a.b.c.d) so that one map serves both families and a dual-stack socket that
 * connect()s to ::ffff:VIP finds the same entry as an IPv4 socket.
 * Ports: network byte order (__be16).
 */
#ifndef SWIFTLANE_ABI_H
#define SWIFTLANE_ABI_H

#include <linux/types.h>

#define SL_ABI_VERSION 1

/* Pinned map names (bpfPinPath/<name>). The suffix is the layout version: a layout
 * change gets a new name, so an old pin is never reused with a new layout. */
#define SL_MAP_NAME_SERVICES "sl_services_v2"
#define SL_MAP_NAME_SLOTS "sl_slots_v1"
#define SL_MAP_NAME_BACKENDS "sl_backends_v1"
#define SL_MAP_NAME_REVNAT "sl_revnat_v1"
#define SL_MAP_NAME_SOCK_REVNAT "sl_sock_rnat_v1"
#define SL_MAP_NAME_SOCK_FRONTEND "sl_sock_fe_v1"
#define SL_MAP_NAME_COUNTERS "sl_counters_v2"
#define SL_MAP_NAME_AFFINITY "sl_affinity_v1"
#define SL_MAP_NAME_FRONTEND_META "sl_fe_meta_v1"
#define SL_MAP_NAME_SOURCE_RANGES "sl_src_range_v1"
#define SL_MAP_NAME_HEALTH_CHECKS "sl_health_v1"
#define SL_MAP_NAME_NAT "sl_nat_v2"
#define SL_MAP_NAME_NAT_V1 "sl_nat_v1" /* the layout before sl_nat_route: migrated on install */
#define SL_MAP_NAME_NODE_ADDRS "sl_node_addrs_v1"
#define SL_MAP_NAME_DEVICES "sl_devices_v2"
#define SL_MAP_NAME_DSR "sl_dsr_v1"
#define SL_MAP_NAME_FRAG "sl_frag_v1"

/* Default capacities (entries); the loader may override them from the config. Slot
 * index 0 is never used, so a frontend without backends has slot_base 0. The slot array
 * needs room for every active backend set plus the sets released during the last
 * quarantine period. */
#define SL_DEFAULT_SERVICES_MAX 65536
#define SL_DEFAULT_SLOTS_MAX 262144
#define SL_DEFAULT_BACKENDS_MAX 131072
#define SL_DEFAULT_REVNAT_MAX 65536
#define SL_DEFAULT_SOCK_REVNAT_MAX 262144
#define SL_DEFAULT_AFFINITY_MAX 65536
#define SL_DEFAULT_SOURCE_RANGES_MAX 16384
#define SL_DEFAULT_HEALTH_CHECKS_MAX 4096
#define SL_DEFAULT_NAT_MAX 65536
#define SL_DEFAULT_NODE_ADDRS_MAX 256
#define SL_DEFAULT_DEVICES_MAX 64
#define SL_DEFAULT_DSR_MAX 65536
#define SL_DEFAULT_FRAG_MAX 8192

/* Entries of the per-CPU counter array: room for reasons added later, so that a new
 * reason does not change the map's layout (and its pinned name). */
#define SL_REASON_CAPACITY 64

/* ClientIP affinity re-finds a remembered backend in a changed set by scanning at most
 * this many slots; past that it chooses afresh (a bounded loop for the verifier). */
#define SL_AFFINITY_SCAN_MAX 128

/* sl_service_key.scope: which traffic an entry serves. Socket LB (traffic from this
 * node's pods and processes) uses SL_SCOPE_DEFAULT; the node-originated set of an
 * externalTrafficPolicy=Local frontend lives under SL_SCOPE_NODE. */
enum sl_scope {
	SL_SCOPE_DEFAULT = 0,
	SL_SCOPE_NODE = 1,
};

/* sl_service_value.kind on master entries: the kind of frontend, for introspection. */
enum sl_frontend_kind {
	SL_KIND_CLUSTER_IP = 0,
	SL_KIND_NODE_PORT = 1,
	SL_KIND_EXTERNAL_IP = 2,
	SL_KIND_LOAD_BALANCER = 3,
};

/* sl_service_value.flags on master entries. With neither REJECT nor DROP and count > 0
 * the frontend forwards; count == 0 without DROP rejects. */
enum sl_service_flags {
	SL_SVC_F_REJECT = 1 << 0,   /* no usable endpoint: connect()/sendmsg() get ECONNREFUSED */
	SL_SVC_F_DROP = 1 << 1,     /* traffic policy says drop (e.g. iTP=Local, no local endpoint) */
	SL_SVC_F_AFFINITY = 1 << 2, /* sessionAffinity ClientIP; timeout in affinity_timeout */
	SL_SVC_F_NODE_SCOPE = 1 << 3, /* traffic from this node uses the SL_SCOPE_NODE entry */
	SL_SVC_F_SOURCE_RANGES = 1 << 4, /* LB VIP with loadBalancerSourceRanges: clients must match sl_src_range_v1 */
};

/* Service map key: one entry per frontend. */
struct sl_service_key {
	__be32 addr[4]; /* frontend address, network order, IPv4 v4-mapped */
	__be16 port;    /* frontend port, network order */
	__u8 proto;     /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 scope;     /* enum sl_scope */
};
_Static_assert(sizeof(struct sl_service_key) == 20, "sl_service_key layout");

/* Service map value: the frontend's active backend set is slots
 * [slot_base, slot_base + count) of the slot array. A new set is written into a fresh
 * range (a new revision) and the frontend flips to it with one update of this entry; the
 * old range is left intact until no reader can still hold the old entry. */
struct sl_service_value {
	__u32 slot_base;        /* first slot of the active set; 0 when count == 0 */
	__u16 count;            /* number of backends in the active set; 0 = no backend */
	__u16 revision;         /* bumped at every flip (introspection only) */
	__u32 rev_nat_id;       /* key in the reverse-NAT map; never 0 */
	__u16 flags;            /* enum sl_service_flags */
	__u8 kind;              /* enum sl_frontend_kind */
	__u8 pad0;
	__u32 affinity_timeout; /* ClientIP affinity in seconds; 0 = no affinity */
};
_Static_assert(sizeof(struct sl_service_value) == 20, "sl_service_value layout");

/* Slot array value (index: __u32 slot). A copy of the backend's address, so picking a
 * backend is one array access (inlined by the verifier, no helper call). */
struct sl_backend_slot {
	__be32 addr[4];  /* backend address, network order, IPv4 v4-mapped */
	__be16 port;     /* backend port, network order */
	__u8 proto;      /* IPPROTO_* */
	__u8 pad;
	__u32 backend_id; /* key in the backend map; 0 = unused slot */
};
_Static_assert(sizeof(struct sl_backend_slot) == 24, "sl_backend_slot layout");

/* Backend map value; key: __u32 backend id (never 0). */
struct sl_backend {
	__be32 addr[4]; /* network order, IPv4 v4-mapped */
	__be16 port;    /* network order */
	__u8 proto;     /* IPPROTO_* */
	__u8 flags;     /* reserved, 0 */
};
_Static_assert(sizeof(struct sl_backend) == 20, "sl_backend layout");

/* Reverse-NAT map value; key: __u32 rev-NAT id (never 0). The frontend a reply must
 * appear to come from. */
struct sl_revnat {
	__be32 addr[4]; /* frontend address, network order, IPv4 v4-mapped */
	__be16 port;    /* frontend port, network order */
	__u16 pad;
};
_Static_assert(sizeof(struct sl_revnat) == 20, "sl_revnat layout");

/* Socket reverse-NAT (LRU) for unconnected UDP: which frontend a socket addressed with
 * sendmsg() when it reached a backend, so recvmsg() can show the frontend as the source.
 * (connect()ed sockets use struct sl_sock_frontend instead.) */
struct sl_sock_revnat_key {
	__u64 cookie;   /* bpf_get_socket_cookie() of the client socket */
	__be32 addr[4]; /* backend address, network order, IPv4 v4-mapped */
	__be16 port;    /* backend port, network order */
	__u16 pad[3];
};
_Static_assert(sizeof(struct sl_sock_revnat_key) == 32, "sl_sock_revnat_key layout");

struct sl_sock_revnat_value {
	__be32 addr[4];   /* frontend address, network order, IPv4 v4-mapped */
	__be16 port;      /* frontend port, network order */
	__u16 pad;
	__u32 rev_nat_id; /* the frontend's rev-NAT id when the entry was written */
};
_Static_assert(sizeof(struct sl_sock_revnat_value) == 24, "sl_sock_revnat_value layout");

/* Socket-local storage of a connect()ed socket: the frontend it asked for and the
 * backend it got. Lives and dies with the socket (no LRU eviction, nothing to clean up)
 * and costs one helper call where a cookie-keyed map costs two. */
struct sl_sock_frontend {
	__be32 frontend_addr[4]; /* network order, IPv4 v4-mapped */
	__be32 backend_addr[4];  /* network order, IPv4 v4-mapped */
	__be16 frontend_port;    /* network order */
	__be16 backend_port;     /* network order */
	__u32 rev_nat_id;
};
_Static_assert(sizeof(struct sl_sock_frontend) == 40, "sl_sock_frontend layout");

/* ClientIP affinity (LRU). The client is the network namespace of the socket (its netns
 * cookie): one pod, or the host; for traffic from outside the node (bpf/nodeport.c) it is
 * the client's IPv4 address marked with SL_AFFINITY_CLIENT_IPV4 (netns cookies count up
 * from 1 and never reach bit 63). Scoped per frontend and protocol. */
#define SL_AFFINITY_CLIENT_IPV4 (1ULL << 63)
/* An IPv6 client outside the node: its 128-bit address folded to 62 bits (the XOR of
 * its two halves, top bits cleared) marked with this bit. Two clients that fold alike
 * share an affinity entry: they get the same backend, nothing else. */
#define SL_AFFINITY_CLIENT_IPV6 (1ULL << 62)

struct sl_affinity_key {
	__u64 client;      /* netns cookie, SL_AFFINITY_CLIENT_IPV4 | IPv4 address (network order),
			    * or SL_AFFINITY_CLIENT_IPV6 | folded IPv6 address */
	__u32 rev_nat_id;  /* the frontend */
	__u8 proto;        /* IPPROTO_* */
	__u8 pad[3];
};
_Static_assert(sizeof(struct sl_affinity_key) == 16, "sl_affinity_key layout");

struct sl_affinity_value {
	__u64 last_used_ns; /* bpf_ktime_get_ns() of the latest new connection to the backend */
	__u32 backend_id;
	__u16 revision;     /* master revision when written: the slot offset is valid for it */
	__u16 slot_offset;  /* offset of the backend in that revision's range */
};
_Static_assert(sizeof(struct sl_affinity_value) == 16, "sl_affinity_value layout");

/* Introspection only (never read by BPF): which Service and port a frontend belongs to,
 * keyed like the service map. NUL-padded strings. */
struct sl_frontend_meta {
	char service[128];  /* "namespace/name" */
	char port_name[64]; /* the Service port's name, "" when unnamed */
};
_Static_assert(sizeof(struct sl_frontend_meta) == 192, "sl_frontend_meta layout");

/* loadBalancerSourceRanges (LPM trie): (frontend rev-NAT id, client CIDR). prefixlen
 * counts the rev-NAT id's 32 bits plus the CIDR's bits in v4-mapped form (96 + n for
 * IPv4). Value: __u8, unused. */
struct sl_source_range_key {
	__u32 prefixlen;
	__u32 rev_nat_id;
	__be32 addr[4]; /* network order, IPv4 v4-mapped */
};
_Static_assert(sizeof(struct sl_source_range_key) == 24, "sl_source_range_key layout");

/* healthCheckNodePort listeners the controller serves (key: __u32 port, host order). */
struct sl_health_check {
	char service[128];      /* "namespace/name", NUL-padded */
	__u32 local_endpoints;  /* distinct local ready endpoint IPs */
	__u32 pad;
};
_Static_assert(sizeof(struct sl_health_check) == 136, "sl_health_check layout");

/* External-traffic datapath (bpf/nodeport.c): connection tracking and NAT.
 *
 * One LRU map holds two entries per translated flow, told apart by sl_nat_key.dir:
 *  - FORWARD, keyed by the packet as the client sends it (client -> frontend): where to
 *    send it (the backend) and, for source-NATed flows, the node address and port that
 *    replace the client's;
 *  - REPLY, keyed by the reply as it reaches the node (backend -> node address and NAT
 *    port when source-NATed, backend -> client otherwise): the frontend to show as the
 *    source and, when source-NATed, the client to send it to.
 * Both carry the backend's address (never a slot), so a flow outlives a change of its
 * frontend's backend set. */
enum sl_nat_dir {
	SL_NAT_DIR_FORWARD = 0,
	SL_NAT_DIR_REPLY = 1,
};

struct sl_nat_key {
	__be32 saddr[4]; /* source address, network order, IPv4 v4-mapped */
	__be32 daddr[4]; /* destination address, network order, IPv4 v4-mapped */
	__be16 sport;    /* network order */
	__be16 dport;    /* network order */
	__u8 proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;        /* enum sl_nat_dir */
	__u16 pad;
};
_Static_assert(sizeof(struct sl_nat_key) == 40, "sl_nat_key layout");

enum sl_nat_flags {
	SL_NAT_F_SNAT = 1 << 0,    /* the client's address and port were replaced (nat_addr/nat_port) */
	SL_NAT_F_CLOSING = 1 << 1, /* TCP FIN or RST seen in this entry's direction: short GC timeout */
	SL_NAT_F_DSR = 1 << 2,     /* FORWARD only: the backend's node replies directly (no REPLY entry
				    * here); packets carry the frontend to it (bpf/include/swiftlane/dsr.h) */
};

/* A flow's route, as the FIB answered for its translated packets (bpf/nodeport.c,
 * sl_flow_route): asked again once checked_ns is SL_ROUTE_RECHECK_NS old, for a packet
 * longer than max_tot_len (the MTU check), or from another ingress device or TOS. Only
 * routes out of a device in sl_devices_v2 with a resolved neighbour are kept. Written by
 * the datapath only: checked_ns 0 while it is rewritten. */
struct sl_nat_route {
	__u64 checked_ns;    /* bpf_ktime_get_coarse_ns() of the FIB lookup; 0: none */
	__u32 ifindex;       /* egress device */
	__u32 in_ifindex;    /* the ingress device the lookup was for */
	__u8 dmac[6];        /* next hop */
	__u8 smac[6];        /* egress device */
	__u16 max_tot_len;   /* the longest IP packet the FIB has allowed (MTU) */
	__u8 tos;            /* the TOS the lookup was for */
	__u8 pad;
};
_Static_assert(sizeof(struct sl_nat_route) == 32, "sl_nat_route layout");

#define SL_ROUTE_RECHECK_NS 1000000000ULL

struct sl_nat_entry {
	__be32 to_addr[4];  /* FORWARD: backend (new destination); REPLY: frontend (new source).
			     * Network order, IPv4 v4-mapped */
	__be32 nat_addr[4]; /* FORWARD: node address (new source); REPLY: client (new
			     * destination). All zero without SL_NAT_F_SNAT */
	__be16 to_port;     /* network order; pairs with to_addr */
	__be16 nat_port;    /* network order; pairs with nat_addr; 0 without SL_NAT_F_SNAT */
	__u32 rev_nat_id;   /* the frontend's rev-NAT id when the flow was created */
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the latest packet in this entry's
			     * direction; ~0 for an instant while its SNAT port changes owner */
	__u16 flags;        /* enum sl_nat_flags */
	__u16 pad[3];
	struct sl_nat_route route;
};
_Static_assert(sizeof(struct sl_nat_entry) == 88, "sl_nat_entry layout");

/* The layout of sl_nat_v1 (sl_nat_entry before `route`): read once, by the loader, to
 * carry tracked flows over into sl_nat_v2 on upgrade. */
struct sl_nat_entry_v1 {
	__be32 to_addr[4];
	__be32 nat_addr[4];
	__be16 to_port;
	__be16 nat_port;
	__u32 rev_nat_id;
	__u64 last_seen_ns;
	__u16 flags;
	__u16 pad[3];
};
_Static_assert(sizeof(struct sl_nat_entry_v1) == 56, "sl_nat_entry_v1 layout");

/* Node addresses (key: struct sl_node_addr_key), written by the loader from the
 * devices' addresses. A NodePort frontend (the wildcard entry of the service map) is
 * served on an address with SL_NODE_ADDR_F_NODE_PORT (nodePortAddresses, A.12). */
struct sl_node_addr_key {
	__be32 addr[4]; /* network order, IPv4 v4-mapped */
};
_Static_assert(sizeof(struct sl_node_addr_key) == 16, "sl_node_addr_key layout");

enum sl_node_addr_flags {
	SL_NODE_ADDR_F_NODE_PORT = 1 << 0,
};

struct sl_node_addr {
	__u32 flags;   /* enum sl_node_addr_flags */
	__u32 ifindex; /* device carrying the address (introspection) */
};
_Static_assert(sizeof(struct sl_node_addr) == 8, "sl_node_addr layout");

/* The devices the external-traffic programs are attached to (key: __u32 ifindex). A
 * backend reached through one of them is remote: the flow is source-NATed to the
 * device's address of the flow's family, so replies come back through this node. (v2:
 * snat_addr6 added.) */
struct sl_device {
	__be32 snat_addr[4];  /* network order, IPv4 v4-mapped; all zero = no IPv4 address */
	__be32 snat_addr6[4]; /* network order, a global or ULA IPv6 address; all zero = none */
	__u32 flags;          /* reserved, 0 */
	__u32 pad;
};
_Static_assert(sizeof(struct sl_device) == 40, "sl_device layout");

/* Direct server return, on the backend's node (bpf/include/swiftlane/dsr.h): the
 * frontend a flow from a client was addressed to, learnt from the IPv4 option the
 * receiving node added, so that the backend's replies leave with it as their source.
 * Keyed by the reply as the backend sends it (backend -> client). LRU. */
struct sl_dsr_key {
	__be32 backend_addr[4]; /* network order, IPv4 v4-mapped */
	__be32 client_addr[4];  /* network order, IPv4 v4-mapped */
	__be16 backend_port;    /* network order */
	__be16 client_port;     /* network order */
	__u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};
_Static_assert(sizeof(struct sl_dsr_key) == 40, "sl_dsr_key layout");

struct sl_dsr_entry {
	__be32 frontend_addr[4]; /* network order, IPv4 v4-mapped */
	__be16 frontend_port;    /* network order */
	__u16 flags;             /* SL_NAT_F_CLOSING once the backend sent a FIN or RST */
	__u32 pad;
	__u64 last_seen_ns;      /* bpf_ktime_get_ns() of the latest carrier or reply */
};
_Static_assert(sizeof(struct sl_dsr_entry) == 32, "sl_dsr_entry layout");

/* IP fragments of translated datagrams (bpf/nodeport.c): a later fragment carries no
 * L4 header, so the ports of its datagram are recorded from the first fragment, keyed by
 * what every fragment of the datagram carries. Written when a first fragment is
 * translated (ingress, and replies leaving on egress), read by the later fragments. LRU:
 * an entry is needed only for the instant the datagram's fragments take to pass; one
 * evicted early costs the rest of that datagram, passed to the stack. */
struct sl_frag_key {
	__be32 saddr[4]; /* source address, network order, IPv4 v4-mapped */
	__be32 daddr[4]; /* destination address, network order, IPv4 v4-mapped */
	__be32 id;       /* IPv4: the 16-bit identification as in the header, zero-extended;
			  * IPv6: the fragment header's 32-bit identification. Network order */
	__u8 proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};
_Static_assert(sizeof(struct sl_frag_key) == 40, "sl_frag_key layout");

struct sl_frag_entry {
	__be16 sport; /* network order: the datagram's ports as the first fragment had them */
	__be16 dport;
};
_Static_assert(sizeof(struct sl_frag_entry) == 4, "sl_frag_entry layout");

/* Per-CPU outcome counters (array of __u64 indexed by this enum). Names are exported
 * as the "reason" label of swiftlane_datapath_outcomes_total; keep them in step with
 * Datapath/OutcomeReason.swift, which a test checks against SL_REASON_MAX. */
enum sl_reason {
	SL_REASON_SOCK_FORWARD = 0,       /* connect/sendmsg translated to a backend */
	SL_REASON_SOCK_NOT_SERVICE = 1,   /* destination is no frontend: left alone */
	SL_REASON_SOCK_REJECT = 2,        /* frontend without usable backend: ECONNREFUSED */
	SL_REASON_SOCK_DROP = 3,          /* frontend whose policy drops this traffic */
	SL_REASON_SOCK_SLOT_MISSING = 4,  /* the active set names an empty or out-of-range slot */
	SL_REASON_SOCK_BACKEND_MISSING = 5, /* slot names a backend id absent from the map */
	SL_REASON_SOCK_REVNAT_FAILED = 6, /* socket reverse-NAT entry could not be written */
	SL_REASON_SOCK_REPLY_REWRITTEN = 7, /* recvmsg source rewritten backend -> frontend */
	SL_REASON_SOCK_PEER_REWRITTEN = 8,  /* getpeername rewritten backend -> frontend */
	SL_REASON_SOCK_PROTO_UNSUPPORTED = 9, /* frontend lookup skipped: not TCP/UDP */
	SL_REASON_SOCK_AFFINITY_HIT = 10,     /* ClientIP affinity reused the remembered backend */
	SL_REASON_SOCK_AFFINITY_NEW = 11,     /* ClientIP affinity chose (afresh) and remembered */
	/* External-traffic datapath (bpf/nodeport.c). */
	SL_REASON_NP_FORWARD_NEW = 12,      /* new flow to a frontend translated and forwarded */
	SL_REASON_NP_FORWARD = 13,          /* packet of a tracked flow translated and forwarded */
	SL_REASON_NP_REPLY = 14,            /* reply of a tracked flow translated back */
	SL_REASON_NP_NOT_SERVICE = 15,      /* no frontend, no tracked flow: passed to the stack */
	SL_REASON_NP_REJECT = 16,           /* frontend without usable backend: ICMP port unreachable sent */
	SL_REASON_NP_DROP = 17,             /* frontend whose policy drops external traffic */
	SL_REASON_NP_TRUNCATED = 18,        /* dropped: shorter than its headers claim */
	SL_REASON_NP_MALFORMED = 19,        /* dropped: invalid IPv4 or L4 header */
	SL_REASON_NP_FRAGMENT = 20,         /* IP fragment of a datagram neither TCP nor UDP: passed */
	SL_REASON_NP_PORTS_EXHAUSTED = 21,  /* dropped: no free source-NAT port found */
	SL_REASON_NP_FIB_FAILED = 22,       /* dropped: no route to the translated destination */
	SL_REASON_NP_TTL_EXCEEDED = 23,     /* dropped: TTL would reach 0 when forwarded */
	SL_REASON_NP_SLOT_MISSING = 24,     /* dropped: the active set names an empty slot */
	SL_REASON_NP_REWRITE_FAILED = 25,   /* dropped: a packet write or checksum helper failed */
	SL_REASON_NP_REJECT_FAILED = 26,    /* dropped: the ICMP error could not be built */
	SL_REASON_NP_NOT_IPV4 = 27,         /* neither TCP nor UDP over IPv4 or IPv6 (e.g. ARP, ICMPv6
					     * Neighbour Discovery): passed to the stack */
	SL_REASON_NP_AFFINITY_HIT = 28,     /* ClientIP affinity reused the client's backend */
	SL_REASON_NP_AFFINITY_NEW = 29,     /* ClientIP affinity chose (afresh) and remembered */
	SL_REASON_NP_ICMP_ERROR_REPLY = 30, /* ICMP error about a packet to a backend translated for the client */
	SL_REASON_NP_SNAT_PORT_RECLAIMED = 31, /* a closed flow's SNAT port given to a new flow */
	SL_REASON_NP_TCP_UNTRACKED = 32,    /* TCP segment other than a SYN, of no tracked flow: passed */
	/* Direct server return (bpf/include/swiftlane/dsr.h). */
	SL_REASON_NP_DSR_CARRIED = 33,      /* frontend option added to a packet for a remote backend */
	SL_REASON_NP_DSR_NO_ROOM = 34,      /* DSR packet sent without the option: it would exceed the MTU */
	SL_REASON_NP_DSR_SNAT_FALLBACK = 35, /* DSR mode, new flow source-NATed instead: IP options already
					      * present, or the client lies behind the backend's next hop */
	SL_REASON_NP_DSR_RECEIVED = 36,     /* frontend option recorded and removed (backend's node) */
	SL_REASON_NP_DSR_REPLY = 37,        /* backend reply given the frontend as source (backend's node) */
	SL_REASON_NP_DSR_MALFORMED = 38,    /* dropped: frontend option of a wrong length or past the header */
	SL_REASON_NP_DSR_UNKNOWN_FRONTEND = 39, /* dropped: frontend option naming no frontend */
	SL_REASON_NP_DSR_ICMP_ERROR = 40,   /* backend's ICMP error about a DSR flow shown as the frontend's */
	SL_REASON_NP_SOURCE_RANGE_DENIED = 41, /* dropped: client outside the LB VIP's loadBalancerSourceRanges */
	SL_REASON_NP_XDP_PASS_TO_TC = 42,   /* XDP left the packet to the tc program (see bpf/nodeport.c) */
	SL_REASON_NP_XDP_REDIRECT = 43,     /* XDP translated the packet and redirected it to its device */
	SL_REASON_NP_IPV6_EXT_HEADER = 44,  /* IPv6 with extension headers other than one fragment header: passed */
	SL_REASON_NP_TOO_BIG = 45,          /* longer than the route's MTU: ICMP frag. needed / Packet Too Big sent */
	SL_REASON_NP_TOO_BIG_MAY_FRAGMENT = 46, /* the same, DF clear: BPF cannot fragment, so the error is sent too */
	SL_REASON_NP_ICMP_ERROR_FORWARD = 47, /* ICMP error about a reply to the client translated for the backend */
	SL_REASON_NP_FRAGMENT_TRACKED = 48, /* fragment (first or later) of a translated datagram translated; the
					     * flow's own reason (np_forward, np_reply, ...) is counted too */
	SL_REASON_NP_FRAGMENT_UNTRACKED = 49, /* later fragment of no recorded datagram (its first fragment not seen
					       * or not ours), or of no tracked flow: passed to the stack */
	SL_REASON_NP_ICMP_RATE_LIMITED = 50, /* dropped: its port unreachable over nodePort.icmpErrors' rate */
	SL_REASON_MAX = 51,
};
_Static_assert(SL_REASON_MAX <= SL_REASON_CAPACITY, "counter array too small");

#endif /* SWIFTLANE_ABI_H */

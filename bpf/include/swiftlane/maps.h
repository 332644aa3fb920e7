/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every BPF map of Swiftlane, in one place. Each object that includes this header shares
 * the maps through their pins (LIBBPF_PIN_BY_NAME under the loader's pin root), which is
 * also how state survives a controller restart. Names and layouts come from abi.h.
 */
#ifndef SWIFTLANE_MAPS_H
#define SWIFTLANE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

/* Frontends: one entry each, naming their active range of backend slots. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_service_key);
	__type(value, struct sl_service_value);
	__uint(max_entries, SL_DEFAULT_SERVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_services_v2 SEC(".maps");

/* Backend slots: contiguous ranges, one per backend set (see struct sl_service_value). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_backend_slot);
	__uint(max_entries, SL_DEFAULT_SLOTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_slots_v1 SEC(".maps");

/* Backend id -> address. Ids are stable and reference-counted by the controller. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_backend);
	__uint(max_entries, SL_DEFAULT_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_backends_v1 SEC(".maps");

/* Rev-NAT id -> frontend address, for replies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_revnat);
	__uint(max_entries, SL_DEFAULT_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_revnat_v1 SEC(".maps");

/* (socket cookie, backend) -> frontend, written by sendmsg on unconnected UDP sockets.
 * LRU because sockets close without telling us; an evicted entry only costs a reply
 * shown with the backend's address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_sock_revnat_key);
	__type(value, struct sl_sock_revnat_value);
	__uint(max_entries, SL_DEFAULT_SOCK_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sock_rnat_v1 SEC(".maps");

/* Per-socket frontend of connect()ed sockets (TCP, connected UDP). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_sock_frontend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sock_fe_v1 SEC(".maps");

/* ClientIP session affinity: (client netns, frontend, proto) -> backend, last use. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_affinity_key);
	__type(value, struct sl_affinity_value);
	__uint(max_entries, SL_DEFAULT_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_affinity_v1 SEC(".maps");

/* Introspection: Service and port name of each frontend (written and read by the
 * controller only; `swiftlane dump` shows them). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_service_key);
	__type(value, struct sl_frontend_meta);
	__uint(max_entries, SL_DEFAULT_SERVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_fe_meta_v1 SEC(".maps");

/* loadBalancerSourceRanges per frontend (enforced by the external-traffic datapath). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_source_range_key);
	__type(value, __u8);
	__uint(max_entries, SL_DEFAULT_SOURCE_RANGES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_src_range_v1 SEC(".maps");

/* healthCheckNodePort listeners and their local endpoint counts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sl_health_check);
	__uint(max_entries, SL_DEFAULT_HEALTH_CHECKS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_health_v1 SEC(".maps");

/* External-traffic connection tracking and NAT (struct sl_nat_key). LRU: a full table
 * evicts the least recently used flow instead of refusing new ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_nat_key);
	__type(value, struct sl_nat_entry);
	__uint(max_entries, SL_DEFAULT_NAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_nat_v2 SEC(".maps");

/* This node's addresses, and which of them serve NodePorts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_node_addr_key);
	__type(value, struct sl_node_addr);
	__uint(max_entries, SL_DEFAULT_NODE_ADDRS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_node_addrs_v1 SEC(".maps");

/* The external-traffic devices by ifindex, with their source-NAT address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_device);
	__uint(max_entries, SL_DEFAULT_DEVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_devices_v2 SEC(".maps");

/* Direct server return: (backend, client) -> frontend on the backend's node. LRU: an
 * evicted entry costs replies leaving with the backend's address (the client drops them). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_dsr_key);
	__type(value, struct sl_dsr_entry);
	__uint(max_entries, SL_DEFAULT_DSR_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_dsr_v1 SEC(".maps");

/* Ports of fragmented datagrams being translated (struct sl_frag_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_frag_key);
	__type(value, struct sl_frag_entry);
	__uint(max_entries, SL_DEFAULT_FRAG_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_frag_v1 SEC(".maps");

/* Outcome counters by enum sl_reason, per CPU so the hot path never contends. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SL_REASON_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_counters_v2 SEC(".maps");

static __always_inline void sl_count(__u32 reason)
{
	__u64 *value = bpf_map_lookup_elem(&sl_counters_v2, &reason);

	if (value)
		*value += 1;
}

#endif /* SWIFTLANE_MAPS_H */

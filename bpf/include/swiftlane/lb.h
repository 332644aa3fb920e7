/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend selection, shared by every program that serves frontends (sock_lb.c for
 * sockets of this node, nodeport.c for traffic from outside it). Callers pass the
 * outcome reasons to count; they are constants after inlining.
 */
#ifndef SWIFTLANE_LB_H
#define SWIFTLANE_LB_H

#include "maps.h"

/* A uniformly random slot of the active set. Services with one backend skip the random
 * draw: a helper call costs tens of ns on kernels with return-thunk mitigations. The
 * slot array lookup itself is inlined by the verifier (no helper call). Because the
 * controller never reuses a released range while a reader could still hold the old
 * master entry, the slot read here always belongs to this frontend. */
static __always_inline const struct sl_backend_slot *sl_lb_pick_slot(const struct sl_service_value *master,
								     __u32 missing_reason)
{
	const struct sl_backend_slot *slot;
	__u32 index = master->slot_base;

	if (master->count > 1)
		index += bpf_get_prandom_u32() % master->count;
	slot = bpf_map_lookup_elem(&sl_slots_v1, &index);
	if (!slot || slot->backend_id == 0) {
		sl_count(missing_reason);
		return NULL;
	}
	return slot;
}

/* The slot of the active set that holds the remembered backend, or NULL. The remembered
 * offset is tried first (valid while the set's revision is unchanged); otherwise the set
 * is scanned, up to SL_AFFINITY_SCAN_MAX slots (a bounded loop for the verifier). */
static __always_inline const struct sl_backend_slot *sl_lb_find_remembered(const struct sl_service_value *master,
									   const struct sl_affinity_value *remembered,
									   __u16 *offset)
{
	const struct sl_backend_slot *slot;
	__u32 index;
	__u32 i;

	if (remembered->revision == master->revision && remembered->slot_offset < master->count) {
		index = master->slot_base + remembered->slot_offset;
		slot = bpf_map_lookup_elem(&sl_slots_v1, &index);
		if (slot && slot->backend_id == remembered->backend_id) {
			*offset = remembered->slot_offset;
			return slot;
		}
	}
	for (i = 0; i < SL_AFFINITY_SCAN_MAX && i < master->count; i++) {
		index = master->slot_base + i;
		slot = bpf_map_lookup_elem(&sl_slots_v1, &index);
		if (slot && slot->backend_id == remembered->backend_id) {
			*offset = (__u16)i;
			return slot;
		}
	}
	return NULL;
}

/* sessionAffinity ClientIP (kube-proxy A.8): a new connection from the client in `key`
 * to the frontend goes to the backend it used last, if that was less than the timeout
 * ago and the backend is still in the set; otherwise a fresh random choice. The choice
 * is re-stamped on every new connection (expiry counts from the latest one). */
static __always_inline const struct sl_backend_slot *
sl_lb_pick_affine(const struct sl_affinity_key *key, const struct sl_service_value *master, __u32 hit_reason,
		  __u32 new_reason, __u32 missing_reason)
{
	const struct sl_affinity_value *remembered;
	const struct sl_backend_slot *slot = NULL;
	struct sl_affinity_value value = {};
	__u64 now = bpf_ktime_get_ns();
	__u16 offset = 0;
	__u32 index;

	remembered = bpf_map_lookup_elem(&sl_affinity_v1, key);
	if (remembered && now - remembered->last_used_ns < (__u64)master->affinity_timeout * 1000000000ULL)
		slot = sl_lb_find_remembered(master, remembered, &offset);
	if (slot) {
		sl_count(hit_reason);
	} else {
		offset = master->count > 1 ? bpf_get_prandom_u32() % master->count : 0;
		index = master->slot_base + offset;
		slot = bpf_map_lookup_elem(&sl_slots_v1, &index);
		if (!slot || slot->backend_id == 0) {
			sl_count(missing_reason);
			return NULL;
		}
		sl_count(new_reason);
	}
	value.last_used_ns = now;
	value.backend_id = slot->backend_id;
	value.revision = master->revision;
	value.slot_offset = offset;
	bpf_map_update_elem(&sl_affinity_v1, key, &value, BPF_ANY);
	return slot;
}

#endif /* SWIFTLANE_LB_H */

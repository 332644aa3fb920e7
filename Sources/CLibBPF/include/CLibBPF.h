/*
 * CLibBPF: the only C that Swift's Datapath layer calls. libbpf's API is mostly callable
 * from Swift as is; this shim covers what Swift cannot express: option structs built
 * with LIBBPF_OPTS, variadic print callbacks, and BTF walks through static inlines.
 * Every symbol carries the clb_ prefix.
 */
#ifndef CLIBBPF_H
#define CLIBBPF_H

#include <stddef.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/* The datapath ABI shared with the BPF programs (the one and only copy). */
#include "../../../bpf/include/swiftlane/abi.h"

/* Opens a BPF ELF object held in memory. Maps declared LIBBPF_PIN_BY_NAME are pinned
 * under (and reused from) pin_root. Returns NULL with errno set on failure. */
struct bpf_object *clb_object_open_mem(const void *bytes, size_t size, const char *name,
				       const char *pin_root);

/* Receives every libbpf log line (already formatted) while installed; NULL restores
 * libbpf's default printing to stderr. level is enum libbpf_print_level. */
typedef void (*clb_print_sink)(int level, const char *message);
void clb_set_print_sink(clb_print_sink sink);

/* Sets a `const volatile` global of the object's .rodata by its name before load.
 * Returns 0, -ENOENT if no such variable, -EINVAL if the size differs. */
int clb_rodata_set(struct bpf_object *object, const char *variable, const void *value,
		   size_t size);

/* 1 if programs of prog_type may call helper on this kernel, 0 if not, <0 on error. */
int clb_probe_helper(enum bpf_prog_type prog_type, enum bpf_func_id helper);

/* 1 if the kernel accepts a program of prog_type with this expected attach type (e.g.
 * BPF_CGROUP_INET4_GETPEERNAME, 5.8+), 0 if not. */
int clb_probe_attach_type(enum bpf_prog_type prog_type, enum bpf_attach_type attach_type);

/* The filesystem magic (statfs f_type) of path, or -errno. */
long clb_filesystem_magic(const char *path);

/* Info about a pinned map / link / program by fd; 0 or -errno. */
int clb_map_info(int fd, struct bpf_map_info *info);
int clb_link_info(int fd, struct bpf_link_info *info);
int clb_prog_info(int fd, struct bpf_prog_info *info);

/* Legacy cgroup detach of a program (by fd) from a cgroup (by fd); 0 or -errno. */
int clb_prog_detach_cgroup(int prog_fd, int cgroup_fd, enum bpf_attach_type type);

/* The C compiler's view of every shared struct, for the Swift layout test: field i of
 * the table (NULL past the end). */
struct clb_abi_field {
	const char *type;
	const char *field;
	size_t offset;
	size_t size;
	size_t type_size;
};
const struct clb_abi_field *clb_abi_field_at(size_t index);

/* 1 if the running kernel's BTF (/sys/kernel/btf/vmlinux) has a function of this name (a
 * kfunc such as bpf_sock_destroy, 6.5+), 0 if not, -errno if that BTF cannot be read. */
int clb_kernel_btf_has_func(const char *name);

/* setns(2), which glibc declares only under _GNU_SOURCE: moves the calling thread into the
 * namespace that fd refers to (nstype: CLONE_NEW*, or 0 for any). 0 or -errno. */
int clb_setns(int fd, int nstype);

/* tc (clsact) attachment through netlink, in the calling thread's network namespace.
 * Filters made this way outlive the process (a restart keeps traffic flowing).
 * clb_tc_clsact_create: adds the clsact qdisc unless it exists; 1 when this call created
 *   it, 0 when it was there already, or -errno.
 * clb_tc_clsact_destroy: removes the clsact qdisc and every filter on it; 0 or -errno.
 * clb_tc_filter_count: how many filters (of anyone) sit on the ingress or egress hook, by
 *   a netlink dump; the count or -errno.
 * clb_tc_attach: attaches prog_fd as a direct-action filter at ingress (egress == 0) or
 *   egress under handle/priority, replacing a filter already there in place; 0 or -errno.
 * clb_tc_query: the id of the program attached under handle/priority in *prog_id
 *   (0 when none); 0 or -errno.
 * clb_tc_detach: removes that filter; 0 or -errno (-ENOENT when none). */
int clb_tc_clsact_create(int ifindex);
int clb_tc_clsact_destroy(int ifindex);
int clb_tc_filter_count(int ifindex, int egress);
int clb_tc_attach(int ifindex, int egress, int prog_fd, __u32 handle, __u32 priority);
int clb_tc_query(int ifindex, int egress, __u32 handle, __u32 priority, __u32 *prog_id);
int clb_tc_detach(int ifindex, int egress, __u32 handle, __u32 priority);

/* XDP attachment. clb_xdp_link_create: a bpf_link running prog_fd on ifindex in the mode
 *   of flags (XDP_FLAGS_SKB_MODE = generic, XDP_FLAGS_DRV_MODE = native): its fd or -errno.
 *   Pinned, the link outlives the process; bpf_link_update replaces its program in place.
 * clb_xdp_link_ifindex: the device a pinned XDP link is attached to (0 once the device is
 *   gone), or -errno (-EINVAL if the link is not an XDP link).
 * clb_xdp_attach: netlink attachment (no link), prog_fd -1 detaches; 0 or -errno. */
int clb_xdp_link_create(int prog_fd, int ifindex, __u32 flags);
int clb_xdp_link_ifindex(int link_fd);
int clb_xdp_attach(int ifindex, int prog_fd, __u32 flags);

/* BPF_PROG_TEST_RUN of a tc or XDP program on one packet. data_out receives the packet as
 * the program left it (up to *size_out bytes; *size_out is set to its length), *retval
 * the program's verdict. 0 or -errno. */
int clb_prog_test_run(int prog_fd, const void *data_in, __u32 size_in, void *data_out, __u32 *size_out,
		      __u32 *retval);

/* Sends `count` copies of the Ethernet frame `data` out of `ifindex` (of the caller's
 * network namespace) through an AF_PACKET socket: what starts the benchmark's traffic
 * generator loop. Returns 0 or -errno. */
int clb_packet_send(int ifindex, const void *data, __u32 size, __u32 count);

#endif

#include "CLibBPF.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/vfs.h>
#include <sys/socket.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/pkt_sched.h>
#include <bpf/btf.h>

struct bpf_object *clb_object_open_mem(const void *bytes, size_t size, const char *name,
				       const char *pin_root)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name, .pin_root_path = pin_root);
	struct bpf_object *object = bpf_object__open_mem(bytes, size, &opts);
	long err = libbpf_get_error(object);

	if (err) {
		errno = (int)-err;
		return NULL;
	}
	return object;
}

static clb_print_sink print_sink;

static int clb_print(enum libbpf_print_level level, const char *format, va_list args)
{
	char stack_buffer[1024];
	char *message = stack_buffer;
	va_list copy;
	int length;

	va_copy(copy, args);
	length = vsnprintf(stack_buffer, sizeof(stack_buffer), format, copy);
	va_end(copy);
	if (length < 0)
		return length;
	/* Verifier logs arrive as one huge %s: format those into a heap buffer. */
	if ((size_t)length >= sizeof(stack_buffer)) {
		message = malloc((size_t)length + 1);
		if (!message)
			return -ENOMEM;
		vsnprintf(message, (size_t)length + 1, format, args);
	}
	if (print_sink)
		print_sink((int)level, message);
	if (message != stack_buffer)
		free(message);
	return length;
}

void clb_set_print_sink(clb_print_sink sink)
{
	print_sink = sink;
	libbpf_set_print(sink ? clb_print : NULL);
}

int clb_rodata_set(struct bpf_object *object, const char *variable, const void *value,
		   size_t size)
{
	struct bpf_map *map = bpf_object__find_map_by_name(object, ".rodata");
	struct btf *btf = bpf_object__btf(object);
	const struct btf_var_secinfo *info;
	const struct btf_type *section;
	size_t data_size = 0;
	char *data;
	int id, i;

	if (!map || !btf)
		return -ENOENT;
	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		return -ENOENT;
	section = btf__type_by_id(btf, (__u32)id);
	data = (char *)bpf_map__initial_value(map, &data_size);
	if (!data)
		return -ENOENT;
	info = btf_var_secinfos(section);
	for (i = 0; i < btf_vlen(section); i++, info++) {
		const struct btf_type *var = btf__type_by_id(btf, info->type);
		const char *name = btf__name_by_offset(btf, var->name_off);

		if (!name || strcmp(name, variable) != 0)
			continue;
		if (info->size != size || info->offset + size > data_size)
			return -EINVAL;
		memcpy(data + info->offset, value, size);
		return 0;
	}
	return -ENOENT;
}

int clb_probe_helper(enum bpf_prog_type prog_type, enum bpf_func_id helper)
{
	return libbpf_probe_bpf_helper(prog_type, helper, NULL);
}

int clb_probe_attach_type(enum bpf_prog_type prog_type, enum bpf_attach_type attach_type)
{
	/* r0 = 1; exit */
	struct bpf_insn program[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = attach_type);
	int fd = bpf_prog_load(prog_type, "sl_probe", "GPL", program, 2, &opts);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

long clb_filesystem_magic(const char *path)
{
	struct statfs info;

	if (statfs(path, &info) != 0)
		return -errno;
	return (long)info.f_type;
}

static int clb_info(int fd, void *info, __u32 size)
{
	__u32 length = size;

	memset(info, 0, size);
	return bpf_obj_get_info_by_fd(fd, info, &length) ? -errno : 0;
}

int clb_map_info(int fd, struct bpf_map_info *info)
{
	return clb_info(fd, info, sizeof(*info));
}

int clb_link_info(int fd, struct bpf_link_info *info)
{
	return clb_info(fd, info, sizeof(*info));
}

int clb_prog_info(int fd, struct bpf_prog_info *info)
{
	return clb_info(fd, info, sizeof(*info));
}

int clb_prog_detach_cgroup(int prog_fd, int cgroup_fd, enum bpf_attach_type type)
{
	return bpf_prog_detach2(prog_fd, cgroup_fd, type) ? -errno : 0;
}

#define CLB_FIELD(T, F) { #T, #F, offsetof(struct T, F), sizeof(((struct T *)0)->F), sizeof(struct T) }

static const struct clb_abi_field abi_fields[] = {
	CLB_FIELD(sl_service_key, addr),
	CLB_FIELD(sl_service_key, port),
	CLB_FIELD(sl_service_key, proto),
	CLB_FIELD(sl_service_key, scope),
	CLB_FIELD(sl_service_value, slot_base),
	CLB_FIELD(sl_service_value, count),
	CLB_FIELD(sl_service_value, revision),
	CLB_FIELD(sl_service_value, rev_nat_id),
	CLB_FIELD(sl_service_value, flags),
	CLB_FIELD(sl_service_value, kind),
	CLB_FIELD(sl_service_value, pad0),
	CLB_FIELD(sl_service_value, affinity_timeout),
	CLB_FIELD(sl_backend_slot, addr),
	CLB_FIELD(sl_backend_slot, port),
	CLB_FIELD(sl_backend_slot, proto),
	CLB_FIELD(sl_backend_slot, pad),
	CLB_FIELD(sl_backend_slot, backend_id),
	CLB_FIELD(sl_backend, addr),
	CLB_FIELD(sl_backend, port),
	CLB_FIELD(sl_backend, proto),
	CLB_FIELD(sl_backend, flags),
	CLB_FIELD(sl_revnat, addr),
	CLB_FIELD(sl_revnat, port),
	CLB_FIELD(sl_revnat, pad),
	CLB_FIELD(sl_sock_revnat_key, cookie),
	CLB_FIELD(sl_sock_revnat_key, addr),
	CLB_FIELD(sl_sock_revnat_key, port),
	CLB_FIELD(sl_sock_revnat_key, pad),
	CLB_FIELD(sl_sock_revnat_value, addr),
	CLB_FIELD(sl_sock_revnat_value, port),
	CLB_FIELD(sl_sock_revnat_value, pad),
	CLB_FIELD(sl_sock_revnat_value, rev_nat_id),
	CLB_FIELD(sl_sock_frontend, frontend_addr),
	CLB_FIELD(sl_sock_frontend, backend_addr),
	CLB_FIELD(sl_sock_frontend, frontend_port),
	CLB_FIELD(sl_sock_frontend, backend_port),
	CLB_FIELD(sl_sock_frontend, rev_nat_id),
	CLB_FIELD(sl_affinity_key, client),
	CLB_FIELD(sl_affinity_key, rev_nat_id),
	CLB_FIELD(sl_affinity_key, proto),
	CLB_FIELD(sl_affinity_key, pad),
	CLB_FIELD(sl_affinity_value, last_used_ns),
	CLB_FIELD(sl_affinity_value, backend_id),
	CLB_FIELD(sl_affinity_value, revision),
	CLB_FIELD(sl_affinity_value, slot_offset),
	CLB_FIELD(sl_frontend_meta, service),
	CLB_FIELD(sl_frontend_meta, port_name),
	CLB_FIELD(sl_source_range_key, prefixlen),
	CLB_FIELD(sl_source_range_key, rev_nat_id),
	CLB_FIELD(sl_source_range_key, addr),
	CLB_FIELD(sl_health_check, service),
	CLB_FIELD(sl_health_check, local_endpoints),
	CLB_FIELD(sl_health_check, pad),
	CLB_FIELD(sl_nat_key, saddr),
	CLB_FIELD(sl_nat_key, daddr),
	CLB_FIELD(sl_nat_key, sport),
	CLB_FIELD(sl_nat_key, dport),
	CLB_FIELD(sl_nat_key, proto),
	CLB_FIELD(sl_nat_key, dir),
	CLB_FIELD(sl_nat_key, pad),
	CLB_FIELD(sl_nat_entry, to_addr),
	CLB_FIELD(sl_nat_entry, nat_addr),
	CLB_FIELD(sl_nat_entry, to_port),
	CLB_FIELD(sl_nat_entry, nat_port),
	CLB_FIELD(sl_nat_entry, rev_nat_id),
	CLB_FIELD(sl_nat_entry, last_seen_ns),
	CLB_FIELD(sl_nat_entry, flags),
	CLB_FIELD(sl_nat_entry, pad),
	CLB_FIELD(sl_nat_entry, route),
	CLB_FIELD(sl_nat_route, checked_ns),
	CLB_FIELD(sl_nat_route, ifindex),
	CLB_FIELD(sl_nat_route, in_ifindex),
	CLB_FIELD(sl_nat_route, dmac),
	CLB_FIELD(sl_nat_route, smac),
	CLB_FIELD(sl_nat_route, max_tot_len),
	CLB_FIELD(sl_nat_route, tos),
	CLB_FIELD(sl_nat_route, pad),
	CLB_FIELD(sl_node_addr_key, addr),
	CLB_FIELD(sl_node_addr, flags),
	CLB_FIELD(sl_node_addr, ifindex),
	CLB_FIELD(sl_device, snat_addr),
	CLB_FIELD(sl_device, snat_addr6),
	CLB_FIELD(sl_device, flags),
	CLB_FIELD(sl_device, pad),
	CLB_FIELD(sl_dsr_key, backend_addr),
	CLB_FIELD(sl_dsr_key, client_addr),
	CLB_FIELD(sl_dsr_key, backend_port),
	CLB_FIELD(sl_dsr_key, client_port),
	CLB_FIELD(sl_dsr_key, proto),
	CLB_FIELD(sl_dsr_key, pad),
	CLB_FIELD(sl_dsr_entry, frontend_addr),
	CLB_FIELD(sl_dsr_entry, frontend_port),
	CLB_FIELD(sl_dsr_entry, flags),
	CLB_FIELD(sl_dsr_entry, pad),
	CLB_FIELD(sl_dsr_entry, last_seen_ns),
	CLB_FIELD(sl_frag_key, saddr),
	CLB_FIELD(sl_frag_key, daddr),
	CLB_FIELD(sl_frag_key, id),
	CLB_FIELD(sl_frag_key, proto),
	CLB_FIELD(sl_frag_key, pad),
	CLB_FIELD(sl_frag_entry, sport),
	CLB_FIELD(sl_frag_entry, dport),
};

const struct clb_abi_field *clb_abi_field_at(size_t index)
{
	return index < sizeof(abi_fields) / sizeof(abi_fields[0]) ? &abi_fields[index] : NULL;
}

int clb_kernel_btf_has_func(const char *name)
{
	struct btf *btf = btf__load_vmlinux_btf();
	int found;

	if (!btf)
		return errno ? -errno : -ENOENT;
	found = btf__find_by_name_kind(btf, name, BTF_KIND_FUNC) >= 0;
	btf__free(btf);
	return found;
}

/* glibc's <sched.h> declares setns only under _GNU_SOURCE, which this file does not set. */
extern int setns(int fd, int nstype);

int clb_setns(int fd, int nstype)
{
	return setns(fd, nstype) ? -errno : 0;
}

static void clb_tc_hook_init(struct bpf_tc_hook *hook, int ifindex, int egress)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
}

int clb_tc_clsact_create(int ifindex)
{
	struct bpf_tc_hook hook;
	int err;

	clb_tc_hook_init(&hook, ifindex, 0);
	hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
	err = bpf_tc_hook_create(&hook);
	if (err == -EEXIST)
		return 0;
	return err ? err : 1;
}

int clb_tc_clsact_destroy(int ifindex)
{
	struct bpf_tc_hook hook;

	clb_tc_hook_init(&hook, ifindex, 0);
	hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
	return bpf_tc_hook_destroy(&hook);
}

int clb_tc_filter_count(int ifindex, int egress)
{
	struct {
		struct nlmsghdr header;
		struct tcmsg tc;
	} request;
	char buffer[16384] __attribute__((aligned(NLMSG_ALIGNTO)));
	int fd, count = 0, err = 0, done = 0;

	memset(&request, 0, sizeof(request));
	request.header.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg));
	request.header.nlmsg_type = RTM_GETTFILTER;
	request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	request.header.nlmsg_seq = 1;
	request.tc.tcm_family = AF_UNSPEC;
	request.tc.tcm_ifindex = ifindex;
	request.tc.tcm_parent = TC_H_MAKE(TC_H_CLSACT, egress ? TC_H_MIN_EGRESS : TC_H_MIN_INGRESS);

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	if (send(fd, &request, request.header.nlmsg_len, 0) < 0) {
		err = -errno;
		goto out;
	}
	while (!done) {
		ssize_t length = recv(fd, buffer, sizeof(buffer), 0);
		struct nlmsghdr *header;

		if (length < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto out;
		}
		if (length == 0)
			break;
		for (header = (struct nlmsghdr *)buffer; NLMSG_OK(header, (unsigned int)length);
		     header = NLMSG_NEXT(header, length)) {
			if (header->nlmsg_type == NLMSG_DONE) {
				done = 1;
				break;
			}
			if (header->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *error = NLMSG_DATA(header);

				err = error->error;
				goto out;
			}
			/* The dump lists each classifier instance (handle 0) and then its filters;
			 * only the filters count. */
			if (header->nlmsg_type == RTM_NEWTFILTER && ((struct tcmsg *)NLMSG_DATA(header))->tcm_handle != 0)
				count++;
		}
	}
out:
	close(fd);
	return err ? err : count;
}

int clb_tc_attach(int ifindex, int egress, int prog_fd, __u32 handle, __u32 priority)
{
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority, .prog_fd = prog_fd,
		    .flags = BPF_TC_F_REPLACE);
	struct bpf_tc_hook hook;

	clb_tc_hook_init(&hook, ifindex, egress);
	return bpf_tc_attach(&hook, &opts);
}

int clb_tc_query(int ifindex, int egress, __u32 handle, __u32 priority, __u32 *prog_id)
{
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	struct bpf_tc_hook hook;
	int err;

	clb_tc_hook_init(&hook, ifindex, egress);
	*prog_id = 0;
	err = bpf_tc_query(&hook, &opts);
	/* No filter there: -ENOENT, or -EINVAL when not even the priority's filter chain
	 * exists yet (the kernel says "Cannot find specified filter chain"). */
	if (err == -ENOENT || err == -EINVAL)
		return 0;
	if (err)
		return err;
	*prog_id = opts.prog_id;
	return 0;
}

int clb_tc_detach(int ifindex, int egress, __u32 handle, __u32 priority)
{
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	struct bpf_tc_hook hook;

	clb_tc_hook_init(&hook, ifindex, egress);
	return bpf_tc_detach(&hook, &opts);
}

int clb_xdp_link_create(int prog_fd, int ifindex, __u32 flags)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
	int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);

	return fd < 0 ? -errno : fd;
}

int clb_xdp_link_ifindex(int link_fd)
{
	struct bpf_link_info info;
	int err = clb_info(link_fd, &info, sizeof(info));

	if (err)
		return err;
	if (info.type != BPF_LINK_TYPE_XDP)
		return -EINVAL;
	return (int)info.xdp.ifindex;
}

int clb_xdp_attach(int ifindex, int prog_fd, __u32 flags)
{
	int err = prog_fd < 0 ? bpf_xdp_detach(ifindex, flags, NULL) : bpf_xdp_attach(ifindex, prog_fd, flags, NULL);

	return err < 0 ? err : 0; /* libbpf 1.x returns -errno */
}

int clb_prog_test_run(int prog_fd, const void *data_in, __u32 size_in, void *data_out, __u32 *size_out,
		      __u32 *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data_in, .data_size_in = size_in, .data_out = data_out,
		    .data_size_out = *size_out, .repeat = 1);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return -errno;
	*size_out = opts.data_size_out;
	*retval = opts.retval;
	return 0;
}

int clb_packet_send(int ifindex, const void *data, __u32 size, __u32 count)
{
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = ETH_ALEN };
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	memcpy(to.sll_addr, data, size < ETH_ALEN ? size : ETH_ALEN);
	for (__u32 i = 0; i < count && !err; i++) {
		if (sendto(fd, data, size, 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)size)
			err = -errno;
	}
	close(fd);
	return err;
}

import CLibBPF

/// Names of the per-CPU outcome counters (`enum sl_reason` in abi.h), as exported in the
/// `reason` label. Indexed by the enum value.
public enum OutcomeReason {
    public static let names: [String] = [
        "sock_forward",
        "sock_not_service",
        "sock_reject",
        "sock_drop",
        "sock_slot_missing",
        "sock_backend_missing",
        "sock_revnat_failed",
        "sock_reply_rewritten",
        "sock_peer_rewritten",
        "sock_proto_unsupported",
        "sock_affinity_hit",
        "sock_affinity_new",
        "np_forward_new",
        "np_forward",
        "np_reply",
        "np_not_service",
        "np_reject",
        "np_drop",
        "np_truncated",
        "np_malformed",
        "np_fragment",
        "np_ports_exhausted",
        "np_fib_failed",
        "np_ttl_exceeded",
        "np_slot_missing",
        "np_rewrite_failed",
        "np_reject_failed",
        "np_not_ipv4",
        "np_affinity_hit",
        "np_affinity_new",
        "np_icmp_error_reply",
        "np_snat_port_reclaimed",
        "np_tcp_untracked",
        "np_dsr_carried",
        "np_dsr_no_room",
        "np_dsr_snat_fallback",
        "np_dsr_received",
        "np_dsr_reply",
        "np_dsr_malformed",
        "np_dsr_unknown_frontend",
        "np_dsr_icmp_error",
        "np_source_range_denied",
        "np_xdp_pass_to_tc",
        "np_xdp_redirect",
        "np_ipv6_ext_header",
        "np_fragment_tracked",
        "np_fragment_untracked",
    ]

    /// Number of reasons the BPF side counts.
    public static let count = Int(SL_REASON_MAX.rawValue)
}

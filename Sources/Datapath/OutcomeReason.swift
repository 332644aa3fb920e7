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
    ]

    /// Number of reasons the BPF side counts.
    public static let count = Int(SL_REASON_MAX.rawValue)
}

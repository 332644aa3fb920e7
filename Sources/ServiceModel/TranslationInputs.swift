// MARK: - Translation inputs and outputs

/// The node this proxy runs as.
public struct ProxyNode: Hashable, Sendable {
    /// kube-proxy's node name (`--hostname-override`); decides endpoint locality (A.3(10)).
    /// Empty ⇒ nothing is local.
    public var name: String
    /// Node labels; `topology.kubernetes.io/zone` drives zone hints (A.4(2.1)).
    public var labels: [String: String]
    /// The node's own addresses. The first address of each family is the node's primary IP
    /// (kube-proxy's `nodeIP`): it resolves `nodePortAddresses: primary` (A.12) and is the
    /// address checked against loadBalancerSourceRanges (A.9).
    public var addresses: [IPAddress]
    /// `spec.podCIDRs`, for the `NodeCIDR` local-traffic detector (A.11(1)).
    public var podCIDRs: [CIDR]

    public init(name: String, labels: [String: String] = [:], addresses: [IPAddress] = [], podCIDRs: [CIDR] = []) {
        self.name = name
        self.labels = labels
        self.addresses = addresses
        self.podCIDRs = podCIDRs
    }

    /// From a Node object: name and labels from metadata, addresses from `status.addresses`
    /// (`InternalIP` before `ExternalIP`, so the first InternalIP of a family is primary, as
    /// kubelet/kube-proxy pick it), pod CIDRs from `spec.podCIDRs` (or `spec.podCIDR`).
    /// Unparsable entries are dropped.
    public init(node: Node) {
        var addresses: [IPAddress] = []
        for type in ["InternalIP", "ExternalIP"] {
            for entry in node.status.addresses where entry.type == type {
                if let ip = IPAddress(sloppy: entry.address), !addresses.contains(ip) { addresses.append(ip) }
            }
        }
        let cidrTexts = node.spec.podCIDRs.isEmpty ? (node.spec.podCIDR.map { [$0] } ?? []) : node.spec.podCIDRs
        self.init(
            name: node.metadata.name, labels: node.metadata.labels, addresses: addresses,
            podCIDRs: cidrTexts.compactMap { CIDR(sloppy: $0) })
    }

    /// The node's zone label, if set and non-empty.
    public var zone: String? {
        guard let zone = labels[WellKnown.zoneLabel], !zone.isEmpty else { return nil }
        return zone
    }

    /// The first address of `family` (kube-proxy's node IP for that family).
    public func primaryAddress(_ family: IPFamily) -> IPAddress? {
        addresses.first { $0.family == family }
    }
}

/// How the datapath recognises traffic from this cluster's pods (kube-proxy `detectLocalMode`,
/// A.11(1)).
public enum LocalTrafficDetection: String, Codable, Hashable, Sendable {
    /// Source inside `TranslationOptions.clusterCIDRs` (kube-proxy's default).
    case clusterCIDR = "ClusterCIDR"
    /// Source inside the node's `podCIDRs`.
    case nodeCIDR = "NodeCIDR"
}

/// Proxy-wide configuration that changes the plan.
public struct TranslationOptions: Hashable, Sendable {
    /// CIDRs and/or `"primary"`; empty = all node addresses (A.12).
    public var nodePortAddresses: [String]
    /// `--cluster-cidr` for the ClusterCIDR local-traffic detector (A.11).
    public var clusterCIDRs: [CIDR]
    /// SNAT all ClusterIP traffic (A.11(1)).
    public var masqueradeAll: Bool
    /// Feature gate `PreferSameTrafficDistribution`: honour node hints (A.3(7), A.4).
    public var preferSameTrafficDistribution: Bool
    /// The families this proxy programs (one dataplane per family, A.1(4)).
    public var ipFamilies: Set<IPFamily>
    /// Which detector decides "traffic from a local pod" (A.11).
    public var localTrafficDetection: LocalTrafficDetection

    public init(
        nodePortAddresses: [String] = [], clusterCIDRs: [CIDR] = [], masqueradeAll: Bool = false,
        preferSameTrafficDistribution: Bool = true, ipFamilies: Set<IPFamily> = [.v4, .v6],
        localTrafficDetection: LocalTrafficDetection = .clusterCIDR
    ) {
        self.nodePortAddresses = nodePortAddresses
        self.clusterCIDRs = clusterCIDRs
        self.masqueradeAll = masqueradeAll
        self.preferSameTrafficDistribution = preferSameTrafficDistribution
        self.ipFamilies = ipFamilies
        self.localTrafficDetection = localTrafficDetection
    }
}

/// Something kube-proxy would log while translating: an ignored slice port, an unparsable
/// address, a missing label. The plan is still produced without the offending part.
public struct Diagnostic: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// `"Service ns/name"`, `"EndpointSlice ns/name"` or `"TranslationOptions"`.
    public var object: String
    /// Field path inside the object, e.g. `spec.clusterIPs[1]`, `ports[0].name`.
    public var field: String
    public var message: String

    public init(object: String, field: String, message: String) {
        self.object = object
        self.field = field
        self.message = message
    }

    public var description: String { "\(object): \(field): \(message)" }

    public static func < (lhs: Diagnostic, rhs: Diagnostic) -> Bool {
        (lhs.object, lhs.field, lhs.message) < (rhs.object, rhs.field, rhs.message)
    }
}

/// The plan and everything worth telling the operator about how it was made.
public struct TranslationResult: Equatable, Sendable {
    public var plan: LoadBalancerPlan
    /// Sorted and de-duplicated.
    public var diagnostics: [Diagnostic]

    public init(plan: LoadBalancerPlan, diagnostics: [Diagnostic] = []) {
        self.plan = plan
        self.diagnostics = diagnostics
    }
}
